// The reference attention kernel: one thread block per (token, query head), one thread per
// output element, keys visited one at a time with an online softmax. Slow and obviously right;
// tests hold the fast kernels against it on shapes too large for a CPU reference.
#pragma once

#include "backend/cuda/kernels/attention/attention_common.cuh"

namespace anvil::cuda::attn {

// grid (num_tokens hint, Hq), block head_dim threads (a multiple of 32, at most 1024).
// Tokens past seq_starts[num_seqs] (padding under a larger hint) are left untouched.
template <typename T>
__global__ void attention_reference_kernel(AttentionParams p, int head_dim) {
  __shared__ float red[32];
  __shared__ int seq_shared;
  const int token = blockIdx.x;
  const int head = blockIdx.y;
  const int d = threadIdx.x;
  const int lane = d & 31;
  const int warp = d >> 5;
  const int num_warps = blockDim.x >> 5;

  if (d == 0) {
    // The sequence holding `token`: the last s with seq_starts[s] <= token (linear scan: this
    // kernel is for tests).
    int seq = -1;
    for (int s = 0; s < p.num_seqs; ++s) {
      if (p.seq_starts[s] <= token && token < p.seq_starts[s + 1]) seq = s;
    }
    seq_shared = seq;
  }
  __syncthreads();
  const int seq = seq_shared;
  if (seq < 0) return;
  const int q_len = p.seq_starts[seq + 1] - p.seq_starts[seq];
  const int ctx = p.context_lens[seq];
  const int pos = ctx - q_len + (token - p.seq_starts[seq]);
  const int kv_head = head / p.group;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  const T* q = static_cast<const T*>(p.q) + (static_cast<int64_t>(token) * p.num_heads + head) * head_dim;
  const float qd = ElemTraits<T>::to_float(q[d]);
  const T* kc = static_cast<const T*>(p.k_cache);
  const T* vc = static_cast<const T*>(p.v_cache);

  float m = -INFINITY, l = 0.f, acc = 0.f;
  for (int j = 0; j <= pos && j < ctx; ++j) {
    const int64_t off = paged_row_offset(table, j, kv_head, p.num_kv_heads, p.block_size_log2, head_dim);
    float part = warp_sum(qd * ElemTraits<T>::to_float(kc[off + d]));
    if (lane == 0) red[warp] = part;
    __syncthreads();
    float s = 0.f;
    for (int w = 0; w < num_warps; ++w) s += red[w];
    __syncthreads();
    s *= p.scale;
    const float m_new = fmaxf(m, s);
    const float alpha = __expf(m - m_new);
    const float pr = __expf(s - m_new);
    l = l * alpha + pr;
    acc = acc * alpha + pr * ElemTraits<T>::to_float(vc[off + d]);
    m = m_new;
  }
  T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(token) * p.num_heads + head) * head_dim;
  out[d] = ElemTraits<T>::from_float(l > 0.f ? acc / l : 0.f);
}

}  // namespace anvil::cuda::attn
