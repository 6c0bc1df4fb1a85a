// Paged decode attention (q_len == 1) on tensor cores, "v3": split-KV (flash-decoding) like v2
// (attention_decode.cuh), with the same workspace layout, last-CTA merge and graph-safety rules,
// but S = Q K^T and O += P V run as mma.sync m16n8k16 with the G <= 16 query heads of a KV head
// as the 16 M rows (rows >= G are zero). Quantized caches stay 1 byte per element in shared memory.
//
// Why this shape: v2 scores on CUDA cores from shared memory; with 8-bit codes its per-byte work
// doubles and it is bound by shared memory and issue, not HBM. Here one CTA (4 warps) serves a
// (sequence, KV head, split); tiles of 64 keys stream into a 3-4 stage cp.async ring (16-byte
// copies through the block table, swizzled rows); warp w owns keys [16w, 16w + 16) of every tile
// and keeps its own online softmax (m, l) and O accumulator, so no barrier sits inside a tile;
// the four warps' states are merged through shared memory at the end.
//
// Fragment layouts (g = lane / 4, t = lane % 4). The contraction index of each MMA may be permuted
// freely as long as both operands agree, which lets every operand come from plain 16-byte
// shared-memory reads and byte permutes instead of ldmatrix (which cannot split 8-bit codes):
//   S = Q K^T: S column (n-tile i, col c) is key 2c + i of the warp's 16. Thread (g, t) reads
//     16-byte chunks t + 4h of K row 2g + i; k-step j = h * E/4 + s uses its words for elements
//     4s..4s+3 of the chunk (E elements per chunk) as (b0, b1); Q's A fragment follows the same map.
//   O += P V: P's k index 2t+e is key 4t + 2e, 2t+8+e is key 4t + 1 + 2e, so thread (g, t) needs
//     V rows 4t..4t+3; O's n-tile j, column c is head dimension c * D/8 + j, so each thread reads
//     D/8 contiguous elements (columns g * D/8 ...) of the four rows and pairs them with PRMT.
// Quantized (Q = kFp8E4M3 / kInt8): codes become f16 pairs exactly in registers (cvt e4m3x2 on
// sm_89+, a software conversion before; int8 through the 0x6400 exponent trick), q is f16 scaled
// by a power of two per head (|q| <= 2^14, no overflow or underflow whatever q's range), and the
// K scale, the softmax scale and that power of two are applied to S in fp32; P is f16; the V
// scale multiplies 1 / l. Unquantized caches run the MMAs in T with raw q.
#pragma once

#include <type_traits>

#include "backend/cuda/kernels/attention/attention_common.cuh"
#include "backend/cuda/kernels/attention/attention_prefill.cuh"

namespace anvil::cuda::attn::v3 {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTileKeys = 64;  // keys per pipeline stage; 16 per warp
constexpr int kMaxGroup = 16;  // query heads per KV head: the M rows of the MMA

template <int D, KvQuant Q>
struct Shape {
  static constexpr int kKvBytes = KvBytes<Q>::kValue;
  static constexpr int kRowBytes = D * kKvBytes;
  static constexpr int kChunks = kRowBytes / 16;      // 16-byte chunks per K/V row
  static constexpr int kChunkElems = 16 / kKvBytes;   // elements per chunk
  static constexpr int kStageBytes = 2 * kTileKeys * kRowBytes;  // K + V of one tile
  // 96 KB for bf16 at D = 128 (2 CTAs per SM), 64 KB for 8-bit codes (3 CTAs per SM).
  static constexpr int kStages = kStageBytes >= 32768 ? 3 : 4;
  static constexpr int kRowStep = kThreads / kChunks;  // tile rows one pass of the CTA copies
  static constexpr int kRowsPerThread = kTileKeys / kRowStep;
  static constexpr int kPvWords = D / 8 * kKvBytes / 4;  // 32-bit words a thread reads per V row
  static constexpr int kOStride = D + 4;                 // fp32 row stride of the merge buffer
  static constexpr size_t smem_bytes() {
    const size_t ring = static_cast<size_t>(kStages) * kStageBytes;
    const size_t merge = static_cast<size_t>(kWarps) * 16 * kOStride * sizeof(float);
    return ring > merge ? ring : merge;
  }
  static_assert(kChunks >= 4 && kChunks % 4 == 0, "rows of 4, 8 or 16 chunks");
  static_assert(kTileKeys % kRowStep == 0, "whole rows per copy pass");
};

// Chunk c of tile row r, XOR-swizzled so that the two access patterns above are conflict-free:
// rows 2g + i (g = 0, 1) of the scoring reads differ in bit 2 of the swizzle, rows 4t + x
// (t = 0..3) of the PV reads in bits 1-2.
template <int kChunks>
__device__ __forceinline__ int chunk_at(int r, int c) {
  const int f = ((((r >> 1) & 1) << 2) ^ (((r >> 2) & 3) << 1)) & (kChunks - 1) & 7;
  return r * kChunks + (c ^ f);
}

// Four 8-bit codes (one word, byte 0 first) -> two f16x2 words holding the same values, exactly:
// lo = (byte 0, byte 1), hi = (byte 2, byte 3), the first byte in the low half.
template <KvQuant Q>
__device__ __forceinline__ void codes4_to_h2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  if constexpr (Q == KvQuant::kInt8) {
    // x ^ 0x80 is x + 128 as an unsigned byte; under the exponent byte 0x64 it reads as the f16
    // 1024 + (x + 128), and subtracting 1152 (0x6480) leaves x.
    const uint32_t u = w ^ 0x80808080u;
    const uint32_t a = __byte_perm(u, 0x64646464u, 0x5140);
    const uint32_t b = __byte_perm(u, 0x64646464u, 0x5342);
    asm("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(lo) : "r"(a), "r"(0x64806480u));
    asm("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(hi) : "r"(b), "r"(0x64806480u));
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
        : "=r"(lo), "=r"(hi)
        : "r"(w));
#else
    const __half2_raw a = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w & 0xffffu), __NV_E4M3);
    const __half2_raw b = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w >> 16), __NV_E4M3);
    lo = static_cast<uint32_t>(a.x) | static_cast<uint32_t>(a.y) << 16;
    hi = static_cast<uint32_t>(b.x) | static_cast<uint32_t>(b.y) << 16;
#endif
  }
}

// grid (num_seqs, Hkv, num_splits), block kThreads, dynamic smem Shape<D, Q>::smem_bytes().
// Requires p.group <= kMaxGroup.
template <typename T, int D, KvQuant Q = KvQuant::kNone>
__global__ void __launch_bounds__(kThreads) attention_decode_mma_kernel(AttentionParams p) {
  kern::pdl_chain_enter();
  using Sh = Shape<D, Q>;
  constexpr bool kQuant = Q != KvQuant::kNone;
  using MT = typename std::conditional<kQuant, __half, T>::type;  // MMA operand type
  constexpr int TK = kTileKeys;
  constexpr int kChunks = Sh::kChunks;
  constexpr int E = Sh::kChunkElems;
  constexpr int kStages = Sh::kStages;
  constexpr int kRows = Sh::kRowsPerThread;
  constexpr int kKSteps = D / 16;
  constexpr int kNTiles = D / 8;
  constexpr int kPvWords = Sh::kPvWords;
  extern __shared__ uint4 smem[];  // kStages x (K tile, V tile), each [TK][kChunks] swizzled
  __shared__ float m_s[kWarps][16];
  __shared__ float l_s[kWarps][16];

  const int seq = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int fg = lane >> 2;  // fragment row group
  const int ft = lane & 3;   // fragment thread in group
  const int G = p.group;

  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int k_begin = split * p.partition_size;
  const int copy_chunk = tid % kChunks;
  const int copy_row0 = tid / kChunks;

  // Prologue: metadata and the block ids of the first kStages tiles are independent loads, issued
  // together. Entries past the real context may be stale; they are only used for keys < k_end.
  // Indices stay inside the table row (max_blocks_per_seq).
  const int q_start = p.seq_starts[seq];
  const int q_next = p.seq_starts[seq + 1];
  const int ctx = p.context_lens[seq];
  int pre[kStages][kRows];
#pragma unroll
  for (int s = 0; s < kStages; ++s) {
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int bi = (k_begin + s * TK + copy_row0 + j * Sh::kRowStep) >> p.block_size_log2;
      pre[s][j] = bi < p.max_blocks_per_seq ? __ldg(&table[bi]) : 0;
    }
  }
  if (q_next - q_start != 1) return;
  const int k_end = min(ctx, k_begin + p.partition_size);
  if (k_begin >= k_end && split != 0) return;  // empty split (split 0 always writes the row)
  const int live_splits = ctx > 0 ? min(p.num_splits, (ctx + p.partition_size - 1) / p.partition_size) : 1;
  const bool direct = p.num_splits == 1 || (p.split_counters != nullptr && live_splits == 1);

  const char* kc = static_cast<const char*>(p.k_cache);
  const char* vc = static_cast<const char*>(p.v_cache);
  const int num_tiles = k_end > k_begin ? (k_end - k_begin + TK - 1) / TK : 0;

  int blk[kRows];  // block ids of the next tile to issue
  auto fetch_blocks = [&](int tile) {
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int key = k_begin + tile * TK + copy_row0 + j * Sh::kRowStep;
      const int bi = key >> p.block_size_log2;
      blk[j] = key < k_end && bi < p.max_blocks_per_seq ? __ldg(&table[bi]) : 0;
    }
  };
  // Keys [start, start + TK) of K and V into ring stage `stage`; keys >= k_end are zero-filled.
  auto issue_tile = [&](int tile, int stage, const int (&b)[kRows]) {
    uint4* ks = smem + stage * 2 * TK * kChunks;
    uint4* vs = ks + TK * kChunks;
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const int r = copy_row0 + j * Sh::kRowStep;
      const int key = k_begin + tile * TK + r;
      const bool valid = key < k_end;
      int64_t off = 0;
      if (valid) {
        const int row = key & ((1 << p.block_size_log2) - 1);
        off = ((static_cast<int64_t>(b[j]) * p.num_kv_heads + kv_head) << p.block_size_log2 | row) * Sh::kRowBytes +
              copy_chunk * 16;
      }
      const int s = chunk_at<kChunks>(r, copy_chunk);
      cp_async_16(&ks[s], kc + off, valid);
      cp_async_16(&vs[s], vc + off, valid);
    }
  };

  // Start the ring before q is touched: stages 0 .. kStages - 2.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) issue_tile(s, s, pre[s]);
    cp_async_commit();
  }
#pragma unroll
  for (int j = 0; j < kRows; ++j) blk[j] = pre[kStages - 1][j];

  // ---- Q fragments (rows fg and fg + 8; rows >= G are zero) and the fp32 factor of S ----
  uint32_t qf[kKSteps][4];
  float row_mul[2];
  {
    const T* qg = static_cast<const T*>(p.q) + (static_cast<int64_t>(q_start) * p.num_heads + kv_head * G) * D;
    const float k_mul = kQuant ? p.scale_log2 * __ldg(&p.k_scale[kv_head]) : p.scale_log2;
    float qv[2][D / 4];  // this thread's quarter of the row: chunks ft + 4h
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int row = fg + 8 * hr;
#pragma unroll
      for (int h = 0; h < kChunks / 4; ++h) {
#pragma unroll
        for (int v8 = 0; v8 < E / 8; ++v8) {
          float f[8];
          if (row < G) {
            unpack8<T>(*reinterpret_cast<const uint4*>(qg + row * D + (ft + 4 * h) * E + v8 * 8), f);
          } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) f[e] = 0.f;
          }
#pragma unroll
          for (int e = 0; e < 8; ++e) qv[hr][h * E + v8 * 8 + e] = f[e];
        }
      }
    }
    float qmul[2] = {1.f, 1.f};
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      row_mul[hr] = k_mul;
      if constexpr (kQuant) {
        // Power-of-two normalization into f16: |q| * 2^e <= 2^14.
        float amax = 0.f;
#pragma unroll
        for (int i = 0; i < D / 4; ++i) amax = fmaxf(amax, fabsf(qv[hr][i]));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        int ex = 0;
        if (amax > 0.f) frexpf(amax, &ex);  // amax < 2^ex
        const int e = amax > 0.f ? 14 - ex : 0;
        qmul[hr] = ldexpf(1.f, e);
        row_mul[hr] = k_mul * ldexpf(1.f, -e);
      }
    }
#pragma unroll
    for (int h = 0; h < kChunks / 4; ++h) {
#pragma unroll
      for (int s = 0; s < E / 4; ++s) {
        const int j = h * (E / 4) + s;
        const int b = h * E + 4 * s;
        qf[j][0] = pack2<MT>(qv[0][b] * qmul[0], qv[0][b + 1] * qmul[0]);
        qf[j][1] = pack2<MT>(qv[1][b] * qmul[1], qv[1][b + 1] * qmul[1]);
        qf[j][2] = pack2<MT>(qv[0][b + 2] * qmul[0], qv[0][b + 3] * qmul[0]);
        qf[j][3] = pack2<MT>(qv[1][b + 2] * qmul[1], qv[1][b + 3] * qmul[1]);
      }
    }
  }

  float o[kNTiles][4];
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m_r[2] = {-INFINITY, -INFINITY};
  float l_r[2] = {0.f, 0.f};
  const int wrow = warp * 16;

  for (int tile = 0; tile < num_tiles; ++tile) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile's stage visible to all; the stage refilled below is free
    {
      const int nxt = tile + kStages - 1;
      if (nxt < num_tiles) {
        issue_tile(nxt, nxt % kStages, blk);
        if (nxt + 1 < num_tiles) fetch_blocks(nxt + 1);
      }
      cp_async_commit();
    }
    const uint4* ks = smem + (tile % kStages) * 2 * TK * kChunks;
    const uint4* vs = ks + TK * kChunks;

    // ---- S = Q K^T for the warp's 16 keys ----
    float sc[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.f;
      const int r = wrow + 2 * fg + i;
#pragma unroll
      for (int h = 0; h < kChunks / 4; ++h) {
        const uint4 ch = ks[chunk_at<kChunks>(r, ft + 4 * h)];
        const uint32_t w[4] = {ch.x, ch.y, ch.z, ch.w};
#pragma unroll
        for (int s = 0; s < E / 4; ++s) {
          uint32_t b0, b1;
          if constexpr (kQuant) {
            codes4_to_h2<Q>(w[s], b0, b1);
          } else {
            b0 = w[2 * s];
            b1 = w[2 * s + 1];
          }
          mma_16816<MT>(sc[i], qf[h * (E / 4) + s], b0, b1);
        }
      }
    }

    // ---- online softmax per row (log2 domain); keys past k_end are masked ----
    const int key0 = k_begin + tile * TK + wrow + 4 * ft;  // key of sc[0][0]
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float x[4];  // keys key0 + {0, 2, 1, 3}
      x[0] = key0 < k_end ? sc[0][2 * hr] * row_mul[hr] : -INFINITY;
      x[1] = key0 + 2 < k_end ? sc[0][2 * hr + 1] * row_mul[hr] : -INFINITY;
      x[2] = key0 + 1 < k_end ? sc[1][2 * hr] * row_mul[hr] : -INFINITY;
      x[3] = key0 + 3 < k_end ? sc[1][2 * hr + 1] * row_mul[hr] : -INFINITY;
      float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_r[hr], mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = fast_exp2(m_r[hr] - base);
      float sum = 0.f;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        x[e] = fast_exp2(x[e] - base);
        sum += x[e];
      }
      sc[0][2 * hr] = x[0];
      sc[0][2 * hr + 1] = x[1];
      sc[1][2 * hr] = x[2];
      sc[1][2 * hr + 1] = x[3];
      l_r[hr] = l_r[hr] * alpha + sum;  // this thread's share; the quad is summed at the end
      m_r[hr] = m_new;
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) {
        o[j][2 * hr] *= alpha;
        o[j][2 * hr + 1] *= alpha;
      }
    }

    // ---- O += P V ----
    uint32_t pa[4];
    pa[0] = pack2<MT>(sc[0][0], sc[0][1]);
    pa[1] = pack2<MT>(sc[0][2], sc[0][3]);
    pa[2] = pack2<MT>(sc[1][0], sc[1][1]);
    pa[3] = pack2<MT>(sc[1][2], sc[1][3]);
    uint32_t vw[4][kPvWords];  // rows 4ft + {0, 1, 2, 3}: columns fg * D/8 ...
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      const int r = wrow + 4 * ft + x;
      if constexpr (kPvWords >= 4) {
#pragma unroll
        for (int c = 0; c < kPvWords / 4; ++c) {
          const uint4 v = vs[chunk_at<kChunks>(r, fg * (kPvWords / 4) + c)];
          vw[x][4 * c] = v.x;
          vw[x][4 * c + 1] = v.y;
          vw[x][4 * c + 2] = v.z;
          vw[x][4 * c + 3] = v.w;
        }
      } else {
        static_assert(kPvWords == 2, "8 bytes per row at head_dim 64 with 8-bit codes");
        const uint2 v = reinterpret_cast<const uint2*>(&vs[chunk_at<kChunks>(r, fg >> 1)])[fg & 1];
        vw[x][0] = v.x;
        vw[x][1] = v.y;
      }
    }
    // b0 pairs keys (4ft, 4ft + 2) = rows x 0, 2; b1 pairs (4ft + 1, 4ft + 3) = rows x 1, 3.
#pragma unroll
    for (int m = 0; m < kPvWords; ++m) {
      if constexpr (kQuant) {
        const uint32_t a01 = __byte_perm(vw[0][m], vw[2][m], 0x5140), a23 = __byte_perm(vw[0][m], vw[2][m], 0x7362);
        const uint32_t c01 = __byte_perm(vw[1][m], vw[3][m], 0x5140), c23 = __byte_perm(vw[1][m], vw[3][m], 0x7362);
        uint32_t b0[4], b1[4];
        codes4_to_h2<Q>(a01, b0[0], b0[1]);
        codes4_to_h2<Q>(a23, b0[2], b0[3]);
        codes4_to_h2<Q>(c01, b1[0], b1[1]);
        codes4_to_h2<Q>(c23, b1[2], b1[3]);
#pragma unroll
        for (int e = 0; e < 4; ++e) mma_16816<MT>(o[4 * m + e], pa, b0[e], b1[e]);
      } else {
        const uint32_t b0l = __byte_perm(vw[0][m], vw[2][m], 0x5410), b0h = __byte_perm(vw[0][m], vw[2][m], 0x7632);
        const uint32_t b1l = __byte_perm(vw[1][m], vw[3][m], 0x5410), b1h = __byte_perm(vw[1][m], vw[3][m], 0x7632);
        mma_16816<MT>(o[2 * m], pa, b0l, b1l);
        mma_16816<MT>(o[2 * m + 1], pa, b0h, b1h);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring is free: it becomes the merge buffer

  // ---- merge the four warps' states; write the output or this split's partial ----
  float* o_s = reinterpret_cast<float*>(smem);  // [kWarps][16][kOStride]
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    float l = l_r[hr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (ft == 0) {
      m_s[warp][fg + 8 * hr] = m_r[hr];
      l_s[warp][fg + 8 * hr] = l;
    }
    float* orow = o_s + (warp * 16 + fg + 8 * hr) * Sh::kOStride;
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) {
      orow[(2 * ft) * (D / 8) + j] = o[j][2 * hr];
      orow[(2 * ft + 1) * (D / 8) + j] = o[j][2 * hr + 1];
    }
  }
  __syncthreads();
  const float v_mul = kQuant ? __ldg(&p.v_scale[kv_head]) : 1.f;
  for (int i = tid; i < G * (D / 8); i += kThreads) {
    const int row = i / (D / 8);
    const int c8 = i % (D / 8);
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, m_s[w][row]);
    const float base = mx == -INFINITY ? 0.f : mx;
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    float l = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float wt = fast_exp2(m_s[w][row] - base);
      l += wt * l_s[w][row];
      const float4* src = reinterpret_cast<const float4*>(o_s + (w * 16 + row) * Sh::kOStride + c8 * 8);
      const float4 a = src[0], b = src[1];
      acc[0] += wt * a.x;
      acc[1] += wt * a.y;
      acc[2] += wt * a.z;
      acc[3] += wt * a.w;
      acc[4] += wt * b.x;
      acc[5] += wt * b.y;
      acc[6] += wt * b.z;
      acc[7] += wt * b.w;
    }
    const float inv_l = l > 0.f ? v_mul / l : 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] *= inv_l;
    const int head = kv_head * G + row;
    if (direct) {
      T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(q_start) * p.num_heads + head) * D;
      reinterpret_cast<uint4*>(out)[c8] = pack8<T>(acc);
    } else {
      const int64_t prow = (static_cast<int64_t>(seq) * p.num_heads + head) * p.num_splits + split;
      float4* po = reinterpret_cast<float4*>(p.partial_out + prow * D + c8 * 8);
      po[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
      po[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
      if (c8 == 0) p.partial_lse[prow] = l > 0.f ? mx + log2f(l) : -INFINITY;
    }
  }
  if (direct || p.split_counters == nullptr) return;

  merge_splits_if_last<T, D, kThreads>(p, seq, kv_head, G, q_start, live_splits);
}

}  // namespace anvil::cuda::attn::v3
