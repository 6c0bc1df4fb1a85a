// Internal to build/quantize/ (AWQ, GPTQ): the int4 group quantizer every search measures
// against, in exactly backend.h's kInt4Group arithmetic: w ~= q * scale + offset, q in 0..15,
// scale and offset rounded to f16 first and codes chosen against the rounded values.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "build/quantize/quant_types.h"
#include "core/status.h"

namespace anvil::quant_detail {

// Largest finite f16; group parameters beyond it cannot be stored.
constexpr float kF16Max = 65504.0f;

// One group's parameters: the f16 bits the engine stores and their exact f32 values.
struct Int4GroupParams {
  float scale = 0.0f;      // f16_to_f32(scale_f16)
  float offset = 0.0f;     // f16_to_f32(offset_f16)
  float inv_scale = 0.0f;  // 1 / scale, or 0 when scale == 0 (constant group: every code is 0)
  uint16_t scale_f16 = 0;
  uint16_t offset_f16 = 0;
};

// Asymmetric min/max parameters over v[0, len), the values first clipped to [-clip, clip]
// (clip = +inf: no clipping). offset = f16(min); scale = f16((max - offset) / 15), so the code
// range covers [min, max] after the offset's own rounding.
Int4GroupParams int4_group_params(const float* v, int64_t len, float clip = std::numeric_limits<float>::infinity());

// Steps of int4_group_params_mse's range search: shrink factors 1, 0.95, ..., 0.55.
constexpr int kInt4MseSteps = 10;

// Parameters for [lo * f, hi * f] (min and max of v, both shrunk towards 0 by the same factor
// f from kInt4MseSteps' grid) minimising sum_i importance[i] (v[i] - Q(v[i]))^2 (importance null:
// all ones): large outliers then cost a little clipping instead of coarsening every other code.
// f = 1 is plain min/max; ties keep the widest range.
Int4GroupParams int4_group_params_mse(const float* v, int64_t len, const float* importance = nullptr);

// Nearest code (ties to even) against the rounded parameters, clamped to 0..15.
inline int int4_code(float w, const Int4GroupParams& p) {
  const float t = std::nearbyint((w - p.offset) * p.inv_scale);
  return t <= 0.0f ? 0 : (t >= 15.0f ? 15 : static_cast<int>(t));
}
// The value the engine reconstructs (cpu_quant.cpp: code * scale + offset, f32).
inline float int4_value(int code, const Int4GroupParams& p) { return static_cast<float>(code) * p.scale + p.offset; }

// Shape and value checks shared by the public entry points: n, k > 0, group_size even, > 0 and
// dividing k, every value finite and inside the f16 range. `who` prefixes the message.
Status check_int4_group_args(const std::string& who, const float* w, int64_t n, int64_t k, int32_t group_size);

// An empty kInt4Group QuantizedLinear of n x k (data zeroed, parameters sized).
QuantizedLinear make_int4_group(int64_t n, int64_t k, int32_t group_size);

// Stores one code / one group's parameters into q.
inline void int4_store_code(QuantizedLinear& q, int64_t row, int64_t col, int code) {
  uint8_t& b = q.data[static_cast<size_t>(row * (q.k / 2) + col / 2)];
  const int shift = static_cast<int>(col & 1) * 4;
  b = static_cast<uint8_t>((b & ~(0xf << shift)) | (code << shift));
}
inline void int4_store_params(QuantizedLinear& q, int64_t row, int64_t group, const Int4GroupParams& p) {
  const size_t i = static_cast<size_t>(row * (q.k / q.group_size) + group);
  q.scales_f16[i] = p.scale_f16;
  q.offsets_f16[i] = p.offset_f16;
}

// Round-to-nearest of a whole [n, k] matrix (rows in parallel). Arguments must have passed
// check_int4_group_args.
QuantizedLinear int4_group_rtn(const float* w, int64_t n, int64_t k, int32_t group_size);

// Quantize-dequantize of w [n, k] into out [n, k] (RTN, optional per-group clip [n, k / g]).
void int4_group_fake_quant(const float* w, int64_t n, int64_t k, int32_t group_size, float* out,
                           const float* clip = nullptr);

// f32 [n, k] values of a kInt4Group QuantizedLinear.
std::vector<float> int4_group_dequantize(const QuantizedLinear& q);

}  // namespace anvil::quant_detail
