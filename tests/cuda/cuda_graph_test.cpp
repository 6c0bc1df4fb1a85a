// CUDA graph capture / replay: a decode-like op chain (norm, GEMMs, act_mul, gather, lm head,
// sampling) replayed from a graph gives bit-identical results to direct execution, also after
// the inputs change in place; allocation and host waits are refused while capturing.
#include <gtest/gtest.h>

#include "cuda_test_util.h"

namespace anvil::test {
namespace {

TEST(CudaGraph, ReplayEqualsDirectExecution) {
  ANVIL_REQUIRE_GPU();
  const DType dt = DType::kBF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  const int64_t t = 8, h = 256, f = 384, vocab = 5003;
  auto x = random_floats(t * h, 1);
  auto res0 = random_floats(t * h, 2);
  auto nw = random_floats(h, 3, 0.5f, 1.5f);
  auto wgu = random_floats(2 * f * h, 4, -0.1f, 0.1f);
  auto wd = random_floats(h * f, 5, -0.1f, 0.1f);
  auto wlm = random_floats(vocab * h, 6, -0.2f, 0.2f);
  auto d_x = DevBuf::of(gpu.get(), round_to(dt, x));
  auto d_res0 = DevBuf::of(gpu.get(), round_to(dt, res0));
  auto d_res = DevBuf::poison(gpu.get(), t * h * 2);
  auto d_nw = DevBuf::of(gpu.get(), round_to(dt, nw));
  auto d_wgu = DevBuf::of(gpu.get(), round_to(dt, wgu));
  auto d_wd = DevBuf::of(gpu.get(), round_to(dt, wd));
  auto d_wlm = DevBuf::of(gpu.get(), round_to(dt, wlm));
  auto d_hn = DevBuf::poison(gpu.get(), t * h * 2);
  auto d_gu = DevBuf::poison(gpu.get(), t * 2 * f * 2);
  auto d_a = DevBuf::poison(gpu.get(), t * f * 2);
  auto d_y = DevBuf::poison(gpu.get(), t * h * 2);
  const int rows = 3;
  auto d_rows = DevBuf::of(gpu.get(), std::vector<int32_t>{2, 5, 7});
  auto d_last = DevBuf::poison(gpu.get(), rows * h * 2);
  auto d_logits = DevBuf::poison(gpu.get(), rows * vocab * 4);
  auto d_ids = DevBuf::poison(gpu.get(), rows * 4);
  auto d_lp = DevBuf::poison(gpu.get(), rows * 4);
  auto d_temp = DevBuf::of(gpu.get(), std::vector<float>{0.0f, 1.0f, 0.7f});
  auto d_topk = DevBuf::of(gpu.get(), std::vector<int32_t>{0, 20, 0});
  auto d_topp = DevBuf::of(gpu.get(), std::vector<float>{1.0f, 1.0f, 0.9f});
  auto d_seed = DevBuf::of(gpu.get(), std::vector<uint64_t>{1, 2, 3});
  auto d_step = DevBuf::of(gpu.get(), std::vector<int64_t>{4, 5, 6});
  SamplingBatch sb;
  sb.num_rows = rows;
  sb.all_greedy = false;
  sb.temperature = static_cast<const float*>(d_temp.buf.get());
  sb.top_k = static_cast<const int32_t*>(d_topk.buf.get());
  sb.top_p = static_cast<const float*>(d_topp.buf.get());
  sb.seeds = static_cast<const uint64_t*>(d_seed.buf.get());
  sb.steps = static_cast<const int64_t*>(d_step.buf.get());

  auto step = [&]() -> Status {
    ANVIL_RETURN_IF_ERROR(gpu->copy_d2d(d_res.buf.get(), d_res0.buf.get(), t * h * 2));
    ANVIL_RETURN_IF_ERROR(gpu->rms_norm(d_x.t(dt, {t, h}), d_res.t(dt, {t, h}), d_nw.t(dt, {h}), 1e-5f, d_hn.t(dt, {t, h})));
    ANVIL_RETURN_IF_ERROR(gpu->linear(d_hn.t(dt, {t, h}), d_wgu.t(dt, {2 * f, h}), Tensor(), d_gu.t(dt, {t, 2 * f})));
    ANVIL_RETURN_IF_ERROR(gpu->act_mul(d_gu.t(dt, {t, 2 * f}), Activation::kSilu, d_a.t(dt, {t, f})));
    ANVIL_RETURN_IF_ERROR(gpu->linear(d_a.t(dt, {t, f}), d_wd.t(dt, {h, f}), Tensor(), d_y.t(dt, {t, h})));
    ANVIL_RETURN_IF_ERROR(gpu->gather_rows(d_y.t(dt, {t, h}), d_rows.t(DType::kI32, {rows}), d_last.t(dt, {rows, h})));
    ANVIL_RETURN_IF_ERROR(gpu->linear(d_last.t(dt, {rows, h}), d_wlm.t(dt, {vocab, h}), Tensor(),
                                      d_logits.t(DType::kF32, {rows, vocab})));
    return gpu->sample(d_logits.t(DType::kF32, {rows, vocab}), sb, d_ids.t(DType::kI32, {rows}),
                       d_lp.t(DType::kF32, {rows}));
  };
  struct Snapshot {
    std::vector<uint16_t> y, res;
    std::vector<float> logits, lp;
    std::vector<int32_t> ids;
  };
  auto snap = [&] {
    return Snapshot{d_y.read<uint16_t>(t * h), d_res.read<uint16_t>(t * h), d_logits.read<float>(rows * vocab),
                    d_lp.read<float>(rows), d_ids.read<int32_t>(rows)};
  };
  auto expect_equal = [](const Snapshot& a, const Snapshot& b) {
    EXPECT_EQ(a.y, b.y);
    EXPECT_EQ(a.res, b.res);
    EXPECT_EQ(a.logits, b.logits);
    EXPECT_EQ(a.lp, b.lp);
    EXPECT_EQ(a.ids, b.ids);
  };

  ASSERT_TRUE(step().is_ok());
  const Snapshot direct = snap();
  ASSERT_TRUE(gpu->begin_capture().is_ok());
  ASSERT_TRUE(step().is_ok());
  // Inside a capture, fresh allocations and host waits are refused (and leave the capture usable).
  EXPECT_FALSE(gpu->allocate(123456789).is_ok());
  EXPECT_FALSE(gpu->synchronize().is_ok());
  auto id = gpu->end_capture();
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  // Poison the outputs, replay, compare.
  ASSERT_TRUE(gpu->copy_h2d(d_y.buf.get(), std::vector<uint8_t>(t * h * 2, 0xFF).data(), t * h * 2).is_ok());
  ASSERT_TRUE(gpu->copy_h2d(d_ids.buf.get(), std::vector<uint8_t>(rows * 4, 0xFF).data(), rows * 4).is_ok());
  ASSERT_TRUE(gpu->synchronize().is_ok());
  ASSERT_TRUE(gpu->replay(*id).is_ok());
  expect_equal(snap(), direct);

  // New inputs in the same buffer: replay follows them like direct execution does.
  auto x2 = random_floats(t * h, 99);
  auto x2b = round_to(dt, x2);
  ASSERT_TRUE(gpu->copy_h2d(d_x.buf.get(), x2b.data(), t * h * 2).is_ok());
  ASSERT_TRUE(step().is_ok());
  const Snapshot direct2 = snap();
  EXPECT_NE(direct2.y, direct.y);
  ASSERT_TRUE(gpu->replay(*id).is_ok());
  ASSERT_TRUE(gpu->replay(*id).is_ok());
  expect_equal(snap(), direct2);
  EXPECT_FALSE(gpu->replay(*id + 1).is_ok());
}

}  // namespace
}  // namespace anvil::test
