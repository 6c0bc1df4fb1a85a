// Weight-streaming skinny GEMM for decode: out[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]), M <= 8,
// bf16/fp16 storage, fp32 accumulation. Requires K % 8 == 0 and 16-byte aligned x and w (every
// load is one 16-byte vector); the launcher checks this and the caller falls back to cuBLASLt.
//
// Why this shape: at M <= 8 the GEMM is a stream over the N x K weights (M x K x 2 bytes of x
// are a rounding error), so the only goal is to keep enough bytes in flight to saturate HBM
// while every weight byte is read exactly once. One CTA of 256 threads owns ROWS consecutive
// output rows and splits K over all its threads:
//
//        K --->   step 0 (256 thr x 8 elem x UNROLL)      step 1 ...
//   row0  [ t0 t1 ... t255 | t0 t1 ... t255 ] [ t0 ... ]
//   row1  [ t0 t1 ... t255 | t0 t1 ... t255 ] [ t0 ... ]      (ROWS rows per CTA)
//
// Each thread issues ROWS x UNROLL independent 16-byte weight loads (non-temporal: no L1
// allocation, so the small x stays L1-resident) before it consumes any, each warp touches
// 512 contiguous bytes per load, and an N = 4096 matrix still makes 1024-2048 CTAs, enough to
// fill 132 SMs several times without split-K across CTAs. x is read with __ldg once per (step,
// m) and reused for all ROWS rows. The epilogue reduces the M x ROWS partial sums per warp by
// shuffles and across the 8 warps in shared memory, adds the bias and rounds once.
//
// Programmatic dependent launch (sm_90): weights do not depend on the previous kernel, so when
// launched with programmatic stream serialization the first K step's weight loads are issued
// before griddepcontrol.wait, and x, bias and out are touched only after it. This hides the
// launch and first-byte latency (~1.5 us of an 11 us GEMM) behind the previous kernel's tail.
// Each CTA signals launch_dependents once its loads are done. Contract that follows: w (and
// only w) must not be written by the kernel immediately before this one on the stream.
#pragma once

#include <cstdint>

#include "backend/cuda/kernels/common/pdl.cuh"
#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

constexpr int kSkinnyThreads = 256;
constexpr int kSkinnyUnroll = 2;
constexpr int kSkinnyMaxM = 8;

struct SkinnyGemmParams {
  const uint16_t* x = nullptr;  // [M, K], 16-byte aligned
  const uint16_t* w = nullptr;  // [N, K] row-major, 16-byte aligned
  const void* bias = nullptr;   // [N]: 16-bit (same dtype as x) or f32 (bias_f32); null for none
  void* out = nullptr;          // [M, N]: 16-bit (same dtype as x) or f32 (out_f32)
  int64_t n = 0;
  int64_t k = 0;  // multiple of 8
  bool bias_f32 = false;
  bool out_f32 = false;
};

// Two packed 16-bit elements (low half first) to fp32.
template <class E>
__device__ __forceinline__ float2 unpack2(uint32_t u);
template <>
__device__ __forceinline__ float2 unpack2<Bf16>(uint32_t u) {
  return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
template <>
__device__ __forceinline__ float2 unpack2<F16>(uint32_t u) {
  __half2 h;
  *reinterpret_cast<uint32_t*>(&h) = u;
  return __half22float2(h);
}

// 16-byte read-only load that does not allocate in L1: weights are touched exactly once.
// volatile keeps the first step's loads ahead of grid_dependency_wait().
__device__ __forceinline__ uint4 load_stream16(const uint16_t* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

template <class E, int M, int ROWS>
__global__ void __launch_bounds__(kSkinnyThreads, 2) skinny_gemm_kernel(SkinnyGemmParams p) {
  static_assert(M >= 1 && M <= kSkinnyMaxM, "skinny GEMM handles 1..8 rows of x");
  const int tid = threadIdx.x;
  const int64_t k_len = p.k;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * ROWS;

  // Rows past N read the last valid row (in bounds, result discarded): no predicated loads.
  const uint16_t* w_row[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) w_row[r] = p.w + (row0 + r < p.n ? row0 + r : p.n - 1) * k_len;

  float acc[M][ROWS];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[m][r] = 0.0f;

  constexpr int64_t kStep = static_cast<int64_t>(kSkinnyThreads) * 8 * kSkinnyUnroll;
  for (int64_t kb = 0; kb < k_len; kb += kStep) {
    // Issue every weight load of this step before consuming any.
    uint4 wv[kSkinnyUnroll][ROWS];
#pragma unroll
    for (int u = 0; u < kSkinnyUnroll; ++u) {
      const int64_t k = kb + (static_cast<int64_t>(u) * kSkinnyThreads + tid) * 8;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) wv[u][r] = k < k_len ? load_stream16(w_row[r] + k) : make_uint4(0, 0, 0, 0);
    }
    if (kb == 0) grid_dependency_wait();  // x is the previous kernel's output
#pragma unroll
    for (int u = 0; u < kSkinnyUnroll; ++u) {
      const int64_t k = kb + (static_cast<int64_t>(u) * kSkinnyThreads + tid) * 8;
      if (k >= k_len) continue;
      float wf[ROWS][8];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const uint32_t words[4] = {wv[u][r].x, wv[u][r].y, wv[u][r].z, wv[u][r].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = unpack2<E>(words[j]);
          wf[r][2 * j] = f.x;
          wf[r][2 * j + 1] = f.y;
        }
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(p.x + m * k_len + k));
        const uint32_t words[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 xf = unpack2<E>(words[j]);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            acc[m][r] = fmaf(xf.x, wf[r][2 * j], acc[m][r]);
            acc[m][r] = fmaf(xf.y, wf[r][2 * j + 1], acc[m][r]);
          }
        }
      }
    }
  }

  launch_dependents();

  // Reduce: lanes by shuffle, then the 8 warps through shared memory.
  __shared__ float partial[kSkinnyThreads / 32][M * ROWS];
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const float v = warp_sum(acc[m][r]);
      if (lane == 0) partial[warp][m * ROWS + r] = v;
    }
  __syncthreads();
  if (tid < M * ROWS) {
    const int m = tid / ROWS, r = tid % ROWS;
    const int64_t row = row0 + r;
    if (row < p.n) {
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < kSkinnyThreads / 32; ++i) s += partial[i][tid];
      if (p.bias) {
        s += p.bias_f32 ? static_cast<const float*>(p.bias)[row] : E::load(static_cast<const uint16_t*>(p.bias)[row]);
      }
      const int64_t o = m * p.n + row;
      if (p.out_f32) {
        static_cast<float*>(p.out)[o] = s;
      } else {
        static_cast<uint16_t*>(p.out)[o] = E::store(s);
      }
    }
  }
}

}  // namespace anvil::cuda::kern
