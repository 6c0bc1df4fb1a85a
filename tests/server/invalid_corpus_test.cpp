// A corpus of invalid requests, each sent as exact bytes over a socket: every one must get its 4xx
// with OpenAI's error object (never a 5xx, never a dropped connection), and afterwards the server
// is healthy, idle, and a normal request still reproduces HF's golden greedy tokens.
// Model: tests/golden/llama3_gqa with the tiny chat tokenizer/template (vocab 384, context 128).
#include "raw_http.h"
#include "server_test_util.h"

namespace anvil::server::test {
namespace {

struct BadRequest {
  std::string name;
  std::string path;
  std::string body;
  int status = 400;
  std::string param;  // "" -> null
  std::string code;   // "" -> not checked
  std::string method = "POST";
  std::string content_type = "application/json";
  long content_length = -1;  // -1: the body's size
};

constexpr const char* kC = "/v1/completions";
constexpr const char* kChat = "/v1/chat/completions";

// A valid completions body with `fields` merged in.
std::string completion(const json& fields) {
  json b{{"prompt", {1, 2, 3}}, {"max_tokens", 4}};
  for (auto& [k, v] : fields.items()) b[k] = v;
  return b.dump();
}
// A valid chat body with `fields` merged in.
std::string chat(const json& fields) {
  json b{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 4}};
  for (auto& [k, v] : fields.items()) b[k] = v;
  return b.dump();
}
std::string chat_messages(const json& messages) { return chat(json{{"messages", messages}}); }
json user(const json& content) { return json{{"role", "user"}, {"content", content}}; }

std::vector<BadRequest> corpus() {
  std::vector<BadRequest> v;
  auto add = [&v](std::string name, std::string path, std::string body, int status, std::string param,
                  std::string code = "") {
    BadRequest r;
    r.name = std::move(name);
    r.path = std::move(path);
    r.body = std::move(body);
    r.status = status;
    r.param = std::move(param);
    r.code = std::move(code);
    v.push_back(std::move(r));
  };
  const std::string kJ = "invalid_json";
  // Bad JSON.
  add("unterminated object", kC, "{", 400, "", kJ);
  add("trailing comma", kC, "{\"prompt\": [1, 2], }", 400, "", kJ);
  add("single quotes", kC, "{'prompt': [1]}", 400, "", kJ);
  add("missing comma", kC, "{\"prompt\": [1] \"max_tokens\": 2}", 400, "", kJ);
  add("bare word", kC, "nul", 400, "", kJ);
  add("two objects", kC, "{\"prompt\": [1]}{\"prompt\": [2]}", 400, "", kJ);
  add("unterminated chat", kChat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]", 400, "", kJ);
  add("NaN literal", kC, "{\"prompt\": [1], \"temperature\": NaN}", 400, "", kJ);
  add("Infinity literal", kC, "{\"prompt\": [1], \"max_tokens\": Infinity}", 400, "", kJ);
  add("leading zero", kC, "{\"prompt\": [01]}", 400, "", kJ);
  add("raw control char in string", kC, std::string("{\"prompt\": \"a\x01\"}"), 400, "", kJ);
  add("comment", kC, "{\"prompt\": [1] /* hi */}", 400, "", kJ);
  add("empty body", kC, "", 400, "", kJ);
  // Not an object.
  add("null body", kC, "null", 400, "");
  add("number body", kC, "42", 400, "");
  add("array body", kC, "[{\"prompt\": [1]}]", 400, "");
  add("bool body", kChat, "true", 400, "");
  add("nesting 65 deep", kC, "{\"x\": " + std::string(64, '[') + std::string(64, ']') + "}", 400, "");
  // Invalid UTF-8 or unpaired surrogates inside strings.
  add("overlong encoding", kC, "{\"prompt\": \"\xc0\xaf\"}", 400, "", kJ);
  add("encoded surrogate", kChat, "{\"messages\": [{\"role\": \"user\", \"content\": \"\xed\xa0\x80\"}]}", 400, "", kJ);
  add("invalid byte in role", kChat, "{\"messages\": [{\"role\": \"us\xff" "er\", \"content\": \"x\"}]}", 400, "", kJ);
  add("lone low surrogate escape", kC, "{\"prompt\": \"\\udc00\"}", 400, "", kJ);
  add("invalid UTF-8 key", kC, "{\"\xfe\": 1, \"prompt\": [1]}", 400, "", kJ);
  add("beyond U+10FFFF", kChat, "{\"messages\": [{\"role\": \"user\", \"content\": \"\xf4\x90\x80\x80\"}]}", 400, "", kJ);
  add("truncated sequence", kC, "{\"stop\": \"\xe2\x82\", \"prompt\": [1]}", 400, "", kJ);
  // Huge numbers.
  add("max_tokens 1e400", kC, "{\"prompt\": [1], \"max_tokens\": 1e400}", 400, "", kJ);
  add("temperature -1e400", kC, "{\"prompt\": [1], \"temperature\": -1e400}", 400, "", kJ);
  add("max_tokens 30 digits", kC, "{\"prompt\": [1], \"max_tokens\": 123456789012345678901234567890}", 400, "max_tokens");
  add("max_tokens uint64 max", kC, "{\"prompt\": [1], \"max_tokens\": 18446744073709551615}", 400, "max_tokens");
  add("max_tokens 2^31", kC, completion({{"max_tokens", 2147483648LL}}), 400, "max_tokens");
  add("n 2^32 + 1", kC, completion({{"n", 4294967297LL}}), 400, "n");
  add("seed 2^64", kC, "{\"prompt\": [1], \"seed\": 18446744073709551616}", 400, "seed");
  add("top_k 1e19", kC, completion({{"top_k", 1e19}}), 400, "top_k");
  add("logprobs 1e10", kC, completion({{"logprobs", 1e10}}), 400, "logprobs");
  add("token id 1e20", kC, "{\"prompt\": [1e20]}", 400, "prompt");
  add("token id 2^31", kC, "{\"prompt\": [2147483648]}", 400, "prompt");
  add("stop token id 2^40", kC, completion({{"stop_token_ids", {1099511627776LL}}}), 400, "stop_token_ids");
  // Negative values.
  add("max_tokens -1", kC, completion({{"max_tokens", -1}}), 400, "max_tokens");
  add("n -1", kC, completion({{"n", -1}}), 400, "n");
  add("temperature -0.5", kC, completion({{"temperature", -0.5}}), 400, "temperature");
  add("top_p -1", kC, completion({{"top_p", -1}}), 400, "top_p");
  add("min_tokens -1", kC, completion({{"min_tokens", -1}}), 400, "min_tokens");
  add("logprobs -1", kC, completion({{"logprobs", -1}}), 400, "logprobs");
  add("top_logprobs -1", kChat, chat({{"logprobs", true}, {"top_logprobs", -1}}), 400, "top_logprobs");
  add("token id -5", kC, completion({{"prompt", {1, -5}}}), 400, "prompt");
  add("stop token id -1", kC, completion({{"stop_token_ids", {-1}}}), 400, "stop_token_ids");
  add("presence_penalty -2.5", kC, completion({{"presence_penalty", -2.5}}), 400, "presence_penalty");
  add("repetition_penalty -1", kC, completion({{"repetition_penalty", -1}}), 400, "repetition_penalty");
  add("max_completion_tokens -3", kChat, chat({{"max_completion_tokens", -3}}), 400, "max_completion_tokens");
  // Wrong types.
  add("prompt object", kC, completion({{"prompt", {{"text", "hi"}}}}), 400, "prompt");
  add("prompt bool", kC, completion({{"prompt", true}}), 400, "prompt");
  add("n string", kC, completion({{"n", "2"}}), 400, "n");
  add("temperature array", kC, completion({{"temperature", {0.5}}}), 400, "temperature");
  add("stream int", kC, completion({{"stream", 1}}), 400, "stream");
  add("stop object", kC, completion({{"stop", {{"a", 1}}}}), 400, "stop");
  add("model array", kC, completion({{"model", {"tiny"}}}), 400, "model");
  add("messages string", kChat, chat({{"messages", "hi"}}), 400, "messages");
  add("messages object", kChat, chat({{"messages", user("hi")}}), 400, "messages");
  add("chat logprobs int", kChat, chat({{"logprobs", 2}}), 400, "logprobs");
  add("content number", kChat, chat_messages({user(5)}), 400, "messages");
  add("content image part", kChat, chat_messages({user({{{"type", "image_url"}, {"image_url", {{"url", "x"}}}}})}), 400,
      "messages");
  add("text part without text", kChat, chat_messages({user({{{"type", "text"}}})}), 400, "messages");
  add("tools string", kChat, chat({{"tools", "x"}}), 400, "tools");
  add("chat_template_kwargs list", kChat, chat({{"chat_template_kwargs", json::array()}}), 400, "chat_template_kwargs");
  add("response_format json", kChat, chat({{"response_format", {{"type", "json_object"}}}}), 400, "response_format");
  add("add_generation_prompt string", kChat, chat({{"add_generation_prompt", "yes"}}), 400, "add_generation_prompt");
  add("stream_options string", kChat, chat({{"stream", true}, {"stream_options", "usage"}}), 400, "stream_options");
  // Empty messages, unknown roles, malformed messages.
  add("messages empty", kChat, chat_messages(json::array()), 400, "messages");
  add("message empty object", kChat, chat_messages({json::object()}), 400, "messages");
  add("unknown role", kChat, chat_messages({{{"role", "wizard"}, {"content", "hi"}}}), 400, "messages");
  add("role wrong case", kChat, chat_messages({{{"role", "User"}, {"content", "hi"}}}), 400, "messages");
  add("role number", kChat, chat_messages({{{"role", 1}, {"content", "hi"}}}), 400, "messages");
  add("user without content", kChat, chat_messages({{{"role", "user"}}}), 400, "messages");
  add("message null", kChat, chat_messages({nullptr}), 400, "messages");
  add("message string", kChat, chat_messages({"hi"}), 400, "messages");
  add("prompt empty list", kC, completion({{"prompt", json::array()}}), 400, "prompt");
  add("prompt empty inner list", kC, completion({{"prompt", {json::array()}}}), 400, "prompt");
  add("prompt mixed kinds", kC, completion({{"prompt", {{1}, "a"}}}), 400, "prompt");
  // Missing fields.
  add("completions {}", kC, "{}", 400, "prompt");
  add("prompt null", kC, "{\"prompt\": null, \"max_tokens\": 2}", 400, "prompt");
  add("chat {}", kChat, "{}", 400, "messages");
  add("chat model only", kChat, "{\"model\": \"tiny\"}", 400, "messages");
  add("tokenize {}", "/tokenize", "{}", 400, "prompt");
  add("tokenize number prompt", "/tokenize", "{\"prompt\": 5}", 400, "prompt");
  add("detokenize {}", "/detokenize", "{}", 400, "tokens");
  add("detokenize negative id", "/detokenize", "{\"tokens\": [1, -1]}", 400, "tokens");
  // Unknown model.
  add("unknown model", kC, completion({{"model", "gpt-4o"}}), 404, "model", "model_not_found");
  add("unknown model chat", kChat, chat({{"model", ""}}), 404, "model", "model_not_found");
  // Context length.
  add("prompt fills context", kC, completion({{"prompt", std::vector<int32_t>(128, 5)}}), 400, "prompt",
      "context_length_exceeded");
  add("max_tokens past context", kC, completion({{"max_tokens", 200}}), 400, "max_tokens", "context_length_exceeded");
  // Conflicting or unsupported options.
  add("echo with logprobs", kC, completion({{"echo", true}, {"logprobs", 1}}), 400, "echo");
  add("top_logprobs without logprobs", kChat, chat({{"top_logprobs", 2}}), 400, "top_logprobs");
  add("stream_options without stream", kC, completion({{"stream_options", {{"include_usage", true}}}}), 400,
      "stream_options");
  add("best_of != n", kC, completion({{"best_of", 2}}), 400, "best_of");
  add("min_tokens > max_tokens", kC, completion({{"min_tokens", 9}}), 400, "min_tokens");
  add("logit_bias", kC, completion({{"logit_bias", {{"1", 5}}}}), 400, "logit_bias");
  add("17 stop strings", kC, completion({{"stop", std::vector<std::string>(17, "x")}}), 400, "stop");
  add("stop string 513 bytes", kC, completion({{"stop", std::string(513, 'a')}}), 400, "stop");
  add("n 17", kC, completion({{"n", 17}}), 400, "n");
  add("prompts x n > 256", kC, completion({{"prompt", std::vector<std::vector<int32_t>>(20, {1})}, {"n", 16}}), 400, "n");
  add("65 prompts", kC, completion({{"prompt", std::vector<std::vector<int32_t>>(65, {1})}}), 400, "prompt");

  // Wrong content types: the body is read as JSON whatever the header says (curl -d sends a form
  // type), so a form or multipart body is invalid JSON.
  BadRequest form;
  form.name = "form-urlencoded body";
  form.path = kC;
  form.body = "prompt=hi&max_tokens=2";
  form.content_type = "application/x-www-form-urlencoded";
  form.code = kJ;
  v.push_back(form);
  BadRequest multipart = form;
  multipart.name = "multipart body";
  multipart.content_type = "multipart/form-data; boundary=xx";
  multipart.body = "--xx\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi\r\n--xx--\r\n";
  multipart.code = "";
  v.push_back(multipart);
  BadRequest text = form;
  text.name = "text/plain body";
  text.content_type = "text/plain";
  text.body = "Say hello";
  v.push_back(text);
  BadRequest no_type = form;
  no_type.name = "no content type, binary body";
  no_type.content_type = "";
  no_type.body = std::string("\x00\x01\x02\xff", 4);
  v.push_back(no_type);
  // Oversize bodies (the fixture's limit is 64 KiB).
  BadRequest big;
  big.name = "oversize completions body";
  big.path = kC;
  big.body = completion({{"prompt", std::vector<int32_t>(40000, 1)}});
  big.status = 413;
  v.push_back(big);
  BadRequest big_chat = big;
  big_chat.name = "oversize chat body";
  big_chat.path = kChat;
  big_chat.body = chat_messages({user(std::string(70000, 'a'))});
  v.push_back(big_chat);
  // Refused from the header alone, with nothing buffered; httplib answers once its 5 s read
  // timeout ends the wait for the promised bytes (the slowest entry).
  BadRequest lying = big;
  lying.name = "Content-Length claims 1 GiB";
  lying.body = completion({});
  lying.content_length = 1L << 30;
  v.push_back(lying);
  // Unknown routes and wrong methods.
  BadRequest get_chat;
  get_chat.name = "GET chat";
  get_chat.method = "GET";
  get_chat.path = kChat;
  get_chat.body = "";
  get_chat.content_type = "";
  get_chat.status = 404;
  get_chat.code = "not_found";
  v.push_back(get_chat);
  BadRequest put = get_chat;
  put.name = "PUT completions";
  put.method = "PUT";
  put.path = kC;
  put.body = completion({});
  put.content_type = "application/json";
  v.push_back(put);
  BadRequest engines = put;
  engines.name = "POST unknown route";
  engines.method = "POST";
  engines.path = "/v1/engines/tiny/completions";
  v.push_back(engines);
  return v;
}

TEST(InvalidCorpus, EveryBadRequestGets4xxWithAnOpenAIError) {
  ChatModelDir dir;
  auto model = RealModel::load(dir.dir.string());
  ASSERT_NE(model, nullptr);
  ASSERT_NE(model->assets.tokenizer, nullptr);
  ASSERT_NE(model->assets.chat_template, nullptr);
  ServingModel serving = model->serving("tiny");
  ServerOptions o;
  o.max_body_bytes = 64 << 10;
  TestServer server(&serving, o);

  const std::vector<BadRequest> requests = corpus();
  ASSERT_GE(requests.size(), 50u);
  for (const BadRequest& r : requests) {
    SCOPED_TRACE(r.name + ": " + r.method + " " + r.path + " " + r.body.substr(0, 120));
    RawResponse resp = raw_exchange(
        server.port(), http_request_bytes(r.method, r.path, r.body, r.content_type, r.content_length));
    ASSERT_TRUE(resp.complete) << "no complete response (status " << resp.status << ")";
    EXPECT_EQ(resp.status, r.status) << resp.body;
    EXPECT_GE(resp.status, 400);
    EXPECT_LT(resp.status, 500);
    EXPECT_EQ(resp.headers["content-type"], "application/json");
    const json body = json::parse(resp.body, nullptr, false);
    ASSERT_EQ(openai_error_shape_problem(body), "") << resp.body;
    const json& e = body["error"];
    if (r.param.empty()) {
      EXPECT_TRUE(e["param"].is_null()) << resp.body;
    } else {
      EXPECT_EQ(e["param"], r.param) << resp.body;
    }
    if (!r.code.empty()) {
      EXPECT_EQ(e["code"], r.code) << resp.body;
    }
    if (resp.status == 400) {
      EXPECT_EQ(e["type"], "invalid_request_error") << resp.body;
    }
  }

  // Nothing above broke the server: healthy, idle, all KV blocks free, no 5xx answered, and a
  // normal request reproduces the golden greedy tokens.
  EXPECT_EQ(server.get("/health").status, 200);
  ExecutorStats st = model->executor->stats();
  EXPECT_EQ(st.num_running + st.num_waiting, 0);
  EXPECT_EQ(st.kv_blocks_free, st.kv_blocks_total);
  auto metrics = parse_prometheus(server.get("/metrics").body);
  double answered_4xx = 0;
  for (const auto& [series, value] : metrics) {
    if (series.rfind("anvil_http_responses_total{", 0) != 0) continue;
    EXPECT_EQ(series.find("code=\"5"), std::string::npos) << series << " " << value;
    if (series.find("code=\"4") != std::string::npos) answered_4xx += value;
  }
  EXPECT_GE(answered_4xx, static_cast<double>(requests.size()));
  for (size_t p = 0; p < 3; ++p) {
    json good{{"model", "tiny"}, {"prompt", golden_prompt("llama3_gqa", p)}, {"max_tokens", 32}, {"temperature", 0},
              {"ignore_eos", true}, {"return_token_ids", true}};
    RawResponse ok = raw_exchange(server.port(), http_request_bytes("POST", kC, good.dump()));
    ASSERT_EQ(ok.status, 200) << ok.body;
    EXPECT_EQ(json::parse(ok.body)["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
              golden_greedy("llama3_gqa", p));
  }
}

}  // namespace
}  // namespace anvil::server::test
