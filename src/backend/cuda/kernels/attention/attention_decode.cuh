// Paged decode attention (q_len == 1) with split-KV (flash-decoding); the splits of a
// (sequence, KV head) are merged by the last of its CTAs to finish, so one launch suffices.
//
// Why this shape: decode reads every cached K/V byte once and does ~2 flops per byte per query
// head, so it is bound by HBM bandwidth. One CTA serves a (sequence, KV head, split) and all
// G = Hq / Hkv query heads of that group, so K/V cross HBM once per group. K/V tiles of 64 keys
// stream into shared memory with 16-byte cp.async, double-buffered, read through the block
// table. Splitting the context over CTAs (flash-decoding) keeps every SM busy at batch 1; each
// split writes a normalized partial output and its log2-sum-exp. At short contexts the cost is
// latency, not bandwidth, so v2 (2026-11-25) cuts dependent round trips:
//   - the block-table entries of the first tile are loaded together with seq_starts and
//     context_lens (one DRAM round trip instead of two before the first K/V byte moves);
//   - a sequence whose real context fits one split writes the output directly (no partials);
//   - otherwise each split bumps a per-(sequence, KV head) counter after writing its partial and
//     the CTA that arrives last merges all partials and resets the counter to 0 (threadfence
//     reduction), so no second kernel is launched. Without counters (params.split_counters null)
//     the separate combine kernel below merges instead.
//
//   per tile:  scores  S[g][k] = q[g] . K[k]        2 threads per key, each half of D
//              softmax per head g (one warp per head, online max/sum kept in shared memory)
//              O[g]  += P[g][k] V[k]                 one thread per (head, 8 columns of D)
//
// Graph safety: grid = (num_seqs hint, Hkv, num_splits) from host hints; a CTA whose sequence
// is not a decode row, or whose split starts past the real context, exits at once (before it
// touches the counter); the number of arrivals a counter waits for comes from the real context.
//
// Quantized caches (Q = kFp8E4M3 / kInt8, 1 byte per element): the tiles stream as codes, so a
// tile is half the bytes; codes become floats after the shared-memory read (scoring: 16 per
// 16-byte read; PV: 8 per 8-byte read). The CTA's KV head has one K and one V scale: K's is
// folded into the pre-scaled q, V's into the final 1 / l.
#pragma once

#include <type_traits>

#include "backend/cuda/kernels/attention/attention_common.cuh"

namespace anvil::cuda::attn {

constexpr int kDecodeThreads = 128;
constexpr int kDecodeTileKeys = 64;

template <int D, int kMaxG, int kKvBytes = 2>
struct DecodeShape {
  static constexpr int kChunks = D * kKvBytes / 16;          // 16-byte chunks per K/V row
  static constexpr int kHalfChunks = kChunks / 2;            // per scoring thread
  static constexpr int kChunkElems = 16 / kKvBytes;          // elements per chunk
  static constexpr int kUnits = D / 8;                       // PV: 8-column units per row
  static constexpr int kHeadGroups = kDecodeThreads / kUnits;  // PV: threads across heads
  static constexpr int kHeadsPerThread = kMaxG >= kHeadGroups ? kMaxG / kHeadGroups : 1;
  // When the group is smaller than kHeadGroups, spare PV threads split the keys instead.
  static constexpr int kKeySplit = kMaxG >= kHeadGroups ? 1 : kHeadGroups / kMaxG;
  static constexpr int kTileElems = kDecodeTileKeys * D;
  template <typename T>
  static constexpr size_t smem_bytes() {
    return 4 * kTileElems * kKvBytes                   // K, V x 2 buffers
           + kMaxG * D * sizeof(float)                 // q (scaled, fp32)
           + kMaxG * kDecodeTileKeys * sizeof(float)   // scores / probabilities
           + 3 * kMaxG * sizeof(float);                // running max, sum, rescale factor
  }
};

// grid (num_seqs, Hkv, num_splits), block kDecodeThreads, dynamic smem DecodeShape::smem_bytes.
// Requires p.group <= kMaxG.
template <typename T, int D, int kMaxG, KvQuant Q = KvQuant::kNone>
__global__ void __launch_bounds__(kDecodeThreads, 3) attention_decode_kernel(AttentionParams p) {
  kern::pdl_chain_enter();
  constexpr int kKvBytes = KvBytes<Q>::kValue;
  using Shape = DecodeShape<D, kMaxG, kKvBytes>;
  constexpr int kChunks = Shape::kChunks;
  constexpr int kUnits = Shape::kUnits;
  static_assert(Shape::kHeadGroups * D * sizeof(float) <= 2 * kDecodeTileKeys * D * kKvBytes,
                "the key-split reduction must fit the K buffers");
  constexpr int TK = kDecodeTileKeys;
  extern __shared__ uint4 smem[];
  uint4* k_s = smem;                          // [2][TK][kChunks] swizzled
  uint4* v_s = smem + 2 * TK * kChunks;       // [2][TK][kChunks] swizzled
  float* q_s = reinterpret_cast<float*>(smem + 4 * TK * kChunks);  // [kMaxG][D]
  float* p_s = q_s + kMaxG * D;               // [kMaxG][TK]
  float* m_s = p_s + kMaxG * TK;              // [kMaxG]
  float* l_s = m_s + kMaxG;
  float* alpha_s = l_s + kMaxG;

  const int seq = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int G = p.group;

  constexpr int kRowStep = kDecodeThreads / kChunks;  // tile rows one pass of the CTA copies
  constexpr int kRowsPerThread = TK / kRowStep;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int k_begin = split * p.partition_size;

  // Prologue: the batch metadata and the block ids of this split's first tile are independent
  // loads, issued together. Entries past the real context may be stale; they are only used for
  // keys < k_end. Indices stay inside the table row (max_blocks_per_seq).
  const int q_start = p.seq_starts[seq];
  const int q_next = p.seq_starts[seq + 1];
  const int ctx = p.context_lens[seq];
  int first_blocks[kRowsPerThread];
#pragma unroll
  for (int j = 0; j < kRowsPerThread; ++j) {
    const int bi = (k_begin + tid / kChunks + j * kRowStep) >> p.block_size_log2;
    first_blocks[j] = bi < p.max_blocks_per_seq ? __ldg(&table[bi]) : 0;
  }
  if (q_next - q_start != 1) return;
  const int k_end = min(ctx, k_begin + p.partition_size);
  if (k_begin >= k_end && split != 0) return;  // empty split (split 0 always writes the row)
  // Splits that really hold keys of this sequence (1 when the context is empty).
  const int live_splits = ctx > 0 ? min(p.num_splits, (ctx + p.partition_size - 1) / p.partition_size) : 1;
  // Direct: this CTA alone covers the sequence and writes the output. With the separate combine
  // kernel every split writes a partial, since that kernel reads them all.
  const bool direct = p.num_splits == 1 || (p.split_counters != nullptr && live_splits == 1);

  const char* kc = static_cast<const char*>(p.k_cache);
  const char* vc = static_cast<const char*>(p.v_cache);

  // Stages one tile of keys [start, start + TK) of K and V; keys >= k_end are zero-filled.
  // Thread tid always copies chunk tid % kChunks of rows tid / kChunks + j * kRowStep; the first
  // tile takes its block ids from the prologue.
  auto load_tile = [&](int start, int buf, bool first) {
    const int c = tid % kChunks;
#pragma unroll
    for (int j = 0; j < kRowsPerThread; ++j) {
      const int r = tid / kChunks + j * kRowStep;
      const int key = start + r;
      const bool valid = key < k_end;
      int64_t off = 0;
      if (valid) {
        const int block = first ? first_blocks[j] : table[key >> p.block_size_log2];
        const int row = key & ((1 << p.block_size_log2) - 1);
        off = ((static_cast<int64_t>(block) * p.num_kv_heads + kv_head) << p.block_size_log2 | row) * (D * kKvBytes) +
              c * 16;  // bytes
      }
      const int s = buf * TK * kChunks + kv_swizzle<kChunks>(r, c);
      cp_async_16(&k_s[s], kc + off, valid);
      cp_async_16(&v_s[s], vc + off, valid);
    }
  };

  const int num_tiles = k_end > k_begin ? (k_end - k_begin + TK - 1) / TK : 0;
  if (num_tiles > 0) load_tile(k_begin, 0, true);
  cp_async_commit();

  // q of the group's heads, pre-scaled so that scores come out in the log2 domain (and times the
  // K scale of a quantized cache).
  const float q_mul = Q == KvQuant::kNone ? p.scale_log2 : p.scale_log2 * __ldg(&p.k_scale[kv_head]);
  const T* q = static_cast<const T*>(p.q) + (static_cast<int64_t>(q_start) * p.num_heads + kv_head * G) * D;
  for (int i = tid; i < kMaxG * kUnits; i += kDecodeThreads) {
    float f[8];
    if (i < G * kUnits) {
      unpack8<T>(reinterpret_cast<const uint4*>(q)[i], f);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) f[e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) q_s[i * 8 + e] = f[e] * q_mul;
  }
  if (tid < kMaxG) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }

  // Scoring layout: lanes 0-15 of a warp take keys warp*16 + lane with the even chunks' half of
  // D, lanes 16-31 the same keys with the other half (conflict-free 16-byte reads under the
  // swizzle); a shuffle over lane ^ 16 sums the halves.
  const int s_key = warp * 16 + (lane & 15);
  const int s_half = lane >> 4;
  // PV layout: thread owns 8 columns (unit pv_chunk) of heads pv_head0 + i * kHeadGroups, over
  // the keys k with k % kKeySplit == key_part.
  const int pv_chunk = tid % kUnits;
  const int pv_group = tid / kUnits;
  const int pv_head0 = Shape::kKeySplit == 1 ? pv_group : pv_group % kMaxG;
  const int key_part = Shape::kKeySplit == 1 ? 0 : pv_group / kMaxG;
  float acc[Shape::kHeadsPerThread][8];
#pragma unroll
  for (int i = 0; i < Shape::kHeadsPerThread; ++i)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[i][e] = 0.f;

  for (int t = 0; t < num_tiles; ++t) {
    const int buf = t & 1;
    if (t + 1 < num_tiles) {
      load_tile(k_begin + (t + 1) * TK, buf ^ 1, false);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    // ---- scores ----
    {
      float s[kMaxG];
#pragma unroll
      for (int g = 0; g < kMaxG; ++g) s[g] = 0.f;
      const uint4* k_tile = k_s + buf * TK * kChunks;
      constexpr int kCE = Shape::kChunkElems;
#pragma unroll
      for (int cc = 0; cc < Shape::kHalfChunks; ++cc) {
        const int c = s_half * Shape::kHalfChunks + cc;
        float kf[kCE];
        KvChunk<T, Q>::to_float(k_tile[kv_swizzle<kChunks>(s_key, c)], kf);
#pragma unroll
        for (int g = 0; g < kMaxG; ++g) {
#pragma unroll
          for (int e = 0; e < kCE; e += 8) {
            const float4 a = *reinterpret_cast<const float4*>(&q_s[g * D + c * kCE + e]);
            const float4 b = *reinterpret_cast<const float4*>(&q_s[g * D + c * kCE + e + 4]);
            s[g] += a.x * kf[e] + a.y * kf[e + 1] + a.z * kf[e + 2] + a.w * kf[e + 3] + b.x * kf[e + 4] +
                    b.y * kf[e + 5] + b.z * kf[e + 6] + b.w * kf[e + 7];
          }
        }
      }
      const bool valid = k_begin + t * TK + s_key < k_end;
#pragma unroll
      for (int g = 0; g < kMaxG; ++g) {
        const float v = s[g] + __shfl_xor_sync(0xffffffffu, s[g], 16);
        if (s_half == 0) p_s[g * TK + s_key] = valid ? v : -INFINITY;
      }
    }
    __syncthreads();

    // ---- online softmax, one warp per head ----
    for (int g = warp; g < G; g += kDecodeThreads / 32) {
      const float a = p_s[g * TK + lane];
      const float b = p_s[g * TK + lane + 32];
      const float m_old = m_s[g];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(a, b)));
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float pa = fast_exp2(a - base);
      const float pb = fast_exp2(b - base);
      p_s[g * TK + lane] = pa;
      p_s[g * TK + lane + 32] = pb;
      const float sum = warp_sum(pa + pb);
      if (lane == 0) {
        const float alpha = fast_exp2(m_old - base);
        alpha_s[g] = alpha;
        l_s[g] = l_s[g] * alpha + sum;
        m_s[g] = m_new;
      }
    }
    __syncthreads();

    // ---- O += P V ----
    {
      const uint4* v_tile = v_s + buf * TK * kChunks;
#pragma unroll
      for (int i = 0; i < Shape::kHeadsPerThread; ++i) {
        const int g = pv_head0 + i * Shape::kHeadGroups;
        const float alpha = g < G ? alpha_s[g] : 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[i][e] *= alpha;
      }
#pragma unroll 4
      for (int k = key_part; k < TK; k += Shape::kKeySplit) {
        float vf[8];
        if constexpr (Q == KvQuant::kNone) {
          kv_load8<T, Q>(&v_tile[kv_swizzle<kChunks>(k, pv_chunk)], vf);
        } else {  // 8 codes: one half of a 16-byte chunk
          kv_load8<T, Q>(reinterpret_cast<const uint2*>(&v_tile[kv_swizzle<kChunks>(k, pv_chunk >> 1)]) + (pv_chunk & 1), vf);
        }
#pragma unroll
        for (int i = 0; i < Shape::kHeadsPerThread; ++i) {
          const int g = pv_head0 + i * Shape::kHeadGroups;
          if (g < G) {
            const float pk = p_s[g * TK + k];
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[i][e] += pk * vf[e];
          }
        }
      }
    }
    __syncthreads();
  }

  // Threads that split the keys of one head add their partial sums (K buffers are free now).
  if constexpr (Shape::kKeySplit > 1) {
    float* red = reinterpret_cast<float*>(k_s);  // [kKeySplit][kMaxG][D]
    const int g = pv_head0;
    if (key_part > 0 && g < G) {
#pragma unroll
      for (int e = 0; e < 8; ++e) red[(key_part * kMaxG + g) * D + pv_chunk * 8 + e] = acc[0][e];
    }
    __syncthreads();
    if (key_part == 0 && g < G) {
      for (int kp = 1; kp < Shape::kKeySplit; ++kp)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[0][e] += red[(kp * kMaxG + g) * D + pv_chunk * 8 + e];
    }
  }
  // (No early return of key_part != 0 threads: the merge below synchronizes the whole CTA.)
  const float v_mul = Q == KvQuant::kNone ? 1.f : __ldg(&p.v_scale[kv_head]);
  if (key_part == 0) {
#pragma unroll
    for (int i = 0; i < Shape::kHeadsPerThread; ++i) {
      const int g = pv_head0 + i * Shape::kHeadGroups;
      if (g >= G) continue;
      const float l = l_s[g];
      const float inv_l = l > 0.f ? v_mul / l : 0.f;
      float o[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = acc[i][e] * inv_l;
      const int head = kv_head * G + g;
      if (direct) {
        T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(q_start) * p.num_heads + head) * D;
        reinterpret_cast<uint4*>(out)[pv_chunk] = pack8<T>(o);
      } else {
        const int64_t row = (static_cast<int64_t>(seq) * p.num_heads + head) * p.num_splits + split;
        float4* po = reinterpret_cast<float4*>(p.partial_out + row * D + pv_chunk * 8);
        po[0] = make_float4(o[0], o[1], o[2], o[3]);
        po[1] = make_float4(o[4], o[5], o[6], o[7]);
        if (pv_chunk == 0) p.partial_lse[row] = l > 0.f ? m_s[g] + log2f(l) : -INFINITY;
      }
    }
  }
  if (direct || p.split_counters == nullptr) return;

  merge_splits_if_last<T, D, kDecodeThreads>(p, seq, kv_head, G, q_start, live_splits);
}

// Merges the splits of each decode row when the decode kernel runs without counters:
// out = sum_s w_s * O_s with w_s = 2^(lse_s - max) / sum. grid (num_seqs, Hq), block 32. Splits
// past the real context (never written) are not read.
template <typename T, int D>
__global__ void __launch_bounds__(32) attention_decode_combine_kernel(AttentionParams p) {
  kern::pdl_chain_enter();
  constexpr int kPerLane = D / 32;
  const int seq = blockIdx.x;
  const int head = blockIdx.y;
  const int lane = threadIdx.x;
  const int q_start = p.seq_starts[seq];
  if (p.seq_starts[seq + 1] - q_start != 1) return;
  const int ctx = p.context_lens[seq];
  const int n = ctx > 0 ? min(p.num_splits, (ctx + p.partition_size - 1) / p.partition_size) : 0;
  const int64_t row0 = (static_cast<int64_t>(seq) * p.num_heads + head) * p.num_splits;

  float mx = -INFINITY;
  for (int s = lane; s < n; s += 32) mx = fmaxf(mx, p.partial_lse[row0 + s]);
  mx = warp_max(mx);
  const float base = mx == -INFINITY ? 0.f : mx;
  float acc[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) acc[e] = 0.f;
  float wsum = 0.f;
  for (int s = 0; s < n; ++s) {
    const float w = fast_exp2(p.partial_lse[row0 + s] - base);
    wsum += w;
    const float* po = p.partial_out + (row0 + s) * D + lane * kPerLane;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[e] += w * po[e];
  }
  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
  T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(q_start) * p.num_heads + head) * D + lane * kPerLane;
#pragma unroll
  for (int e = 0; e < kPerLane; e += 2) {
    *reinterpret_cast<typename ElemTraits<T>::Vec2*>(&out[e]) =
        ElemTraits<T>::from_float2(acc[e] * inv, acc[e + 1] * inv);
  }
}

}  // namespace anvil::cuda::attn
