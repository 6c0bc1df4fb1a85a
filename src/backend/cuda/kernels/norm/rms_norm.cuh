// RMSNorm with an optional fused residual add, one thread block per row.
//
// Why this shape: a row (H = 896 .. 16384 elements) fits in the registers of one block, so the
// fast kernel reads x (and the residual) once with 16-byte loads, keeps the values in registers
// across the block-wide sum of squares, and writes once: the floor is 2 (or 4 with residual)
// passes of T*H*2 bytes. A scalar two-pass kernel covers rows that are not 16-byte aligned.
// Rounding follows HF: the residual sum is rounded to the compute dtype (it is stored that way),
// the normalized value is rounded before the weight multiply, and the product is rounded again.
#pragma once

#include <cstdint>

#include "backend/cuda/kernels/common/pdl.cuh"
#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

struct RmsNormParams {
  const uint16_t* x = nullptr;   // [rows, hidden]
  uint16_t* residual = nullptr;  // [rows, hidden] or null; updated in place (residual += x)
  const uint16_t* weight = nullptr;  // [hidden]
  uint16_t* out = nullptr;       // [rows, hidden]; may alias x
  int64_t rows = 0;
  int hidden = 0;
  float eps = 1e-6f;
};

// hidden % 8 == 0, all pointers 16-byte aligned, hidden / 8 <= blockDim.x * kVecs.
template <class E, int kVecs>
__global__ void rms_norm_vec_kernel(RmsNormParams p) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int num_packs = p.hidden / 8;
  // The weight is constant: fetched before the PDL wait, so its latency hides behind the previous
  // kernel instead of following the reduction.
  launch_dependents();
  Pack8 wv[kVecs];
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int pk = threadIdx.x + j * blockDim.x;
    if (pk < num_packs) wv[j] = load_pack(p.weight + pk * 8);
  }
  grid_dependency_wait();
  const uint16_t* x = p.x + row * p.hidden;
  uint16_t* res = p.residual ? p.residual + row * p.hidden : nullptr;
  float v[kVecs][8];
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int pk = threadIdx.x + j * blockDim.x;
    if (pk < num_packs) {
      Pack8 a = load_pack_rw(x + pk * 8);  // x may alias out: no read-only path
      if (res) {
        Pack8 r = load_pack_rw(res + pk * 8);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          r.h[e] = E::store(E::load(r.h[e]) + E::load(a.h[e]));
          v[j][e] = E::load(r.h[e]);
        }
        store_pack(res + pk * 8, r);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) v[j][e] = E::load(a.h[e]);
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) ss += v[j][e] * v[j][e];
    }
  }
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(p.hidden) + p.eps);
  uint16_t* out = p.out + row * p.hidden;
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int pk = threadIdx.x + j * blockDim.x;
    if (pk < num_packs) {
      Pack8 o;
#pragma unroll
      for (int e = 0; e < 8; ++e) o.h[e] = E::store(E::load(wv[j].h[e]) * E::round(v[j][e] * inv));
      store_pack(out + pk * 8, o);
    }
  }
}

// Any hidden size and alignment: two passes over the row (the second hits L1/L2).
template <class E>
__global__ void rms_norm_scalar_kernel(RmsNormParams p) {
  pdl_chain_enter();
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const uint16_t* x = p.x + row * p.hidden;
  uint16_t* res = p.residual ? p.residual + row * p.hidden : nullptr;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < p.hidden; i += blockDim.x) {
    float h = E::load(x[i]);
    if (res) {
      const uint16_t r = E::store(E::load(res[i]) + h);
      res[i] = r;
      h = E::load(r);
    }
    ss += h * h;
  }
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(p.hidden) + p.eps);
  const uint16_t* src = res ? res : x;
  uint16_t* out = p.out + row * p.hidden;
  for (int i = threadIdx.x; i < p.hidden; i += blockDim.x) {
    out[i] = E::store(E::load(p.weight[i]) * E::round(E::load(src[i]) * inv));
  }
}

}  // namespace anvil::cuda::kern
