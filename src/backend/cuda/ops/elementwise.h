// Launchers of the memory-bound kernels (kernels/norm, rope, activation, gather), with dtype
// dispatch. Host-only declarations: pointers are device memory, work is enqueued on `stream`,
// nothing allocates or synchronizes, so every launcher is safe inside CUDA graph capture.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/status.h"

namespace anvil::cuda {

// dst[i] = src[rows[i]] (row_bytes each); an index outside [0, src_rows) writes zeros.
//   src [src_rows, row_bytes]; rows [num_rows] i32; dst [num_rows, row_bytes]
Status launch_gather_rows(const void* src, int64_t src_rows, int64_t row_bytes, const int32_t* rows,
                          int64_t num_rows, void* dst, cudaStream_t stream);

// residual (optional) += x; out = norm(residual or x) * weight.  x, residual, out [rows, hidden];
// weight [hidden]; all of `dtype` (bf16 or f16). out may alias x.
Status launch_rms_norm(const void* x, void* residual, const void* weight, void* out, int64_t rows, int hidden,
                       float eps, DType dtype, cudaStream_t stream);

// out = act(gate) * up.  gate_up [rows, 2 f]; out [rows, f].
Status launch_act_mul(const void* gate_up, void* out, int64_t rows, int64_t f, Activation act, DType dtype,
                      cudaStream_t stream);

// out[rows, n] (f32) += bias[n] (bf16 or f16).
Status launch_bias_add_f32(float* out, const void* bias, int64_t rows, int64_t n, DType bias_dtype,
                           cudaStream_t stream);

struct RopeKvLaunch {
  const void* qkv = nullptr;     // [num_tokens, (Hq + 2 Hkv) * D]
  const void* q_norm = nullptr;  // [D] or null
  const void* k_norm = nullptr;  // [D] or null
  float eps = 1e-6f;
  const float* inv_freq = nullptr;  // [D / 2]
  float scaling = 1.0f;
  const int32_t* positions = nullptr;  // [num_tokens]
  const int32_t* slot_map = nullptr;   // [num_tokens]
  void* q_out = nullptr;               // [num_tokens, Hq, D]
  void* k_cache = nullptr;             // [num_blocks, Hkv, block_size, D]
  void* v_cache = nullptr;
  int num_tokens = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0, block_size = 0;
  DType dtype = DType::kBF16;
  // Cache element type: dtype, or kF8E4M3 / kI8 with per-KV-head scales ([num_kv_heads] f32).
  DType kv_dtype = DType::kBF16;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
};
Status launch_rope_kv_write(const RopeKvLaunch& p, cudaStream_t stream);

}  // namespace anvil::cuda
