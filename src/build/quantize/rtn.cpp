// Round-to-nearest quantizers (rtn.h). Rows are independent and quantized in parallel; the
// results do not depend on the thread count.
#include "build/quantize/rtn.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "core/dtype.h"
#include "core/thread_pool.h"

namespace anvil {
namespace {

Status check_shape(const char* what, const float* w, int64_t n, int64_t k) {
  if (!w || n <= 0 || k <= 0) {
    return invalid_argument(std::string(what) + ": empty weight [" + std::to_string(n) + ", " + std::to_string(k) + "]");
  }
  return Status::ok();
}

// Scale of a symmetric per-row quantizer with `qmax` levels: amax / qmax, 1 for an all-zero row.
// A non-finite weight is an error (it would poison the whole row).
Result<float> row_scale(const float* row, int64_t k, float qmax, int64_t r) {
  float amax = 0.0f;
  for (int64_t c = 0; c < k; ++c) {
    if (!std::isfinite(row[c])) return invalid_argument("weight row " + std::to_string(r) + " holds a non-finite value");
    amax = std::max(amax, std::fabs(row[c]));
  }
  return amax > 0.0f ? amax / qmax : 1.0f;
}

// Runs fn(r) for every row over the thread pool and returns the first error in row order.
template <typename Fn>
Status for_each_row(int64_t n, Fn&& fn) {
  std::vector<Status> st(static_cast<size_t>(n));
  ThreadPool::global().parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) st[r] = fn(r);
  });
  for (const Status& s : st) ANVIL_RETURN_IF_ERROR(s);
  return Status::ok();
}

struct GroupParams {
  uint16_t scale_f16 = 0, offset_f16 = 0;
  float scale = 1.0f, offset = 0.0f;  // the f16 values as f32
};

GroupParams int4_group_params(float min_value, float max_value) {
  GroupParams p;
  const float lo = std::min(min_value, 0.0f), hi = std::max(max_value, 0.0f);
  if (!(hi > lo)) {  // an all-zero group: codes 0 with offset 0
    p.scale_f16 = f32_to_f16(1.0f);
    p.offset_f16 = f32_to_f16(0.0f);
    return p;
  }
  // Round the scale up to an f16 value >= (hi - lo) / 15 (at least the smallest normal f16, so
  // the division below stays finite), then pick the zero point for that exact scale.
  const float want = std::max((hi - lo) / 15.0f, 6.103515625e-05f);
  uint16_t h = f32_to_f16(want);
  if (f16_to_f32(h) < want) ++h;  // positive f16 bit patterns order like their values
  p.scale_f16 = h;
  p.scale = f16_to_f32(h);
  const int zero_point = std::clamp(static_cast<int>(std::nearbyint(-lo / p.scale)), 0, 15);
  p.offset_f16 = f32_to_f16(-static_cast<float>(zero_point) * p.scale);
  p.offset = f16_to_f32(p.offset_f16);
  return p;
}

uint8_t int4_code(float w, const GroupParams& p) {
  const float q = std::nearbyint((w - p.offset) / p.scale);
  return static_cast<uint8_t>(q <= 0.0f ? 0 : q >= 15.0f ? 15 : static_cast<int>(q));
}

}  // namespace

namespace {

// The per-output-channel formats: scale[r] = max|w[r, :]| / qmax, code = encode(w / scale).
template <class Encode>
Result<QuantizedLinear> quantize_per_channel(const float* w, int64_t n, int64_t k, QuantFormat format, float qmax,
                                             Encode encode) {
  QuantizedLinear q;
  q.format = format;
  q.n = n;
  q.k = k;
  q.data.resize(static_cast<size_t>(n * k));
  q.scales.resize(static_cast<size_t>(n));
  ANVIL_RETURN_IF_ERROR(for_each_row(n, [&](int64_t r) -> Status {
    const float* row = w + r * k;
    ANVIL_ASSIGN_OR_RETURN(const float s, row_scale(row, k, qmax, r));
    q.scales[r] = s;
    for (int64_t c = 0; c < k; ++c) q.data[r * k + c] = encode(row[c] / s);
    return Status::ok();
  }));
  return q;
}

}  // namespace

Result<QuantizedLinear> quantize_int8_per_channel(const float* w, int64_t n, int64_t k, QuantFormat format) {
  ANVIL_RETURN_IF_ERROR(check_shape("int8 quantization", w, n, k));
  if (format != QuantFormat::kInt8WeightOnly && format != QuantFormat::kInt8W8A8) {
    return invalid_argument(std::string("int8 per-channel quantization cannot produce ") + quant_format_name(format));
  }
  return quantize_per_channel(w, n, k, format, 127.0f, [](float v) {
    return static_cast<uint8_t>(static_cast<int8_t>(std::clamp(std::nearbyint(v), -127.0f, 127.0f)));
  });
}

Result<QuantizedLinear> quantize_fp8_per_channel(const float* w, int64_t n, int64_t k) {
  ANVIL_RETURN_IF_ERROR(check_shape("fp8 quantization", w, n, k));
  return quantize_per_channel(w, n, k, QuantFormat::kFp8W8A8, 448.0f, [](float v) { return f32_to_f8e4m3(v); });
}

namespace {

// f32 -> e4m3 (round to nearest even, satfinite), bit-identical to core/dtype.h's
// f32_to_f8e4m3 for finite inputs (quant_rtn_test checks) but a few instructions: the scale
// search below converts every weight 16 times, which the generic narrowing made take minutes
// on an 8B model.
inline uint8_t fast_f32_to_e4m3(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t v = u & 0x7fffffffu;
  if (v >= 0x43e00000u) return static_cast<uint8_t>(sign | 0x7eu);  // |x| >= 448 (or inf/NaN)
  if (v < 0x3c800000u) {                                             // |x| < 2^-6: subnormal steps of 2^-9
    float a;
    std::memcpy(&a, &v, 4);
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 512.0f)));
  }
  uint32_t r = (v + 0x7ffffu + ((v >> 20) & 1u)) >> 20;  // exponent and 3 mantissa bits, rounded
  r -= (127u - 7u) << 3;
  return static_cast<uint8_t>(sign | std::min(r, 0x7eu));
}

// The 256 e4m3 values (NaN codes decode to NaN; the encoder never produces them).
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> v{};
    for (int i = 0; i < 256; ++i) v[static_cast<size_t>(i)] = f8e4m3_to_f32(static_cast<uint8_t>(i));
    return v;
  }();
  return t;
}

}  // namespace

uint8_t fp8_e4m3_encode_fast(float x) { return fast_f32_to_e4m3(x); }

Result<QuantizedLinear> quantize_fp8_per_channel_searched(const float* w, int64_t n, int64_t k) {
  constexpr int kSteps = 16;
  ANVIL_ASSIGN_OR_RETURN(QuantizedLinear q, quantize_fp8_per_channel(w, n, k));  // validates; step 0
  ANVIL_RETURN_IF_ERROR(for_each_row(n, [&](int64_t r) -> Status {
    const float* row = w + r * k;
    uint8_t* out = q.data.data() + r * k;
    const std::array<float, 256>& table = e4m3_table();
    auto row_error = [&](float s, const uint8_t* codes) {
      double e = 0.0;
      for (int64_t c = 0; c < k; ++c) {
        const double d = static_cast<double>(table[codes[c]]) * s - row[c];
        e += d * d;
      }
      return e;
    };
    const float base = q.scales[r];
    double best = row_error(base, out);
    std::vector<uint8_t> codes(static_cast<size_t>(k));
    for (int i = 1; i < kSteps; ++i) {
      const float s = base * std::exp2(static_cast<float>(i) / kSteps);
      const float inv = 1.0f / s;
      for (int64_t c = 0; c < k; ++c) codes[c] = fast_f32_to_e4m3(row[c] * inv);
      const double e = row_error(s, codes.data());
      if (e < best) {  // strict: ties keep the smaller scale
        best = e;
        q.scales[r] = s;
        std::copy(codes.begin(), codes.end(), out);
      }
    }
    return Status::ok();
  }));
  return q;
}

Result<QuantizedLinear> quantize_int4_group(const float* w, int64_t n, int64_t k, int32_t group_size) {
  ANVIL_RETURN_IF_ERROR(check_shape("int4 quantization", w, n, k));
  if (group_size <= 0 || group_size % 2 != 0 || k % group_size != 0) {
    return invalid_argument("int4 quantization: group size " + std::to_string(group_size) + " does not divide K=" +
                            std::to_string(k) + " into even groups");
  }
  const int64_t groups = k / group_size;
  QuantizedLinear q;
  q.format = QuantFormat::kInt4Group;
  q.n = n;
  q.k = k;
  q.group_size = group_size;
  q.data.assign(static_cast<size_t>(n * k / 2), 0);
  q.scales_f16.resize(static_cast<size_t>(n * groups));
  q.offsets_f16.resize(static_cast<size_t>(n * groups));
  ANVIL_RETURN_IF_ERROR(for_each_row(n, [&](int64_t r) -> Status {
    const float* row = w + r * k;
    uint8_t* out = q.data.data() + r * (k / 2);
    for (int64_t g = 0; g < groups; ++g) {
      const float* x = row + g * group_size;
      float lo = x[0], hi = x[0];
      for (int32_t c = 0; c < group_size; ++c) {
        if (!(std::fabs(x[c]) <= 65504.0f)) {
          return invalid_argument("weight row " + std::to_string(r) + " holds " + std::to_string(x[c]) +
                                  ", outside the f16 range of int4 group parameters");
        }
        lo = std::min(lo, x[c]);
        hi = std::max(hi, x[c]);
      }
      const GroupParams p = int4_group_params(lo, hi);
      q.scales_f16[r * groups + g] = p.scale_f16;
      q.offsets_f16[r * groups + g] = p.offset_f16;
      for (int32_t c = 0; c < group_size; c += 2) {
        const int64_t col = g * group_size + c;
        out[col / 2] = static_cast<uint8_t>(int4_code(x[c], p) | int4_code(x[c + 1], p) << 4);
      }
    }
    return Status::ok();
  }));
  return q;
}

}  // namespace anvil
