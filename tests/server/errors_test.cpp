// Client mistakes get OpenAI's error JSON with the right status and param, never a 500, and a
// hostile request disturbs nothing: after each batch of bad requests a normal request still
// reproduces the golden greedy tokens. Real Executor on tests/golden/llama3_gqa (no tokenizer).
#include "server_test_util.h"

namespace anvil::server::test {
namespace {

class Errors : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = RealModel::load(source_path("tests/golden/llama3_gqa"));
    ASSERT_NE(model_, nullptr);
    serving_ = model_->serving("tiny");
    server_ = std::make_unique<TestServer>(&serving_);
  }
  void TearDown() override {
    // Nothing a bad request did may leave work behind or break the next good request.
    json body{{"prompt", golden_prompt("llama3_gqa", 1)}, {"max_tokens", 32}, {"temperature", 0},
              {"ignore_eos", true}, {"return_token_ids", true}};
    HttpResult r = server_->post("/v1/completions", body);
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status == 200) {
      EXPECT_EQ(r.body_json()["choices"][0]["token_ids"].get<std::vector<int32_t>>(), golden_greedy("llama3_gqa", 1));
    }
    ExecutorStats st = model_->executor->stats();
    EXPECT_EQ(st.num_running + st.num_waiting, 0);
    EXPECT_EQ(st.kv_blocks_free, st.kv_blocks_total);
    server_.reset();
    model_.reset();
  }

  // Posts `body` and checks the status, OpenAI's error shape and the param named.
  void expect_error(const std::string& path, const std::string& body, int status, const std::string& param,
                    const std::string& code = "") {
    HttpResult r = server_->post(path, body);
    SCOPED_TRACE(body.substr(0, 200));
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.content_type, "application/json");
    json j = r.body_json();
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
    const json& e = j["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty());
    EXPECT_TRUE(e.contains("type") && e.contains("param") && e.contains("code"));
    if (status == 400) {
      EXPECT_EQ(e["type"], "invalid_request_error");
    }
    if (param.empty()) {
      EXPECT_TRUE(e["param"].is_null()) << r.body;
    } else {
      EXPECT_EQ(e["param"], param) << r.body;
    }
    if (!code.empty()) {
      EXPECT_EQ(e["code"], code) << r.body;
    }
  }
  void expect_param_error(const json& fields, const std::string& param, const std::string& code = "") {
    json body{{"prompt", {1, 2, 3}}, {"max_tokens", 4}};
    for (auto& [k, v] : fields.items()) body[k] = v;
    expect_error("/v1/completions", body.dump(), 400, param, code);
  }

  std::unique_ptr<RealModel> model_;
  ServingModel serving_;
  std::unique_ptr<TestServer> server_;
};

TEST_F(Errors, MalformedBodies) {
  expect_error("/v1/completions", "{\"prompt\": [1, 2", 400, "", "invalid_json");
  expect_error("/v1/completions", "", 400, "", "invalid_json");
  expect_error("/v1/completions", "[1, 2, 3]", 400, "");
  expect_error("/v1/completions", "\"just a string\"", 400, "");
  // Invalid UTF-8 inside a JSON string, and an unpaired surrogate escape.
  expect_error("/v1/completions", "{\"prompt\": \"abc\xff\xfe\", \"max_tokens\": 2}", 400, "", "invalid_json");
  expect_error("/v1/completions", "{\"prompt\": \"\\ud800\", \"max_tokens\": 2}", 400, "", "invalid_json");
  expect_error("/v1/completions", "{\"user\": \"\xc3\x28\", \"prompt\": [1]}", 400, "", "invalid_json");
  // Nesting bombs are refused before parsing.
  expect_error("/v1/completions", std::string(100000, '[') + std::string(100000, ']'), 400, "");
  expect_error("/v1/chat/completions", "{}garbage", 400, "", "invalid_json");
}

TEST_F(Errors, WrongTypesAndRanges) {
  expect_param_error({{"temperature", "hot"}}, "temperature");
  expect_param_error({{"temperature", 2.5}}, "temperature");
  expect_param_error({{"temperature", -0.1}}, "temperature");
  expect_param_error({{"top_p", 0}}, "top_p");
  expect_param_error({{"top_p", 1.5}}, "top_p");
  expect_param_error({{"top_k", -2}}, "top_k");
  expect_param_error({{"top_k", 1.5}}, "top_k");
  expect_param_error({{"min_p", 2}}, "min_p");
  expect_param_error({{"presence_penalty", 3}}, "presence_penalty");
  expect_param_error({{"frequency_penalty", -2.5}}, "frequency_penalty");
  expect_param_error({{"repetition_penalty", 0}}, "repetition_penalty");
  expect_param_error({{"max_tokens", 0}}, "max_tokens");
  expect_param_error({{"max_tokens", -5}}, "max_tokens");
  expect_param_error({{"max_tokens", 2.5}}, "max_tokens");
  expect_param_error({{"max_tokens", true}}, "max_tokens");
  expect_param_error({{"max_tokens", "8"}}, "max_tokens");
  expect_param_error({{"max_tokens", 1e300}}, "max_tokens");
  expect_param_error({{"n", 0}}, "n");
  expect_param_error({{"n", 17}}, "n");
  expect_param_error({{"best_of", 3}}, "best_of");
  expect_param_error({{"seed", "x"}}, "seed");
  expect_param_error({{"seed", 1e30}}, "seed");
  expect_param_error({{"logprobs", 21}}, "logprobs");
  expect_param_error({{"logprobs", true}}, "logprobs");
  expect_param_error({{"min_tokens", 5}}, "min_tokens");  // > max_tokens (4)
  expect_param_error({{"ignore_eos", 1}}, "ignore_eos");
  expect_param_error({{"stream", "yes"}}, "stream");
  expect_param_error({{"echo", 1}}, "echo");
  expect_param_error({{"echo", true}, {"logprobs", 1}}, "echo");
  expect_param_error({{"stream_options", {{"include_usage", true}}}}, "stream_options");
  expect_param_error({{"stream", true}, {"stream_options", {{"include_usage", "yes"}}}}, "stream_options");
  expect_param_error({{"stop_token_ids", {1, 384}}}, "stop_token_ids");
  expect_param_error({{"stop_token_ids", 5}}, "stop_token_ids");
  expect_param_error({{"stop_token_ids", {"a"}}}, "stop_token_ids");
  expect_param_error({{"user", 5}}, "user");
  expect_param_error({{"logit_bias", {{"5", 10}}}}, "logit_bias");
  expect_param_error({{"suffix", "tail"}}, "suffix");
  expect_param_error({{"model", 7}}, "model");
}

TEST_F(Errors, StopLimits) {
  std::vector<std::string> many(17, "x");
  expect_param_error({{"stop", many}}, "stop");
  expect_param_error({{"stop", 5}}, "stop");
  expect_param_error({{"stop", {"a", 1}}}, "stop");
  expect_param_error({{"stop", std::string(600, 'a')}}, "stop");
  // Stop strings need a tokenizer to match text; this model has none.
  expect_param_error({{"stop", "a"}}, "stop");
}

TEST_F(Errors, Prompts) {
  expect_error("/v1/completions", json{{"max_tokens", 4}}.dump(), 400, "prompt");
  expect_param_error({{"prompt", json::array()}}, "prompt");
  expect_param_error({{"prompt", 5}}, "prompt");
  expect_param_error({{"prompt", {1, 384}}}, "prompt");
  expect_param_error({{"prompt", {1, -1}}}, "prompt");
  expect_param_error({{"prompt", {1, 2.5}}}, "prompt");
  expect_param_error({{"prompt", {1, "a"}}}, "prompt");
  expect_param_error({{"prompt", {{1, 2}, 3}}}, "prompt");
  expect_param_error({{"prompt", {{1, 2}, json::array()}}}, "prompt");
  expect_param_error({{"prompt", {{1, 2}, {1, 99999999999}}}}, "prompt");
  // Text needs a tokenizer.
  expect_param_error({{"prompt", "hello"}}, "prompt");
  expect_param_error({{"prompt", {"hello", "world"}}}, "prompt");
  std::vector<std::vector<int32_t>> batch(65, std::vector<int32_t>{1});
  expect_param_error({{"prompt", batch}}, "prompt");
  std::vector<std::vector<int32_t>> big(20, std::vector<int32_t>{1});
  expect_param_error({{"prompt", big}, {"n", 16}}, "n");  // 320 sequences > 256
}

TEST_F(Errors, ContextLength) {
  std::vector<int32_t> full(128, 5), long_prompt(100, 5);
  expect_param_error({{"prompt", full}}, "prompt", "context_length_exceeded");
  expect_param_error({{"prompt", long_prompt}, {"max_tokens", 29}}, "max_tokens", "context_length_exceeded");
  // Without max_tokens, completions default to 16 tokens or what the context has left.
  HttpResult d = server_->post("/v1/completions", json{{"prompt", std::vector<int32_t>(120, 5)}, {"ignore_eos", true}});
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.body_json()["usage"]["completion_tokens"], 8);
  // Exactly filling the context is fine.
  json ok{{"prompt", long_prompt}, {"max_tokens", 28}, {"ignore_eos", true}, {"temperature", 0}};
  HttpResult r = server_->post("/v1/completions", ok);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json()["usage"]["completion_tokens"], 28);
}

TEST_F(Errors, ModelsRoutesAndChatWithoutTokenizer) {
  expect_error("/v1/completions", json{{"model", "gpt-4"}, {"prompt", {1}}}.dump(), 404, "model", "model_not_found");
  expect_error("/v1/nothing", "{}", 404, "", "not_found");
  HttpResult get = server_->get("/v1/completions");
  EXPECT_EQ(get.status, 404);
  EXPECT_TRUE(get.body_json()["error"].is_object());
  expect_error("/v1/chat/completions",
               json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}}.dump(), 400, "messages");
  expect_error("/tokenize", json{{"prompt", "hi"}}.dump(), 400, "");
  // Unknown fields are ignored.
  json body{{"prompt", {1, 2}}, {"max_tokens", 2}, {"frobnicate", {{"x", 1}}}, {"tools", 3}};
  EXPECT_EQ(server_->post("/v1/completions", body).status, 200);
}

TEST(ErrorsAuth, ApiKeyAndBodyLimit) {
  auto model = RealModel::load(source_path("tests/golden/llama3_gqa"));
  ASSERT_NE(model, nullptr);
  ServingModel serving = model->serving("tiny");
  ServerOptions o;
  o.api_key = "sekret";
  o.max_body_bytes = 4096;
  TestServer server(&serving, o);
  const json body{{"prompt", {1, 2}}, {"max_tokens", 2}};
  HttpResult none = server.post("/v1/completions", body);
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.body_json()["error"]["code"], "invalid_api_key");
  EXPECT_EQ(server.post("/v1/completions", body, {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(server.post("/v1/completions", body, {{"Authorization", "Bearer sekret2"}}).status, 401);
  EXPECT_EQ(server.post("/v1/completions", body, {{"Authorization", "sekret"}}).status, 401);
  EXPECT_EQ(server.get("/v1/models").status, 401);
  EXPECT_EQ(server.post("/v1/completions", body, {{"Authorization", "Bearer sekret"}}).status, 200);
  EXPECT_EQ(server.get("/v1/models", {{"Authorization", "Bearer sekret"}}).status, 200);
  // Health and metrics stay open for probes and scrapers.
  EXPECT_EQ(server.get("/health").status, 200);
  EXPECT_EQ(server.get("/metrics").status, 200);
  // A body over the limit is refused whole.
  json big{{"prompt", std::vector<int32_t>(3000, 1)}};
  HttpResult r = server.post("/v1/completions", big, {{"Authorization", "Bearer sekret"}});
  EXPECT_EQ(r.status, 413);
  EXPECT_TRUE(r.body_json()["error"].is_object()) << r.body;
}

}  // namespace
}  // namespace anvil::server::test
