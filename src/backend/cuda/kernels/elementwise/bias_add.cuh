// out[m, n] += bias[n] for f32 rows (logits) with a 16-bit bias: cuBLASLt's BIAS epilogue does
// not take a bf16/fp16 bias with an fp32 output, so the linear launcher adds it in a second pass.
#pragma once

#include <cstdint>

#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

struct BiasAddParams {
  float* out = nullptr;            // [rows, n]
  const uint16_t* bias = nullptr;  // [n]
  int64_t rows = 0;
  int64_t n = 0;
};

template <class E>
__global__ void bias_add_f32_kernel(BiasAddParams p) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= p.n) return;
  const float b = E::load(p.bias[col]);
  for (int64_t row = blockIdx.y; row < p.rows; row += gridDim.y) p.out[row * p.n + col] += b;
}

}  // namespace anvil::cuda::kern
