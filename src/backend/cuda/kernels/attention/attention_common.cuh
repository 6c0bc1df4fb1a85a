// Shared pieces of the attention kernels: the params struct every kernel takes, element-type
// helpers (bf16 / fp16 <-> fp32, 16-byte vectors) and paged-cache addressing. Device code only;
// nothing here knows about the rest of anvil.
//
// Routing (ops/attention.cu): per sequence. Decode rows (q_len == 1) go to attention_decode.cuh
// (split-KV, one CTA per (sequence, KV head, split) serving the whole query-head group); rows of
// longer queries (prefill, chunked prefill, speculative) go to attention_prefill.cuh. A mixed
// batch launches both; each kernel reads q_len on the device and skips the other's sequences, so
// the pair stays valid under CUDA-graph replay. attention_reference.cuh is the naive kernel the
// tests hold the fast ones against.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace anvil::cuda::attn {

// Arguments common to all attention kernels. Shapes (T tokens, Hq query heads, Hkv KV heads,
// D head_dim, bs block_size):
//   q            [T, Hq, D]                       element type T of the kernel
//   out          [T, Hq, D]
//   k_cache      [num_blocks, Hkv, bs, D]         one head's block is bs * D contiguous elements
//   v_cache      [num_blocks, Hkv, bs, D]
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

}  // namespace anvil::cuda::attn
