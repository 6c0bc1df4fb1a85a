// Executor tests on the tiny golden models (CPU backend): greedy outputs equal HF's under chunked
// prefill, preemption and batching; prefix cache hits; cancellation frees blocks; seeded sampling
// is batch-independent; stop conditions; logprobs; request validation.
#include "anvil/executor.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "runtime/model_loader.h"

namespace anvil {
namespace {

std::string model_dir(const std::string& name) { return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name; }

nlohmann::json golden_meta(const std::string& name) {
  std::ifstream in(model_dir(name) + "/golden.json");
  return nlohmann::json::parse(in);
}

// Collects every Output of a request; wait() returns once the final one arrived.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> tops;
  int outputs = 0;
  bool done = false;
  Output last;
  OutputCallback callback() {
    return [this](const Output& o) {
      std::lock_guard<std::mutex> lk(mu);
      tokens.insert(tokens.end(), o.tokens.begin(), o.tokens.end());
      logprobs.insert(logprobs.end(), o.logprobs.begin(), o.logprobs.end());
      tops.insert(tops.end(), o.top_logprobs.begin(), o.top_logprobs.end());
      ++outputs;
      if (o.finished) {
        done = true;
        last = o;
        cv.notify_all();
      }
    };
  }
  void wait() {
    std::unique_lock<std::mutex> lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(60), [&] { return done; })) << "request did not finish";
  }
};

struct Fixture {
  CpuBackend backend;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<Executor> executor;
  Fixture(const std::string& model, int32_t kv_blocks, int32_t max_tokens_per_step, int32_t block_size = 4,
          bool prefix_cache = true) {
    RunnerOptions o;
    o.max_num_tokens = 64;
    o.max_num_seqs = 8;
    o.block_size = block_size;
    o.num_kv_blocks = kv_blocks;
    auto r = load_model(model_dir(model), &backend, o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    runner = std::move(r).value();
    ExecutorOptions eo;
    eo.max_num_tokens = max_tokens_per_step;
    eo.max_num_seqs = 8;
    eo.enable_prefix_cache = prefix_cache;
    auto e = Executor::create(runner.get(), eo);
    EXPECT_TRUE(e.is_ok());
    executor = std::move(e).value();
  }
};

Request greedy_request(std::vector<int32_t> prompt, int32_t max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  return r;
}

class ExecutorGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(ExecutorGolden, GreedyEqualsHfWithChunkingAndPreemption) {
  // 7 tokens per step forces the 23-token prompt into 4 chunks; 20 blocks of 4 tokens cannot
  // hold all three sequences at full length (24+32, 7+32, 1+32 tokens), so some get preempted
  // and recomputed; the outputs must still equal HF's greedy tokens.
  Fixture f(GetParam(), 20, 7);
  auto meta = golden_meta(GetParam());
  std::vector<Collector> c(meta["prompts"].size());
  for (size_t i = 0; i < c.size(); ++i) {
    auto id = f.executor->enqueue(greedy_request(meta["prompts"][i].get<std::vector<int32_t>>(), 32), c[i].callback());
    ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  }
  for (size_t i = 0; i < c.size(); ++i) {
    c[i].wait();
    EXPECT_EQ(c[i].tokens, meta["greedy"][i].get<std::vector<int32_t>>()) << GetParam() << " prompt " << i;
    EXPECT_EQ(c[i].last.finish_reason, FinishReason::kLength);
    EXPECT_EQ(c[i].last.num_generated_tokens, 32);
  }
  EXPECT_GT(f.executor->stats().num_preemptions, 0) << "the pool was meant to be too small";
  EXPECT_EQ(f.executor->stats().kv_blocks_free, f.executor->stats().kv_blocks_total);
}

INSTANTIATE_TEST_SUITE_P(Models, ExecutorGolden, ::testing::Values("llama3_gqa", "qwen2", "qwen3"));

TEST(Executor, PrefixCacheHitGivesSameOutput) {
  Fixture f("llama3_gqa", 64, 64);
  auto meta = golden_meta("llama3_gqa");
  auto prompt = meta["prompts"][2].get<std::vector<int32_t>>();  // 23 tokens = 5 full blocks + 3
  Collector a, b;
  ASSERT_TRUE(f.executor->enqueue(greedy_request(prompt, 8), a.callback()).is_ok());
  a.wait();
  ASSERT_TRUE(f.executor->enqueue(greedy_request(prompt, 8), b.callback()).is_ok());
  b.wait();
  EXPECT_EQ(a.last.num_cached_prompt_tokens, 0);
  EXPECT_EQ(b.last.num_cached_prompt_tokens, 20);
  EXPECT_EQ(a.tokens, b.tokens);
  auto want = meta["greedy"][2].get<std::vector<int32_t>>();
  EXPECT_EQ(b.tokens, std::vector<int32_t>(want.begin(), want.begin() + 8));
  auto s = f.executor->stats();
  EXPECT_GE(s.num_prefix_cache_hits, 5);
}

TEST(Executor, EqualPromptsArrivingTogetherShareTheirBlocks) {
  // Four copies of a 23-token prompt (5 full blocks of 4) enqueued at once, as the server does for
  // n = 4: the first computes the prompt, the others wait a step and take its 5 blocks from the
  // prefix cache; all produce HF's greedy tokens.
  Fixture f("llama3_gqa", 64, 64);
  auto meta = golden_meta("llama3_gqa");
  auto prompt = meta["prompts"][2].get<std::vector<int32_t>>();
  auto want = meta["greedy"][2].get<std::vector<int32_t>>();
  std::vector<Collector> c(4);
  for (auto& x : c) ASSERT_TRUE(f.executor->enqueue(greedy_request(prompt, 6), x.callback()).is_ok());
  int cached = 0;
  for (auto& x : c) {
    x.wait();
    EXPECT_EQ(x.tokens, std::vector<int32_t>(want.begin(), want.begin() + 6));
    cached += x.last.num_cached_prompt_tokens;
  }
  EXPECT_EQ(cached, 3 * 20);
}

TEST(Executor, PrefixCacheOffComputesEverything) {
  Fixture f("llama3_gqa", 64, 64, 4, /*prefix_cache=*/false);
  auto prompt = golden_meta("llama3_gqa")["prompts"][2].get<std::vector<int32_t>>();
  Collector a, b;
  ASSERT_TRUE(f.executor->enqueue(greedy_request(prompt, 4), a.callback()).is_ok());
  a.wait();
  ASSERT_TRUE(f.executor->enqueue(greedy_request(prompt, 4), b.callback()).is_ok());
  b.wait();
  EXPECT_EQ(b.last.num_cached_prompt_tokens, 0);
  EXPECT_EQ(a.tokens, b.tokens);
}

TEST(Executor, CancelFreesBlocks) {
  Fixture f("llama2_mha", 64, 64);
  Collector c;
  auto id = f.executor->enqueue(greedy_request({1, 5, 9}, 100), c.callback());
  ASSERT_TRUE(id.is_ok());
  // Wait until it produced something, then cancel.
  for (int i = 0; i < 2000; ++i) {
    {
      std::lock_guard<std::mutex> lk(c.mu);
      if (!c.tokens.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  f.executor->cancel(*id);
  c.wait();
  EXPECT_EQ(c.last.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(c.tokens.size(), 100u);
  // The loop publishes stats after the cancel; the pool is whole again.
  for (int i = 0; i < 100 && f.executor->stats().kv_blocks_free != f.executor->stats().kv_blocks_total; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(f.executor->stats().kv_blocks_free, f.executor->stats().kv_blocks_total);
}

TEST(Executor, SeededSamplingIsBatchIndependent) {
  auto sampled = [](bool with_company) {
    Fixture f("qwen3", 64, 64);
    Request r;
    r.prompt = {1, 7, 42, 99};
    r.sampling.temperature = 1.3f;
    r.sampling.top_p = 0.9f;
    r.sampling.top_k = 50;
    r.sampling.seed = 1234;
    r.sampling.max_tokens = 20;
    r.sampling.ignore_eos = true;
    Collector c, other;
    if (with_company) {
      Request o = r;
      o.prompt = {1, 3, 3, 3, 3, 3, 3, 3, 3, 5};
      o.sampling.seed = 77;
      EXPECT_TRUE(f.executor->enqueue(o, other.callback()).is_ok());
    }
    EXPECT_TRUE(f.executor->enqueue(r, c.callback()).is_ok());
    c.wait();
    if (with_company) other.wait();
    return c.tokens;
  };
  auto alone = sampled(false);
  auto batched = sampled(true);
  EXPECT_EQ(alone.size(), 20u);
  EXPECT_EQ(alone, batched);
  // And it is not greedy: sampling at temperature 1.3 differs from argmax somewhere.
  Fixture f("qwen3", 64, 64);
  Collector g;
  ASSERT_TRUE(f.executor->enqueue(greedy_request({1, 7, 42, 99}, 20), g.callback()).is_ok());
  g.wait();
  EXPECT_NE(g.tokens, alone);
}

TEST(Executor, StopTokenMaxTokensAndMinTokens) {
  Fixture f("llama3_gqa", 64, 64);
  auto meta = golden_meta("llama3_gqa");
  auto prompt = meta["prompts"][1].get<std::vector<int32_t>>();
  auto want = meta["greedy"][1].get<std::vector<int32_t>>();
  // Stop at the 4th greedy token: the stop token is included, finish reason stop.
  Request r = greedy_request(prompt, 32);
  r.sampling.stop_token_ids = {want[3]};
  Collector c;
  ASSERT_TRUE(f.executor->enqueue(r, c.callback()).is_ok());
  c.wait();
  const auto first = std::find(want.begin(), want.end(), want[3]) - want.begin();
  EXPECT_EQ(c.tokens, std::vector<int32_t>(want.begin(), want.begin() + first + 1));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStop);
  // min_tokens bans the stop token until then: the output must not contain it early.
  Request m = greedy_request(prompt, 12);
  m.sampling.stop_token_ids = {want[0]};
  m.sampling.min_tokens = 5;
  Collector d;
  ASSERT_TRUE(f.executor->enqueue(m, d.callback()).is_ok());
  d.wait();
  ASSERT_GE(d.tokens.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_NE(d.tokens[i], want[0]);
}

TEST(Executor, LogprobsAndNonStreaming) {
  Fixture f("mistral", 64, 64);
  Request r = greedy_request({1, 2, 3, 4, 5}, 6);
  r.sampling.logprobs = 3;
  r.streaming = false;
  Collector c;
  ASSERT_TRUE(f.executor->enqueue(r, c.callback()).is_ok());
  c.wait();
  EXPECT_EQ(c.outputs, 1);  // one final output
  ASSERT_EQ(c.tokens.size(), 6u);
  ASSERT_EQ(c.logprobs.size(), 6u);
  ASSERT_EQ(c.tops.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    ASSERT_EQ(c.tops[i].size(), 3u);
    EXPECT_EQ(c.tops[i][0].token, c.tokens[i]);  // greedy: the chosen token is the top one
    EXPECT_NEAR(c.tops[i][0].logprob, c.logprobs[i], 1e-4);
    EXPECT_LE(c.logprobs[i], 0.0f);
    EXPECT_GE(c.tops[i][0].logprob, c.tops[i][1].logprob);
  }
}

TEST(Executor, RejectsBadRequests) {
  Fixture f("llama3_gqa", 64, 64);
  auto bad = [&](Request r, const std::string& field) {
    auto id = f.executor->enqueue(std::move(r), nullptr);
    ASSERT_FALSE(id.is_ok());
    EXPECT_EQ(id.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(id.status().message().find(field), std::string::npos) << id.status().message();
  };
  bad(greedy_request({}, 4), "prompt");
  bad(greedy_request({1, 100000}, 4), "prompt");
  bad(greedy_request(std::vector<int32_t>(200, 1), 4), "prompt");  // > max_position_embeddings 128
  Request r = greedy_request({1}, 4);
  r.sampling.top_p = 0.0f;
  bad(r, "top_p");
  r = greedy_request({1}, 4);
  r.sampling.temperature = -1.0f;
  bad(r, "temperature");
  r = greedy_request({1}, 0);
  bad(r, "max_tokens");
  r = greedy_request({1}, 4);
  r.sampling.logprobs = 50;
  bad(r, "logprobs");
  r = greedy_request({1}, 4);
  r.sampling.stop_token_ids = {-3};
  bad(r, "stop_token_ids");
  // A good request still runs after all that.
  Collector c;
  ASSERT_TRUE(f.executor->enqueue(greedy_request({1, 2}, 3), c.callback()).is_ok());
  c.wait();
  EXPECT_EQ(c.tokens.size(), 3u);
}

TEST(Executor, ShutdownCancelsPending) {
  Fixture f("llama2_mha", 64, 64);
  std::vector<Collector> c(4);
  for (auto& x : c) ASSERT_TRUE(f.executor->enqueue(greedy_request({1, 2, 3}, 100), x.callback()).is_ok());
  f.executor->shutdown(false);
  for (auto& x : c) {
    x.wait();
    EXPECT_TRUE(x.last.finish_reason == FinishReason::kCancelled || x.last.finish_reason == FinishReason::kLength);
  }
  auto id = f.executor->enqueue(greedy_request({1}, 1), nullptr);
  EXPECT_FALSE(id.is_ok());
}

TEST(Executor, FirstOutputCarriesQueueTime) {
  Fixture f("llama2_mha", 64, 64);
  std::mutex mu;
  std::vector<double> q;
  bool done = false;
  std::condition_variable cv;
  ASSERT_TRUE(f.executor->enqueue(greedy_request({1, 2, 3}, 5), [&](const Output& o) {
                std::lock_guard<std::mutex> lk(mu);
                q.push_back(o.queue_seconds);
                if (o.finished) {
                  done = true;
                  cv.notify_all();
                }
              }).is_ok());
  std::unique_lock<std::mutex> lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(30), [&] { return done; }));
  ASSERT_EQ(q.size(), 5u);  // streaming: one Output per token, the last one final
  EXPECT_GE(q[0], 0.0);
  EXPECT_LT(q[0], 10.0);
  for (size_t i = 1; i < q.size(); ++i) EXPECT_EQ(q[i], -1.0);
}

TEST(Executor, ManyConcurrentRequestsAllFinish) {
  Fixture f("qwen2", 48, 16);
  std::vector<Collector> c(24);
  for (size_t i = 0; i < c.size(); ++i) {
    Request r = greedy_request({1, static_cast<int32_t>(i + 3), static_cast<int32_t>(2 * i + 5)}, 5 + static_cast<int32_t>(i % 7));
    ASSERT_TRUE(f.executor->enqueue(r, c[i].callback()).is_ok());
  }
  for (size_t i = 0; i < c.size(); ++i) {
    c[i].wait();
    EXPECT_EQ(c[i].tokens.size(), 5u + i % 7);
  }
}

}  // namespace
}  // namespace anvil
