// Gated activation: out = act(gate) * up over rows laid out [gate | up]. Elementwise and purely
// memory-bound (read 4 bytes, write 2 per output element), so the fast kernel moves 16-byte packs
// and a 2-D grid (column packs x rows) avoids 64-bit divisions. HF rounds act(gate) to the
// compute dtype before the multiply; so do we.
#pragma once

#include <cstdint>

#include "backend/cuda/kernels/common/pdl.cuh"
#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

enum class ActKind { kSilu, kGeluTanh };

struct ActMulParams {
  const uint16_t* gate_up = nullptr;  // [rows, 2 * f]
  uint16_t* out = nullptr;            // [rows, f]
  int64_t rows = 0;
  int64_t f = 0;
};

template <ActKind kAct>
__device__ __forceinline__ float activate(float g) {
  if constexpr (kAct == ActKind::kSilu) {
    return g / (1.0f + __expf(-g));
  } else {
    return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
  }
}

// f % 8 == 0 and pointers 16-byte aligned. grid.x covers f / 8 packs, grid.y strides rows.
template <class E, ActKind kAct>
__global__ void act_mul_vec_kernel(ActMulParams p) {
  pdl_chain_enter();
  const int64_t pk = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pk * 8 >= p.f) return;
  for (int64_t row = blockIdx.y; row < p.rows; row += gridDim.y) {
    const uint16_t* g = p.gate_up + row * 2 * p.f + pk * 8;
    const Pack8 gv = load_pack(g);
    const Pack8 uv = load_pack(g + p.f);
    Pack8 o;
#pragma unroll
    for (int e = 0; e < 8; ++e) o.h[e] = E::store(E::round(activate<kAct>(E::load(gv.h[e]))) * E::load(uv.h[e]));
    store_pack(p.out + row * p.f + pk * 8, o);
  }
}

template <class E, ActKind kAct>
__global__ void act_mul_scalar_kernel(ActMulParams p) {
  pdl_chain_enter();
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= p.f) return;
  for (int64_t row = blockIdx.y; row < p.rows; row += gridDim.y) {
    const uint16_t* g = p.gate_up + row * 2 * p.f;
    p.out[row * p.f + col] = E::store(E::round(activate<kAct>(E::load(g[col]))) * E::load(g[col + p.f]));
  }
}

}  // namespace anvil::cuda::kern
