// Flash-style causal prefill attention over the paged KV cache, on tensor cores (mma.sync
// m16n8k16, bf16/fp16 in, fp32 accumulate). Handles any query length, so it also serves decode
// rows when the decode kernel cannot (mixed batches route those to the decode kernel instead).
//
// Why this shape: rows of a tile are (token, query head) pairs of one KV group, packed as
// row = token * G + g. The G heads of a group share every K/V tile, so K/V are staged once per
// group and the causal boundary inside a tile spans only BM / G tokens. Each warp owns 16 or 32
// rows (kMTiles); K and V tiles of 64 keys stream in by 16-byte cp.async through the block table
// (double-buffered, XOR-swizzled for conflict-free ldmatrix), and the softmax is online (running
// max and sum per row), so memory is O(tile) at any length (128k included).
//
//   S = Q K^T   (per warp 16*kMTiles x 64, ldmatrix K)     masked where key > row's position
//   P = exp2(S * scale * log2e - m)                         fp32, kept in registers
//   O = O * alpha + P V   (P re-packed as the A operand, ldmatrix.trans V)
//
// Graph safety: grid = (ceil(max_query_len * G / BM), num_seqs, Hkv) from host hints; tiles past
// a sequence's real rows exit at once. Tiles run in reverse order so the longest (last rows,
// most keys) start first. Hopper wgmma/TMA would go further; this mma.sync path runs on sm_80+.
//
// Quantized caches (Q = kFp8E4M3 / kInt8): the 8-bit tiles stream into a double-buffered staging
// area, and each tile is widened once into a single T tile (codes -> registers -> T, exact) that
// the MMAs read as above; the next tile's copy overlaps the MMAs. The KV head's K scale folds into
// the softmax scale and its V scale into 1 / l, so the MMAs see raw codes.
#pragma once

#include "backend/cuda/kernels/attention/attention_common.cuh"

namespace anvil::cuda::attn {

constexpr int kPrefillTileKeys = 64;

template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  auto v = ElemTraits<T>::from_float2(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}

// kMTiles: 16-row MMA tiles per warp. With 1, Q fragments live in registers and the Q staging
// buffer aliases a V buffer; with 2, each K/V fragment read from shared memory feeds twice as many
// MMAs (half the shared-memory traffic per flop) and Q is re-read from shared memory per k-step.
template <int D, int kWarps, int kMTiles>
struct PrefillShape {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpRows = 16 * kMTiles;
  static constexpr int kRows = kWarps * kWarpRows;  // BM: (token, head) rows per CTA
  static constexpr int kChunks = D / 8;
  static constexpr bool kQInRegs = kMTiles == 1;
  static_assert(!kQInRegs || kRows <= kPrefillTileKeys, "Q must fit in one V buffer to alias it");
  template <typename T, KvQuant Q = KvQuant::kNone>
  static constexpr size_t smem_bytes() {
    if constexpr (Q == KvQuant::kNone) {
      return ((kQInRegs ? 0 : kRows) + 4 * kPrefillTileKeys) * D * sizeof(T);  // [Q] + (K, V) x 2
    } else {
      // [Q] + (K, V) of T x 1 + (K, V) of codes x 2
      return ((kQInRegs ? 0 : kRows) + 2 * kPrefillTileKeys) * D * sizeof(T) + 4 * kPrefillTileKeys * D;
    }
  }
};

// grid (ceil(max_query_len * G / BM), num_seqs, Hkv), block kWarps * 32, dynamic smem
// PrefillShape::smem_bytes. Sequences with q_len outside [min_query_len, max_query_len] are skipped.
// With one m-tile per warp the register budget is capped for 3 resident CTAs per SM.
template <typename T, int D, int kWarps, int kMTiles, KvQuant Q = KvQuant::kNone>
__global__ void __launch_bounds__(kWarps * 32, kMTiles == 1 ? 3 : 1) attention_prefill_kernel(AttentionParams p) {
  kern::pdl_chain_enter();
  using Shape = PrefillShape<D, kWarps, kMTiles>;
  constexpr int BM = Shape::kRows;
  constexpr int BN = kPrefillTileKeys;
  constexpr int kChunks = Shape::kChunks;
  constexpr int kThreads = Shape::kThreads;
  constexpr int MT = kMTiles;
  constexpr bool kQuant = Q != KvQuant::kNone;
  constexpr int kBufs = kQuant ? 1 : 2;     // T tiles: the quantized path widens into one buffer
  constexpr int kCodeChunks = D / 16;       // 16-byte chunks per row of codes
  extern __shared__ uint4 smem[];
  uint4* k_s = smem;                       // [kBufs][BN][kChunks]
  uint4* v_s = k_s + kBufs * BN * kChunks;  // [kBufs][BN][kChunks]
  // Q staging: its own buffer, or (one m-tile: Q lives in registers) the last V buffer.
  uint4* q_s = Shape::kQInRegs ? v_s + (kBufs - 1) * BN * kChunks : v_s + kBufs * BN * kChunks;  // [BM][kChunks]
  // Quantized only: codes [2][BN][kCodeChunks] for K, then for V, after Q.
  uint4* k8_s = v_s + kBufs * BN * kChunks + (Shape::kQInRegs ? 0 : BM * kChunks);
  uint4* v8_s = k8_s + 2 * BN * kCodeChunks;

  const int seq = blockIdx.y;
  const int kv_head = blockIdx.z;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int G = p.group;

  const int q_start = p.seq_starts[seq];
  const int q_len = p.seq_starts[seq + 1] - q_start;
  if (q_len <= 0 || q_len < p.min_query_len || q_len > p.max_query_len) return;
  const int rows_total = q_len * G;
  const int row0 = (gridDim.x - 1 - blockIdx.x) * BM;
  if (row0 >= rows_total) return;
  const int ctx = p.context_lens[seq];
  const int first_pos = ctx - q_len;  // position of the sequence's first query token
  const int tok_first = row0 / G;
  const int tok_last = (min(row0 + BM, rows_total) - 1) / G;
  const int key_end = min(ctx, first_pos + tok_last + 1);  // keys [0, key_end) matter
  const int num_tiles = key_end > 0 ? (key_end + BN - 1) / BN : 0;

  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const char* kc = static_cast<const char*>(p.k_cache);
  const char* vc = static_cast<const char*>(p.v_cache);

  // ---- Q tile -> shared (rows past the sequence are zero) ----
  {
    const T* qg = static_cast<const T*>(p.q);
    for (int i = tid; i < BM * kChunks; i += kThreads) {
      const int r = i / kChunks;
      const int c = i % kChunks;
      const int row = row0 + r;
      const bool valid = row < rows_total;
      const int t = row / G;
      const int g = row - t * G;
      const int64_t off =
          valid ? (static_cast<int64_t>(q_start + t) * p.num_heads + kv_head * G + g) * D + c * 8 : 0;
      cp_async_16(&q_s[swizzle<kChunks>(r, c)], qg + off, valid);
    }
  }

  // Stages keys [start, start + BN) into buffer buf: T tiles (swizzled), or code tiles (plain
  // rows; each is read once, linearly, by the widening pass).
  auto load_tile = [&](int start, int buf) {
    constexpr int kRowChunks = kQuant ? kCodeChunks : kChunks;
    constexpr int kRowStep = kThreads / kRowChunks;
    const int c = tid % kRowChunks;
#pragma unroll
    for (int r = tid / kRowChunks; r < BN; r += kRowStep) {
      const int key = start + r;
      const bool valid = key < key_end;
      const int64_t off = valid ? paged_row_offset(table, key, kv_head, p.num_kv_heads, p.block_size_log2, D) *
                                          KvBytes<Q>::kValue +
                                      c * 16
                                : 0;  // bytes
      if constexpr (kQuant) {
        const int s = (buf * BN + r) * kCodeChunks + c;
        cp_async_16(&k8_s[s], kc + off, valid);
        cp_async_16(&v8_s[s], vc + off, valid);
      } else {
        const int s = buf * BN * kChunks + swizzle<kChunks>(r, c);
        cp_async_16(&k_s[s], kc + off, valid);
        cp_async_16(&v_s[s], vc + off, valid);
      }
    }
  };
  // Quantized: widens code buffer buf into the T tiles (exact), 16 codes per thread and step.
  auto widen_tile = [&](int buf) {
    if constexpr (kQuant) {
      for (int i = tid; i < BN * kCodeChunks; i += kThreads) {
        const int r = i / kCodeChunks, c = i % kCodeChunks;
        uint4 lo, hi;
        codes16_to_elems<T, Q>(k8_s[buf * BN * kCodeChunks + i], lo, hi);
        k_s[swizzle<kChunks>(r, 2 * c)] = lo;
        k_s[swizzle<kChunks>(r, 2 * c + 1)] = hi;
        codes16_to_elems<T, Q>(v8_s[buf * BN * kCodeChunks + i], lo, hi);
        v_s[swizzle<kChunks>(r, 2 * c)] = lo;
        v_s[swizzle<kChunks>(r, 2 * c + 1)] = hi;
      }
    }
  };
  if (num_tiles > 0) load_tile(0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // Q fragments of m-tile mt at k-step kk.
  const int warp_row0 = warp * Shape::kWarpRows;
  auto load_q = [&](uint32_t(&a)[4], int mt, int kk) {
    ldmatrix_x4(a, &q_s[swizzle<kChunks>(warp_row0 + mt * 16 + (lane & 15), kk * 2 + (lane >> 4))]);
  };
  uint32_t qf[Shape::kQInRegs ? D / 16 : 1][4];
  if constexpr (Shape::kQInRegs) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) load_q(qf[kk], 0, kk);
    __syncthreads();  // the Q buffer is the last V buffer, refilled by a prefetch or widening below
  }

  // This thread's rows: fragment rows lane/4 (+8) of each of the warp's m-tiles.
  int limit[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) limit[mt][h] = first_pos + (row0 + warp_row0 + mt * 16 + h * 8 + (lane >> 2)) / G;
  const int mask_from = first_pos + tok_first;  // keys <= mask_from are visible to every row

  float o[MT][D / 8][4];
  float m_r[MT][2], l_r[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    m_r[mt][0] = m_r[mt][1] = -INFINITY;
    l_r[mt][0] = l_r[mt][1] = 0.f;
  }
  // Softmax scale (times the K scale) and output factor (the V scale) of a quantized cache.
  const float sl2 = kQuant ? p.scale_log2 * __ldg(&p.k_scale[kv_head]) : p.scale_log2;
  const float out_mul = kQuant ? __ldg(&p.v_scale[kv_head]) : 1.f;

  for (int j = 0; j < num_tiles; ++j) {
    const int buf = j & 1;
    if (j + 1 < num_tiles) {
      load_tile((j + 1) * BN, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int tbuf = kQuant ? 0 : buf;  // the T tiles this iteration reads
    if constexpr (kQuant) {
      widen_tile(buf);
      __syncthreads();
    }

    // ---- S = Q K^T (raw, unscaled) ----
    float s[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
    const uint4* k_tile = k_s + tbuf * BN * kChunks;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (Shape::kQInRegs) {
#pragma unroll
          for (int i = 0; i < 4; ++i) a[mt][i] = qf[kk][i];
        } else {
          load_q(a[mt], mt, kk);
        }
      }
#pragma unroll
      for (int nn = 0; nn < BN / 16; ++nn) {
        uint32_t b[4];
        ldmatrix_x4(b, &k_tile[swizzle<kChunks>(nn * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1))]);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816<T>(s[mt][2 * nn], a[mt], b[0], b[1]);
          mma_16816<T>(s[mt][2 * nn + 1], a[mt], b[2], b[3]);
        }
      }
    }

    // ---- causal mask ----
    const int n0 = j * BN;
    if (n0 + BN - 1 > mask_from) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = n0 + nt * 8 + ((lane & 3) << 1) + (e & 1);
            if (key > limit[mt][e >> 1]) s[mt][nt][e] = -INFINITY;
          }
    }

    // ---- online softmax (half h: rows lane/4 + 8h; elements 2h, 2h+1) ----
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_r[mt][h], mx * sl2);  // log2 domain
        const float base = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = fast_exp2(m_r[mt][h] - base);
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
          s[mt][nt][2 * h] = fast_exp2(fmaf(s[mt][nt][2 * h], sl2, -base));
          s[mt][nt][2 * h + 1] = fast_exp2(fmaf(s[mt][nt][2 * h + 1], sl2, -base));
          sum += s[mt][nt][2 * h] + s[mt][nt][2 * h + 1];
        }
        l_r[mt][h] = l_r[mt][h] * alpha + sum;  // this thread's share; the quad is summed at the end
        m_r[mt][h] = m_new;
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
          o[mt][dt][2 * h] *= alpha;
          o[mt][dt][2 * h + 1] *= alpha;
        }
      }
    }

    // ---- O += P V ----
    const uint4* v_tile = v_s + tbuf * BN * kChunks;
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        a[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, &v_tile[swizzle<kChunks>(kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7), dn * 2 + (lane >> 4))]);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816<T>(o[mt][2 * dn], a[mt], b[0], b[1]);
          mma_16816<T>(o[mt][2 * dn + 1], a[mt], b[2], b[3]);
        }
      }
    }
    __syncthreads();
  }

  // ---- normalize and store ----
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = l_r[mt][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv_l = l > 0.f ? out_mul / l : 0.f;
      const int row = row0 + warp_row0 + mt * 16 + h * 8 + (lane >> 2);
      if (row >= rows_total) continue;
      const int t = row / G;
      const int g = row - t * G;
      T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(q_start + t) * p.num_heads + kv_head * G + g) * D +
               ((lane & 3) << 1);
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<typename ElemTraits<T>::Vec2*>(&out[dt * 8]) =
            ElemTraits<T>::from_float2(o[mt][dt][2 * h] * inv_l, o[mt][dt][2 * h + 1] * inv_l);
      }
    }
  }
}

}  // namespace anvil::cuda::attn
