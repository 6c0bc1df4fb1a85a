// Beam search through the executor (CPU, golden models) against an independent reference: a plain
// host beam search written here that re-runs every beam's whole sequence through a ModelRunner at
// every step (no KV reuse, no forks), with Hugging Face's rules. Widths 1..4, length penalties,
// early-stopping modes, stop tokens, min_tokens, preemption of beam groups under a small KV
// pool alongside other requests; width 1 equals greedy; the pool is whole afterwards.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <tuple>

#include "executor_harness.h"

namespace anvil {
namespace {

using testing_harness::Harness;
using testing_harness::HarnessOptions;
using testing_harness::model_dir;

struct RefHyp {
  std::vector<int32_t> tokens;
  double cumulative = 0;
  bool by_stop = false;
};

// Logits of the last position of `tokens`, computed from scratch (blocks 0.. rewritten each run).
std::vector<float> last_logits(ModelRunner* runner, const std::vector<int32_t>& tokens) {
  const int32_t bs = runner->kv_cache().block_size();
  const int32_t n = static_cast<int32_t>(tokens.size());
  StepInput s;
  s.token_ids = tokens;
  s.seq_starts = {0, n};
  s.context_lens = {n};
  s.logit_rows = {n - 1};
  s.block_tables.emplace_back();
  for (int32_t b = 0; b < (n + bs - 1) / bs; ++b) s.block_tables[0].push_back(b);
  for (int32_t i = 0; i < n; ++i) {
    s.positions.push_back(i);
    s.slot_map.push_back(i);
  }
  Tensor logits;
  Status st = runner->forward(s, &logits);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  if (!st.is_ok()) return {};
  const float* p = logits.ptr<float>();
  return std::vector<float>(p, p + logits.dim(1));
}

// Hugging Face's beam search (transformers 5 `_beam_search`), written out plainly.
std::vector<RefHyp> reference_beam_search(ModelRunner* runner, const std::vector<int32_t>& prompt, const SamplingParams& p,
                                          const std::vector<int32_t>& stop_ids) {
  struct Beam {
    std::vector<int32_t> tokens;
    double cumulative = 0;
  };
  struct Hyp {
    RefHyp h;
    double score = 0;
  };
  const int32_t width = p.beam_width;
  auto is_stop = [&](int32_t t) { return std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end(); };
  std::vector<Beam> running = {Beam{}};
  std::vector<Hyp> finished;
  bool improvable = true;
  for (int32_t g = 0;; ++g) {
    std::vector<std::tuple<double, int32_t, int32_t>> cands;  // (cumulative, beam, token)
    for (int32_t b = 0; b < static_cast<int32_t>(running.size()); ++b) {
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), running[b].tokens.begin(), running[b].tokens.end());
      const std::vector<float> logits = last_logits(runner, seq);
      double mx = -INFINITY, sum = 0;
      for (float x : logits) mx = std::max(mx, static_cast<double>(x));
      for (float x : logits) sum += std::exp(static_cast<double>(x) - mx);
      const double lse = mx + std::log(sum);
      for (int32_t v = 0; v < static_cast<int32_t>(logits.size()); ++v) {
        if (g < p.min_tokens && is_stop(v)) continue;
        cands.emplace_back(running[b].cumulative + (static_cast<double>(logits[v]) - lse), b, v);
      }
    }
    std::sort(cands.begin(), cands.end(), [](const auto& a, const auto& b) {
      if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
      return std::make_pair(std::get<1>(a), std::get<2>(a)) < std::make_pair(std::get<1>(b), std::get<2>(b));
    });
    cands.resize(std::min(cands.size(), static_cast<size_t>(width) * (1 + stop_ids.size())));
    const int32_t gen = g + 1;
    auto stops = [&](const auto& c) { return is_stop(std::get<2>(c)) || gen >= p.max_tokens; };
    std::vector<Beam> next;
    for (const auto& c : cands) {
      if (static_cast<int32_t>(next.size()) == width) break;
      if (stops(c)) continue;
      Beam nb = running[std::get<1>(c)];
      nb.tokens.push_back(std::get<2>(c));
      nb.cumulative = std::get<0>(c);
      next.push_back(nb);
    }
    const bool closed = static_cast<int32_t>(finished.size()) == width && p.early_stopping == EarlyStopping::kTrue;
    if (improvable && !closed) {
      for (size_t i = 0; i < cands.size() && static_cast<int32_t>(i) < width; ++i) {
        if (!stops(cands[i])) continue;
        Hyp h;
        h.h.tokens = running[std::get<1>(cands[i])].tokens;
        h.h.tokens.push_back(std::get<2>(cands[i]));
        h.h.cumulative = std::get<0>(cands[i]);
        h.h.by_stop = is_stop(std::get<2>(cands[i]));
        h.score = h.h.cumulative / std::pow(static_cast<double>(gen), static_cast<double>(p.length_penalty));
        finished.push_back(h);
      }
      std::stable_sort(finished.begin(), finished.end(), [](const Hyp& a, const Hyp& b) { return a.score > b.score; });
      if (static_cast<int32_t>(finished.size()) > width) finished.resize(width);
    }
    const bool full = static_cast<int32_t>(finished.size()) == width;
    if (improvable) {
      const double len = p.early_stopping == EarlyStopping::kNever && p.length_penalty > 0 ? p.max_tokens : gen;
      const double best = next.empty() ? -INFINITY : next[0].cumulative / std::pow(len, static_cast<double>(p.length_penalty));
      if (!(best > (full ? finished.back().score : -1e9))) improvable = false;
    }
    if (!improvable || (full && p.early_stopping == EarlyStopping::kTrue) || next.empty()) break;
    running = next;
  }
  std::vector<RefHyp> out;
  for (int32_t i = 0; i < p.n && i < static_cast<int32_t>(finished.size()); ++i) out.push_back(finished[i].h);
  return out;
}

// Collects a request's final Outputs, by index.
struct BeamCollector {
  std::mutex mu;
  std::condition_variable cv;
  std::map<int32_t, Output> finals;
  int num_outputs = 0;
  OutputCallback callback() {
    return [this](const Output& o) {
      std::lock_guard<std::mutex> lk(mu);
      ++num_outputs;
      if (o.finished) finals[o.index] = o;
      cv.notify_all();
    };
  }
  bool wait(size_t n) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(60), [&] { return finals.size() >= n; });
  }
};

struct RefModel {
  CpuBackend backend;
  std::unique_ptr<ModelRunner> runner;
  explicit RefModel(const std::string& name) {
    RunnerOptions o;
    o.max_num_tokens = 64;
    o.max_num_seqs = 8;
    o.block_size = 4;
    o.num_kv_blocks = 32;
    auto r = load_model(model_dir(name), &backend, o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (r.is_ok()) runner = std::move(r).value();
  }
};

std::vector<int32_t> golden_prompt(const std::string& model, int i) {
  std::ifstream in(model_dir(model) + "/golden.json");
  return nlohmann::json::parse(in)["prompts"][i].get<std::vector<int32_t>>();
}

std::vector<int32_t> golden_greedy(const std::string& model, int i) {
  std::ifstream in(model_dir(model) + "/golden.json");
  return nlohmann::json::parse(in)["greedy"][i].get<std::vector<int32_t>>();
}

Request beam_request(std::vector<int32_t> prompt, int32_t width, int32_t n, int32_t max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.sampling.beam_width = width;
  r.sampling.n = n;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  r.sampling.logprobs = 0;
  return r;
}

void expect_matches_reference(const BeamCollector& c, const std::vector<RefHyp>& want, const std::string& what) {
  ASSERT_EQ(c.finals.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    const Output& o = c.finals.at(static_cast<int32_t>(i));
    EXPECT_EQ(o.tokens, want[i].tokens) << what << " hypothesis " << i;
    EXPECT_NEAR(o.cumulative_logprob, want[i].cumulative, 1e-4) << what << " hypothesis " << i;
    EXPECT_EQ(o.finish_reason, want[i].by_stop ? FinishReason::kStop : FinishReason::kLength) << what << " " << i;
    EXPECT_EQ(o.num_generated_tokens, static_cast<int32_t>(want[i].tokens.size()));
    // The per-token logprobs add up to the cumulative score.
    double sum = 0;
    for (float lp : o.logprobs) sum += lp;
    EXPECT_NEAR(sum, o.cumulative_logprob, 1e-4) << what << " " << i;
    EXPECT_EQ(o.logprobs.size(), o.tokens.size());
  }
}

void wait_pool_whole(Executor* ex) {
  for (int i = 0; i < 200 && ex->stats().kv_blocks_free != ex->stats().kv_blocks_total; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(ex->stats().kv_blocks_free, ex->stats().kv_blocks_total);
}

class BeamWidth : public ::testing::TestWithParam<int> {};

TEST_P(BeamWidth, EqualsReferenceWithStopToken) {
  setenv("ANVIL_CHECK_KV_BLOCKS", "1", 1);
  const int width = GetParam();
  const std::string model = "llama3_gqa";
  RefModel ref(model);
  ASSERT_TRUE(ref.runner);
  HarnessOptions h;
  h.model = model;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  const auto prompt = golden_prompt(model, 1);
  // A stop token that greedy decoding reaches early, so some beams finish by it.
  const int32_t stop = golden_greedy(model, 1)[2];
  Request r = beam_request(prompt, width, width, 7);
  r.sampling.stop_token_ids = {stop};
  BeamCollector c;
  ASSERT_TRUE(x.executor->enqueue(r, c.callback()).is_ok());
  ASSERT_TRUE(c.wait(width));
  const auto want = reference_beam_search(ref.runner.get(), prompt, r.sampling, {stop});
  expect_matches_reference(c, want, "width " + std::to_string(width));
  EXPECT_EQ(c.num_outputs, width) << "beam search streams nothing: one final Output per hypothesis";
  wait_pool_whole(x.executor.get());
}

INSTANTIATE_TEST_SUITE_P(Widths, BeamWidth, ::testing::Values(1, 2, 3, 4));

TEST(BeamSearch, LengthPenaltyEarlyStoppingMinTokensAndFewerReturned) {
  setenv("ANVIL_CHECK_KV_BLOCKS", "1", 1);
  const std::string model = "qwen2";
  RefModel ref(model);
  ASSERT_TRUE(ref.runner);
  HarnessOptions h;
  h.model = model;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  const auto prompt = golden_prompt(model, 2);
  const auto greedy = golden_greedy(model, 2);
  struct Case {
    float lp;
    EarlyStopping early;
    int32_t min_tokens;
    int32_t n;
  };
  const std::vector<Case> cases = {{0.0f, EarlyStopping::kFalse, 0, 3},  {2.0f, EarlyStopping::kNever, 0, 2},
                                   {-1.0f, EarlyStopping::kTrue, 0, 1},  {1.0f, EarlyStopping::kNever, 3, 3},
                                   {0.5f, EarlyStopping::kTrue, 2, 2}};
  std::vector<BeamCollector> cs(cases.size());
  std::vector<Request> reqs;
  for (size_t i = 0; i < cases.size(); ++i) {
    Request r = beam_request(prompt, 3, cases[i].n, 6);
    r.sampling.length_penalty = cases[i].lp;
    r.sampling.early_stopping = cases[i].early;
    r.sampling.min_tokens = cases[i].min_tokens;
    r.sampling.stop_token_ids = {greedy[1], greedy[3]};
    reqs.push_back(r);
    ASSERT_TRUE(x.executor->enqueue(r, cs[i].callback()).is_ok());
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(cs[i].wait(cases[i].n));
    const auto want = reference_beam_search(ref.runner.get(), prompt, reqs[i].sampling, {greedy[1], greedy[3]});
    expect_matches_reference(cs[i], want, "case " + std::to_string(i));
    if (cases[i].min_tokens > 0) {
      for (const auto& [idx, o] : cs[i].finals) EXPECT_GT(static_cast<int32_t>(o.tokens.size()), cases[i].min_tokens - 1);
    }
  }
  wait_pool_whole(x.executor.get());
}

TEST(BeamSearch, WidthOneEqualsGreedy) {
  const std::string model = "qwen3";
  HarnessOptions h;
  h.model = model;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  const auto prompt = golden_prompt(model, 1);
  BeamCollector c;
  ASSERT_TRUE(x.executor->enqueue(beam_request(prompt, 1, 1, 12), c.callback()).is_ok());
  ASSERT_TRUE(c.wait(1));
  const auto greedy = golden_greedy(model, 1);
  EXPECT_EQ(c.finals[0].tokens, std::vector<int32_t>(greedy.begin(), greedy.begin() + 12));
  EXPECT_EQ(c.finals[0].finish_reason, FinishReason::kLength);
}

TEST(BeamSearch, GroupsPreemptedUnderPressureStillMatchReference) {
  // 24 blocks of 4 tokens; three width-4 searches over a 23-token prompt (4 beams x 8 blocks each
  // at the end without sharing) next to greedy requests cannot all fit: beam groups are preempted
  // (their search restarts) and must still return the reference's hypotheses.
  setenv("ANVIL_CHECK_KV_BLOCKS", "1", 1);
  const std::string model = "llama3_gqa";
  RefModel ref(model);
  ASSERT_TRUE(ref.runner);
  HarnessOptions h;
  h.model = model;
  h.kv_blocks = 24;
  h.budget = 16;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  std::vector<std::vector<int32_t>> prompts = {golden_prompt(model, 2), golden_prompt(model, 1), testing_harness::ramp(11, 15)};
  std::vector<BeamCollector> cs(prompts.size());
  std::vector<Request> reqs;
  testing_harness::Recorder rec(x.executor.get());
  std::vector<RequestId> greedy_ids;
  for (int i = 0; i < 3; ++i) {
    auto id = x.executor->enqueue(testing_harness::greedy(testing_harness::ramp(40 + i, 9), 20), rec.callback());
    ASSERT_TRUE(id.is_ok());
    greedy_ids.push_back(*id);
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    Request r = beam_request(prompts[i], 4, 2, 9);
    reqs.push_back(r);
    ASSERT_TRUE(x.executor->enqueue(r, cs[i].callback()).is_ok());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(cs[i].wait(2));
    const auto want = reference_beam_search(ref.runner.get(), prompts[i], reqs[i].sampling, {});
    expect_matches_reference(cs[i], want, "request " + std::to_string(i));
  }
  ASSERT_TRUE(rec.wait_finished(3));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(rec.trace(greedy_ids[i]).tokens,
              testing_harness::run_alone(model, testing_harness::greedy(testing_harness::ramp(40 + i, 9), 20)));
  }
  EXPECT_GT(x.executor->stats().num_preemptions, 0) << "the pool was meant to be too small";
  EXPECT_GT(x.executor->stats().num_kv_block_copies, 0) << "beams diverging inside a block copy it";
  wait_pool_whole(x.executor.get());
}

TEST(BeamSearch, CancelEndsEveryHypothesisAndFreesBlocks) {
  HarnessOptions h;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  BeamCollector c;
  auto id = x.executor->enqueue(beam_request(testing_harness::ramp(5, 10), 4, 3, 40), c.callback());
  ASSERT_TRUE(id.is_ok());
  for (int i = 0; i < 500 && x.executor->stats().num_running < 4; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  x.executor->cancel(*id);
  ASSERT_TRUE(c.wait(3));
  for (const auto& [idx, o] : c.finals) EXPECT_EQ(o.finish_reason, FinishReason::kCancelled);
  wait_pool_whole(x.executor.get());
}

TEST(BeamSearch, RejectsWhatItDoesNotSupport) {
  HarnessOptions h;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  auto bad = [&](Request r, const std::string& field) {
    auto id = x.executor->enqueue(std::move(r), nullptr);
    ASSERT_FALSE(id.is_ok());
    EXPECT_EQ(id.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(id.status().message().rfind(field, 0), 0u) << id.status().message();
  };
  bad(beam_request({1, 2}, 9, 1, 4), "beam_width");
  bad(beam_request({1, 2}, 2, 3, 4), "n");
  Request r = beam_request({1, 2}, 2, 1, 4);
  r.sampling.repetition_penalty = 1.2f;
  bad(r, "beam_width");
  r = beam_request({1, 2}, 2, 1, 4);
  r.sampling.logprobs = 2;
  bad(r, "logprobs");
}

}  // namespace
}  // namespace anvil
