// The sharding plan: per-rank sizes and errors, stage layer ranges, and every split checked by
// reassembling the full tensor from all ranks' shards (or, for row-parallel weights, by the sum
// of the ranks' partial products equalling the full product). Also the single-rank communicator's
// column gather and the step watchdog.
#include <gtest/gtest.h>

#include <numeric>
#include <thread>

#include "dist/communicator.h"
#include "dist/sharding.h"
#include "dist/watchdog.h"

namespace anvil::dist {
namespace {

ModelDims dims(int64_t heads, int64_t kv, int64_t vocab = 10, int64_t inter = 8, int64_t layers = 5) {
  ModelDims d;
  d.vocab = vocab;
  d.hidden = 4;
  d.intermediate = inter;
  d.num_layers = layers;
  d.num_heads = heads;
  d.num_kv_heads = kv;
  d.head_dim = 2;
  return d;
}

ParallelConfig tp_rank(int tp, int r) { return ParallelConfig::for_world_rank(tp, 1, r).value(); }

std::vector<float> iota(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0.0f);
  return v;
}

TEST(Sharding, WorldRankLayout) {
  auto pc = ParallelConfig::for_world_rank(2, 3, 5);
  ASSERT_TRUE(pc.is_ok());
  EXPECT_EQ(pc->tp_rank, 1);
  EXPECT_EQ(pc->pp_rank, 2);
  EXPECT_EQ(pc->world_rank(), 5);
  EXPECT_EQ(pc->world_rank_of(1, 0), 2);
  EXPECT_FALSE(ParallelConfig::for_world_rank(2, 2, 4).is_ok());
  EXPECT_FALSE(ParallelConfig::for_world_rank(0, 1, 0).is_ok());
}

TEST(Sharding, StageLayerRanges) {
  auto r = stage_layer_ranges(5, 2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0], (std::pair<int64_t, int64_t>{0, 3}));
  EXPECT_EQ(r[1], (std::pair<int64_t, int64_t>{3, 5}));
  r = stage_layer_ranges(7, 3);
  EXPECT_EQ(r[0], (std::pair<int64_t, int64_t>{0, 3}));
  EXPECT_EQ(r[1], (std::pair<int64_t, int64_t>{3, 5}));
  EXPECT_EQ(r[2], (std::pair<int64_t, int64_t>{5, 7}));
}

TEST(Sharding, PlanSplitsOrReplicatesKvHeads) {
  // 8 q heads, 4 KV heads over 2 ranks: 4 q + 2 KV each.
  auto p = plan_rank(dims(8, 4), tp_rank(2, 1));
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->num_heads, 4);
  EXPECT_EQ(p->q_head_begin, 4);
  EXPECT_EQ(p->num_kv_heads, 2);
  EXPECT_EQ(p->kv_head_begin, 2);
  EXPECT_EQ(p->intermediate, 4);
  EXPECT_EQ(p->intermediate_begin, 4);
  EXPECT_EQ(p->vocab_shard, 5);
  EXPECT_EQ(p->vocab_begin, 5);
  // 8 q heads, 2 KV heads over 4 ranks: ranks 0,1 share KV head 0; ranks 2,3 KV head 1.
  for (int r = 0; r < 4; ++r) {
    auto q = plan_rank(dims(8, 2), tp_rank(4, r));
    ASSERT_TRUE(q.is_ok());
    EXPECT_EQ(q->num_kv_heads, 1);
    EXPECT_EQ(q->kv_head_begin, r / 2);
    // Every q head of the rank maps to that KV head under GQA (q head h reads KV head h / 4).
    for (int64_t h = q->q_head_begin; h < q->q_head_begin + q->num_heads; ++h) EXPECT_EQ(h / 4, q->kv_head_begin);
  }
}

TEST(Sharding, PlanErrorsNameTheSize) {
  auto bad_heads = plan_rank(dims(6, 6), tp_rank(4, 0));
  ASSERT_FALSE(bad_heads.is_ok());
  EXPECT_NE(bad_heads.status().message().find("num_attention_heads"), std::string::npos);
  auto bad_kv = plan_rank(dims(12, 3), tp_rank(4, 0));  // 4 ranks, 3 KV heads: neither divides
  ASSERT_FALSE(bad_kv.is_ok());
  EXPECT_NE(bad_kv.status().message().find("num_key_value_heads"), std::string::npos);
  auto bad_inter = plan_rank(dims(4, 4, 10, 6), tp_rank(4, 0));
  ASSERT_FALSE(bad_inter.is_ok());
  EXPECT_NE(bad_inter.status().message().find("intermediate_size"), std::string::npos);
  auto pp = ParallelConfig::for_world_rank(1, 6, 0).value();
  auto bad_pp = plan_rank(dims(4, 4), pp);
  ASSERT_FALSE(bad_pp.is_ok());
  EXPECT_NE(bad_pp.status().message().find("--pp 6"), std::string::npos);
}

// QKV by heads: rank r's shard is its q heads, then its k heads, then its v heads.
TEST(Sharding, QkvByHeadsWithReplicatedKv) {
  const ModelDims d = dims(4, 1);  // rows: (4 + 2) * 2 = 12, cols 3
  const Shape full{12, 3};
  const std::vector<float> w = iota(full.numel());
  for (int r = 0; r < 2; ++r) {
    const ParallelConfig pc = tp_rank(2, r);
    const RankPlan p = plan_rank(d, pc).value();
    auto s = shard_weight(TpSplit::kQkvHeads, 1, w, full, d, p, pc);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    EXPECT_EQ(shard_shape(TpSplit::kQkvHeads, 1, full, d, p, pc).value(), (Shape{8, 3}));
    ASSERT_EQ(s->size(), 24u);
    // q heads 2r, 2r+1 -> full rows 4r .. 4r+3; k head 0 -> rows 8, 9; v head 0 -> rows 10, 11.
    const int rows[] = {4 * r, 4 * r + 1, 4 * r + 2, 4 * r + 3, 8, 9, 10, 11};
    for (int i = 0; i < 8; ++i)
      for (int c = 0; c < 3; ++c) EXPECT_EQ((*s)[i * 3 + c], w[rows[i] * 3 + c]) << "rank " << r << " row " << i;
  }
}

TEST(Sharding, QkvBiasSplitsKvHeads) {
  const ModelDims d = dims(4, 2);  // bias rows (4 + 4) * 2 = 16
  const Shape full{16};
  const std::vector<float> b = iota(16);
  const ParallelConfig pc = tp_rank(2, 1);
  const RankPlan p = plan_rank(d, pc).value();
  auto s = shard_weight(TpSplit::kQkvHeads, 1, b, full, d, p, pc);
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(*s, (std::vector<float>{4, 5, 6, 7, 10, 11, 14, 15}));
}

TEST(Sharding, GateUpSplitsEachHalf) {
  const ModelDims d = dims(4, 4, 10, 4);
  const Shape full{8, 2};  // gate rows 0..3, up rows 4..7
  const std::vector<float> w = iota(16);
  const ParallelConfig pc = tp_rank(2, 1);
  auto s = shard_weight(TpSplit::kColumn, 2, w, full, d, plan_rank(d, pc).value(), pc);
  ASSERT_TRUE(s.is_ok());
  // gate rows 2, 3 then up rows 6, 7.
  EXPECT_EQ(*s, (std::vector<float>{4, 5, 6, 7, 12, 13, 14, 15}));
}

// Row-parallel: the sum over ranks of x_r . W_r^T equals x . W^T, and the bias is added once.
TEST(Sharding, RowParallelPartialProductsSumToTheFullProduct) {
  const ModelDims d = dims(4, 4, 10, 8);
  const Shape full{3, 8};  // [out, in]
  std::vector<float> w = iota(24), x = {1, -2, 3, 0.5f, -1, 2, 0.25f, 4}, bias = {10, 20, 30};
  std::vector<double> want(3, 0), got(3, 0);
  for (int o = 0; o < 3; ++o) {
    want[o] = bias[o];
    for (int i = 0; i < 8; ++i) want[o] += static_cast<double>(w[o * 8 + i]) * x[i];
  }
  for (int r = 0; r < 4; ++r) {
    const ParallelConfig pc = tp_rank(4, r);
    const RankPlan p = plan_rank(d, pc).value();
    auto s = shard_weight(TpSplit::kRow, 1, w, full, d, p, pc);
    auto sb = shard_weight(TpSplit::kRowBias, 1, bias, Shape{3}, d, p, pc);
    ASSERT_TRUE(s.is_ok() && sb.is_ok());
    ASSERT_EQ(s->size(), 6u);
    for (int o = 0; o < 3; ++o) {
      got[o] += (*sb)[o];
      for (int i = 0; i < 2; ++i) got[o] += static_cast<double>((*s)[o * 2 + i]) * x[r * 2 + i];
    }
    if (r > 0) {
      EXPECT_EQ(*sb, (std::vector<float>{0, 0, 0}));
    }
  }
  for (int o = 0; o < 3; ++o) EXPECT_DOUBLE_EQ(got[o], want[o]);
}

TEST(Sharding, VocabShardsArePadded) {
  const ModelDims d = dims(4, 4, 10);  // 10 rows over 4 ranks: 3, 3, 3, 1 + 2 padding
  const Shape full{10, 2};
  const std::vector<float> w = iota(20);
  std::vector<float> joined;
  for (int r = 0; r < 4; ++r) {
    const ParallelConfig pc = tp_rank(4, r);
    const RankPlan p = plan_rank(d, pc).value();
    EXPECT_EQ(shard_shape(TpSplit::kVocab, 1, full, d, p, pc).value(), (Shape{3, 2}));
    auto s = shard_weight(TpSplit::kVocab, 1, w, full, d, p, pc);
    ASSERT_TRUE(s.is_ok());
    joined.insert(joined.end(), s->begin(), s->end());
  }
  ASSERT_EQ(joined.size(), 24u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(joined[i], w[i]);
  for (int i = 20; i < 24; ++i) EXPECT_EQ(joined[i], 0.0f);
}

TEST(Sharding, BadShapesAreErrors) {
  const ModelDims d = dims(4, 4);
  const ParallelConfig pc = tp_rank(2, 0);
  const RankPlan p = plan_rank(d, pc).value();
  EXPECT_FALSE(shard_weight(TpSplit::kQkvHeads, 1, iota(10), Shape{5, 2}, d, p, pc).is_ok());
  EXPECT_FALSE(shard_weight(TpSplit::kRow, 1, iota(5), Shape{5}, d, p, pc).is_ok());
  EXPECT_FALSE(shard_weight(TpSplit::kColumn, 2, iota(6), Shape{6}, d, p, pc).is_ok());  // 3 rows per part, 2 ranks
  EXPECT_FALSE(shard_weight(TpSplit::kVocab, 1, iota(8), Shape{4, 2}, d, p, pc).is_ok());
  EXPECT_FALSE(shard_weight(TpSplit::kReplicated, 1, iota(3), Shape{4}, d, p, pc).is_ok());
}

TEST(SingleRank, GatherColumnsCopiesAndRejectsPeers) {
  auto c = make_single_rank_communicator();
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};  // [2, 3]
  std::vector<float> out(4, -1), scratch(6);
  ASSERT_TRUE(c->all_gather_columns(x.data(), out.data(), scratch.data(), 2, 3, 2, sizeof(float)).is_ok());
  EXPECT_EQ(out, (std::vector<float>{1, 2, 4, 5}));  // padding column dropped
  EXPECT_FALSE(c->all_gather_columns(x.data(), out.data(), scratch.data(), 2, 3, 4, sizeof(float)).is_ok());
  float v = 1;
  EXPECT_FALSE(c->send(&v, 4, 1).is_ok());
  EXPECT_FALSE(c->recv(&v, 4, 0).is_ok());
  EXPECT_TRUE(c->all_reduce_sum(&v, 1, DType::kF32).is_ok());
  EXPECT_EQ(v, 1.0f);
}

TEST(Watchdog, ReportsAStuckStepOnly) {
  std::atomic<int> reports{0};
  std::string last;
  std::mutex mu;
  StepWatchdog w("rank 3", 0.05, [&](const std::string& m) {
    std::lock_guard<std::mutex> lk(mu);
    last = m;
    ++reports;
  });
  for (int i = 0; i < 5; ++i) {
    w.begin_step(i);
    w.end_step();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  EXPECT_EQ(reports.load(), 0);
  w.begin_step(7);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  w.end_step();
  EXPECT_GE(reports.load(), 2);  // once per threshold while it lasts
  std::lock_guard<std::mutex> lk(mu);
  EXPECT_NE(last.find("rank 3: step 7 has run for"), std::string::npos) << last;
}

}  // namespace
}  // namespace anvil::dist
