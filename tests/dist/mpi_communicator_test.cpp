// The MPI communicator with 3 CPU ranks (this binary re-run under mpirun): every collective's
// values, a tensor-parallel split, the column gather with padding, and a stuck rank named by the
// timeout of the others' barrier. Skips where MPI or mpirun is missing.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "../parallel/mpi_test_util.h"
#include "dist/mpi_communicator.h"

namespace anvil::dist {
namespace {

TEST(MpiWorker, Collectives) {
  if (!test::in_mpi_worker()) GTEST_SKIP() << "runs as a rank of the mpirun job MpiCommunicator starts";
  auto w = create_mpi_world(comm_options_from_env());
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  Communicator& c = **w;
  const int r = c.rank(), n = c.size();
  ASSERT_EQ(n, 3);
  EXPECT_EQ(c.world_rank_of(r), r);

  std::vector<float> v = {1.0f * r, 10.0f + r, -0.5f};
  ASSERT_TRUE(c.all_reduce_sum(v.data(), v.size(), DType::kF32).is_ok());
  EXPECT_EQ(v, (std::vector<float>{3, 33, -1.5f}));
  std::vector<uint16_t> h = {f32_to_bf16(1.5f * (r + 1)), f32_to_bf16(-2.0f)};
  ASSERT_TRUE(c.all_reduce_sum(h.data(), h.size(), DType::kBF16).is_ok());
  EXPECT_EQ(bf16_to_f32(h[0]), 9.0f);
  EXPECT_EQ(bf16_to_f32(h[1]), -6.0f);
  std::vector<uint16_t> f = {f32_to_f16(0.25f * r)};
  ASSERT_TRUE(c.all_reduce_sum(f.data(), 1, DType::kF16).is_ok());
  EXPECT_EQ(f16_to_f32(f[0]), 0.75f);
  EXPECT_FALSE(c.all_reduce_sum(v.data(), 1, DType::kI32).is_ok());

  int32_t mine[2] = {r, r * r};
  std::vector<int32_t> all(6, -1);
  ASSERT_TRUE(c.all_gather(mine, all.data(), sizeof(mine)).is_ok());
  EXPECT_EQ(all, (std::vector<int32_t>{0, 0, 1, 1, 2, 4}));

  int64_t b = r == 1 ? 424242 : 0;
  ASSERT_TRUE(c.broadcast(&b, sizeof(b), 1).is_ok());
  EXPECT_EQ(b, 424242);

  // Ring: each rank sends to the next, receives from the previous (even ranks send first).
  int32_t out = 100 + r, in = -1;
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  if (r % 2 == 0) {
    ASSERT_TRUE(c.send(&out, sizeof(out), next).is_ok());
    ASSERT_TRUE(c.recv(&in, sizeof(in), prev).is_ok());
  } else {
    ASSERT_TRUE(c.recv(&in, sizeof(in), prev).is_ok());
    ASSERT_TRUE(c.send(&out, sizeof(out), next).is_ok());
  }
  EXPECT_EQ(in, 100 + prev);

  // Split {0, 2} and {1}: sums stay inside each group; ranks map back to the world.
  auto sub = c.split(r % 2, r);
  ASSERT_TRUE(sub.is_ok());
  float s = 1.0f + r;
  ASSERT_TRUE((*sub)->all_reduce_sum(&s, 1, DType::kF32).is_ok());
  EXPECT_EQ(s, r % 2 == 0 ? 4.0f : 2.0f);
  EXPECT_EQ((*sub)->size(), r % 2 == 0 ? 2 : 1);
  if (r == 2) {
    EXPECT_EQ((*sub)->world_rank_of(1), 2);
  }

  // Column gather: [2 rows, 2 cols] per rank into 5 columns (the last rank's second column is padding).
  const float x[4] = {10.0f * r, 10.0f * r + 1, 10.0f * r + 2, 10.0f * r + 3};
  std::vector<float> scratch(12), cols(10, -1);
  ASSERT_TRUE(c.all_gather_columns(x, cols.data(), scratch.data(), 2, 2, 5, sizeof(float)).is_ok());
  EXPECT_EQ(cols, (std::vector<float>{0, 1, 10, 11, 20, 2, 3, 12, 13, 22}));
  ASSERT_TRUE(c.barrier().is_ok());
  sub->reset();
  w->reset();
  mpi_finalize();
}

// Rank 2 sleeps through a barrier: ranks 0 and 1 fail within their 1 s timeout, naming rank 2 as
// alive but not answering.
TEST(MpiWorker, StuckRankIsNamed) {
  if (!test::in_mpi_worker()) GTEST_SKIP() << "runs as a rank of the mpirun job MpiCommunicator starts";
  CommOptions o;
  o.timeout_seconds = 1.0;
  auto w = create_mpi_world(o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  if ((*w)->rank() == 2) {
    std::this_thread::sleep_for(std::chrono::seconds(4));
    std::_Exit(0);  // its barrier partners are gone by now
  }
  const auto t0 = std::chrono::steady_clock::now();
  Status st = (*w)->barrier();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(st.is_ok());
  EXPECT_LT(took, 3.5);
  EXPECT_NE(st.message().find("barrier did not complete within 1 s"), std::string::npos) << st.to_string();
  EXPECT_NE(st.message().find("rank 2 (pid"), std::string::npos) << st.to_string();
  EXPECT_NE(st.message().find("alive but not answering"), std::string::npos) << st.to_string();
  EXPECT_EQ(st.message().find((*w)->rank() == 0 ? "rank 1 (pid" : "rank 0 (pid"), std::string::npos)
      << "the live peer answered pings and must not be named: " << st.to_string();
  std::printf("rank %d: %s\n", (*w)->rank(), st.to_string().c_str());
  std::fflush(stdout);
  std::_Exit(::testing::Test::HasFailure() ? 1 : 0);  // MPI_Finalize would wait for rank 2
}

class MpiCommunicator : public ::testing::Test {
 protected:
  void SetUp() override {
    if (test::in_mpi_worker()) GTEST_SKIP() << "outer test";
    if (!mpi_built() || !test::mpirun_available()) GTEST_SKIP() << "MPI or mpirun not available";
  }
};

TEST_F(MpiCommunicator, ThreeRanks) {
  test::MpiRun r = test::run_mpi_workers(3, "MpiWorker.Collectives", {{"ANVIL_DIST_TIMEOUT", "30"}}, 90);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[  PASSED  ] 1 test"), std::string::npos) << r.output;
}

TEST_F(MpiCommunicator, StuckRankTimesOut) {
  // Ranks leave without MPI_Finalize here (a barrier partner is stuck), so mpirun's exit code is
  // not 0; what counts is that nobody hangs and both live ranks name rank 2.
  test::MpiRun r = test::run_mpi_workers(3, "MpiWorker.StuckRankIsNamed", {}, 90);
  EXPECT_NE(r.exit_code, 124) << "timed out (hang):\n" << r.output;
  EXPECT_EQ(r.output.find("Failure"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 0: unavailable"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 1: unavailable"), std::string::npos) << r.output;
  EXPECT_LT(r.seconds, 30);
}

}  // namespace
}  // namespace anvil::dist
