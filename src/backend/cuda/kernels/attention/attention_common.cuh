// Shared pieces of the attention kernels: the params struct every kernel takes, element-type
// helpers (bf16 / fp16 <-> fp32, 16-byte vectors) and paged-cache addressing. Device code only;
// nothing here knows about the rest of anvil.
//
// Routing (ops/attention.cu): per sequence. Decode rows (q_len == 1) go to a split-KV decode
// kernel, one CTA per (sequence, KV head, split) serving the whole query-head group:
// attention_decode_mma.cuh (v3, tensor cores) for groups of up to 16 query heads,
// attention_decode.cuh (v2) above that; rows of
// longer queries (prefill, chunked prefill, speculative) go to attention_prefill.cuh. A mixed
// batch launches both; each kernel reads q_len on the device and skips the other's sequences, so
// the pair stays valid under CUDA-graph replay. attention_reference.cuh is the naive kernel the
// tests hold the fast ones against.
#pragma once

#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/kernels/common/pdl.cuh"

namespace anvil::cuda::attn {

// Arguments common to all attention kernels. Shapes (T tokens, Hq query heads, Hkv KV heads,
// D head_dim, bs block_size):
//   q            [T, Hq, D]                       element type T of the kernel
//   out          [T, Hq, D]
//   k_cache      [num_blocks, Hkv, bs, D]         one head's block is bs * D contiguous elements
//   v_cache      [num_blocks, Hkv, bs, D]         of T, or of 8-bit codes (KvQuant below)
//   k_scale, v_scale [Hkv] f32                    quantized caches only: value = code * scale
//   seq_starts   [num_seqs + 1]  query offsets;  context_lens [num_seqs];
//   block_tables [num_seqs, max_blocks_per_seq]
// Query i of sequence s (q_len = seq_starts[s+1] - seq_starts[s], c = context_lens[s]) sits at
// position c - q_len + i and attends to keys 0 .. c - q_len + i.
struct AttentionParams {
  const void* q;
  void* out;
  const void* k_cache;
  const void* v_cache;
  const int32_t* seq_starts;
  const int32_t* context_lens;
  const int32_t* block_tables;
  int num_seqs;              // host hint (grid); sequences are read from the device arrays
  int num_heads;             // Hq
  int num_kv_heads;          // Hkv
  int group;                 // Hq / Hkv
  int block_size_log2;       // block_size = 1 << block_size_log2
  int max_blocks_per_seq;    // row stride of block_tables
  float scale;               // softmax scale
  float scale_log2;          // scale * log2(e): softmax is computed with exp2
  int min_query_len;         // sequences with a shorter query are left to another kernel
  int max_query_len;         // sequences with a longer query are left to another kernel
  // Split-KV decode only: partial outputs [num_seqs, Hq, num_splits, D] (normalized per split)
  // and their log2-sum-exp [num_seqs, Hq, num_splits]; unused when num_splits == 1.
  float* partial_out;
  float* partial_lse;
  int num_splits;
  int partition_size;        // keys per split, a multiple of the decode key tile
  // Split-KV decode only: one arrival counter per (sequence, KV head), index seq * Hkv + kv_head,
  // zero before the launch and left zero after it. Non-null: the last split CTA of each
  // (sequence, KV head) to finish merges the splits itself (one launch); null: a separate combine
  // kernel does.
  int* split_counters;
  // Quantized caches (KvQuant != kNone): per-KV-head dequantization scales; null otherwise.
  const float* k_scale;
  const float* v_scale;
};

template <typename T>
struct ElemTraits;

template <>
struct ElemTraits<__nv_bfloat16> {
  using Vec2 = __nv_bfloat162;
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
  static __device__ __forceinline__ float2 to_float2(Vec2 x) { return __bfloat1622float2(x); }
  static __device__ __forceinline__ Vec2 from_float2(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

template <>
struct ElemTraits<__half> {
  using Vec2 = __half2;
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
  static __device__ __forceinline__ float2 to_float2(Vec2 x) { return __half22float2(x); }
  static __device__ __forceinline__ Vec2 from_float2(float a, float b) { return __floats2half2_rn(a, b); }
};

// Unpacks 8 elements held in a 16-byte vector into floats.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const auto* h = reinterpret_cast<const typename ElemTraits<T>::Vec2*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 x = ElemTraits<T>::to_float2(h[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

// Packs 8 floats into a 16-byte vector of T.
template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  uint4 v;
  auto* h = reinterpret_cast<typename ElemTraits<T>::Vec2*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = ElemTraits<T>::from_float2(f[2 * i], f[2 * i + 1]);
  return v;
}

// Element type of the KV cache: the kernel's T, or 8-bit codes that dequantize as code * scale
// of their KV head. Every kernel serves one KV head per CTA, so the scale is a scalar there: K's
// folds into the softmax scale and V's into the final normalization, and the codes convert to
// float (or exactly to T: int8 and e4m3 values are representable in bf16 and fp16) in registers.
enum class KvQuant { kNone, kFp8E4M3, kInt8 };

template <KvQuant Q>
struct KvBytes {
  static constexpr int kValue = 1;
};
template <>
struct KvBytes<KvQuant::kNone> {
  static constexpr int kValue = 2;
};

// Four int8 codes (one 32-bit word, little-endian) to floats, exactly: x ^ 0x80 is x + 128 as an
// unsigned byte, placed in the mantissa of 2^23; subtracting 2^23 + 128 leaves x.
__device__ __forceinline__ void i8x4_to_float(uint32_t w, float* f) {
  const uint32_t u = w ^ 0x80808080u;
  constexpr float kBias = 8388736.0f;  // 2^23 + 128
  f[0] = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7440)) - kBias;
  f[1] = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7441)) - kBias;
  f[2] = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7442)) - kBias;
  f[3] = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7443)) - kBias;
}

// Four e4m3 codes to floats (exact), through the fp8x2 -> f16x2 conversion (one instruction on
// sm_89+, emulated in software before).
__device__ __forceinline__ void e4m3x4_to_float(uint32_t w, float* f) {
  const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w & 0xffffu), __NV_E4M3);
  const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w >> 16), __NV_E4M3);
  const float2 a = __half22float2(__half2(lo));
  const float2 b = __half22float2(__half2(hi));
  f[0] = a.x;
  f[1] = a.y;
  f[2] = b.x;
  f[3] = b.y;
}

// 4 * N codes held in N 32-bit words to floats.
template <KvQuant Q, int N>
__device__ __forceinline__ void codes_to_float(const uint32_t* w, float* f) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if constexpr (Q == KvQuant::kInt8) {
      i8x4_to_float(w[i], f + 4 * i);
    } else {
      e4m3x4_to_float(w[i], f + 4 * i);
    }
  }
}

// One 16-byte chunk of a cache row as floats: 8 elements of T, or 16 codes (unscaled).
template <typename T, KvQuant Q>
struct KvChunk {
  static constexpr int kElems = 16 / KvBytes<Q>::kValue;
  static __device__ __forceinline__ void to_float(const uint4& v, float (&f)[kElems]) {
    if constexpr (Q == KvQuant::kNone) {
      const auto* h = reinterpret_cast<const typename ElemTraits<T>::Vec2*>(&v);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 x = ElemTraits<T>::to_float2(h[i]);
        f[2 * i] = x.x;
        f[2 * i + 1] = x.y;
      }
    } else {
      codes_to_float<Q, 4>(reinterpret_cast<const uint32_t*>(&v), f);
    }
  }
};

// Eight consecutive elements of a cache row (16 bytes of T, or 8 bytes of codes) as floats.
template <typename T, KvQuant Q>
__device__ __forceinline__ void kv_load8(const void* smem, float (&f)[8]) {
  if constexpr (Q == KvQuant::kNone) {
    KvChunk<T, Q>::to_float(*static_cast<const uint4*>(smem), f);
  } else {
    const uint2 v = *static_cast<const uint2*>(smem);
    const uint32_t w[2] = {v.x, v.y};
    codes_to_float<Q, 2>(w, f);
  }
}

// One 16-byte chunk of 16 codes to two 16-byte chunks of T holding the same (unscaled) values,
// exactly: |int8| <= 127 and every e4m3 value fit bf16 and fp16.
template <typename T, KvQuant Q>
__device__ __forceinline__ void codes16_to_elems(const uint4& v, uint4& lo, uint4& hi) {
  float f[16];
  KvChunk<T, Q>::to_float(v, f);
  float a[8], b[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    a[e] = f[e];
    b[e] = f[8 + e];
  }
  lo = pack8<T>(a);
  hi = pack8<T>(b);
}

// Element offset of row `key` of KV head `kv_head` in a paged cache, read through the block table
// row of one sequence. 64-bit: caches beyond 2^31 elements are common.
__device__ __forceinline__ int64_t paged_row_offset(const int32_t* block_table_row, int key, int kv_head,
                                                    int num_kv_heads, int block_size_log2, int head_dim) {
  const int block = block_table_row[key >> block_size_log2];
  const int row = key & ((1 << block_size_log2) - 1);
  return ((static_cast<int64_t>(block) * num_kv_heads + kv_head) << block_size_log2 | row) *
         static_cast<int64_t>(head_dim);
}

// ---- cp.async (sm_80+): 16-byte global -> shared copies, zero-filled when !valid ----
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Shared-memory tiles of rows of `kChunks` 16-byte chunks are XOR-swizzled: logical chunk c of
// row r is stored at chunk c ^ (r % 8). Eight consecutive rows at one logical chunk then fall in
// eight distinct bank groups, so ldmatrix and column-wise 16-byte reads are conflict-free.
template <int kChunks>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  static_assert(kChunks >= 8, "swizzle needs at least 8 chunks per row");
  return row * kChunks + (chunk ^ (row & 7));
}

// The same for tiles of 8-bit codes, whose rows may be 4 chunks (head_dim 64): two rows then
// share a 128-byte line and the XOR uses row / 2, so 8 consecutive rows at one logical chunk
// still land in 8 distinct 16-byte bank groups.
template <int kChunks>
__device__ __forceinline__ int kv_swizzle(int row, int chunk) {
  if constexpr (kChunks >= 8) {
    return swizzle<kChunks>(row, chunk);
  } else {
    static_assert(kChunks == 4, "kv_swizzle handles rows of 4 or >= 8 chunks");
    return row * 4 + (chunk ^ ((row >> 1) & 3));
  }
}

// 2^x through the MUFU unit (ex2.approx, flush-to-zero): ~2 ulp, -inf -> 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The end of a split-KV decode CTA that wrote a partial: it counts its arrival on the
// (sequence, KV head) counter and, if it is the last of the live_splits splits, merges every
// split's partial into the output rows of the group's G query heads (one warp per head, lane owns
// D / 32 columns). Release (as a split-K semaphore): the barrier orders every thread's partial
// before thread 0, whose gpu-scope fence then publishes them before its arrival; the last
// arrival's fence is the matching acquire, and the barrier hands it to the whole CTA. Partials are
// read through L2 (__ldcg): other SMs wrote them. The loads of a batch of kMergeBatch splits are
// issued before the weights they need are known, so a merge of n splits costs about
// ceil(n / kMergeBatch) L2 round trips. Every thread of the CTA must call it.
template <typename T, int D, int kThreads>
__device__ __forceinline__ void merge_splits_if_last(const AttentionParams& p, int seq, int kv_head, int G,
                                                      int q_start, int live_splits) {
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  __shared__ int is_last;
  __syncthreads();
  if (tid == 0) {
    int* counter = p.split_counters + seq * p.num_kv_heads + kv_head;
    asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
    const int arrived = atomicAdd(counter, 1) + 1;
    const bool last = arrived == live_splits;
    if (last) {
      *counter = 0;  // every split has arrived: ready for the next launch
      asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
    }
    is_last = last;
  }
  __syncthreads();
  if (!is_last) return;

  constexpr int kPerLane = D / 32;
  constexpr int kMergeBatch = 8;
  using LaneVec = typename std::conditional<kPerLane == 4, float4, float2>::type;
  static_assert(kPerLane == 4 || kPerLane == 2, "merge handles head_dim 64 and 128");
  for (int g = warp; g < G; g += kThreads / 32) {
    const int head = kv_head * G + g;
    const int64_t row0 = (static_cast<int64_t>(seq) * p.num_heads + head) * p.num_splits;
    const LaneVec* po = reinterpret_cast<const LaneVec*>(p.partial_out + row0 * D) + lane;  // row stride D / kPerLane
    float lse_reg = -INFINITY;  // lane's split of the current chunk of 32
    if (lane < live_splits) lse_reg = __ldcg(&p.partial_lse[row0 + lane]);
    LaneVec v[kMergeBatch];
#pragma unroll
    for (int j = 0; j < kMergeBatch; ++j) {
      if (j < live_splits) v[j] = __ldcg(po + static_cast<int64_t>(j) * (D / kPerLane));
    }
    float mx = lse_reg;
    for (int sp = lane + 32; sp < live_splits; sp += 32) mx = fmaxf(mx, __ldcg(&p.partial_lse[row0 + sp]));
    mx = warp_max(mx);
    const float base = mx == -INFINITY ? 0.f : mx;
    float o[kPerLane];
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) o[e] = 0.f;
    float wsum = 0.f;
    float w = lane < live_splits ? fast_exp2(lse_reg - base) : 0.f;
    for (int s0 = 0; s0 < live_splits; s0 += kMergeBatch) {
      if (s0 > 0 && (s0 & 31) == 0) {  // next chunk of 32 weights
        const int sp = s0 + lane;
        w = sp < live_splits ? fast_exp2(__ldcg(&p.partial_lse[row0 + sp]) - base) : 0.f;
      }
      if ((s0 & 31) == 0) wsum += warp_sum(w);
      // Batch s0 is in v; issue batch s0 + kMergeBatch before using it.
      LaneVec nxt[kMergeBatch];
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) {
        const int sp = s0 + kMergeBatch + j;
        if (sp < live_splits) nxt[j] = __ldcg(po + static_cast<int64_t>(sp) * (D / kPerLane));
      }
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) {
        if (s0 + j < live_splits) {
          const float wj = __shfl_sync(0xffffffffu, w, (s0 + j) & 31);
          const float* f = reinterpret_cast<const float*>(&v[j]);
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) o[e] += wj * f[e];
        }
      }
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) v[j] = nxt[j];
    }
    const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
    T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(q_start) * p.num_heads + head) * D + lane * kPerLane;
#pragma unroll
    for (int e = 0; e < kPerLane; e += 2) {
      *reinterpret_cast<typename ElemTraits<T>::Vec2*>(&out[e]) = ElemTraits<T>::from_float2(o[e] * inv, o[e + 1] * inv);
    }
  }
}

}  // namespace anvil::cuda::attn
