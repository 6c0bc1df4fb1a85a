// Tensor and pipeline parallelism on CPU ranks through OpenMPI: TP=2, PP=2 and TP=2 x PP=2 give
// the logits of TP=1 on the golden models over a two-sequence prefill and four greedy decode
// steps (KV cache path). Rank 0 computes the single-rank reference in the same process. Tolerance:
// pipeline-only runs the same ops in the same order, so the logits are bit-identical; tensor
// parallelism sums the attention-output and down projections in two partial sums, so within
// 1e-5 of max|logit| (f32; measured differences are ~1e-7). Also: a rank killed mid-run ends the
// job with an error naming it within the timeout, and a rank that exits without MPI's noticing
// is named by the collective timeout.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "dist/launcher.h"
#include "dist/mpi_communicator.h"
#include "runtime/kv_cache/block_manager.h"
#include "runtime/model_loader.h"
#include "mpi_test_util.h"

namespace anvil {
namespace {

std::string model_dir(const std::string& name) { return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name; }
std::string env_or(const char* k, const char* d) {
  const char* v = std::getenv(k);
  return v ? v : d;
}

struct Seq {
  std::vector<int32_t> tokens;
  std::vector<int32_t> blocks;
  int32_t cached = 0;
};

StepInput make_step(std::vector<Seq>& seqs, BlockManager& alloc, int32_t bs) {
  StepInput s;
  s.seq_starts.push_back(0);
  for (Seq& q : seqs) {
    const int32_t total = static_cast<int32_t>(q.tokens.size());
    while (static_cast<int32_t>(q.blocks.size()) * bs < total) q.blocks.push_back(alloc.allocate());
    for (int32_t p = q.cached; p < total; ++p) {
      if (p == total - 1) s.logit_rows.push_back(static_cast<int32_t>(s.token_ids.size()));
      s.token_ids.push_back(q.tokens[p]);
      s.positions.push_back(p);
      s.slot_map.push_back(q.blocks[p / bs] * bs + p % bs);
    }
    s.seq_starts.push_back(static_cast<int32_t>(s.token_ids.size()));
    s.context_lens.push_back(total);
    s.block_tables.push_back(q.blocks);
    q.cached = total;
  }
  return s;
}

RunnerOptions small_options() {
  RunnerOptions o;
  o.max_num_tokens = 64;
  o.max_num_seqs = 4;
  o.block_size = 4;
  o.num_kv_blocks = 64;
  o.watchdog_seconds = 20;
  return o;
}

std::vector<float> to_host(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  EXPECT_TRUE(b.copy_d2h(v.data(), t.data, t.nbytes()).is_ok());
  return v;
}

// One rank of the worker job. Env: ANVIL_PW_MODEL, ANVIL_PW_TP, ANVIL_PW_PP, ANVIL_PW_STEPS,
// ANVIL_PW_RESULT (rank 0 writes "steps=N max_rel=X exact=0|1" there), ANVIL_PW_KILL_RANK /
// ANVIL_PW_KILL_STEP / ANVIL_PW_KILL_HOW (sigkill | exit) to make one rank die mid-run.
TEST(ParallelWorker, Logits) {
  if (!test::in_mpi_worker()) GTEST_SKIP() << "runs as a rank of the mpirun jobs the other tests start";
  const std::string model = env_or("ANVIL_PW_MODEL", "qwen2");
  const int tp = std::atoi(env_or("ANVIL_PW_TP", "1").c_str()), pp = std::atoi(env_or("ANVIL_PW_PP", "1").c_str());
  const int decode_steps = std::atoi(env_or("ANVIL_PW_STEPS", "4").c_str());
  auto ctx = dist::init_dist(tp, pp, /*cuda=*/false);
  ASSERT_TRUE(ctx.is_ok()) << ctx.status().to_string();
  dist::DistContext& dc = **ctx;
  const int me = dc.config.world_rank();

  const int kill_rank = std::atoi(env_or("ANVIL_PW_KILL_RANK", "-1").c_str());
  const int64_t kill_step = std::atoi(env_or("ANVIL_PW_KILL_STEP", "2").c_str());
  const std::string kill_how = env_or("ANVIL_PW_KILL_HOW", "sigkill");

  CpuBackend backend;
  RunnerOptions o = small_options();
  o.comm_control = dc.control.get();
  o.comm_world = dc.world.get();
  o.comm_tp = dc.tp.get();
  auto runner = load_model(model_dir(model), &backend, o, dc.config);
  ASSERT_TRUE(runner.is_ok()) << runner.status().to_string();
  ModelRunner& r = **runner;

  if (me == kill_rank) {
    // Dies abruptly once the job is in its kill_step-th step.
    std::thread([&r, kill_step, kill_how] {
      while (r.steps_run() <= kill_step) std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (kill_how == "exit") std::_Exit(3);
      ::raise(SIGKILL);
    }).detach();
  }
  if (r.is_follower()) {
    Status st = r.follow();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    return;
  }

  // Rank 0: the reference (one rank, same weights) beside the parallel runner.
  CpuBackend ref_backend;
  auto ref = load_model(model_dir(model), &ref_backend, small_options());
  ASSERT_TRUE(ref.is_ok()) << ref.status().to_string();
  const int64_t vocab = r.spec().vocab_size;
  BlockManager alloc_par(64, 4), alloc_ref(64, 4);
  std::vector<Seq> par = {{{1, 17, 42, 99, 7, 3, 250, 11, 5}, {}, 0}, {{300, 2, 8, 64, 128}, {}, 0}};
  std::vector<Seq> refs = par;
  double max_rel = 0;
  bool exact = true;
  int steps = 0;
  for (int step = 0; step <= decode_steps; ++step) {
    Tensor lp, lr;
    StepInput sp = make_step(par, alloc_par, 4), sr = make_step(refs, alloc_ref, 4);
    ASSERT_TRUE(r.forward(sp, &lp).is_ok());
    ASSERT_TRUE((*ref)->forward(sr, &lr).is_ok());
    ASSERT_EQ(lp.numel(), lr.numel());
    ASSERT_EQ(lp.numel(), 2 * vocab);
    const std::vector<float> a = to_host(backend, lp), b = to_host(ref_backend, lr);
    double max_diff = 0, max_ref = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_FALSE(std::isnan(a[i])) << "step " << step << " logit " << i;
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(a[i]) - b[i]));
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(b[i])));
      exact = exact && a[i] == b[i];
    }
    max_rel = std::max(max_rel, max_diff / max_ref);
    EXPECT_LT(max_diff / max_ref, 1e-5) << "step " << step;
    // Greedy continuation from the reference's logits, the same for both.
    for (size_t s = 0; s < 2; ++s) {
      const float* row = b.data() + s * vocab;
      const int32_t next = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      par[s].tokens.push_back(next);
      refs[s].tokens.push_back(next);
    }
    ++steps;
  }
  ASSERT_TRUE(r.stop_followers().is_ok());
  std::ofstream(env_or("ANVIL_PW_RESULT", "/dev/null")) << "steps=" << steps << " max_rel=" << max_rel
                                                        << " exact=" << (exact ? 1 : 0) << "\n";
}

struct Parsed {
  int steps = 0;
  double max_rel = 1;
  int exact = 0;
};

Parsed read_result(const std::string& path) {
  Parsed p;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  std::sscanf(line.c_str(), "steps=%d max_rel=%lf exact=%d", &p.steps, &p.max_rel, &p.exact);
  return p;
}

class ParallelLogits : public ::testing::Test {
 protected:
  void SetUp() override {
    if (test::in_mpi_worker()) GTEST_SKIP() << "outer test";
    if (!dist::mpi_built() || !test::mpirun_available()) GTEST_SKIP() << "MPI or mpirun not available";
  }
  Parsed run(const std::string& model, int tp, int pp) {
    const std::string result = std::string(ANVIL_BINARY_DIR) + "/parallel_" + model + "_" + std::to_string(tp) + "x" +
                               std::to_string(pp) + "_" + std::to_string(::getpid()) + ".txt";
    std::remove(result.c_str());
    test::MpiRun mr = test::run_mpi_workers(tp * pp, "ParallelWorker.Logits",
                                            {{"ANVIL_PW_MODEL", model},
                                             {"ANVIL_PW_TP", std::to_string(tp)},
                                             {"ANVIL_PW_PP", std::to_string(pp)},
                                             {"ANVIL_PW_RESULT", result},
                                             {"ANVIL_DIST_TIMEOUT", "60"}});
    EXPECT_EQ(mr.exit_code, 0) << mr.output;
    Parsed p = read_result(result);
    std::printf("%s tp %d pp %d: %d steps, max |diff| / max |logit| = %.3g, bit-identical %d (%.1f s)\n", model.c_str(), tp, pp,
                p.steps, p.max_rel, p.exact, mr.seconds);
    std::remove(result.c_str());
    return p;
  }
};

TEST_F(ParallelLogits, Tp2GqaSplitsKvHeads) {
  const Parsed p = run("llama3_gqa", 2, 1);  // 4 q heads, 2 KV heads: one KV head per rank; tied LM head
  EXPECT_EQ(p.steps, 5);
  EXPECT_LT(p.max_rel, 1e-5);
}

TEST_F(ParallelLogits, Tp2ReplicatesKvHeadWithQkvBias) {
  const Parsed p = run("qwen2", 2, 1);  // 2 q heads, 1 KV head (replicated), QKV bias
  EXPECT_EQ(p.steps, 5);
  EXPECT_LT(p.max_rel, 1e-5);
}

TEST_F(ParallelLogits, Pp2IsBitIdentical) {
  const Parsed p = run("llama2_mha", 1, 2);  // layers [0, 2) and [2, 3)
  EXPECT_EQ(p.steps, 5);
  EXPECT_EQ(p.exact, 1);
}

TEST_F(ParallelLogits, Tp2xPp2) {
  const Parsed p = run("qwen3", 2, 2);  // q/k norm, vocab 416 over 2 ranks
  EXPECT_EQ(p.steps, 5);
  EXPECT_LT(p.max_rel, 1e-5);
}

TEST_F(ParallelLogits, Tp2xPp2QkvBias) {
  const Parsed p = run("qwen2", 2, 2);
  EXPECT_EQ(p.steps, 5);
  EXPECT_LT(p.max_rel, 1e-5);
}

// A rank killed by SIGKILL mid-run: mpirun ends the job and names the rank; nobody hangs.
TEST_F(ParallelLogits, KilledRankEndsTheJob) {
  test::MpiRun mr = test::run_mpi_workers(2, "ParallelWorker.Logits",
                                          {{"ANVIL_PW_MODEL", "llama3_gqa"},
                                           {"ANVIL_PW_TP", "2"},
                                           {"ANVIL_PW_STEPS", "200"},
                                           {"ANVIL_PW_KILL_RANK", "1"},
                                           {"ANVIL_PW_KILL_STEP", "2"},
                                           {"ANVIL_DIST_TIMEOUT", "5"}},
                                          60);
  EXPECT_NE(mr.exit_code, 0) << mr.output;
  EXPECT_NE(mr.exit_code, 124) << "timed out (hang):\n" << mr.output;
  EXPECT_LT(mr.seconds, 40) << mr.output;
  EXPECT_NE(mr.output.find("rank 1"), std::string::npos) << mr.output;
}

// A rank that exits while mpirun is told not to end the job: the others' collective times out
// and the error names the rank and says its process is gone.
TEST_F(ParallelLogits, ExitedRankIsNamedByTheTimeout) {
  test::MpiRun mr = test::run_mpi_workers(2, "ParallelWorker.Logits",
                                          {{"ANVIL_PW_MODEL", "llama3_gqa"},
                                           {"ANVIL_PW_TP", "2"},
                                           {"ANVIL_PW_STEPS", "200"},
                                           {"ANVIL_PW_KILL_RANK", "1"},
                                           {"ANVIL_PW_KILL_STEP", "2"},
                                           {"ANVIL_PW_KILL_HOW", "exit"},
                                           {"ANVIL_DIST_TIMEOUT", "2"}},
                                          60, "--mca orte_abort_on_non_zero_status 0");
  EXPECT_NE(mr.exit_code, 124) << "timed out (hang):\n" << mr.output;
  EXPECT_LT(mr.seconds, 40) << mr.output;
  EXPECT_NE(mr.output.find("did not complete within 2 s"), std::string::npos) << mr.output;
  EXPECT_NE(mr.output.find("rank 1 (pid"), std::string::npos) << mr.output;
  EXPECT_NE(mr.output.find("has exited"), std::string::npos) << mr.output;
}

}  // namespace
}  // namespace anvil
