// Host scalar semantics of the quantized KV cache (backend.h, KvCacheLayer): the CPU reference
// stores with kv_quantize and reads with kv_dequantize; the CUDA kernels reproduce both bit for
// bit (tests hold them to it). stored = round(x / scale): int8 rounds to nearest (ties to even)
// and saturates to [-127, 127] (NaN -> -127); fp8 e4m3 converts with satfinite.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/dtype.h"

namespace anvil {

// True for the element types a KV cache may be quantized to (scales required).
inline bool kv_dtype_quantized(DType t) { return t == DType::kF8E4M3 || t == DType::kI8; }

// The stored byte of x under `scale` (> 0) for t = kF8E4M3 or kI8.
inline uint8_t kv_quantize(DType t, float x, float scale) {
  const float v = x / scale;
  if (t == DType::kF8E4M3) return f32_to_f8e4m3(v);
  const float c = std::fmin(std::fmax(v, -127.0f), 127.0f);  // fmax(NaN, -127) = -127
  return static_cast<uint8_t>(static_cast<int8_t>(std::nearbyint(c)));
}

// The value a stored byte stands for: code * scale.
inline float kv_dequantize(DType t, uint8_t b, float scale) {
  const float code = t == DType::kF8E4M3 ? f8e4m3_to_f32(b) : static_cast<float>(static_cast<int8_t>(b));
  return code * scale;
}

}  // namespace anvil
