// Round-to-nearest quantizers: an f32 weight [n, k] (out x in, row-major) -> a QuantizedLinear
// packed exactly as backend.h's QuantFormat describes. Deterministic, no calibration. A zero row
// (or int4 group) gets scale 1 and dequantizes to exact zeros; every scale is finite and > 0.
#pragma once

#include <cstdint>

#include "build/quantize/quant_types.h"

namespace anvil {

// int8 per output channel, symmetric: scale[r] = max|w[r, :]| / 127, q = round(w / scale) in
// [-127, 127]. `format` is kInt8WeightOnly (W8A16) or kInt8W8A8 (SmoothQuant's weight side).
Result<QuantizedLinear> quantize_int8_per_channel(const float* w, int64_t n, int64_t k, QuantFormat format);

// fp8 e4m3 per output channel: scale[r] = max|w[r, :]| / 448, q = e4m3(w / scale) (satfinite).
Result<QuantizedLinear> quantize_fp8_per_channel(const float* w, int64_t n, int64_t k);

// The same format with each row's scale searched: scale[r] = max|w[r, :]| / 448 * 2^(i / 16),
// i = 0..15 (within one binade, so nothing saturates), the i with the least squared row error. e4m3's
// grid is not uniform, so sliding it across the row's values finds a better fit (SmolLM2-135M:
// weight error -15%, perplexity delta 2.4% -> see docs/quantization.md). What `anvil build
// --quant fp8` uses.
Result<QuantizedLinear> quantize_fp8_per_channel_searched(const float* w, int64_t n, int64_t k);

// The search's f32 -> e4m3 encoder: equal to core/dtype.h's f32_to_f8e4m3 for finite inputs,
// several times faster.
uint8_t fp8_e4m3_encode_fast(float x);

// int4 group-wise asymmetric (kInt4Group): groups of `group_size` consecutive input channels of
// one row share (scale, offset); k must be a multiple of group_size, group_size even. Each group
// spans [min(w, 0), max(w, 0)] (zero always representable, so the zero point never clamps):
// scale = (max - min) / 15 rounded UP to the next f16, so 15 steps still cover the range after
// rounding; zero_point = round(-min / scale) in 0..15; offset = f16(-zero_point * scale). Codes
// are chosen against the f16 values as stored: clamp(round((w - offset) / scale), 0, 15).
//   data  u8 [n, k / 2]: byte j of row r holds code(r, 2j) in bits 0..3, code(r, 2j+1) in 4..7
//   scales_f16 / offsets_f16 [n, k / group_size]
Result<QuantizedLinear> quantize_int4_group(const float* w, int64_t n, int64_t k, int32_t group_size);

}  // namespace anvil
