// Dequantizes a weight-only quantized matrix (backend.h layout) into a dense [N, K] matrix in
// the compute dtype, for the prefill path: the dense result feeds the cuBLASLt GEMM.
//   int8: w = round16(q * scale[n]);  int4: w = round16(q * s[n, g] + o[n, g]) (s, o read as f16).
// One thread per 16-byte chunk of packed weights (16 int8 / 32 int4 elements, always inside one
// group since group sizes are multiples of 32), grid-stride; loads and stores are 16 bytes wide.
// Requires K % 16 == 0 (int8) / K % 32 == 0 (int4) and 16-byte aligned w and out.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

struct WoDequantParams {
  const uint8_t* w = nullptr;         // int8 [n, k] | int4 u8 [n, k / 2]
  const void* scales = nullptr;       // int8: f32 [n]; int4: f16 [n, groups]
  const uint16_t* offsets = nullptr;  // int4: f16 [n, groups]
  uint16_t* out = nullptr;            // [n, k] in the compute dtype
  int64_t n = 0, k = 0;
  int group_size = 0, groups = 0;
  int group_shift = 0;  // int4: log2(group_size / 32)
  bool int4 = false;
};

template <class E>
__global__ void weight_only_dequant_kernel(WoDequantParams p) {
  // 32-bit index math: the launcher guarantees n * chunks_per_row < 2^31.
  const uint32_t chunks_per_row = static_cast<uint32_t>((p.int4 ? p.k / 2 : p.k) / 16);
  const int64_t total = p.n * chunks_per_row;
  const int elems = p.int4 ? 32 : 16;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t row = static_cast<uint32_t>(i) / chunks_per_row, ci = static_cast<uint32_t>(i) % chunks_per_row;
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p.w) + i);
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&raw);
    uint16_t* dst = p.out + static_cast<int64_t>(row) * p.k + ci * elems;
    if (p.int4) {
      const int64_t sg = static_cast<int64_t>(row) * p.groups + (ci >> p.group_shift);
      const float s = __half2float(__ushort_as_half(__ldg(static_cast<const uint16_t*>(p.scales) + sg)));
      const float o = __half2float(__ushort_as_half(__ldg(p.offsets + sg)));
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        Pack8 pk;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint8_t b = bytes[v * 4 + j];
          pk.h[2 * j] = E::store(fmaf(static_cast<float>(b & 0xf), s, o));
          pk.h[2 * j + 1] = E::store(fmaf(static_cast<float>(b >> 4), s, o));
        }
        store_pack(dst + 8 * v, pk);
      }
    } else {
      const float s = __ldg(static_cast<const float*>(p.scales) + row);
#pragma unroll
      for (int v = 0; v < 2; ++v) {
        Pack8 pk;
#pragma unroll
        for (int j = 0; j < 8; ++j) pk.h[j] = E::store(static_cast<float>(static_cast<int8_t>(bytes[v * 8 + j])) * s);
        store_pack(dst + 8 * v, pk);
      }
    }
  }
}

}  // namespace anvil::cuda::kern
