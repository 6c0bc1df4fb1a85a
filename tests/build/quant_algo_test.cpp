// Quantization algorithms on seeded synthetic layers: AWQ and GPTQ against plain RTN in the
// layer-output error they minimise, SmoothQuant against no smoothing under simulated W8A8, the
// dense kernels GPTQ relies on, and pre-quantized HF imports against an independent numpy packer.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "build/quantize/awq.h"
#include "build/quantize/dense_linalg.h"
#include "build/quantize/gptq.h"
#include "build/quantize/hf_prequant.h"
#include "build/quantize/int4_group_codec.h"
#include "build/quantize/rtn.h"
#include "build/quantize/smoothquant.h"
#include "core/dtype.h"

namespace anvil {
namespace {

using quant_detail::int4_code;
using quant_detail::int4_group_dequantize;
using quant_detail::int4_group_params;
using quant_detail::int4_group_params_mse;
using quant_detail::int4_value;
using quant_detail::Int4GroupParams;
using quant_detail::int4_group_rtn;

// Activations [rows, k]: unit normals with a shared component per 8 channels (correlated inputs),
// every channel scaled by a per-channel magnitude; every 23rd channel is an outlier (x25).
std::vector<float> make_inputs(int64_t rows, int64_t k, uint32_t seed, std::vector<float>* channel_scale = nullptr) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> scale(static_cast<size_t>(k));
  std::mt19937 srng(1234);  // channel magnitudes are a property of the layer, not of the sample
  std::uniform_real_distribution<float> ud(0.3f, 1.5f);
  for (int64_t c = 0; c < k; ++c) scale[c] = ud(srng) * (c % 23 == 5 ? 25.0f : 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * k));
  std::vector<float> shared(static_cast<size_t>(k / 8 + 1));
  for (int64_t t = 0; t < rows; ++t) {
    for (float& v : shared) v = nd(rng);
    for (int64_t c = 0; c < k; ++c) x[t * k + c] = (nd(rng) + 0.8f * shared[c / 8]) * scale[c];
  }
  if (channel_scale) *channel_scale = scale;
  return x;
}

std::vector<float> make_weights(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (float& v : w) v = nd(rng);
  return w;
}

LinearInputStats stats_of(const std::vector<float>& x, int64_t rows, int64_t k, bool hessian) {
  LinearInputStats s;
  s.k = k;
  s.tokens = rows;
  s.abs_max.assign(static_cast<size_t>(k), 0.0f);
  s.abs_mean.assign(static_cast<size_t>(k), 0.0f);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < k; ++c) {
      s.abs_max[c] = std::max(s.abs_max[c], std::fabs(x[t * k + c]));
      s.abs_mean[c] += std::fabs(x[t * k + c]) / static_cast<float>(rows);
    }
  s.sample_rows = x;
  if (hessian) {
    std::vector<double> h(static_cast<size_t>(k * k), 0.0);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) h[i * k + j] += static_cast<double>(x[t * k + i]) * x[t * k + j];
    s.hessian.assign(h.begin(), h.end());
  }
  return s;
}

// ||X (A - B)^T||^2, f64.
double output_error(const std::vector<float>& x, int64_t rows, const std::vector<float>& a, const std::vector<float>& b,
                    int64_t n, int64_t k) {
  double total = 0.0;
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t j = 0; j < n; ++j) {
      double d = 0.0;
      for (int64_t c = 0; c < k; ++c) d += static_cast<double>(x[t * k + c]) * (a[j * k + c] - b[j * k + c]);
      total += d * d;
    }
  return total;
}

// ---- AWQ ----

TEST(Awq, ScalesBeatRtnOnHeldOutInputs) {
  const int64_t n = 96, k = 256, rows = 256;
  const int32_t g = 64;
  const auto w = make_weights(n, k, 1);
  const auto x_cal = make_inputs(rows, k, 2), x_test = make_inputs(rows, k, 3);
  const LinearInputStats stats = stats_of(x_cal, rows, k, false);

  auto found = awq_search(w.data(), n, k, g, stats);
  ASSERT_TRUE(found.is_ok()) << found.status().to_string();
  ASSERT_EQ(static_cast<int64_t>(found->scales.size()), k);
  EXPECT_GT(found->alpha, 0.0f);
  EXPECT_EQ(found->outputs_evaluated, n);
  EXPECT_LT(found->error_best, found->error_rtn);

  const auto rtn = int4_group_dequantize(int4_group_rtn(w.data(), n, k, g));
  std::vector<float> ws(w.size());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) ws[r * k + c] = w[r * k + c] * found->scales[c];
  auto awq = int4_group_dequantize(int4_group_rtn(ws.data(), n, k, g));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) awq[r * k + c] /= found->scales[c];
  const double e_rtn = output_error(x_test, rows, w, rtn, n, k), e_awq = output_error(x_test, rows, w, awq, n, k);
  const double ratio = e_awq / e_rtn;
  std::printf("AWQ alpha %.2f: held-out output error AWQ/RTN = %.3f (calibration %.3f)\n", found->alpha, ratio,
              found->error_best / found->error_rtn);
  EXPECT_LT(ratio, 0.5);

  // The clip search on top of the scales lowers the calibration error further.
  auto clip = awq_search_clip(ws.data(), n, k, g, stats, found->scales);
  ASSERT_TRUE(clip.is_ok()) << clip.status().to_string();
  std::vector<float> wc = ws;
  awq_apply_clip(wc.data(), n, k, g, *clip);
  auto awq_clip = int4_group_dequantize(int4_group_rtn(wc.data(), n, k, g));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) awq_clip[r * k + c] /= found->scales[c];
  const double e_clip = output_error(x_test, rows, w, awq_clip, n, k);
  std::printf("AWQ + clip: held-out output error /RTN = %.3f\n", e_clip / e_rtn);
  EXPECT_LT(e_clip, e_awq * 1.02);
  int clipped = 0;
  for (size_t i = 0; i < clip->size(); ++i) clipped += (*clip)[i] < 0.999f * [&] {
    float m = 0.0f;
    const int64_t r = static_cast<int64_t>(i) / (k / g), gi = static_cast<int64_t>(i) % (k / g);
    for (int64_t c = gi * g; c < (gi + 1) * g; ++c) m = std::max(m, std::fabs(ws[r * k + c]));
    return m;
  }();
  EXPECT_GT(clipped, 0);
}

// The Hessian form of the loss is the sample-row form over every row: tr(E H E^T) = ||X E^T||^2,
// so both searches pick the same alpha with (up to f32 summation order) the same errors.
TEST(Awq, HessianLossMatchesSampleRows) {
  const int64_t n = 48, k = 128, rows = 192;
  const int32_t g = 32;
  const auto w = make_weights(n, k, 21);
  const LinearInputStats stats = stats_of(make_inputs(rows, k, 22), rows, k, true);
  auto by_rows = awq_search(w.data(), n, k, g, stats);
  auto by_h = awq_search_hessian(w.data(), n, k, g, stats);
  ASSERT_TRUE(by_rows.is_ok() && by_h.is_ok());
  EXPECT_EQ(by_h->outputs_evaluated, n);
  EXPECT_EQ(by_h->alpha, by_rows->alpha);
  EXPECT_GT(by_h->alpha, 0.0f);
  EXPECT_NEAR(by_h->error_rtn, by_rows->error_rtn, 1e-4 * by_rows->error_rtn);
  EXPECT_NEAR(by_h->error_best, by_rows->error_best, 1e-4 * by_rows->error_best);
  EXPECT_EQ(by_h->scales, by_rows->scales);
  LinearInputStats no_h = stats;
  no_h.hessian.pop_back();
  auto bad = awq_search_hessian(w.data(), n, k, g, no_h);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("Hessian"), std::string::npos) << bad.status().message();
}

TEST(Awq, UniformInputsKeepScalesNearOne) {
  const int64_t n = 32, k = 128, rows = 64;
  const auto w = make_weights(n, k, 5);
  std::mt19937 rng(6);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(rows * k));
  for (float& v : x) v = nd(rng);
  auto s = awq_search_scales(w.data(), n, k, 64, stats_of(x, rows, k, false));
  ASSERT_TRUE(s.is_ok());
  for (float v : *s) EXPECT_NEAR(v, 1.0f, 0.35f);  // no salient channels: nothing much to protect
}

TEST(Awq, BadInputsAreClearErrors) {
  const int64_t n = 8, k = 64;
  const auto w = make_weights(n, k, 7);
  LinearInputStats stats = stats_of(make_inputs(16, k, 8), 16, k, false);
  auto r = awq_search_scales(w.data(), n, k, 48, stats);  // 48 does not divide 64
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("group_size 48"), std::string::npos) << r.status().message();
  LinearInputStats no_rows = stats;
  no_rows.sample_rows.clear();
  r = awq_search_scales(w.data(), n, k, 32, no_rows);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("sample_rows"), std::string::npos);
  LinearInputStats wrong_k = stats;
  wrong_k.k = 32;
  r = awq_search_scales(w.data(), n, k, 32, wrong_k);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("K=32"), std::string::npos);
  auto bad_w = w;
  bad_w[70] = std::nanf("");
  r = awq_search_scales(bad_w.data(), n, k, 32, stats);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("[1, 6]"), std::string::npos) << r.status().message();
}

// ---- GPTQ ----

struct GptqCase {
  int64_t n, k, rows;
  int32_t g;
};

double rtn_output_error(const std::vector<float>& w, int64_t n, int64_t k, int32_t g, const std::vector<float>& h) {
  const auto rtn = int4_group_dequantize(int4_group_rtn(w.data(), n, k, g));
  return gptq_output_error(w.data(), rtn.data(), n, k, h);
}

TEST(Gptq, BeatsRtnWithAndWithoutActOrder) {
  const GptqCase c{128, 256, 1024, 64};
  const auto w = make_weights(c.n, c.k, 11);
  const auto x = make_inputs(c.rows, c.k, 12);
  const LinearInputStats stats = stats_of(x, c.rows, c.k, true);
  const double e_rtn = rtn_output_error(w, c.n, c.k, c.g, stats.hessian);
  for (bool act_order : {false, true}) {
    GptqOptions opts;
    opts.act_order = act_order;
    opts.block_size = 64;
    auto q = gptq_quantize_int4(w.data(), c.n, c.k, c.g, stats.hessian, opts);
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    EXPECT_EQ(q->format, QuantFormat::kInt4Group);
    EXPECT_EQ(q->data.size(), static_cast<size_t>(c.n * c.k / 2));
    const auto deq = int4_group_dequantize(*q);
    const double e = gptq_output_error(w.data(), deq.data(), c.n, c.k, stats.hessian);
    std::printf("GPTQ act_order=%d: tr(E H E^T) GPTQ/RTN = %.3f\n", act_order, e / e_rtn);
    // A numpy transcription of the GPTQ paper's loop on this data gives 0.70 / 0.56.
    EXPECT_LT(e, 0.8 * e_rtn) << "act_order " << act_order;
  }
}

// fp8: the same error compensation over e4m3 codes with the searched per-row scales.
TEST(Gptq, Fp8BeatsSearchedRtn) {
  const GptqCase c{96, 256, 1024, 0};
  const auto w = make_weights(c.n, c.k, 31);
  const auto x = make_inputs(c.rows, c.k, 32);
  const LinearInputStats stats = stats_of(x, c.rows, c.k, true);
  auto rtn = quantize_fp8_per_channel_searched(w.data(), c.n, c.k);
  ASSERT_TRUE(rtn.is_ok());
  const auto rtn_deq = dequantize(*rtn);
  const double e_rtn = gptq_output_error(w.data(), rtn_deq.data(), c.n, c.k, stats.hessian);
  for (bool act_order : {false, true}) {
    GptqOptions opts;
    opts.act_order = act_order;
    opts.block_size = 64;
    auto q = gptq_quantize_fp8(w.data(), c.n, c.k, stats.hessian, opts);
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    EXPECT_EQ(q->format, QuantFormat::kFp8W8A8);
    EXPECT_EQ(q->scales, rtn->scales);  // the scales are the searched ones, fixed up front
    const auto deq = dequantize(*q);
    const double e = gptq_output_error(w.data(), deq.data(), c.n, c.k, stats.hessian);
    std::printf("GPTQ fp8 act_order=%d: tr(E H E^T) GPTQ/RTN = %.3f\n", act_order, e / e_rtn);
    EXPECT_LT(e, 0.8 * e_rtn) << "act_order " << act_order;
  }
}

// The damped objective: with damp 0 it is gptq_output_error; damping only adds to it.
TEST(Gptq, DampedOutputErrorMatchesUndampedAtZero) {
  const int64_t n = 24, k = 96;
  const auto w = make_weights(n, k, 41);
  const auto h = stats_of(make_inputs(256, k, 42), 256, k, true).hessian;
  const auto wq = int4_group_dequantize(int4_group_rtn(w.data(), n, k, 32));
  const double plain = gptq_output_error(w.data(), wq.data(), n, k, h);
  GptqOptions none;
  none.damp = 0.0;
  EXPECT_NEAR(gptq_damped_output_error(w.data(), wq.data(), n, k, h, none), plain, 1e-4 * plain);
  const double damped = gptq_damped_output_error(w.data(), wq.data(), n, k, h, GptqOptions{});
  EXPECT_GT(damped, plain * 1.01);
  EXPECT_LT(damped, plain * 1.2);  // damping adds 0.1 * sum_i H_ii d_i^2, a fraction of the whole
}

TEST(Gptq, Fp8IdentityHessianIsRtn) {
  const int64_t n = 24, k = 192;
  const auto w = make_weights(n, k, 33);
  std::vector<float> h(static_cast<size_t>(k * k), 0.0f);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] = 1.0f;
  auto rtn = quantize_fp8_per_channel_searched(w.data(), n, k);
  ASSERT_TRUE(rtn.is_ok());
  GptqOptions opts;
  opts.damp = 0.0;
  auto q = gptq_quantize_fp8(w.data(), n, k, h, opts);
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
  EXPECT_EQ(q->data, rtn->data);
  EXPECT_EQ(q->scales, rtn->scales);
}

TEST(Gptq, BlockSizeDoesNotChangeTheMath) {
  // Lazy block updates are an exact reordering of the same arithmetic (up to f32 rounding).
  const GptqCase c{16, 128, 256, 32};
  const auto w = make_weights(c.n, c.k, 13);
  const auto h = stats_of(make_inputs(c.rows, c.k, 14), c.rows, c.k, true).hessian;
  GptqOptions a, b;
  a.block_size = 32;
  b.block_size = 128;
  auto qa = gptq_quantize_int4(w.data(), c.n, c.k, c.g, h, a);
  auto qb = gptq_quantize_int4(w.data(), c.n, c.k, c.g, h, b);
  ASSERT_TRUE(qa.is_ok() && qb.is_ok());
  const auto da = int4_group_dequantize(*qa), db = int4_group_dequantize(*qb);
  const double ea = gptq_output_error(w.data(), da.data(), c.n, c.k, h);
  const double eb = gptq_output_error(w.data(), db.data(), c.n, c.k, h);
  EXPECT_NEAR(ea / eb, 1.0, 0.02);
  int64_t differ = 0;
  for (size_t i = 0; i < qa->data.size(); ++i) differ += qa->data[i] != qb->data[i];
  EXPECT_LT(differ, static_cast<int64_t>(qa->data.size()) / 50);  // only rounding ties may flip
}

TEST(Gptq, IdentityHessianIsRtn) {
  const int64_t n = 24, k = 192;
  const int32_t g = 64;
  const auto w = make_weights(n, k, 15);
  std::vector<float> h(static_cast<size_t>(k * k), 0.0f);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] = 1.0f;
  const QuantizedLinear rtn = int4_group_rtn(w.data(), n, k, g);
  for (bool act_order : {false, true}) {
    GptqOptions opts;
    opts.act_order = act_order;
    opts.mse_group_params = false;  // plain min/max groups, as int4_group_rtn
    auto q = gptq_quantize_int4(w.data(), n, k, g, h, opts);
    ASSERT_TRUE(q.is_ok());
    EXPECT_EQ(q->data, rtn.data);
    EXPECT_EQ(q->scales_f16, rtn.scales_f16);
    EXPECT_EQ(q->offsets_f16, rtn.offsets_f16);
  }
}

// The range search never does worse than min/max on its own (weighted) measure, and a group
// with one far outlier gets a narrower range: clipping the outlier a little buys finer codes for
// the other 63 values.
TEST(Int4GroupCodec, MseRangeSearchBeatsMinMax) {
  const int64_t len = 64;
  auto weighted_error = [&](const std::vector<float>& v, const Int4GroupParams& p, const std::vector<float>* imp) {
    double e = 0.0;
    for (int64_t i = 0; i < len; ++i) {
      const double d = v[i] - int4_value(int4_code(v[i], p), p);
      e += d * d * (imp ? (*imp)[i] : 1.0);
    }
    return e;
  };
  std::mt19937 rng(21);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::uniform_real_distribution<float> ud(0.1f, 10.0f);
  int narrower = 0;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> v(len), imp(len);
    for (int64_t i = 0; i < len; ++i) {
      v[i] = nd(rng);
      imp[i] = ud(rng);
    }
    v[trial % len] = 0.2f;  // a 10-sigma outlier
    const Int4GroupParams mm = int4_group_params(v.data(), len);
    const Int4GroupParams plain = int4_group_params_mse(v.data(), len);
    const Int4GroupParams weighted = int4_group_params_mse(v.data(), len, imp.data());
    EXPECT_LE(weighted_error(v, plain, nullptr), weighted_error(v, mm, nullptr));
    EXPECT_LE(weighted_error(v, weighted, &imp), weighted_error(v, mm, &imp));
    narrower += plain.scale < mm.scale;
  }
  EXPECT_GT(narrower, 25);  // 36 of 50 when written
}

TEST(Gptq, DeadChannelsAreHandled) {
  const int64_t n = 32, k = 128, rows = 512;
  const int32_t g = 32;
  const auto w = make_weights(n, k, 16);
  auto x = make_inputs(rows, k, 17);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c : {3, 40, 41, 100}) x[t * k + c] = 0.0f;
  const auto h = stats_of(x, rows, k, true).hessian;
  for (bool act_order : {false, true}) {
    GptqOptions opts;
    opts.act_order = act_order;
    auto q = gptq_quantize_int4(w.data(), n, k, g, h, opts);
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    const auto deq = int4_group_dequantize(*q);
    for (float v : deq) ASSERT_TRUE(std::isfinite(v));
    EXPECT_LT(gptq_output_error(w.data(), deq.data(), n, k, h), rtn_output_error(w, n, k, g, h));
  }
  // An all-zero Hessian (no calibration tokens reached the layer) still quantizes.
  std::vector<float> zero(static_cast<size_t>(k * k), 0.0f);
  auto q = gptq_quantize_int4(w.data(), n, k, g, zero, GptqOptions{});
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
}

TEST(Gptq, BadInputsAreClearErrors) {
  const int64_t n = 8, k = 64;
  const auto w = make_weights(n, k, 18);
  std::vector<float> h(static_cast<size_t>(k * k), 0.0f);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] = 1.0f;
  auto r = gptq_quantize_int4(w.data(), n, k, 32, std::vector<float>(10, 1.0f), GptqOptions{});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("hessian has 10 elements"), std::string::npos);
  r = gptq_quantize_int4(w.data(), n, k, 24, h, GptqOptions{});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("group_size 24"), std::string::npos);
  r = gptq_quantize_int4(w.data(), n, k, 0, h, GptqOptions{});
  ASSERT_FALSE(r.is_ok());
  r = gptq_quantize_int4(w.data(), 0, k, 32, h, GptqOptions{});
  ASSERT_FALSE(r.is_ok());
  auto neg = h;
  neg[5 * k + 5] = -1.0f;
  r = gptq_quantize_int4(w.data(), n, k, 32, neg, GptqOptions{});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("diagonal [5]"), std::string::npos);
  GptqOptions bad;
  bad.damp = -1.0;
  r = gptq_quantize_int4(w.data(), n, k, 32, h, bad);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("damp"), std::string::npos);
  // Indefinite beyond what damping repairs: a huge negative off-diagonal pair.
  auto indef = h;
  indef[1 * k + 0] = indef[0 * k + 1] = 1e6f;
  r = gptq_quantize_int4(w.data(), n, k, 32, indef, GptqOptions{});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("not positive definite"), std::string::npos);
}

// Timing at the largest shape the builder meets: run with --gtest_also_run_disabled_tests.
TEST(Gptq, DISABLED_Timing4096) {
  const int64_t n = 4096, k = 4096;
  const auto w = make_weights(n, k, 19);
  std::mt19937 rng(20);
  std::normal_distribution<float> nd;
  // H = A A^T + I, a dense SPD matrix, without a k^2 * tokens accumulation.
  std::vector<float> a(static_cast<size_t>(k * 64)), h(static_cast<size_t>(k * k));
  for (float& v : a) v = nd(rng);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      float s = i == j ? 1.0f : 0.0f;
      for (int64_t p = 0; p < 64; ++p) s += a[i * 64 + p] * a[j * 64 + p];
      h[i * k + j] = s;
    }
  const auto t0 = std::chrono::steady_clock::now();
  auto q = gptq_quantize_int4(w.data(), n, k, 128, h, GptqOptions{});
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(q.is_ok());
  std::printf("GPTQ 4096x4096 g128: %.2f s\n", sec);
}

// ---- dense kernels behind GPTQ ----

TEST(DenseLinalg, CholeskyAndTriangularInverse) {
  const int64_t k = 301;  // not a multiple of the 128 block
  std::mt19937 rng(21);
  std::normal_distribution<double> nd;
  std::vector<double> b(static_cast<size_t>(k * k)), a(static_cast<size_t>(k * k), 0.0);
  for (double& v : b) v = nd(rng);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = i == j ? 0.5 * k : 0.0;
      for (int64_t p = 0; p < k; ++p) s += b[i * k + p] * b[j * k + p] / k;
      a[i * k + j] = s;
    }
  std::vector<double> l = a;
  ASSERT_TRUE(quant_detail::cholesky_lower(l.data(), k).is_ok());
  double worst = 0.0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < k; ++p) s += l[i * k + p] * l[j * k + p];
      worst = std::max(worst, std::fabs(s - a[i * k + j]));
      if (j > i) {
        ASSERT_EQ(l[i * k + j], 0.0);
      }
    }
  EXPECT_LT(worst, 1e-9 * k);
  std::vector<double> inv = l;
  quant_detail::invert_lower_triangular(inv.data(), k);
  worst = 0.0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < k; ++p) s += inv[i * k + p] * l[p * k + j];
      worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  EXPECT_LT(worst, 1e-10);
  std::vector<double> bad = a;
  bad[7 * k + 7] = -1.0;
  Status st = quant_detail::cholesky_lower(bad.data(), k);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("pivot 7"), std::string::npos);
}

TEST(DenseLinalg, GemmSubMatchesNaive) {
  const int64_t m = 37, n = 291, p = 19;
  std::mt19937 rng(22);
  std::normal_distribution<float> nd;
  std::vector<float> a(static_cast<size_t>(m * p)), b(static_cast<size_t>(p * n)), c(static_cast<size_t>(m * n));
  for (float& v : a) v = nd(rng);
  for (float& v : b) v = nd(rng);
  for (float& v : c) v = nd(rng);
  std::vector<float> want = c;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t q = 0; q < p; ++q) s += static_cast<double>(a[i * p + q]) * b[q * n + j];
      want[i * n + j] -= static_cast<float>(s);
    }
  quant_detail::gemm_sub(c.data(), n, a.data(), p, b.data(), n, m, n, p);
  for (size_t i = 0; i < c.size(); ++i) ASSERT_NEAR(c[i], want[i], 1e-4f) << i;
}

// ---- SmoothQuant ----

// Per-token int8 activation quantization as backend.h's kInt8W8A8 does it, dequantized.
std::vector<float> int8_per_token(const std::vector<float>& x, int64_t rows, int64_t k) {
  std::vector<float> out(x.size());
  for (int64_t t = 0; t < rows; ++t) {
    float m = 0.0f;
    for (int64_t c = 0; c < k; ++c) m = std::max(m, std::fabs(x[t * k + c]));
    const float s = m / 127.0f;
    for (int64_t c = 0; c < k; ++c)
      out[t * k + c] = s > 0.0f ? std::clamp(std::nearbyint(x[t * k + c] / s), -127.0f, 127.0f) * s : 0.0f;
  }
  return out;
}

std::vector<float> int8_per_channel(const std::vector<float>& w, int64_t n, int64_t k) {
  return int8_per_token(w, n, k);  // same arithmetic, one scale per output row
}

// ||X W^T - Xq Wq^T||^2.
double w8a8_error(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& xq,
                  const std::vector<float>& wq, int64_t rows, int64_t n, int64_t k) {
  double total = 0.0;
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t j = 0; j < n; ++j) {
      double ref = 0.0, got = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        ref += static_cast<double>(x[t * k + c]) * w[j * k + c];
        got += static_cast<double>(xq[t * k + c]) * wq[j * k + c];
      }
      total += (ref - got) * (ref - got);
    }
  return total;
}

TEST(SmoothQuant, FactorsReduceW8A8Error) {
  const int64_t n = 64, k = 256, rows = 128;
  const auto w = make_weights(n, k, 31);
  auto x = make_inputs(rows, k, 32);
  for (int64_t t = 0; t < rows; ++t) x[t * k + 77] *= 8.0f;  // one massive outlier channel (x200)
  const LinearInputStats stats = stats_of(x, rows, k, false);
  const auto s = smoothquant_factors(w.data(), n, k, stats, 0.5f);
  ASSERT_EQ(static_cast<int64_t>(s.size()), k);
  EXPECT_GT(s[77], 10.0f);  // the outlier channel is divided down

  std::vector<float> xs(x.size()), ws(w.size());
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < k; ++c) xs[t * k + c] = x[t * k + c] / s[c];
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < k; ++c) ws[j * k + c] = w[j * k + c] * s[c];
  // Activation quantization alone (exact weights), then full W8A8.
  const double act_plain = w8a8_error(x, w, int8_per_token(x, rows, k), w, rows, n, k);
  const double act_smooth = w8a8_error(x, w, int8_per_token(xs, rows, k), ws, rows, n, k);
  const double full_plain = w8a8_error(x, w, int8_per_token(x, rows, k), int8_per_channel(w, n, k), rows, n, k);
  const double full_smooth =
      w8a8_error(x, w, int8_per_token(xs, rows, k), int8_per_channel(ws, n, k), rows, n, k);
  std::printf("SmoothQuant a=0.5: activation-quant error smooth/plain = %.3f, W8A8 error smooth/plain = %.3f\n",
              act_smooth / act_plain, full_smooth / full_plain);
  EXPECT_LT(act_smooth, 0.3 * act_plain);
  EXPECT_LT(full_smooth, 0.5 * full_plain);
}

TEST(SmoothQuant, DeadChannelsAndClamp) {
  const int64_t n = 4, k = 8;
  std::vector<float> w(static_cast<size_t>(n * k), 0.1f);
  for (int64_t j = 0; j < n; ++j) w[j * k + 2] = 0.0f;  // dead weight column
  LinearInputStats stats;
  stats.k = k;
  stats.abs_max = {1.0f, 0.0f, 5.0f, 4.0f, 1e30f, 1e-30f, std::nanf(""), 0.1f};
  const auto s = smoothquant_factors(w.data(), n, k, stats, 0.5f);
  EXPECT_FLOAT_EQ(s[0], std::sqrt(1.0f) / std::sqrt(0.1f));
  EXPECT_EQ(s[1], 1.0f);  // dead activation
  EXPECT_EQ(s[2], 1.0f);  // dead weight column
  EXPECT_FLOAT_EQ(s[3], 2.0f / std::sqrt(0.1f));
  EXPECT_EQ(s[4], kSmoothQuantMaxFactor);
  EXPECT_EQ(s[5], kSmoothQuantMinFactor);
  EXPECT_EQ(s[6], 1.0f);  // non-finite statistic
  EXPECT_FLOAT_EQ(s[7], 1.0f);
  // alpha = 1: all difficulty moves to the weights, s = max|X|.
  EXPECT_FLOAT_EQ(smoothquant_factors(w.data(), n, k, stats, 1.0f)[3], 4.0f);
  // No statistics: no smoothing.
  LinearInputStats empty;
  for (float v : smoothquant_factors(w.data(), n, k, empty, 0.5f)) EXPECT_EQ(v, 1.0f);
}


// ---- pre-quantized HF checkpoints ----

nlohmann::json load_fixture() {
  std::ifstream f(std::string(ANVIL_SOURCE_DIR) + "/tests/build/data/prequant_fixture.json");
  EXPECT_TRUE(f.good()) << "tests/build/data/prequant_fixture.json (tools/quant/make_prequant_fixture.py)";
  return nlohmann::json::parse(f);
}

template <typename T>
std::vector<T> as_vector(const nlohmann::json& j) {
  std::vector<T> v;
  for (const auto& e : j) v.push_back(e.get<T>());
  return v;
}

int code_at(const QuantizedLinear& q, int64_t r, int64_t c) {
  return (q.data[static_cast<size_t>(r * (q.k / 2) + c / 2)] >> ((c & 1) * 4)) & 0xf;
}

// Checks q against the fixture's codes, zeros, scales (row `label[b]` serving column block b) and
// dequantized values: the codes and scales exactly, the offset as f16(-z * s), and the value
// within the offset's rounding of (q - z) * s.
void expect_matches(const QuantizedLinear& q, const nlohmann::json& fx, const std::vector<int64_t>& label,
                    const std::vector<float>& dequant, int zero_adjust) {
  const int64_t k = q.k, n = q.n, g = q.group_size, groups = k / g;
  const auto codes = as_vector<int>(fx["codes_nk"]);
  const auto zeros = as_vector<int>(fx["zeros_gn"]);
  const auto scales = as_vector<uint16_t>(fx["scales_f16"]);
  const auto deq = int4_group_dequantize(q);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < groups; ++b) {
      const int64_t row = label[b];
      const uint16_t s16 = scales[row * n + r];
      const int z = zeros[row * n + r] + zero_adjust;
      ASSERT_EQ(q.scales_f16[r * groups + b], s16) << "row " << r << " group " << b;
      ASSERT_EQ(q.offsets_f16[r * groups + b], f32_to_f16(-static_cast<float>(z) * f16_to_f32(s16)));
    }
    for (int64_t c = 0; c < k; ++c) {
      ASSERT_EQ(code_at(q, r, c), codes[r * k + c]) << "row " << r << " col " << c;
      const int64_t row = label[c / g];
      const float zs = static_cast<float>(zeros[row * n + r] + zero_adjust) * f16_to_f32(scales[row * n + r]);
      ASSERT_NEAR(deq[r * k + c], dequant[r * k + c], std::fabs(zs) * 0x1p-11f + 1e-9f) << r << "," << c;
    }
  }
}

TEST(HfPrequant, AwqGemmDecodes) {
  const nlohmann::json fx = load_fixture();
  const int64_t k = fx["k"], n = fx["n"], g = fx["group_size"];
  const nlohmann::json& a = fx["awq"];
  auto qw = as_vector<int32_t>(a["qweight"]), qz = as_vector<int32_t>(a["qzeros"]);
  auto sc = as_vector<uint16_t>(a["scales_f16"]);
  auto cfg = parse_quantization_config(nlohmann::json::parse(
      R"({"architectures":["LlamaForCausalLM"],"quantization_config":{"quant_method":"awq","bits":4,
          "group_size":32,"zero_point":true,"version":"GEMM","modules_to_not_convert":["visual"]}})"));
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  EXPECT_EQ(cfg->method, PrequantMethod::kAwq);
  EXPECT_EQ(cfg->group_size, 32);
  ASSERT_EQ(cfg->modules_not_converted.size(), 1u);
  const Tensor tw(qw.data(), DType::kI32, {k, n / 8}), tz(qz.data(), DType::kI32, {k / g, n / 8}),
      ts(sc.data(), DType::kF16, {k / g, n});
  auto q = import_awq_gemm("layers.0.q_proj", tw, tz, ts, *cfg);
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
  EXPECT_EQ(q->n, n);
  EXPECT_EQ(q->k, k);
  EXPECT_EQ(q->group_size, g);
  expect_matches(*q, a, {0, 1}, as_vector<float>(a["dequant_nk"]), 0);

  // Errors name the tensor.
  const Tensor short_z(qz.data(), DType::kI32, {k / g, n / 8 - 1});
  auto r = import_awq_gemm("layers.0.q_proj", tw, short_z, ts, *cfg);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("layers.0.q_proj.qzeros"), std::string::npos) << r.status().message();
  const Tensor f32_w(qw.data(), DType::kF32, {k, n / 8});
  r = import_awq_gemm("layers.0.q_proj", f32_w, tz, ts, *cfg);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("layers.0.q_proj.qweight has dtype f32"), std::string::npos)
      << r.status().message();
  PrequantConfig g64 = *cfg;
  g64.group_size = 64;
  r = import_awq_gemm("layers.0.q_proj", tw, tz, ts, g64);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("group_size is 64"), std::string::npos) << r.status().message();
}

TEST(HfPrequant, GptqDecodesV1AndV2WithPermutedGroupLabels) {
  const nlohmann::json fx = load_fixture();
  const int64_t k = fx["k"], n = fx["n"], g = fx["group_size"];
  const nlohmann::json& a = fx["gptq"];
  auto qw = as_vector<int32_t>(a["qweight"]), qz = as_vector<int32_t>(a["qzeros"]);
  auto sc = as_vector<uint16_t>(a["scales_f16"]);
  auto gi = as_vector<int32_t>(a["g_idx"]);
  auto cfg = parse_quantization_config(nlohmann::json::parse(
      R"({"quantization_config":{"quant_method":"gptq","bits":4,"group_size":32,"desc_act":true,
          "sym":false,"damp_percent":0.01,"true_sequential":true}})"));
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  EXPECT_TRUE(cfg->zeros_minus_one);
  EXPECT_TRUE(cfg->desc_act);
  const Tensor tw(qw.data(), DType::kI32, {k / 8, n}), tz(qz.data(), DType::kI32, {k / g, n / 8}),
      ts(sc.data(), DType::kF16, {k / g, n}), tg(gi.data(), DType::kI32, {k});
  auto q = import_gptq("model.layers.1.mlp.down_proj", tw, tz, ts, tg, *cfg);
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
  expect_matches(*q, a, {1, 0}, as_vector<float>(a["dequant_nk"]), 0);

  auto v2 = parse_quantization_config(nlohmann::json::parse(
      R"({"quant_method":"gptq","bits":4,"group_size":32,"checkpoint_format":"gptq_v2"})"));
  ASSERT_TRUE(v2.is_ok()) << v2.status().to_string();
  EXPECT_FALSE(v2->zeros_minus_one);
  q = import_gptq("model.layers.1.mlp.down_proj", tw, tz, ts, tg, *v2);
  ASSERT_TRUE(q.is_ok());
  expect_matches(*q, a, {1, 0}, as_vector<float>(a["dequant_v2_nk"]), -1);

  // Act-order groups scattered over the columns cannot be int4 groups: unsupported, naming g_idx.
  auto scattered = gi;
  std::swap(scattered[3], scattered[40]);
  const Tensor tgs(scattered.data(), DType::kI32, {k});
  auto r = import_gptq("model.layers.1.mlp.down_proj", tw, tz, ts, tgs, *cfg);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("model.layers.1.mlp.down_proj.g_idx"), std::string::npos);
  // No g_idx: groups are k / g, so the labels are the identity.
  q = import_gptq("x", tw, tz, ts, Tensor{}, *cfg);
  ASSERT_TRUE(q.is_ok());
  EXPECT_EQ(q->scales_f16[0], static_cast<uint16_t>(a["scales_f16"][0].get<int>()));
  // An AWQ config cannot read GPTQ tensors.
  PrequantConfig awq = *cfg;
  awq.method = PrequantMethod::kAwq;
  r = import_gptq("x", tw, tz, ts, tg, awq);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("quant_method is awq"), std::string::npos);
}

TEST(HfPrequant, ConfigErrorsNameTheField) {
  auto bad = [](const char* text) {
    auto r = parse_quantization_config(nlohmann::json::parse(text));
    EXPECT_FALSE(r.is_ok()) << text;
    return r.is_ok() ? std::string() : r.status().message();
  };
  EXPECT_NE(bad(R"({"quantization_config":{"quant_method":"gptq","bits":8,"group_size":128}})").find("bits is 8"),
            std::string::npos);
  EXPECT_NE(bad(R"({"quantization_config":{"quant_method":"awq","w_bit":3,"q_group_size":128}})").find("w_bit"),
            std::string::npos);
  EXPECT_NE(bad(R"({"quantization_config":{"quant_method":"bitsandbytes"}})").find("bitsandbytes"), std::string::npos);
  EXPECT_NE(bad(R"({"quantization_config":{"quant_method":"awq","bits":4,"group_size":128,"version":"gemv"}})")
                .find("version"),
            std::string::npos);
  EXPECT_NE(bad(R"({"quantization_config":{"quant_method":"gptq","bits":4,"group_size":33}})").find("group_size"),
            std::string::npos);
  EXPECT_NE(bad(R"({"quantization_config":{"quant_method":"gptq","bits":4,"checkpoint_format":"marlin"}})")
                .find("checkpoint_format"),
            std::string::npos);
  EXPECT_NE(bad(R"({"quantization_config":{"quant_method":"gptq","bits":"4"}})").find("bits"), std::string::npos);
  EXPECT_NE(bad(R"({"model_type":"llama"})").find("quant_method"), std::string::npos);
  // Per-channel GPTQ (group_size -1) is one group over K.
  auto pc = parse_quantization_config(nlohmann::json::parse(R"({"quant_method":"gptq","bits":4,"group_size":-1})"));
  ASSERT_TRUE(pc.is_ok());
  EXPECT_EQ(pc->group_size, -1);
}

}  // namespace
}  // namespace anvil
