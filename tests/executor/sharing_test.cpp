// n > 1 siblings share the prompt's KV blocks, the last partial one included, and copy it on
// their first write (copy-on-write); their outputs equal the same samples run alone. Stop strings
// matched in the executor through a caller-supplied detokenizer: across tokens, text cut before
// the stop string, tokens ending with the one that completed it, streaming deltas adding up.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "executor_harness.h"

namespace anvil {
namespace {

using testing_harness::Harness;
using testing_harness::HarnessOptions;
using testing_harness::model_dir;

std::vector<int32_t> golden(const std::string& model, const char* key, int i) {
  std::ifstream in(model_dir(model) + "/golden.json");
  return nlohmann::json::parse(in)[key][i].get<std::vector<int32_t>>();
}

// Outputs of one request, per sequence index, with the executor's KV stats seen by each Output.
struct MultiCollector {
  std::mutex mu;
  std::condition_variable cv;
  std::map<int32_t, std::vector<int32_t>> tokens;
  std::map<int32_t, std::string> text;
  std::map<int32_t, Output> finals;
  std::vector<ExecutorStats> stats_at_output;  // stats() when each Output arrived
  Executor* ex = nullptr;
  OutputCallback callback() {
    return [this](const Output& o) {
      const ExecutorStats s = ex->stats();
      std::lock_guard<std::mutex> lk(mu);
      stats_at_output.push_back(s);
      auto& t = tokens[o.index];
      t.insert(t.end(), o.tokens.begin(), o.tokens.end());
      text[o.index] += o.text;
      if (o.finished) finals[o.index] = o;
      cv.notify_all();
    };
  }
  bool wait(size_t n) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(60), [&] { return finals.size() >= n; });
  }
};

Request sampled(std::vector<int32_t> prompt, int32_t n, uint64_t seed, int32_t max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 1.1f;
  r.sampling.top_k = 40;
  r.sampling.seed = seed;
  r.sampling.n = n;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  return r;
}

TEST(Sharing, SiblingsShareThePartialBlockAndCopyOnWrite) {
  setenv("ANVIL_CHECK_KV_BLOCKS", "1", 1);
  const std::string model = "llama3_gqa";
  HarnessOptions h;
  h.model = model;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  // 23 prompt tokens = 5 full blocks of 4 + a partial block of 3 rows.
  const auto prompt = golden(model, "prompts", 2);
  MultiCollector c;
  c.ex = x.executor.get();
  ASSERT_TRUE(x.executor->enqueue(sampled(prompt, 4, 1000, 6), c.callback()).is_ok());
  ASSERT_TRUE(c.wait(4));
  // The 4 siblings' first tokens come from the prompt's step; the stats read by the second round
  // of Outputs are those after that step: 6 blocks held for 4 sequences (not 24), 23 of 24 slots used.
  {
    std::lock_guard<std::mutex> lk(c.mu);
    ASSERT_GE(c.stats_at_output.size(), 8u);
    const ExecutorStats& after_prompt = c.stats_at_output[4];
    EXPECT_EQ(after_prompt.kv_slots_allocated, 6 * 4);
    EXPECT_EQ(after_prompt.kv_slots_used, 23);
    // Next step: three siblings copied the partial block and the last wrote in place; each filled
    // its sixth block: 5 shared + 4 private blocks, all full.
    const ExecutorStats& after_first_decode = c.stats_at_output[8];
    EXPECT_EQ(after_first_decode.kv_slots_allocated, 9 * 4);
    EXPECT_EQ(after_first_decode.kv_slots_used, 9 * 4);
  }
  EXPECT_EQ(x.executor->stats().num_kv_block_copies, 3);
  for (int32_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(c.finals.count(i));
    EXPECT_EQ(c.finals[i].finish_reason, FinishReason::kLength);
    EXPECT_EQ(c.tokens[i], testing_harness::run_alone(model, sampled(prompt, 1, 1000 + i, 6))) << "sibling " << i;
  }
  // Sampling at temperature 1.1 with four seeds: not all equal.
  EXPECT_FALSE(c.tokens[0] == c.tokens[1] && c.tokens[1] == c.tokens[2] && c.tokens[2] == c.tokens[3]);
  for (int i = 0; i < 200 && x.executor->stats().kv_blocks_free != x.executor->stats().kv_blocks_total; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(x.executor->stats().kv_blocks_free, x.executor->stats().kv_blocks_total);
}

TEST(Sharing, ManySiblingRequestsUnderPressureEqualSoloRuns) {
  // Several n = 3 requests (prompts not multiples of the block size) in a pool too small for all:
  // siblings get preempted and recomputed one by one; every sample still equals its solo run.
  setenv("ANVIL_CHECK_KV_BLOCKS", "1", 1);
  const std::string model = "qwen2";
  HarnessOptions h;
  h.model = model;
  h.kv_blocks = 18;
  h.budget = 12;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) prompts.push_back(testing_harness::ramp(3 + 17 * i, 6 + 5 * i));
  std::vector<MultiCollector> cs(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    cs[i].ex = x.executor.get();
    Request r = sampled(prompts[i], 3, 50 + 10 * i, 14);
    if (i == 1) r.sampling.temperature = 0.0f;  // greedy siblings: all equal
    ASSERT_TRUE(x.executor->enqueue(r, cs[i].callback()).is_ok());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(cs[i].wait(3));
    for (int32_t k = 0; k < 3; ++k) {
      Request solo = sampled(prompts[i], 1, 50 + 10 * i + k, 14);
      if (i == 1) solo.sampling.temperature = 0.0f;
      EXPECT_EQ(cs[i].tokens[k], testing_harness::run_alone(model, solo)) << "request " << i << " sibling " << k;
      EXPECT_EQ(cs[i].tokens[k].size(), 14u);
    }
  }
  EXPECT_GT(x.executor->stats().num_preemptions, 0) << "the pool was meant to be too small";
  EXPECT_GT(x.executor->stats().num_kv_block_copies, 0);
}

TEST(Sharing, CancellingAnUnforkedRootEndsAllItsIndices) {
  HarnessOptions h;
  h.budget = 4;  // a 40-token prompt takes 10 steps: cancel lands before the fork
  Harness x(h);
  ASSERT_TRUE(x.executor);
  MultiCollector c;
  c.ex = x.executor.get();
  auto id = x.executor->enqueue(sampled(testing_harness::ramp(9, 40), 3, 1, 5), c.callback());
  ASSERT_TRUE(id.is_ok());
  x.executor->cancel(*id);
  ASSERT_TRUE(c.wait(3));
  for (int32_t i = 0; i < 3; ++i) EXPECT_EQ(c.finals[i].finish_reason, FinishReason::kCancelled);
}

// Token t reads as "<t>", so stop strings can start and end inside tokens.
class AngleDecoder final : public TextDecoder {
 public:
  std::string add(int32_t token) override { return "<" + std::to_string(token) + ">"; }
  std::string finish() override { return ""; }
};

std::string angle_text(const std::vector<int32_t>& tokens) {
  std::string s;
  for (int32_t t : tokens) s += "<" + std::to_string(t) + ">";
  return s;
}

TEST(StopStrings, SpanTokensCutTextAndEndWithTheCompletingToken) {
  const std::string model = "llama3_gqa";
  HarnessOptions h;
  h.model = model;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  const auto prompt = golden(model, "prompts", 1);
  const auto greedy = golden(model, "greedy", 1);
  const std::string full = angle_text(greedy);
  // From the middle of token 3 into token 4: "5><126" style.
  const std::string t3 = std::to_string(greedy[3]), t4 = std::to_string(greedy[4]);
  const std::string stop = t3.substr(1) + "><" + t4.substr(0, 1);
  const size_t at = full.find(stop);
  ASSERT_NE(at, std::string::npos);
  size_t len = 0, need = 0;  // tokens until the text reaches the end of the stop string
  while (len < at + stop.size()) len += angle_text({greedy[need++]}).size();
  for (bool streaming : {true, false}) {
    Request r = testing_harness::greedy(prompt, 30);
    r.streaming = streaming;
    r.sampling.stop = {"never-there", stop};
    r.detokenizer = [] { return std::make_unique<AngleDecoder>(); };
    MultiCollector c;
    c.ex = x.executor.get();
    ASSERT_TRUE(x.executor->enqueue(r, c.callback()).is_ok());
    ASSERT_TRUE(c.wait(1));
    EXPECT_EQ(c.finals[0].finish_reason, FinishReason::kStop);
    EXPECT_EQ(c.finals[0].stop_reason, stop);
    EXPECT_EQ(c.tokens[0], std::vector<int32_t>(greedy.begin(), greedy.begin() + need));
    EXPECT_EQ(c.text[0], full.substr(0, at)) << (streaming ? "streaming" : "whole");
  }
  // A stop string that never appears: all tokens, all text, finish reason length.
  Request r = testing_harness::greedy(prompt, 10);
  r.sampling.stop = {"<<"};
  r.detokenizer = [] { return std::make_unique<AngleDecoder>(); };
  MultiCollector c;
  c.ex = x.executor.get();
  ASSERT_TRUE(x.executor->enqueue(r, c.callback()).is_ok());
  ASSERT_TRUE(c.wait(1));
  EXPECT_EQ(c.finals[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.text[0], angle_text(std::vector<int32_t>(greedy.begin(), greedy.begin() + 10)));
  // min_tokens: a stop string completed before it does not count.
  Request m = testing_harness::greedy(prompt, 12);
  m.sampling.stop = {"<" + std::to_string(greedy[0]) + ">"};
  m.sampling.min_tokens = 3;
  m.detokenizer = [] { return std::make_unique<AngleDecoder>(); };
  MultiCollector d;
  d.ex = x.executor.get();
  ASSERT_TRUE(x.executor->enqueue(m, d.callback()).is_ok());
  ASSERT_TRUE(d.wait(1));
  EXPECT_GE(d.tokens[0].size(), 3u);
}

TEST(StopStrings, NeedADetokenizer) {
  HarnessOptions h;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  Request r = testing_harness::greedy({1, 2}, 4);
  r.sampling.stop = {"x"};
  auto id = x.executor->enqueue(r, nullptr);
  ASSERT_FALSE(id.is_ok());
  EXPECT_EQ(id.status().message().rfind("stop", 0), 0u) << id.status().message();
  r.sampling.stop = {""};
  r.detokenizer = [] { return std::make_unique<AngleDecoder>(); };
  EXPECT_FALSE(x.executor->enqueue(r, nullptr).is_ok());
}

}  // namespace
}  // namespace anvil
