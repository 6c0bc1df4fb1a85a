// Weight-only quantized GEMM for decode (M <= 16): out[M, N] = x[M, K] @ dequant(w)[N, K]^T
// (+ bias[N]) with int8 per-channel (W8A16) or int4 group-wise (W4A16) weights in backend.h's
// layout, bf16/fp16 activations, fp32 accumulation on the tensor cores (mma.sync m16n8k16).
//
// Why this shape: at M <= 16 the GEMM is a stream over the packed weights (0.5-1 byte per
// element), so every weight byte is read once with 16-byte loads, and the only goal is to keep
// HBM busy from the first cycle to the last. Feeding dequantized weights to mma.sync costs one
// tensor-core op per 16 x 16 weights for up to 8 (NT = 1) or 16 (NT = 2) tokens, so the kernel
// stays load-bound at every M <= 16. Weights are the mma's A operand (16 rows of N), x is B.
//
// A CTA of kWoWarps warps owns R 16-row tiles; lane l = 4 g + c reads rows g and g + 8 of each
// tile and, per K step, the 16-byte "chunk" c of U consecutive 64-byte segments (int8: 16
// elements a chunk, int4: 32):
//
//   row g      [ c0 | c1 | c2 | c3 ][ c0 | c1 | c2 | c3 ] ...    (U segments per step)
//   row g + 8  [ c0 | c1 | c2 | c3 ][ c0 | c1 | c2 | c3 ] ...
//
// The warps of a CTA take interleaved K steps; blockIdx.y splits K across CTAs when the tiles
// alone would not fill the GPU. Latency is hidden two ways:
//  - a two-stage register pipeline per warp: the weights (and int4 scales / offsets) of steps
//    s + 1 and s + 2 are in flight while step s is multiplied; each chunk's registers are
//    refilled for step s + 2 right after that chunk's mmas;
//  - PDL (sm_90): both prologue stages are issued before griddepcontrol.wait, and the CTA lets
//    the next kernel launch right after them (griddepcontrol.launch_dependents), so back-to-back
//    GEMMs stream weights without a launch gap. Contract: w, scales and offsets are not written
//    by the kernel launched just before this one (x, bias, out and the workspace are touched
//    only after the wait; the next kernel must itself wait before reading out).
//
// Math: a dot product does not care which k goes to which mma slot as long as A and B agree, so
// each lane feeds the mma the k values of its own chunk and loads the matching x values for
// token g itself: no shuffles. int8 keeps the natural pair order (k, k+1); int4 uses the pairs
// (k, k+4) that one LOP3 extracts from a packed word (0x000F000F | magic), and permutes the x
// pairs to match with PRMT (computed once per token tile and reused for all R row tiles).
//   int8: q -> 16-bit exactly (fp16: magic 0x6400, bf16: via fp32); the per-channel scale is
//         applied to the fp32 result, so the tensor-core product is exact up to fp32 sums.
//   int4: q -> 16-bit exactly (magic 0x6400 / 0x4300 minus the magic), then w = q * s + o in
//         one fused half2 FMA (bf16: s and o rounded from f16 to bf16), i.e. the weight rounded
//         once to the compute dtype, as a dequantize-then-GEMM would.
// Reductions are in a fixed order (deterministic): the warps' partial tiles in shared memory,
// then, when K is split across CTAs, fp32 partials in a workspace summed in split order by the
// last CTA of a tile (an atomic arrival counter, reset by that CTA).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/kernels/common/vec.cuh"
#include "backend/cuda/kernels/gemm/skinny_gemm.cuh"  // load_stream16, grid_dependency_wait, launch_dependents

namespace anvil::cuda::kern {

constexpr int kWoWarps = 4;
constexpr int kWoThreads = kWoWarps * 32;
constexpr int kWoTileRows = 16;  // rows of one mma A tile; a CTA owns R of them

struct WoGemvParams {
  const uint16_t* x = nullptr;        // [m, k], 16-byte aligned
  const uint8_t* w = nullptr;         // int8 [n, k] | int4 u8 [n, k / 2]; 16-byte aligned
  const void* scales = nullptr;       // int8: f32 [n]; int4: f16 [n, groups]
  const uint16_t* offsets = nullptr;  // int4: f16 [n, groups]
  const uint16_t* bias = nullptr;     // [n] in the compute dtype, or null
  void* out = nullptr;                // [m, n] in the compute dtype or f32 (out_f32)
  float* partials = nullptr;          // split-K: [splits, m, n] f32
  unsigned* counters = nullptr;       // split-K: [gridDim.x], zero between launches
  int m = 0;
  int64_t n = 0, k = 0;
  int groups = 0;            // int4: groups per row
  int group_shift = 0;       // int4: log2(group_size / 32): chunk index -> group index
  int num_chunks = 0;        // 16-byte chunks per weight row
  int chunks_per_split = 0;  // multiple of kWoWarps * 4 * U (whole CTA steps)
  int splits = 1;
  bool out_f32 = false;
  bool early_trigger = true;  // launch_dependents right after the prologue (else after the K loop)
};

struct Int8Fmt {
  static constexpr int kElems = 16;  // elements per 16-byte chunk
};
struct Int4Fmt {
  static constexpr int kElems = 32;
};
// fp8 e4m3 weights with per-channel scales (the decode path of kFp8W8A8): the int8 kernel with
// an exact e4m3 -> 16-bit conversion.
struct Fp8Fmt {
  static constexpr int kElems = 16;
};
template <class F>
inline constexpr bool kIsFp8 = false;
template <>
inline constexpr bool kIsFp8<Fp8Fmt> = true;

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}
// (a & mask) | magic in one LOP3.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t mask, uint32_t magic) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(a), "r"(mask), "r"(magic));
  return r;
}

// D += A * B, m16n8k16, fp32 accumulate.
template <class E>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<Bf16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<F16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// int8 word (4 signed values, k .. k+3) -> two packed 16-bit pairs (k, k+1), (k+2, k+3), exact.
template <class E>
__device__ __forceinline__ void int8_pairs(uint32_t word, uint32_t& lo, uint32_t& hi);
template <>
__device__ __forceinline__ void int8_pairs<F16>(uint32_t word, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = word ^ 0x80808080u;  // q + 128 as unsigned bytes
  const __half2 bias = __halves2half2(__ushort_as_half(0x6480), __ushort_as_half(0x6480));  // 1152
  uint32_t a = prmt(u, 0x64646464u, 0x4140), b = prmt(u, 0x64646464u, 0x4342);            // 1024 + byte
  __half2 ha = __hsub2(*reinterpret_cast<__half2*>(&a), bias);
  __half2 hb = __hsub2(*reinterpret_cast<__half2*>(&b), bias);
  lo = *reinterpret_cast<uint32_t*>(&ha);
  hi = *reinterpret_cast<uint32_t*>(&hb);
}
template <>
__device__ __forceinline__ void int8_pairs<Bf16>(uint32_t word, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = word ^ 0x80808080u;
  // fp32 magic: 0x4B0000bb = 2^23 + byte; minus 2^23 + 128 gives q exactly.
  float f[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(prmt(u, 0x4B000000u, 0x7440 | i)) - 8388736.0f;
  __nv_bfloat162 a = __floats2bfloat162_rn(f[0], f[1]), b = __floats2bfloat162_rn(f[2], f[3]);
  lo = *reinterpret_cast<uint32_t*>(&a);
  hi = *reinterpret_cast<uint32_t*>(&b);
}

// e4m3 word (4 values, k .. k+3) -> two packed 16-bit pairs (k, k+1), (k+2, k+3), exact (every
// e4m3 value is representable in f16 and in bf16).
template <class E>
__device__ __forceinline__ void fp8_pairs(uint32_t word, uint32_t& lo, uint32_t& hi);
template <>
__device__ __forceinline__ void fp8_pairs<F16>(uint32_t word, uint32_t& lo, uint32_t& hi) {
  const __half2_raw a = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word & 0xffffu), __NV_E4M3);
  const __half2_raw b = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word >> 16), __NV_E4M3);
  lo = static_cast<uint32_t>(a.x) | static_cast<uint32_t>(a.y) << 16;
  hi = static_cast<uint32_t>(b.x) | static_cast<uint32_t>(b.y) << 16;
}
template <>
__device__ __forceinline__ void fp8_pairs<Bf16>(uint32_t word, uint32_t& lo, uint32_t& hi) {
  const __half2_raw a = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word & 0xffffu), __NV_E4M3);
  const __half2_raw b = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word >> 16), __NV_E4M3);
  const float2 fa = __half22float2(*reinterpret_cast<const __half2*>(&a));
  const float2 fb = __half22float2(*reinterpret_cast<const __half2*>(&b));
  __nv_bfloat162 ba = __floats2bfloat162_rn(fa.x, fa.y), bb = __floats2bfloat162_rn(fb.x, fb.y);
  lo = *reinterpret_cast<uint32_t*>(&ba);
  hi = *reinterpret_cast<uint32_t*>(&bb);
}

// int4 dequantization of one packed pair register (two 4-bit codes at bits 0 and 16 after the
// shift): w = q * s + o in the compute dtype.
template <class E>
struct Int4Dequant;
template <>
struct Int4Dequant<F16> {
  __half2 s, o;
  __device__ __forceinline__ void set(uint16_t s_bits, uint16_t o_bits) {
    s = __half2half2(__ushort_as_half(s_bits));
    o = __half2half2(__ushort_as_half(o_bits));
  }
  __device__ __forceinline__ uint32_t operator()(uint32_t shifted) const {
    uint32_t v = and_or(shifted, 0x000F000Fu, 0x64006400u);  // 1024 + q
    const __half2 magic = __half2half2(__ushort_as_half(0x6400));
    __half2 h = __hfma2(__hsub2(*reinterpret_cast<__half2*>(&v), magic), s, o);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <>
struct Int4Dequant<Bf16> {
  __nv_bfloat162 s, o;
  __device__ __forceinline__ void set(uint16_t s_bits, uint16_t o_bits) {
    s = __float2bfloat162_rn(__half2float(__ushort_as_half(s_bits)));
    o = __float2bfloat162_rn(__half2float(__ushort_as_half(o_bits)));
  }
  __device__ __forceinline__ uint32_t operator()(uint32_t shifted) const {
    uint32_t v = and_or(shifted, 0x000F000Fu, 0x43004300u);  // 128 + q
    const __nv_bfloat162 magic = __bfloat162bfloat162(__ushort_as_bfloat16(0x4300));
    __nv_bfloat162 h = __hfma2(__hsub2(*reinterpret_cast<__nv_bfloat162*>(&v), magic), s, o);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// One pipeline stage of a lane: the weights of its U chunks of rows (g, g + 8) of each of the R
// row tiles, and for int4 the raw f16 scale / offset of each chunk's group (converted only when
// consumed, so the loads stay in flight).
template <bool kInt4, int U, int R>
struct WoStage {
  uint4 wa[U][R], wb[U][R];
  uint16_t sa[kInt4 ? U : 1][R], sb[kInt4 ? U : 1][R], oa[kInt4 ? U : 1][R], ob[kInt4 ? U : 1][R];
};

// All mmas of one chunk for the R row tiles: xs[t] holds the chunk's x values of token g + 8 t
// (zeros for absent tokens / chunks).
template <class E, bool kFp8, int NT, int U, int R>
__device__ __forceinline__ void consume_int8(const WoStage<false, U, R>& st, int u, const uint4 (&xs)[NT][2],
                                             float (&acc)[R][NT][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {  // word j: k = 4j .. 4j+3 of the chunk
    uint32_t b0[NT], b1[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const uint4& xv = xs[t][j / 2];
      b0[t] = (j & 1) ? xv.z : xv.x;
      b1[t] = (j & 1) ? xv.w : xv.y;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      uint32_t a[4];
      if constexpr (kFp8) {
        fp8_pairs<E>(word_of(st.wa[u][r], j), a[0], a[2]);
        fp8_pairs<E>(word_of(st.wb[u][r], j), a[1], a[3]);
      } else {
        int8_pairs<E>(word_of(st.wa[u][r], j), a[0], a[2]);
        int8_pairs<E>(word_of(st.wb[u][r], j), a[1], a[3]);
      }
#pragma unroll
      for (int t = 0; t < NT; ++t) mma16816<E>(acc[r][t], a, b0[t], b1[t]);
    }
  }
}

template <class E, int NT, int U, int R>
__device__ __forceinline__ void consume_int4(const WoStage<true, U, R>& st, int u, const uint4 (&xs)[NT][4],
                                             float (&acc)[R][NT][4]) {
  Int4Dequant<E> da[R], db[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    da[r].set(st.sa[u][r], st.oa[u][r]);
    db[r].set(st.sb[u][r], st.ob[u][r]);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // word i: k = 8i .. 8i+7, nibble t holds k = 8i + t
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // mma over pairs (8i+2h, 8i+2h+4) and (8i+2h+1, 8i+2h+5)
      uint32_t b0[NT], b1[NT];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const uint4& xv = xs[t][i];  // x[8i .. 8i+7] as words (0,1) (2,3) (4,5) (6,7)
        const uint32_t p = h ? xv.y : xv.x, q = h ? xv.w : xv.z;
        b0[t] = prmt(p, q, 0x5410);
        b1[t] = prmt(p, q, 0x7632);
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint32_t wa = word_of(st.wa[u][r], i), wb = word_of(st.wb[u][r], i);
        uint32_t a[4];
        a[0] = da[r](wa >> (8 * h));
        a[2] = da[r](wa >> (8 * h + 4));
        a[1] = db[r](wb >> (8 * h));
        a[3] = db[r](wb >> (8 * h + 4));
#pragma unroll
        for (int t = 0; t < NT; ++t) mma16816<E>(acc[r][t], a, b0[t], b1[t]);
      }
    }
  }
}

__device__ __forceinline__ uint4 load_x16(const uint16_t* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

template <class E, class F, int NT, int U, int R>
__global__ void __launch_bounds__(kWoThreads) weight_only_gemv_kernel(WoGemvParams p) {
  constexpr bool kInt4 = F::kElems == 32;
  constexpr int kXVecs = F::kElems / 8;           // 16-byte x vectors per chunk
  constexpr int kStepChunks = 4 * U;              // chunks of one warp step (per row)
  constexpr int kCtaStep = kWoWarps * kStepChunks;  // chunks of one CTA step
  using Stage = WoStage<kInt4, U, R>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int64_t tile_row = static_cast<int64_t>(blockIdx.x) * (kWoTileRows * R);
  const int64_t row_bytes = kInt4 ? p.k / 2 : p.k;

  // Rows past N read the last row (in bounds, results discarded): no predicated weight loads.
  const uint8_t* wa_row[R];
  const uint8_t* wb_row[R];
  int64_t ra[R], rb[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    ra[r] = min(tile_row + kWoTileRows * r + g, p.n - 1);
    rb[r] = min(tile_row + kWoTileRows * r + g + 8, p.n - 1);
    wa_row[r] = p.w + ra[r] * row_bytes;
    wb_row[r] = p.w + rb[r] * row_bytes;
  }
  const int split = blockIdx.y;
  const int chunk_begin = split * p.chunks_per_split;
  const int chunk_end = min(chunk_begin + p.chunks_per_split, p.num_chunks);
  // Chunk index of this lane at (step 0, u = 0); step s adds s * kCtaStep, u adds 4 u.
  const int warp_first = chunk_begin + warp * kStepChunks;
  const int nsteps = warp_first < chunk_end ? (chunk_end - warp_first + kCtaStep - 1) / kCtaStep : 0;

  // Chunks past the range load a clamped in-bounds chunk unconditionally (no branches around
  // the loads) and get zero x, so they add nothing.
  auto load_chunk = [&](Stage& st, int step, int u) {
    const int ci = min(warp_first + step * kCtaStep + 4 * u + c, chunk_end - 1);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      st.wa[u][r] = load_stream16(reinterpret_cast<const uint16_t*>(wa_row[r] + static_cast<int64_t>(ci) * 16));
      st.wb[u][r] = load_stream16(reinterpret_cast<const uint16_t*>(wb_row[r] + static_cast<int64_t>(ci) * 16));
      if constexpr (kInt4) {
        const int64_t grp = ci >> p.group_shift;
        const uint16_t* s = static_cast<const uint16_t*>(p.scales);
        st.sa[u][r] = __ldg(s + ra[r] * p.groups + grp);
        st.sb[u][r] = __ldg(s + rb[r] * p.groups + grp);
        st.oa[u][r] = __ldg(p.offsets + ra[r] * p.groups + grp);
        st.ob[u][r] = __ldg(p.offsets + rb[r] * p.groups + grp);
      }
    }
  };

  Stage st0, st1;
  if (nsteps > 0) {
#pragma unroll
    for (int u = 0; u < U; ++u) load_chunk(st0, 0, u);
  }
  if (nsteps > 1) {
#pragma unroll
    for (int u = 0; u < U; ++u) load_chunk(st1, 1, u);
  }
  // int8 per-channel scales are weights too: fetched before the wait, used in the epilogue.
  float scale_a[R], scale_b[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    scale_a[r] = kInt4 ? 1.0f : __ldg(static_cast<const float*>(p.scales) + ra[r]);
    scale_b[r] = kInt4 ? 1.0f : __ldg(static_cast<const float*>(p.scales) + rb[r]);
  }
  grid_dependency_wait();                 // x is the previous kernel's output
  if (p.early_trigger) launch_dependents();  // the next GEMM may start streaming its weights now
  float bias_a[R], bias_b[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    bias_a[r] = p.bias ? E::load(p.bias[ra[r]]) : 0.0f;
    bias_b[r] = p.bias ? E::load(p.bias[rb[r]]) : 0.0f;
  }

  float acc[R][NT][4];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][t][e] = 0.0f;

  const uint16_t* x_tok[NT];
  bool tok_ok[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    tok_ok[t] = g + 8 * t < p.m;
    x_tok[t] = p.x + static_cast<int64_t>(tok_ok[t] ? g + 8 * t : 0) * p.k;
  }

  // Multiplies step `step` out of `st`, refilling each chunk's registers with step + 2.
  auto process = [&](Stage& st, int step) {
    const bool refill = step + 2 < nsteps;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int ci = warp_first + step * kCtaStep + 4 * u + c;
      const bool valid = ci < chunk_end;
      uint4 xs[NT][kXVecs];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const bool load = valid && tok_ok[t];
        const uint16_t* xp = x_tok[t] + static_cast<int64_t>(ci) * F::kElems;
#pragma unroll
        for (int v = 0; v < kXVecs; ++v) xs[t][v] = load ? load_x16(xp + 8 * v) : make_uint4(0, 0, 0, 0);
      }
      if constexpr (kInt4) {
        consume_int4<E, NT, U, R>(st, u, xs, acc);
      } else {
        consume_int8<E, kIsFp8<F>, NT, U, R>(st, u, xs, acc);
      }
      if (refill) load_chunk(st, step + 2, u);
    }
  };
  for (int s = 0; s < nsteps; s += 2) {
    process(st0, s);
    if (s + 1 < nsteps) process(st1, s + 1);
  }
  if (!p.early_trigger) launch_dependents();

  // Reduce the warps' partial tiles: [warp][value][lane], conflict-free.
  constexpr int kVals = R * NT * 4;
  __shared__ float red[kWoWarps][kVals][32];
  __shared__ bool is_last;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) red[warp][(r * NT + t) * 4 + e][lane] = acc[r][t][e];
  __syncthreads();
  if (warp != 0) return;
  float v[kVals];
#pragma unroll
  for (int i = 0; i < kVals; ++i) {
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < kWoWarps; ++w) s += red[w][i][lane];
    v[i] = s;
  }
  // Value i = (r * NT + t) * 4 + e: row tile r, row g + 8 (e >= 2), token 8 t + 2 c + (e & 1).
  auto row_of = [&](int i) { return tile_row + kWoTileRows * (i / (NT * 4)) + g + ((i & 3) >= 2 ? 8 : 0); };
  auto tok_of = [&](int i) { return 8 * ((i / 4) % NT) + 2 * c + (i & 1); };

  if (p.splits > 1) {
#pragma unroll
    for (int i = 0; i < kVals; ++i) {
      const int64_t row = row_of(i);
      const int tok = tok_of(i);
      if (row < p.n && tok < p.m) p.partials[(static_cast<int64_t>(split) * p.m + tok) * p.n + row] = v[i];
    }
    __threadfence();
    __syncwarp();
    if (lane == 0) {
      const unsigned done = atomicAdd(p.counters + blockIdx.x, 1u);
      is_last = done == static_cast<unsigned>(p.splits - 1);
    }
    __syncwarp();
    if (!is_last) return;
    __threadfence();
#pragma unroll
    for (int i = 0; i < kVals; ++i) {
      const int64_t row = row_of(i);
      const int tok = tok_of(i);
      float s = 0.0f;
      if (row < p.n && tok < p.m) {
        for (int sp = 0; sp < p.splits; ++sp) s += __ldcg(p.partials + (static_cast<int64_t>(sp) * p.m + tok) * p.n + row);
      }
      v[i] = s;
    }
    if (lane == 0) p.counters[blockIdx.x] = 0;  // ready for the next launch
  }

#pragma unroll
  for (int i = 0; i < kVals; ++i) {
    const int64_t row = row_of(i);
    const int tok = tok_of(i);
    if (row >= p.n || tok >= p.m) continue;
    const int r = i / (NT * 4);
    const bool hi = (i & 3) >= 2;
    const float s = v[i] * (hi ? scale_b[r] : scale_a[r]) + (hi ? bias_b[r] : bias_a[r]);
    const int64_t o = static_cast<int64_t>(tok) * p.n + row;
    if (p.out_f32) {
      static_cast<float*>(p.out)[o] = s;
    } else {
      static_cast<uint16_t*>(p.out)[o] = E::store(s);
    }
  }
}

}  // namespace anvil::cuda::kern
