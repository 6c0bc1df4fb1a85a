// /v1/chat/completions, /tokenize, /detokenize and text prompts with a real tokenizer and chat
// template: tests/golden/llama3_gqa plus tests/server/data/chat_model (a byte-level BPE that
// covers the model's 384 ids). expected.json holds the rendered prompt's ids and HF transformers'
// greedy continuation and text (tools/server/make_chat_fixture.py).
#include "server_test_util.h"

namespace anvil::server::test {
namespace {

class Chat : public ::testing::Test {
 protected:
  void SetUp() override {
    expected_ = read_json_file(source_path("tests/server/data/chat_model/expected.json"));
    model_ = RealModel::load(dir_.dir.string());
    ASSERT_NE(model_, nullptr);
    ASSERT_NE(model_->assets.tokenizer, nullptr);
    ASSERT_NE(model_->assets.chat_template, nullptr);
    serving_ = model_->serving("chat-tiny");
    server_ = std::make_unique<TestServer>(&serving_);
  }
  void TearDown() override {
    server_.reset();
    model_.reset();
  }
  json chat_body() const {
    return json{{"model", "chat-tiny"},
                {"messages", expected_["messages"]},
                {"max_tokens", expected_["max_tokens"]},
                {"temperature", 0},
                {"ignore_eos", true},
                {"return_token_ids", true}};
  }
  std::vector<int32_t> greedy() const { return expected_["greedy_ids"].get<std::vector<int32_t>>(); }

  ChatModelDir dir_;
  json expected_;
  std::unique_ptr<RealModel> model_;
  ServingModel serving_;
  std::unique_ptr<TestServer> server_;
};

TEST_F(Chat, TokenizeMatchesHf) {
  HttpResult r = server_->post("/tokenize", json{{"messages", expected_["messages"]}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json()["tokens"], expected_["prompt_ids"]);
  EXPECT_EQ(r.body_json()["count"], expected_["prompt_ids"].size());
  EXPECT_EQ(r.body_json()["max_model_len"], 128);
  HttpResult t = server_->post("/tokenize", json{{"prompt", expected_["rendered"]}, {"add_special_tokens", false}});
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(t.body_json()["tokens"], expected_["prompt_ids"]);
  HttpResult d = server_->post("/detokenize", json{{"tokens", expected_["prompt_ids"]}});
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.body_json()["prompt"], expected_["rendered"]);
  EXPECT_EQ(server_->post("/detokenize", json{{"tokens", {1, 999}}}).status, 400);
}

TEST_F(Chat, WholeResponseMatchesHf) {
  HttpResult r = server_->post("/v1/chat/completions", chat_body());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.body_json();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["message"]["role"], "assistant");
  EXPECT_EQ(c["message"]["content"], expected_["greedy_text"]);
  EXPECT_EQ(c["token_ids"].get<std::vector<int32_t>>(), greedy());
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], expected_["prompt_ids"].size());
  EXPECT_EQ(j["usage"]["completion_tokens"], greedy().size());
}

TEST_F(Chat, StreamMatchesHf) {
  json body = chat_body();
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  HttpResult r = server_->post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  auto events = sse_events(r.body);
  ASSERT_GE(events.size(), 4u);
  ASSERT_EQ(events.back(), "[DONE]");
  json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  std::string text;
  std::vector<int32_t> ids;
  for (size_t e = 1; e + 3 < events.size(); ++e) {
    json c = json::parse(events[e]);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["id"], first["id"]);
    EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
    EXPECT_FALSE(c["choices"][0]["delta"].contains("role"));
    text += c["choices"][0]["delta"].value("content", "");
    for (int32_t t : c["choices"][0]["token_ids"]) ids.push_back(t);
  }
  json fin = json::parse(events[events.size() - 3]);
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(fin["choices"][0]["delta"].empty()) << fin.dump();
  EXPECT_EQ(text, expected_["greedy_text"]);
  EXPECT_EQ(ids, greedy());
  json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], greedy().size());
}

TEST_F(Chat, StopStringAcrossTokens) {
  const std::string stop = expected_["stop"];
  const std::string want = expected_["stop_text"];
  // The stop string spans two tokens; the text ends right before it, and fewer tokens are spent.
  for (bool stream : {false, true}) {
    json body = chat_body();
    body["stop"] = {"never-appears", stop};
    body["stream"] = stream;
    HttpResult r = server_->post("/v1/chat/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    std::string text, reason;
    size_t num_ids = 0;
    if (stream) {
      auto events = sse_events(r.body);
      ASSERT_EQ(events.back(), "[DONE]");
      for (size_t e = 0; e + 1 < events.size(); ++e) {
        json c = json::parse(events[e]);
        text += c["choices"][0]["delta"].value("content", "");
        num_ids += c["choices"][0]["token_ids"].size();
        if (!c["choices"][0]["finish_reason"].is_null()) reason = c["choices"][0]["finish_reason"];
      }
    } else {
      json c = r.body_json()["choices"][0];
      text = c["message"]["content"];
      reason = c["finish_reason"];
      num_ids = c["token_ids"].size();
      EXPECT_EQ(r.body_json()["usage"]["completion_tokens"], num_ids);
    }
    EXPECT_EQ(text, want) << "stream " << stream;
    EXPECT_EQ(reason, "stop");
    EXPECT_LT(num_ids, greedy().size());
    // The ids reported are a prefix of the greedy run, ending with the token that completed the stop.
    EXPECT_GE(num_ids, 2u);
  }
  ExecutorStats st = model_->executor->stats();
  EXPECT_TRUE(eventually([&] {
    st = model_->executor->stats();
    return st.num_running + st.num_waiting == 0;
  }));
}

TEST_F(Chat, StreamSendsNoEmptyDeltas) {
  json body = chat_body();
  body.erase("return_token_ids");
  body["stream"] = true;
  body["stop"] = expected_["stop"];
  HttpResult r = server_->post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  auto events = sse_events(r.body);
  ASSERT_GE(events.size(), 3u);
  std::string text;
  for (size_t e = 1; e + 2 < events.size(); ++e) {  // between the role chunk and the finish chunk
    json c = json::parse(events[e]);
    EXPECT_FALSE(c["choices"][0].contains("token_ids"));
    const std::string piece = c["choices"][0]["delta"].value("content", "");
    EXPECT_FALSE(piece.empty()) << events[e];
    text += piece;
  }
  EXPECT_EQ(text, expected_["stop_text"]);
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "stop");
}

TEST_F(Chat, TextPromptsAndEcho) {
  json body{{"prompt", expected_["rendered"]}, {"max_tokens", expected_["max_tokens"]}, {"temperature", 0},
            {"ignore_eos", true}, {"return_token_ids", true}, {"add_special_tokens", false}};
  HttpResult r = server_->post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json()["choices"][0]["text"], expected_["greedy_text"]);
  EXPECT_EQ(r.body_json()["choices"][0]["token_ids"].get<std::vector<int32_t>>(), greedy());

  body["echo"] = true;
  body["max_tokens"] = 2;
  HttpResult e = server_->post("/v1/completions", body);
  ASSERT_EQ(e.status, 200) << e.body;
  const std::string text = e.body_json()["choices"][0]["text"];
  EXPECT_EQ(text.rfind(expected_["rendered"].get<std::string>(), 0), 0u) << text;
  // Token-id prompts echo their decoded text.
  json ids_body{{"prompt", expected_["prompt_ids"]}, {"max_tokens", 1}, {"echo", true}};
  HttpResult ie = server_->post("/v1/completions", ids_body);
  ASSERT_EQ(ie.status, 200);
  EXPECT_EQ(ie.body_json()["choices"][0]["text"].get<std::string>().rfind(expected_["rendered"].get<std::string>(), 0), 0u);
}

TEST_F(Chat, Logprobs) {
  json body = chat_body();
  body["logprobs"] = true;
  body["top_logprobs"] = 2;
  HttpResult r = server_->post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json content = r.body_json()["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), greedy().size());
  for (size_t k = 0; k < content.size(); ++k) {
    const json& e = content[k];
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    ASSERT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_NEAR(e["top_logprobs"][0]["logprob"].get<double>(), e["logprob"].get<double>(), 1e-5) << "greedy = top 1";
    std::string bytes;
    for (int b : e["bytes"]) bytes += static_cast<char>(b);
    EXPECT_EQ(bytes, e["token"].get<std::string>());
  }
  body["logprobs"] = false;
  HttpResult bad = server_->post("/v1/chat/completions", body);
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.body_json()["error"]["param"], "top_logprobs");
}

TEST_F(Chat, BadMessages) {
  auto expect_bad = [&](const json& messages, const std::string& param = "messages") {
    json body = chat_body();
    body["messages"] = messages;
    HttpResult r = server_->post("/v1/chat/completions", body);
    EXPECT_EQ(r.status, 400) << messages.dump() << " -> " << r.body;
    EXPECT_EQ(r.body_json()["error"]["param"], param) << r.body;
  };
  expect_bad(json::array());
  expect_bad("hello");
  expect_bad({1, 2});
  expect_bad({{{"role", "wizard"}, {"content", "hi"}}});
  expect_bad({{{"content", "hi"}}});
  expect_bad({{{"role", "user"}}});
  expect_bad({{{"role", "user"}, {"content", 5}}});
  expect_bad({{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", {{"url", "x"}}}}}}}});
  expect_bad({{{"role", "user"}, {"content", {{{"type", "text"}}}}}});
  // Text parts are joined and accepted.
  json body = chat_body();
  body["messages"] = {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi"}}, {{"type", "text"}, {"text", "yo"}}}}}};
  body["max_tokens"] = 2;
  EXPECT_EQ(server_->post("/v1/chat/completions", body).status, 200);
  // The rendered prompt must fit the context.
  json longmsg = chat_body();
  longmsg["messages"] = {{{"role", "user"}, {"content", std::string(300, 'q')}}};
  HttpResult r = server_->post("/v1/chat/completions", longmsg);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body_json()["error"]["code"], "context_length_exceeded");
  // max_completion_tokens wins over max_tokens and is bounded by the context too.
  json mct = chat_body();
  mct["max_completion_tokens"] = 3;
  HttpResult m = server_->post("/v1/chat/completions", mct);
  ASSERT_EQ(m.status, 200) << m.body;
  EXPECT_EQ(m.body_json()["usage"]["completion_tokens"], 3);
  mct["max_completion_tokens"] = 1000;
  HttpResult big = server_->post("/v1/chat/completions", mct);
  EXPECT_EQ(big.status, 400);
  EXPECT_EQ(big.body_json()["error"]["param"], "max_completion_tokens");
}

TEST_F(Chat, DefaultMaxTokensFillsTheContext) {
  json body = chat_body();
  body.erase("max_tokens");
  HttpResult r = server_->post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json()["usage"]["total_tokens"], 128);
  EXPECT_EQ(r.body_json()["choices"][0]["finish_reason"], "length");
}

TEST(ChatTemplateFile, OverridesTheConfigTemplateAndKeepsItsBos) {
  ChatModelDir dir;
  const std::string file = (dir.dir / "alt.jinja").string();
  {
    std::ofstream out(file);
    out << "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}";
  }
  auto assets = load_model_assets(dir.dir.string(), file);
  ASSERT_TRUE(assets.is_ok()) << assets.status().to_string();
  ASSERT_NE(assets->chat_template, nullptr);
  EXPECT_EQ(assets->chat_template_source, file);
  auto model = RealModel::load(dir.dir.string());
  ASSERT_NE(model, nullptr);
  ServingModel serving = model->serving("m");
  serving.chat_template = assets->chat_template.get();
  TestServer server(&serving);
  HttpResult r = server.post("/tokenize", json{{"messages", {{{"role", "user"}, {"content", "hi there"}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  // bos_token comes from tokenizer_config.json ("<s>", a special token).
  EXPECT_EQ(r.body_json()["tokens"].get<std::vector<int32_t>>(),
            assets->tokenizer->encode("<s>[user]hi there", false));
  EXPECT_EQ(r.body_json()["tokens"][0], assets->tokenizer->token_to_id("<s>"));

  auto missing = load_model_assets(dir.dir.string(), (dir.dir / "nope.jinja").string());
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("--chat-template"), std::string::npos);
  {
    std::ofstream out(file);
    out << "{% for m in messages %}{{ m['content'] }";  // unterminated
  }
  auto broken = load_model_assets(dir.dir.string(), file);
  EXPECT_FALSE(broken.is_ok());
}

TEST_F(Chat, CompletionLogprobTextOffsetsCountCharacters) {
  json body{{"prompt", expected_["prompt_ids"]}, {"max_tokens", expected_["max_tokens"]}, {"temperature", 0},
            {"ignore_eos", true}, {"logprobs", 1}};
  HttpResult r = server_->post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json lp = r.body_json()["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), greedy().size());
  size_t offset = 0;
  for (size_t k = 0; k < lp["tokens"].size(); ++k) {
    EXPECT_EQ(lp["text_offset"][k], offset) << k;
    EXPECT_EQ(lp["tokens"][k], model_->assets.tokenizer->decode(std::vector<int32_t>{greedy()[k]}));
    for (unsigned char c : lp["tokens"][k].get<std::string>()) offset += (c & 0xC0) != 0x80;
  }
}

TEST(ChatNoTemplate, RefusedWithParam) {
  ChatModelDir dir;
  auto model = RealModel::load(dir.dir.string());
  ASSERT_NE(model, nullptr);
  ServingModel serving = model->serving("m");
  serving.chat_template = nullptr;
  TestServer server(&serving);
  HttpResult r = server.post("/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body_json()["error"]["param"], "messages");
  EXPECT_NE(r.body_json()["error"]["message"].get<std::string>().find("chat template"), std::string::npos);
}

}  // namespace
}  // namespace anvil::server::test
