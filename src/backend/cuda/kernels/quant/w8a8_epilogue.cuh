// Dequantizing epilogue of the W8A8 GEMMs, for the cases cuBLASLt cannot scale itself (int8, whose
// IMMA kernels have no bf16 output and no per-row x per-column scale; fp8 without outer-vector
// scaling): out[m, n] = f32(acc[m, n]) * (s_t[m] * s_w[n]) (+ bias[n]), in exactly the CPU
// reference's order of f32 operations (no FMA contraction), rounded once to the output dtype.
//
// Memory-bound: 4 bytes read and 2 (or 4) written per element. Each thread owns 8 consecutive
// columns of one row (two 16-byte acc loads, one 16- or 32-byte store; n % 8 == 0), grid-stride.
//
//   acc [m, n] i32 or f32;  s_t [m] f32;  s_w [n] f32;  bias [n] bf16/f16/f32 or null;  out [m, n]
#pragma once

#include <cstdint>
#include <type_traits>

#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

enum class EpilogueBias : int { kNone = 0, kBf16 = 1, kF16 = 2, kF32 = 3 };

struct W8A8EpilogueParams {
  const void* acc = nullptr;   // [m, n] int32 or f32
  const float* s_t = nullptr;  // [m]
  const float* s_w = nullptr;  // [n]
  const void* bias = nullptr;  // [n] or null
  EpilogueBias bias_kind = EpilogueBias::kNone;
  void* out = nullptr;  // [m, n]
  int64_t m = 0;
  int64_t n = 0;  // multiple of 8
};

// Output element traits over kern::Bf16 / kern::F16 and f32.
struct OutF32 {};

__device__ __forceinline__ float load_bias(const void* bias, EpilogueBias kind, int64_t i) {
  switch (kind) {
    case EpilogueBias::kNone: return 0.0f;
    case EpilogueBias::kBf16: return Bf16::load(static_cast<const uint16_t*>(bias)[i]);
    case EpilogueBias::kF16: return F16::load(static_cast<const uint16_t*>(bias)[i]);
    case EpilogueBias::kF32: return static_cast<const float*>(bias)[i];
  }
  return 0.0f;
}

__device__ __forceinline__ void load_acc8(const int32_t* p, float (&v)[8]) {
  const int4 a = *reinterpret_cast<const int4*>(p);
  const int4 b = *reinterpret_cast<const int4*>(p + 4);
  v[0] = __int2float_rn(a.x), v[1] = __int2float_rn(a.y), v[2] = __int2float_rn(a.z), v[3] = __int2float_rn(a.w);
  v[4] = __int2float_rn(b.x), v[5] = __int2float_rn(b.y), v[6] = __int2float_rn(b.z), v[7] = __int2float_rn(b.w);
}
__device__ __forceinline__ void load_acc8(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

template <class Out>
__device__ __forceinline__ void store_out8(void* out, int64_t off, const float (&v)[8]) {
  if constexpr (std::is_same_v<Out, OutF32>) {
    float* o = static_cast<float*>(out) + off;
    *reinterpret_cast<float4*>(o) = make_float4(v[0], v[1], v[2], v[3]);
    *reinterpret_cast<float4*>(o + 4) = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    Pack8 r;
#pragma unroll
    for (int j = 0; j < 8; ++j) r.h[j] = Out::store(v[j]);
    store_pack(static_cast<uint16_t*>(out) + off, r);
  }
}

template <class Acc, class Out>
__global__ void w8a8_epilogue_kernel(W8A8EpilogueParams p) {
  const int64_t groups_per_row = p.n >> 3;
  const int64_t total = p.m * groups_per_row;
  const Acc* acc = static_cast<const Acc*>(p.acc);
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = g / groups_per_row;
    const int64_t col = (g - row * groups_per_row) << 3;
    const int64_t off = row * p.n + col;
    float v[8];
    load_acc8(acc + off, v);
    const float st = __ldg(p.s_t + row);
    const float4 w0 = __ldg(reinterpret_cast<const float4*>(p.s_w + col));
    const float4 w1 = __ldg(reinterpret_cast<const float4*>(p.s_w + col + 4));
    const float sw[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      v[j] = __fmul_rn(v[j], __fmul_rn(st, sw[j]));
      if (p.bias_kind != EpilogueBias::kNone) v[j] = __fadd_rn(v[j], load_bias(p.bias, p.bias_kind, col + j));
    }
    store_out8<Out>(p.out, off, v);
  }
}

}  // namespace anvil::cuda::kern
