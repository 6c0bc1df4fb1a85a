// /v1/completions end to end on the tiny golden models (CPU backend, real Executor): greedy
// token-id prompts reproduce HF transformers' golden continuations, in whole responses and in
// SSE streams; usage, n > 1 with seeds, stop_token_ids, max_tokens, logprobs, batches of prompts
// and 16 concurrent clients.
#include <chrono>
#include <future>
#include <map>
#include <thread>

#include "server_test_util.h"

namespace anvil::server::test {
namespace {

json greedy_body(const std::vector<int32_t>& prompt, int max_tokens) {
  return json{{"model", "tiny"},        {"prompt", prompt},     {"max_tokens", max_tokens},
              {"temperature", 0},       {"ignore_eos", true},   {"return_token_ids", true}};
}

std::vector<int32_t> prefix(const std::vector<int32_t>& v, size_t n) { return {v.begin(), v.begin() + n}; }

class Completions : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = RealModel::load(source_path("tests/golden/" + GetParam()));
    ASSERT_NE(model_, nullptr);
    serving_ = model_->serving("tiny");
    server_ = std::make_unique<TestServer>(&serving_);
  }
  void TearDown() override {
    server_.reset();
    model_.reset();
  }
  std::unique_ptr<RealModel> model_;
  ServingModel serving_;
  std::unique_ptr<TestServer> server_;
};

TEST_P(Completions, GreedyTokenPromptsMatchGolden) {
  for (size_t i = 0; i < 3; ++i) {
    const auto prompt = golden_prompt(GetParam(), i);
    const auto golden = golden_greedy(GetParam(), i);
    HttpResult r = server_->post("/v1/completions", greedy_body(prompt, 32));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.content_type, "application/json");
    json j = r.body_json();
    EXPECT_EQ(j["object"], "text_completion");
    EXPECT_EQ(j["model"], "tiny");
    EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
    ASSERT_EQ(j["choices"].size(), 1u);
    const json& c = j["choices"][0];
    EXPECT_EQ(c["index"], 0);
    EXPECT_EQ(c["token_ids"].get<std::vector<int32_t>>(), golden) << "prompt " << i;
    EXPECT_EQ(c["finish_reason"], "length");
    EXPECT_EQ(c["text"], "");  // no tokenizer: ids only
    EXPECT_TRUE(c["logprobs"].is_null());
    EXPECT_EQ(j["usage"]["prompt_tokens"], prompt.size());
    EXPECT_EQ(j["usage"]["completion_tokens"], 32);
    EXPECT_EQ(j["usage"]["total_tokens"], prompt.size() + 32);
  }
}

TEST_P(Completions, StreamingChunksAndUsage) {
  const auto prompt = golden_prompt(GetParam(), 1);
  const auto golden = golden_greedy(GetParam(), 1);
  json body = greedy_body(prompt, 20);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  HttpResult r = server_->post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "text/event-stream");
  auto events = sse_events(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<int32_t> ids;
  int finish_chunks = 0;
  std::string id;
  for (size_t e = 0; e + 2 < events.size(); ++e) {
    json c = json::parse(events[e]);
    EXPECT_EQ(c["object"], "text_completion");
    if (id.empty()) id = c["id"];
    EXPECT_EQ(c["id"], id) << "one id per stream";
    EXPECT_TRUE(c.contains("usage") && c["usage"].is_null()) << "include_usage puts usage: null on every chunk";
    ASSERT_EQ(c["choices"].size(), 1u);
    for (int32_t t : c["choices"][0]["token_ids"]) ids.push_back(t);
    if (!c["choices"][0]["finish_reason"].is_null()) {
      ++finish_chunks;
      EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
      EXPECT_EQ(e + 3, events.size()) << "finish_reason comes on the last content chunk";
    }
  }
  EXPECT_EQ(finish_chunks, 1);
  EXPECT_EQ(ids, prefix(golden, 20));
  json usage = json::parse(events[events.size() - 2]);
  EXPECT_EQ(usage["choices"].size(), 0u);
  EXPECT_EQ(usage["usage"]["prompt_tokens"], prompt.size());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 20);
  EXPECT_EQ(usage["usage"]["total_tokens"], prompt.size() + 20);
}

TEST_P(Completions, StreamingWithoutUsageHasNoUsageChunk) {
  json body = greedy_body(golden_prompt(GetParam(), 0), 4);
  body["stream"] = true;
  HttpResult r = server_->post("/v1/completions", body);
  ASSERT_EQ(r.status, 200);
  auto events = sse_events(r.body);
  ASSERT_EQ(events.back(), "[DONE]");
  for (size_t e = 0; e + 1 < events.size(); ++e) {
    json c = json::parse(events[e]);
    EXPECT_FALSE(c.contains("usage"));
    EXPECT_EQ(c["choices"].size(), 1u);
  }
}

TEST_P(Completions, BatchOfPromptsAndNChoices) {
  std::vector<std::vector<int32_t>> prompts = {golden_prompt(GetParam(), 0), golden_prompt(GetParam(), 2)};
  json body = greedy_body({}, 8);
  body["prompt"] = prompts;
  body["n"] = 2;
  HttpResult r = server_->post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.body_json();
  ASSERT_EQ(j["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) {
    const json& c = j["choices"][i];
    EXPECT_EQ(c["index"], i);
    const size_t golden_index = i < 2 ? 0 : 2;  // index = prompt * n + choice
    EXPECT_EQ(c["token_ids"].get<std::vector<int32_t>>(), prefix(golden_greedy(GetParam(), golden_index), 8));
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompts[0].size() + prompts[1].size());
  EXPECT_EQ(j["usage"]["completion_tokens"], 32);
}

TEST_P(Completions, SeededSamplingIsReproducibleAndChoicesDiffer) {
  json body = greedy_body(golden_prompt(GetParam(), 1), 16);
  body["temperature"] = 1.0;
  body["seed"] = 1234;
  body["n"] = 3;
  HttpResult a = server_->post("/v1/completions", body);
  HttpResult b = server_->post("/v1/completions", body);
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_EQ(b.status, 200);
  json ja = a.body_json(), jb = b.body_json();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ja["choices"][i]["token_ids"], jb["choices"][i]["token_ids"]) << i;
  EXPECT_NE(ja["choices"][0]["token_ids"], ja["choices"][1]["token_ids"]) << "choice i runs with seed + i";
  EXPECT_NE(ja["choices"][1]["token_ids"], ja["choices"][2]["token_ids"]);
  // Choice 1 of seed 1234 is choice 0 of seed 1235.
  body["seed"] = 1235;
  body["n"] = 1;
  HttpResult c = server_->post("/v1/completions", body);
  ASSERT_EQ(c.status, 200);
  EXPECT_EQ(c.body_json()["choices"][0]["token_ids"], ja["choices"][1]["token_ids"]);
}

TEST_P(Completions, StopTokenIdsAndMaxTokens) {
  const auto prompt = golden_prompt(GetParam(), 2);
  const auto golden = golden_greedy(GetParam(), 2);
  // Stop on the 6th golden token (its first occurrence): output ends with it, reason "stop".
  const int32_t stop_tok = golden[5];
  size_t first = 0;
  while (golden[first] != stop_tok) ++first;
  json body = greedy_body(prompt, 32);
  body["stop_token_ids"] = {stop_tok};
  HttpResult r = server_->post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json c = r.body_json()["choices"][0];
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_EQ(c["token_ids"].get<std::vector<int32_t>>(), prefix(golden, first + 1));
  EXPECT_EQ(r.body_json()["usage"]["completion_tokens"], first + 1);

  HttpResult m = server_->post("/v1/completions", greedy_body(prompt, 5));
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.body_json()["choices"][0]["token_ids"].get<std::vector<int32_t>>(), prefix(golden, 5));
  EXPECT_EQ(m.body_json()["choices"][0]["finish_reason"], "length");
}

TEST_P(Completions, DefaultMaxTokensIs16) {
  json body = greedy_body(golden_prompt(GetParam(), 0), 1);
  body.erase("max_tokens");
  HttpResult r = server_->post("/v1/completions", body);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body_json()["usage"]["completion_tokens"], 16);
}

TEST_P(Completions, Logprobs) {
  const auto golden = golden_greedy(GetParam(), 0);
  json body = greedy_body(golden_prompt(GetParam(), 0), 6);
  body["logprobs"] = 3;
  HttpResult r = server_->post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json lp = r.body_json()["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 6u);
  ASSERT_EQ(lp["token_logprobs"].size(), 6u);
  ASSERT_EQ(lp["top_logprobs"].size(), 6u);
  ASSERT_EQ(lp["text_offset"].size(), 6u);
  for (size_t k = 0; k < 6; ++k) {
    EXPECT_EQ(lp["tokens"][k], "token_id:" + std::to_string(golden[k]));
    const double chosen = lp["token_logprobs"][k];
    EXPECT_LE(chosen, 0.0);
    EXPECT_EQ(lp["top_logprobs"][k].size(), 3u);
    // Greedy picks the most likely token: its logprob is the best of the top 3.
    double best = -1e9;
    for (auto& [tok, v] : lp["top_logprobs"][k].items()) best = std::max(best, v.get<double>());
    EXPECT_NEAR(chosen, best, 1e-5);
    EXPECT_NEAR(lp["top_logprobs"][k]["token_id:" + std::to_string(golden[k])].get<double>(), chosen, 1e-5);
  }
}

TEST_P(Completions, SixteenConcurrentClients) {
  std::vector<std::future<HttpResult>> futures;
  for (int i = 0; i < 16; ++i) {
    json body = greedy_body(golden_prompt(GetParam(), i % 3), 8 + i);
    if (i % 2 == 1) body["stream"] = true;
    futures.push_back(std::async(std::launch::async, [this, body] { return server_->post("/v1/completions", body); }));
  }
  for (int i = 0; i < 16; ++i) {
    HttpResult r = futures[i].get();
    ASSERT_EQ(r.status, 200) << "client " << i << ": " << r.body << r.error;
    std::vector<int32_t> ids;
    if (i % 2 == 1) {
      auto events = sse_events(r.body);
      ASSERT_EQ(events.back(), "[DONE]");
      for (size_t e = 0; e + 1 < events.size(); ++e) {
        json chunk = json::parse(events[e]);
        for (int32_t t : chunk["choices"][0]["token_ids"]) ids.push_back(t);
      }
    } else {
      ids = r.body_json()["choices"][0]["token_ids"].get<std::vector<int32_t>>();
    }
    EXPECT_EQ(ids, prefix(golden_greedy(GetParam(), i % 3), 8 + i)) << "client " << i;
  }
  ExecutorStats st = model_->executor->stats();
  EXPECT_EQ(st.num_running + st.num_waiting, 0);
  EXPECT_EQ(st.kv_blocks_free, st.kv_blocks_total);
}

TEST_P(Completions, ModelsHealthAndMetrics) {
  HttpResult models = server_->get("/v1/models");
  ASSERT_EQ(models.status, 200);
  json m = models.body_json();
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "tiny");
  EXPECT_EQ(m["data"][0]["object"], "model");
  EXPECT_EQ(m["data"][0]["max_model_len"], 128);

  HttpResult health = server_->get("/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body_json()["status"], "ok");

  const auto prompt = golden_prompt(GetParam(), 2);  // 23 tokens: one full 16-token KV block
  ASSERT_EQ(server_->post("/v1/completions", greedy_body(prompt, 10)).status, 200);
  json two = greedy_body(prompt, 7);
  two["n"] = 2;
  two["stream"] = true;
  ASSERT_EQ(server_->post("/v1/completions", two).status, 200);
  ASSERT_EQ(server_->post("/v1/completions", json{{"prompt", "x"}}).status, 400);

  // httplib's logger (which counts HTTP responses) runs on the server thread after the response
  // is written, so the client can ask for /metrics before the last response is counted: poll.
  HttpResult metrics;
  std::map<std::string, double> s;
  for (int attempt = 0; attempt < 100; ++attempt) {
    metrics = server_->get("/metrics");
    ASSERT_EQ(metrics.status, 200);
    s = parse_prometheus(metrics.body);
    if (s["anvil_http_responses_total{code=\"400\"}"] >= 1 && s["anvil_http_responses_total{code=\"200\"}"] >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(metrics.content_type.rfind("text/plain", 0), 0u);
  EXPECT_EQ(s["anvil_requests_finished_total{finish_reason=\"length\"}"], 3);
  EXPECT_EQ(s["anvil_requests_finished_total{finish_reason=\"stop\"}"], 0);
  EXPECT_EQ(s["anvil_prompt_tokens_total"], 3.0 * prompt.size());
  EXPECT_EQ(s["anvil_generation_tokens_total"], 24);
  EXPECT_EQ(s["anvil_time_to_first_token_seconds_count"], 3);
  EXPECT_EQ(s["anvil_e2e_request_latency_seconds_count"], 3);
  EXPECT_EQ(s["anvil_request_queue_time_seconds_count"], 3);  // once per sequence
  EXPECT_GE(s["anvil_request_queue_time_seconds_sum"], 0);
  EXPECT_LE(s["anvil_request_queue_time_seconds_sum"], s["anvil_time_to_first_token_seconds_sum"]);
  EXPECT_EQ(s["anvil_inter_token_latency_seconds_count"], 21);  // tokens after the first of each sequence
  EXPECT_GT(s["anvil_e2e_request_latency_seconds_sum"], 0);
  EXPECT_EQ(s["anvil_num_requests_running"], 0);
  EXPECT_EQ(s["anvil_num_requests_waiting"], 0);
  EXPECT_EQ(s["anvil_kv_cache_usage_ratio"], 0);
  // The two choices of the second request find the first request's full prompt block.
  EXPECT_GE(s["anvil_prefix_cache_queries_total"], 3);
  EXPECT_GE(s["anvil_prefix_cache_hits_total"], 2);
  EXPECT_NEAR(s["anvil_prefix_cache_hit_rate"],
              s["anvil_prefix_cache_hits_total"] / s["anvil_prefix_cache_queries_total"], 1e-6);
  EXPECT_GE(s["anvil_http_responses_total{code=\"200\"}"], 3);
  EXPECT_EQ(s["anvil_http_responses_total{code=\"400\"}"], 1);
}

INSTANTIATE_TEST_SUITE_P(GoldenModels, Completions, ::testing::Values("llama3_gqa", "qwen3", "mistral"));

}  // namespace
}  // namespace anvil::server::test
