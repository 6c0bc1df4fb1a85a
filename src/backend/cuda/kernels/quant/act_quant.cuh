// Dynamic per-token activation quantization for the W8A8 GEMMs (backend.h, kInt8W8A8 / kFp8W8A8):
// one CTA per row computes amax = max_k |x[k]|, s = amax / qmax (1 when the row is all zeros) and
// writes q[k] = quant(x[k] * (1 / s)) and scales[row] = s. The arithmetic is exactly the CPU
// reference's (cpu_quant.cpp), rounding mode by rounding mode, so the bytes match bit for bit.
//
// Why it is shaped this way: the op is memory-bound (read 2 bytes, write 1 per element) and needs
// the row's amax before the first byte can be written. Rows of up to 8 packs x 512 threads x 8
// elements (K <= 32768) are read once into registers (kPacks 16-byte packs per thread, all loads
// in flight before the reduction) and quantized from there: one read of HBM. Longer rows
// (kPacks == 0, up to 1024 threads) take a second read, which L2 mostly serves.
//
//   x      [rows, k]  bf16/f16, rows 16-byte aligned (k % 8 == 0)
//   q      [rows, k]  int8 or e4m3 bytes
//   scales [rows]     f32
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

struct ActQuantParams {
  const uint16_t* x = nullptr;  // [rows, k]
  uint8_t* q = nullptr;         // [rows, k]
  float* scales = nullptr;      // [rows]
  int64_t rows = 0;
  int k = 0;  // multiple of 8
};

// Int8: round half to even (nearbyint under the default rounding mode), saturate to +-127.
struct QuantI8 {
  static constexpr float kMax = 127.0f;
  static __device__ __forceinline__ uint8_t quant(float v) {
    int i = __float2int_rn(v);
    i = i > 127 ? 127 : (i < -127 ? -127 : i);
    return static_cast<uint8_t>(static_cast<int8_t>(i));
  }
};
// E4M3: round to nearest even, saturate to +-448 (satfinite), as core/dtype.h's f32_to_f8e4m3.
struct QuantE4M3 {
  static constexpr float kMax = 448.0f;
  static __device__ __forceinline__ uint8_t quant(float v) {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
  }
};

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Max over the block; every thread gets it. scratch >= 32 floats.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < num_warps ? scratch[lane] : 0.0f;
  return warp_max(r);
}

template <class E, class Q>
__device__ __forceinline__ void quant_pack(const Pack8& in, float inv, uint8_t* dst) {
  uint32_t lo = 0, hi = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) lo |= static_cast<uint32_t>(Q::quant(__fmul_rn(E::load(in.h[j]), inv))) << (8 * j);
#pragma unroll
  for (int j = 0; j < 4; ++j) hi |= static_cast<uint32_t>(Q::quant(__fmul_rn(E::load(in.h[4 + j]), inv))) << (8 * j);
  *reinterpret_cast<uint2*>(dst) = make_uint2(lo, hi);
}

template <class E>
__device__ __forceinline__ float pack_amax(const Pack8& v) {
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j) m = fmaxf(m, fabsf(E::load(v.h[j])));
  return m;
}

// grid.x = rows (< 2^31).
// kPacks > 0: the row fits in registers (kPacks * blockDim.x * 8 >= k); kPacks == 0: two reads.
// Register path: at most 512 threads (kPacks = 8 holds 32 data registers per thread).
template <class E, class Q, int kPacks>
__global__ void __launch_bounds__(kPacks == 0 ? 1024 : 512) act_quant_kernel(ActQuantParams p) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const uint16_t* x = p.x + row * p.k;
  uint8_t* q = p.q + row * p.k;
  const int packs = p.k >> 3;
  float amax = 0.0f;
  if constexpr (kPacks > 0) {
    Pack8 v[kPacks];
#pragma unroll
    for (int i = 0; i < kPacks; ++i) {
      const int pk = threadIdx.x + i * blockDim.x;
      if (pk < packs) v[i] = load_pack(x + pk * 8);
    }
#pragma unroll
    for (int i = 0; i < kPacks; ++i) {
      const int pk = threadIdx.x + i * blockDim.x;
      if (pk < packs) amax = fmaxf(amax, pack_amax<E>(v[i]));
    }
    amax = block_max(amax, scratch);
    const float s = amax > 0.0f ? __fdiv_rn(amax, Q::kMax) : 1.0f;
    const float inv = __fdiv_rn(1.0f, s);
#pragma unroll
    for (int i = 0; i < kPacks; ++i) {
      const int pk = threadIdx.x + i * blockDim.x;
      if (pk < packs) quant_pack<E, Q>(v[i], inv, q + pk * 8);
    }
    if (threadIdx.x == 0) p.scales[row] = s;
  } else {
    for (int pk = threadIdx.x; pk < packs; pk += blockDim.x) amax = fmaxf(amax, pack_amax<E>(load_pack(x + pk * 8)));
    amax = block_max(amax, scratch);
    const float s = amax > 0.0f ? __fdiv_rn(amax, Q::kMax) : 1.0f;
    const float inv = __fdiv_rn(1.0f, s);
    for (int pk = threadIdx.x; pk < packs; pk += blockDim.x) quant_pack<E, Q>(load_pack(x + pk * 8), inv, q + pk * 8);
    if (threadIdx.x == 0) p.scales[row] = s;
  }
}

}  // namespace anvil::cuda::kern
