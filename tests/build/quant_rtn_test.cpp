// RTN quantizers (build/quantize/rtn.h): round-trip error bounds per format, the exact packed
// layouts backend.h specifies (int8 rows, int4 nibble order and group parameters), zero rows and
// groups, and agreement with the CPU backend's linear_quantized reference.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "build/quantize/rtn.h"
#include "core/dtype.h"

namespace anvil {
namespace {

std::vector<float> random_weight(int64_t n, int64_t k, uint32_t seed, float scale = 0.05f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (float& x : w) x = d(rng);
  return w;
}

TEST(QuantRtn, Int8PerChannelRoundTripWithinHalfStep) {
  const int64_t n = 37, k = 96;
  std::vector<float> w = random_weight(n, k, 1);
  w[5 * k + 7] = 0.9f;  // an outlier only affects its own row's scale
  auto q = quantize_int8_per_channel(w.data(), n, k, QuantFormat::kInt8WeightOnly);
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
  ASSERT_EQ(q->data.size(), static_cast<size_t>(n * k));
  ASSERT_EQ(q->scales.size(), static_cast<size_t>(n));
  const std::vector<float> back = dequantize(*q);
  for (int64_t r = 0; r < n; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(w[r * k + c]));
    EXPECT_FLOAT_EQ(q->scales[r], amax / 127.0f) << r;
    bool hit_127 = false;
    for (int64_t c = 0; c < k; ++c) {
      const int8_t code = static_cast<int8_t>(q->data[r * k + c]);
      EXPECT_GE(code, -127);
      hit_127 = hit_127 || std::abs(code) == 127;
      EXPECT_LE(std::fabs(back[r * k + c] - w[r * k + c]), 0.5f * q->scales[r] * 1.0001f) << r << "," << c;
    }
    EXPECT_TRUE(hit_127) << "row " << r << " does not use the full int8 range";
  }
  // Exact layout: element (r, c) at r * k + c, value round(w / scale).
  EXPECT_EQ(static_cast<int8_t>(q->data[5 * k + 7]), 127);
  EXPECT_EQ(static_cast<int8_t>(q->data[2 * k + 3]), static_cast<int8_t>(std::nearbyint(w[2 * k + 3] / q->scales[2])));
}

TEST(QuantRtn, Fp8PerChannelRoundTrip) {
  const int64_t n = 19, k = 64;
  const std::vector<float> w = random_weight(n, k, 2);
  auto q = quantize_fp8_per_channel(w.data(), n, k);
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
  EXPECT_EQ(q->format, QuantFormat::kFp8W8A8);
  const std::vector<float> back = dequantize(*q);
  for (int64_t r = 0; r < n; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(w[r * k + c]));
    EXPECT_FLOAT_EQ(q->scales[r], amax / 448.0f);
    for (int64_t c = 0; c < k; ++c) {
      // e4m3 has 3 mantissa bits: relative error <= 2^-4 for normals; subnormals step 2^-9 * scale.
      const float x = w[r * k + c], y = back[r * k + c];
      EXPECT_LE(std::fabs(x - y), std::max(std::fabs(x) * 0.0625f, q->scales[r] * 0.001953125f)) << r << "," << c;
    }
    // The row maximum maps to 448 exactly.
    int64_t arg = 0;
    for (int64_t c = 1; c < k; ++c)
      if (std::fabs(w[r * k + c]) > std::fabs(w[r * k + arg])) arg = c;
    EXPECT_EQ(std::fabs(f8e4m3_to_f32(q->data[r * k + arg])), 448.0f);
  }
}

// The searched fp8 scales: within one binade above amax / 448 (nothing saturates), every row's
// error no larger than the plain scale's, and lower over the whole matrix.
TEST(QuantRtn, Fp8SearchedScalesLowerTheError) {
  const int64_t n = 33, k = 96;
  const std::vector<float> w = random_weight(n, k, 5);
  auto plain = quantize_fp8_per_channel(w.data(), n, k);
  auto searched = quantize_fp8_per_channel_searched(w.data(), n, k);
  ASSERT_TRUE(plain.is_ok() && searched.is_ok());
  EXPECT_EQ(searched->format, QuantFormat::kFp8W8A8);
  const std::vector<float> bp = dequantize(*plain), bs = dequantize(*searched);
  double total_p = 0, total_s = 0;
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_GE(searched->scales[r], plain->scales[r]);
    EXPECT_LT(searched->scales[r], 2.0f * plain->scales[r]);
    double ep = 0, es = 0;
    for (int64_t c = 0; c < k; ++c) {
      ep += std::pow(bp[r * k + c] - w[r * k + c], 2);
      es += std::pow(bs[r * k + c] - w[r * k + c], 2);
    }
    EXPECT_LE(es, ep * (1 + 1e-9)) << "row " << r;
    total_p += ep;
    total_s += es;
  }
  std::printf("fp8 searched / plain squared error: %.3f\n", total_s / total_p);
  EXPECT_LT(total_s, 0.95 * total_p);
}

TEST(QuantRtn, Int4GroupPackingAndParameters) {
  // One row, two groups of 4 chosen so the codes are known exactly.
  //   group 0: [-0.3, 0, 0.3, 1.2]  min -0.3, max 1.2 -> scale 0.1, zero point 3
  //   group 1: [0.5, 1.0, 1.5, 0.0] min 0 (zero included), max 1.5 -> scale 0.1, zero point 0
  const std::vector<float> w = {-0.3f, 0.0f, 0.3f, 1.2f, 0.5f, 1.0f, 1.5f, 0.0f};
  auto q = quantize_int4_group(w.data(), 1, 8, 4);
  ASSERT_TRUE(q.is_ok()) << q.status().to_string();
  ASSERT_EQ(q->data.size(), 4u);
  ASSERT_EQ(q->scales_f16.size(), 2u);
  const float s0 = f16_to_f32(q->scales_f16[0]);
  EXPECT_GE(s0, 0.1f);  // rounded up to an f16 so 15 steps still span the range
  EXPECT_LT(s0, 0.1f * 1.001f);
  EXPECT_NEAR(f16_to_f32(q->offsets_f16[0]), -3 * s0, 1e-3f);
  EXPECT_EQ(f16_to_f32(q->offsets_f16[1]), 0.0f);
  // Low nibble = even column: codes group 0 = 0, 3, 6, 15; group 1 = 5, 10, 15, 0.
  EXPECT_EQ(q->data[0], 0x30);
  EXPECT_EQ(q->data[1], 0xF6);
  EXPECT_EQ(q->data[2], 0xA5);
  EXPECT_EQ(q->data[3], 0x0F);
  const std::vector<float> back = dequantize(*q);
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(back[i], w[i], 1e-3f) << i;
}

TEST(QuantRtn, Int4GroupRoundTripBoundAndCodeRange) {
  const int64_t n = 23, k = 256;
  for (int32_t g : {32, 64, 128}) {
    std::vector<float> w = random_weight(n, k, 3 + g);
    for (int64_t c = 0; c < k; ++c) w[4 * k + c] = 0.01f + 0.001f * static_cast<float>(c % 7);  // an all-positive row
    auto q = quantize_int4_group(w.data(), n, k, g);
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    ASSERT_EQ(q->scales_f16.size(), static_cast<size_t>(n * (k / g)));
    const std::vector<float> back = dequantize(*q);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t gi = 0; gi < k / g; ++gi) {
        float lo = 0, hi = 0;
        for (int64_t c = gi * g; c < (gi + 1) * g; ++c) {
          lo = std::min(lo, w[r * k + c]);
          hi = std::max(hi, w[r * k + c]);
        }
        const float s = f16_to_f32(q->scales_f16[r * (k / g) + gi]);
        const float o = f16_to_f32(q->offsets_f16[r * (k / g) + gi]);
        EXPECT_GE(s * 15.0f, (hi - lo) * 0.9999f);
        EXPECT_LE(s, (hi - lo) / 15.0f * 1.002f);
        // The offset is exactly f16(-zero_point * scale) for an integer zero point in 0..15.
        const float zp = std::nearbyint(-o / s);
        EXPECT_GE(zp, 0.0f);
        EXPECT_LE(zp, 15.0f);
        EXPECT_EQ(q->offsets_f16[r * (k / g) + gi], f32_to_f16(-zp * s));
        for (int64_t c = gi * g; c < (gi + 1) * g; ++c) {
          EXPECT_LE(std::fabs(back[r * k + c] - w[r * k + c]), 0.51f * s) << "g" << g << " r" << r << " c" << c;
        }
      }
    }
  }
}

TEST(QuantRtn, ZeroRowsAndGroupsDequantizeToExactZeros) {
  const int64_t n = 3, k = 64;
  std::vector<float> w = random_weight(n, k, 9);
  for (int64_t c = 0; c < k; ++c) w[1 * k + c] = 0.0f;       // a zero row
  for (int64_t c = 32; c < 64; ++c) w[2 * k + c] = 0.0f;     // a zero group
  auto i8 = quantize_int8_per_channel(w.data(), n, k, QuantFormat::kInt8W8A8);
  auto f8 = quantize_fp8_per_channel(w.data(), n, k);
  auto i4 = quantize_int4_group(w.data(), n, k, 32);
  ASSERT_TRUE(i8.is_ok() && f8.is_ok() && i4.is_ok());
  EXPECT_EQ(i8->scales[1], 1.0f);
  EXPECT_EQ(f8->scales[1], 1.0f);
  for (const QuantizedLinear* q : {&*i8, &*f8, &*i4}) {
    const std::vector<float> back = dequantize(*q);
    for (int64_t c = 0; c < k; ++c) EXPECT_EQ(back[1 * k + c], 0.0f) << quant_format_name(q->format);
    if (q->format == QuantFormat::kInt4Group) {
      for (int64_t c = 32; c < 64; ++c) EXPECT_EQ(back[2 * k + c], 0.0f);
      EXPECT_EQ(f16_to_f32(i4->scales_f16[2 * 2 + 1]), 1.0f);
    }
  }
}

TEST(QuantRtn, RejectsBadShapesAndValues) {
  std::vector<float> w(64, 0.1f);
  EXPECT_FALSE(quantize_int4_group(w.data(), 1, 64, 48).is_ok());  // does not divide K
  EXPECT_FALSE(quantize_int4_group(w.data(), 1, 64, 0).is_ok());
  EXPECT_FALSE(quantize_int8_per_channel(w.data(), 0, 64, QuantFormat::kInt8WeightOnly).is_ok());
  EXPECT_FALSE(quantize_int8_per_channel(w.data(), 1, 64, QuantFormat::kInt4Group).is_ok());
  w[10] = NAN;
  auto r = quantize_fp8_per_channel(w.data(), 1, 64);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("non-finite"), std::string::npos) << r.status().message();
  w[10] = 1e6f;  // beyond f16: no int4 group parameters can hold it
  EXPECT_FALSE(quantize_int4_group(w.data(), 1, 64, 32).is_ok());
}

// What the engine computes (CpuBackend::linear_quantized) equals x @ dequantize(q)^T for the
// weight-only formats: the packed bytes mean what dequantize() says they mean.
TEST(QuantRtn, CpuReferenceMatchesDequantizedWeights) {
  const int64_t m = 3, n = 17, k = 64;
  const std::vector<float> w = random_weight(n, k, 11);
  const std::vector<float> x = random_weight(m, k, 12, 1.0f);
  CpuBackend cpu;
  for (int which = 0; which < 2; ++which) {
    auto q = which == 0 ? quantize_int8_per_channel(w.data(), n, k, QuantFormat::kInt8WeightOnly)
                        : quantize_int4_group(w.data(), n, k, 32);
    ASSERT_TRUE(q.is_ok());
    QuantizedWeight qw;
    qw.format = q->format;
    qw.n = n;
    qw.k = k;
    qw.group_size = q->group_size;
    qw.data = q->data.data();
    qw.scales = which == 0 ? static_cast<const void*>(q->scales.data()) : q->scales_f16.data();
    qw.offsets = which == 0 ? nullptr : q->offsets_f16.data();
    std::vector<float> out(static_cast<size_t>(m * n));
    Tensor xt(const_cast<float*>(x.data()), DType::kF32, {m, k}, Device::kCpu);
    Tensor ot(out.data(), DType::kF32, {m, n}, Device::kCpu);
    ASSERT_TRUE(cpu.linear_quantized(xt, qw, Tensor(), ot).is_ok());
    const std::vector<float> back = dequantize(*q);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double want = 0;
        for (int64_t c = 0; c < k; ++c) want += static_cast<double>(x[i * k + c]) * back[j * k + c];
        EXPECT_NEAR(out[i * n + j], want, 1e-4) << quant_format_name(q->format);
      }
  }
}

TEST(QuantRtn, MethodNamesRoundTrip) {
  for (const char* name : {"none", "int8-wo", "int4-wo", "int4-awq", "int4-gptq", "w8a8-sq", "fp8"}) {
    auto m = quant_method_from_name(name);
    ASSERT_TRUE(m.is_ok()) << name;
    EXPECT_STREQ(quant_method_name(*m), name);
  }
  auto bad = quant_method_from_name("int3");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("int4-awq"), std::string::npos);
}

// The search's fast e4m3 encoder equals the exact narrowing of core/dtype.h on every finite
// input class: each e4m3 value, the midpoints between neighbours (ties to even), the subnormal
// range, the saturation edge, and a million random magnitudes over the whole range.
TEST(QuantRtn, FastE4m3EncoderMatchesExactConversion) {
  std::vector<float> xs = {0.0f, -0.0f, 448.0f, 449.0f, 463.9f, 464.0f, 465.0f, 1e30f, -1e30f, 1e-30f, 0.00048828125f};
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    const float v = f8e4m3_to_f32(static_cast<uint8_t>(c));
    xs.push_back(v);
    xs.push_back(std::nextafter(v, 1e9f));
    xs.push_back(std::nextafter(v, -1e9f));
    if ((c & 0x7f) < 0x7e) {
      const float next = f8e4m3_to_f32(static_cast<uint8_t>(c + 1));
      xs.push_back(0.5f * (v + next));  // a tie
    }
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> e(-14.0f, 9.5f);
  for (int i = 0; i < 1000000; ++i) xs.push_back((i & 1 ? -1.0f : 1.0f) * std::exp2(e(rng)));
  int bad = 0;
  for (float x : xs) {
    if (fp8_e4m3_encode_fast(x) != f32_to_f8e4m3(x) && bad++ < 5) {
      ADD_FAILURE() << "x = " << x << ": fast " << int(fp8_e4m3_encode_fast(x)) << ", exact " << int(f32_to_f8e4m3(x));
    }
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace anvil
