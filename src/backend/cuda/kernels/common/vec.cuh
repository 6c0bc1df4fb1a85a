// Shared device helpers for the 16-bit activation kernels: element traits for bf16 / fp16 kept
// as raw uint16_t storage (kernels never see anvil types), 16-byte packs of eight elements, and
// warp / block reductions. All math is fp32; rounding back to 16 bits is round-to-nearest-even.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace anvil::cuda::kern {

// Element traits: load 16-bit storage as fp32, store fp32 as 16-bit storage, round through it.
struct Bf16 {
  static __device__ __forceinline__ float load(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
  static __device__ __forceinline__ uint16_t store(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
  static __device__ __forceinline__ float round(float f) { return load(store(f)); }
};
struct F16 {
  static __device__ __forceinline__ float load(uint16_t b) { return __half2float(__ushort_as_half(b)); }
  static __device__ __forceinline__ uint16_t store(float f) { return __half_as_ushort(__float2half_rn(f)); }
  static __device__ __forceinline__ float round(float f) { return load(store(f)); }
};

// Eight 16-bit elements: one 16-byte (LDG.128 / STG.128) access.
struct alignas(16) Pack8 {
  uint16_t h[8];
};
__device__ __forceinline__ Pack8 load_pack(const uint16_t* p) {
  Pack8 r;
  *reinterpret_cast<uint4*>(&r) = __ldg(reinterpret_cast<const uint4*>(p));
  return r;
}
// Coherent load: for buffers this kernel also writes (the residual stream).
__device__ __forceinline__ Pack8 load_pack_rw(const uint16_t* p) {
  Pack8 r;
  *reinterpret_cast<uint4*>(&r) = *reinterpret_cast<const uint4*>(p);
  return r;
}
__device__ __forceinline__ void store_pack(uint16_t* p, const Pack8& v) {
  *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds >= 32 floats. Contains
// __syncthreads, so every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < num_warps ? scratch[lane] : 0.0f;
  return warp_sum(r);
}

}  // namespace anvil::cuda::kern
