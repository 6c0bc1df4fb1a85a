// Scheduler rules of the executor, observed from outside through the step each token comes from
// (see executor_harness.h): decodes before prefills, chunked prefill within the token budget,
// admission only when blocks fit, preemption of the lowest-priority latest sequence (which then
// resumes and finishes with the tokens it would have produced alone), FCFS within a priority,
// priority order of admission, starvation bounded by priority aging, and prefix-cache eviction order.
#include <gtest/gtest.h>

#include <atomic>

#include "executor_harness.h"

namespace anvil {
namespace {

using namespace testing_harness;

std::vector<int64_t> consecutive(int64_t first, int64_t n) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

// Budget 8 tokens per step. Three short requests decode from step 1; a 40-token prompt arrives at
// step 2. Decodes take their 3 tokens first every step, so the prompt gets chunks of 8 - 3 = 5:
// steps 2..9 prefill it and its first token comes from step 9. Had the prefill gone first (8 per
// step), the decodes would skip steps and the first token would come from step 6.
TEST(Scheduler, DecodesFirstAndPrefillChunkedWithinBudget) {
  HarnessOptions h;
  h.budget = 8;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  Recorder rec(x.executor.get());
  std::atomic<RequestId> long_id{0};
  auto enqueue_long = [&](const Output& o) {
    if (long_id.load() != 0 || o.tokens.empty()) return;
    auto id = x.executor->enqueue(greedy(ramp(200, 40), 4), rec.callback());
    ASSERT_TRUE(id.is_ok());
    long_id = *id;
  };
  auto ids = rec.enqueue_together({greedy(ramp(1, 2), 30), greedy(ramp(40, 2), 30), greedy(ramp(80, 2), 30)},
                                  {enqueue_long, nullptr, nullptr});
  ASSERT_TRUE(rec.wait_finished(4));
  for (RequestId id : ids) {
    Trace t = rec.trace(id);
    EXPECT_EQ(t.token_steps, consecutive(1, 30)) << "a decode skipped a step (request " << id << ")";
    EXPECT_EQ(t.last.finish_reason, FinishReason::kLength);
  }
  Trace l = rec.trace(long_id);
  EXPECT_EQ(l.first_step(), 9) << "the 40-token prompt should be prefilled in 8 chunks of 5 from step 2";
  EXPECT_EQ(l.token_steps, consecutive(9, 4));
  EXPECT_EQ(l.tokens, run_alone(h.model, greedy(ramp(200, 40), 4)));
  auto s = x.executor->stats();
  EXPECT_EQ(s.num_preemptions, 0);
  EXPECT_EQ(s.num_prompt_tokens, 1 + 3 * 2 + 40);
}

// A holds 8 blocks after its 30-token prefill and grows to 9; B (12 tokens = 3 blocks) arrives
// at step 2. With 10 blocks B does not fit until A ends at step 6 (and A is not preempted for
// it); with 13 blocks B is admitted at once.
class AdmissionTest : public ::testing::TestWithParam<int32_t> {};

TEST_P(AdmissionTest, AdmitsOnlyWhenBlocksFit) {
  HarnessOptions h;
  h.kv_blocks = GetParam();
  Harness x(h);
  ASSERT_TRUE(x.executor);
  Recorder rec(x.executor.get());
  std::atomic<RequestId> b_id{0};
  auto enqueue_b = [&](const Output& o) {
    if (b_id.load() != 0 || o.tokens.empty()) return;
    auto id = x.executor->enqueue(greedy(ramp(101, 12), 4), rec.callback());
    ASSERT_TRUE(id.is_ok());
    b_id = *id;
  };
  auto ids = rec.enqueue_together({greedy(ramp(11, 30), 6)}, {enqueue_b});
  ASSERT_TRUE(rec.wait_finished(2));
  Trace a = rec.trace(ids[0]), b = rec.trace(b_id);
  EXPECT_EQ(a.token_steps, consecutive(1, 6));
  if (GetParam() < 12) {
    EXPECT_EQ(b.first_step(), a.last_step() + 1) << "B was admitted without free blocks";
  } else {
    EXPECT_EQ(b.first_step(), 2) << "B fits beside A and should start at once";
  }
  EXPECT_EQ(b.tokens.size(), 4u);
  EXPECT_EQ(x.executor->stats().num_preemptions, 0);
  EXPECT_EQ(x.executor->stats().kv_blocks_free, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Pools, AdmissionTest, ::testing::Values(10, 13));

// Four 4-token prompts, 20 tokens each, in a 12-block pool (each needs 6 blocks at the end).
// P and S have priority 1, Q and R priority 0, arrival order P, Q, R, S. All grow one block every
// 4 steps; at step 10 (position 12) the pool is full and R (lowest priority, latest) is preempted;
// at step 14 Q is. P and S never stop and end at step 20; then Q and R resume (both fit) and
// finish with the same tokens they produce alone.
TEST(Scheduler, PreemptsLowestPriorityLatestAndResumes) {
  HarnessOptions h;
  h.kv_blocks = 12;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  Recorder rec(x.executor.get());
  std::vector<Request> reqs = {greedy(ramp(1, 4), 20, 1), greedy(ramp(50, 4), 20, 0), greedy(ramp(100, 4), 20, 0),
                               greedy(ramp(150, 4), 20, 1)};
  auto ids = rec.enqueue_together(reqs);
  ASSERT_TRUE(rec.wait_finished(4));
  Trace p = rec.trace(ids[0]), q = rec.trace(ids[1]), r = rec.trace(ids[2]), s = rec.trace(ids[3]);
  EXPECT_EQ(p.token_steps, consecutive(1, 20));
  EXPECT_EQ(s.token_steps, consecutive(1, 20));
  EXPECT_EQ(r.first_gap_step(), 10) << "R (priority 0, latest) should be the first victim";
  EXPECT_EQ(q.first_gap_step(), 14) << "Q (priority 0, earlier) should be the second victim";
  EXPECT_GT(q.first_gap_step(), r.first_gap_step());
  EXPECT_GT(q.last_step(), p.last_step());
  EXPECT_GT(r.last_step(), p.last_step());
  // Both resume right after P and S end, each recomputing its prompt + tokens in one step.
  EXPECT_EQ(q.token_steps[13], 21);
  EXPECT_EQ(r.token_steps[9], 21);
  EXPECT_EQ(x.executor->stats().num_preemptions, 2);
  for (size_t i = 0; i < reqs.size(); ++i) {
    Trace t = rec.trace(ids[i]);
    EXPECT_EQ(t.num_final, 1);
    EXPECT_EQ(t.last.finish_reason, FinishReason::kLength);
    EXPECT_EQ(t.last.num_generated_tokens, 20);
    EXPECT_EQ(t.tokens, run_alone(h.model, reqs[i])) << "request " << i << " after preemption";
  }
  EXPECT_EQ(x.executor->stats().kv_blocks_free, 12);
}

// One sequence at a time. A, B, C (priority 0) and F (priority -1) arrive together; while A runs,
// D (priority 5) and E (priority 0) arrive. Order: A, then D (higher priority jumps the queue),
// then B, C, E (FCFS), then F.
TEST(Scheduler, FcfsWithinPriorityAndHigherPriorityFirst) {
  HarnessOptions h;
  h.max_num_seqs = 1;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  Recorder rec(x.executor.get());
  std::atomic<RequestId> d_id{0}, e_id{0};
  auto enqueue_de = [&](const Output& o) {
    if (d_id.load() != 0 || o.tokens.empty()) return;
    auto d = x.executor->enqueue(greedy(ramp(90, 3), 3, 5), rec.callback());
    auto e = x.executor->enqueue(greedy(ramp(120, 3), 3, 0), rec.callback());
    ASSERT_TRUE(d.is_ok() && e.is_ok());
    d_id = *d;
    e_id = *e;
  };
  auto ids = rec.enqueue_together({greedy(ramp(1, 3), 3), greedy(ramp(30, 3), 3), greedy(ramp(60, 3), 3),
                                   greedy(ramp(150, 3), 3, -1)},
                                  {enqueue_de, nullptr, nullptr, nullptr});
  ASSERT_TRUE(rec.wait_finished(6));
  EXPECT_EQ(rec.trace(ids[0]).token_steps, consecutive(1, 3));   // A
  EXPECT_EQ(rec.trace(d_id).token_steps, consecutive(4, 3));     // D
  EXPECT_EQ(rec.trace(ids[1]).token_steps, consecutive(7, 3));   // B
  EXPECT_EQ(rec.trace(ids[2]).token_steps, consecutive(10, 3));  // C
  EXPECT_EQ(rec.trace(e_id).token_steps, consecutive(13, 3));    // E
  EXPECT_EQ(rec.trace(ids[3]).token_steps, consecutive(16, 3));  // F
}

// Within one priority nothing starves: an early request keeps its place while later requests of
// the same priority keep arriving, and preemption never picks it over a later one.
TEST(Scheduler, EqualPriorityStreamDoesNotStarveEarlyRequest) {
  HarnessOptions h;
  h.kv_blocks = 12;
  h.max_num_seqs = 2;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  Recorder rec(x.executor.get());
  std::atomic<int> spawned{0};
  std::function<void(const Output&)> respawn = [&](const Output& o) {
    if (!o.finished || spawned.fetch_add(1) >= 30) return;
    auto id = x.executor->enqueue(greedy(ramp(7 * spawned.load(), 8), 6), rec.callback(respawn));
    ASSERT_TRUE(id.is_ok());
  };
  auto ids = rec.enqueue_together({greedy(ramp(3, 8), 6), greedy(ramp(33, 8), 6), greedy(ramp(1, 20), 24),
                                   greedy(ramp(63, 8), 6)},
                                  {respawn, respawn, nullptr, respawn});
  Trace early;
  ASSERT_TRUE(rec.wait_finished(3 + 30 + 1));
  early = rec.trace(ids[2]);
  // Two slots: the first two take steps 1..6, then the early request runs; it needs 24 tokens.
  EXPECT_EQ(early.first_step(), 7);
  EXPECT_EQ(early.num_gaps(), 0) << "the early request was preempted for later ones";
  EXPECT_EQ(early.tokens.size(), 24u);
}

// Strict priority would starve: with one slot and a stream of priority-1 requests that always has
// one waiting, a priority-0 request would not get the slot until the stream stops. Priority aging
// (ExecutorOptions::priority_aging_steps) bounds the wait.
// One slot; two priority-1 requests and a priority-0 one arrive together, and every finished
// priority-1 request enqueues another (40 in all, 2 steps each). Returns the step at which the
// priority-0 request first ran.
int64_t low_priority_first_step(int32_t aging_steps) {
  HarnessOptions h;
  h.max_num_seqs = 1;
  h.priority_aging_steps = aging_steps;
  Harness x(h);
  EXPECT_TRUE(x.executor);
  Recorder rec(x.executor.get());
  std::atomic<int> spawned{0};
  std::function<void(const Output&)> respawn = [&](const Output& o) {
    if (!o.finished || spawned.fetch_add(1) >= 38) return;
    auto id = x.executor->enqueue(greedy(ramp(5 * spawned.load(), 4), 2, 1), rec.callback(respawn));
    ASSERT_TRUE(id.is_ok());
  };
  auto ids = rec.enqueue_together({greedy(ramp(1, 4), 2, 1), greedy(ramp(9, 4), 2, 1), greedy(ramp(200, 4), 2, 0)},
                                  {respawn, respawn, nullptr});
  EXPECT_TRUE(rec.wait_finished(3 + 38));
  return rec.trace(ids[2]).first_step();
}

TEST(Scheduler, LowPriorityIsNotStarvedByHighPriorityStream) {
  // Aging of one level per 8 steps: the 80 steps of high-priority work cannot hold it past ~20.
  EXPECT_LE(low_priority_first_step(8), 20);
}

TEST(Scheduler, StrictPriorityWithoutAgingRunsHighPriorityFirst) {
  // Aging off: the low-priority request waits for (nearly) all 40, which is what aging bounds,
  // and shows the test above can fail.
  EXPECT_GT(low_priority_first_step(0), 60);
}

// When a finished request's cached blocks are partly evicted, the head of its chain must survive:
// a prefix match walks the chain from block 0, so tail blocks without their head are useless.
TEST(Scheduler, PrefixCacheEvictsChainTailsFirst) {
  HarnessOptions h;
  h.kv_blocks = 6;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  Recorder rec(x.executor.get());
  const Request a = greedy(ramp(10, 16), 1);  // 4 full blocks, cached after it ends
  auto id_a = x.executor->enqueue(a, rec.callback());
  ASSERT_TRUE(id_a.is_ok());
  ASSERT_TRUE(rec.wait_finished(1));
  // 13 tokens = 4 blocks: the 2 free ones and 2 evicted from A's cached 4.
  auto id_b = x.executor->enqueue(greedy(ramp(200, 13), 1), rec.callback());
  ASSERT_TRUE(id_b.is_ok());
  ASSERT_TRUE(rec.wait_finished(2));
  auto id_c = x.executor->enqueue(a, rec.callback());
  ASSERT_TRUE(id_c.is_ok());
  ASSERT_TRUE(rec.wait_finished(3));
  EXPECT_EQ(rec.trace(*id_a).last.num_cached_prompt_tokens, 0);
  EXPECT_EQ(rec.trace(*id_c).last.num_cached_prompt_tokens, 8) << "A's first two blocks should still be cached";
  EXPECT_EQ(rec.trace(*id_c).tokens, rec.trace(*id_a).tokens);
}

// A request that waits for blocks retries admission every step; its prefix lookup must count once.
// A (16-token prompt P, 12 tokens) runs in an 8-block pool, holding 6 blocks from step 6 and 7
// from step 10. B = P + 12 tokens (7 blocks, 4 of them A's) arrives at step 7, finds 2 free, and
// waits until A ends at step 12; at step 13 it hits A's 4 cached prompt blocks. Lookups: A 3
// blocks (0 hits), B 6 blocks (4 hits), however many times B retried.
TEST(Scheduler, PrefixCacheStatsCountEachAdmissionOnce) {
  HarnessOptions h;
  h.kv_blocks = 8;
  Harness x(h);
  ASSERT_TRUE(x.executor);
  Recorder rec(x.executor.get());
  const std::vector<int32_t> p = ramp(17, 16);
  std::vector<int32_t> b_prompt = p;
  for (int32_t t : ramp(250, 12)) b_prompt.push_back(t);
  std::atomic<RequestId> b_id{0};
  auto enqueue_b = [&](const Output& o) {
    if (o.num_generated_tokens != 6) return;
    auto id = x.executor->enqueue(greedy(b_prompt, 1), rec.callback());
    ASSERT_TRUE(id.is_ok()) << id.status().to_string();
    b_id = *id;
  };
  auto ids = rec.enqueue_together({greedy(p, 12)}, {enqueue_b});
  ASSERT_TRUE(rec.wait_finished(2, 20));
  Trace a = rec.trace(ids[0]), b = rec.trace(b_id);
  EXPECT_EQ(a.token_steps, consecutive(1, 12));
  EXPECT_EQ(b.first_step(), 13) << "B should wait for A's blocks";
  EXPECT_EQ(b.last.num_cached_prompt_tokens, 16);
  EXPECT_EQ(b.tokens, run_alone(h.model, greedy(b_prompt, 1)));
  auto s = x.executor->stats();
  EXPECT_EQ(s.num_prefix_cache_queries, 3 + 6);
  EXPECT_EQ(s.num_prefix_cache_hits, 4);
}

}  // namespace
}  // namespace anvil
