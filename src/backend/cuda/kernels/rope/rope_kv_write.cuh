// The attention prologue in one pass: per-head RMSNorm of q and k (Qwen3), rotate_half RoPE of
// q and k, q to q_out, k and v into the paged cache. One thread block per token, one warp per head.
//
// Why this shape: rotate_half pairs element i with i + D/2, so lane l owns the elements
// i = 64 j + 2 l + {0, 1} of the first half and their partners i + D/2; a warp then holds a whole
// head in registers, the q/k norm is a warp reduction and each pair rotates without shuffles.
// Loads and stores are 4-byte pairs (128 bytes per warp instruction) when D % 4 == 0 and the
// rows are 4-byte aligned, else 2-byte. cos/sin come from fp32 position * inv_freq with
// full-precision sincosf.
//
//   qkv row:   [ q head 0 | ... | q head Hq-1 | k head 0 | ... | k Hkv-1 | v head 0 | ... ]
//   cache:     k[block][kv_head][row_in_block][D], slot = block * block_size + row_in_block
//
// Quantized caches (KvStore kFp8E4M3 / kInt8, one byte per element): the value stored is the
// 16-bit value the unquantized path would store (k after norm and rotation, v as read), divided
// by its KV head's scale (IEEE division) and converted: int8 rounds to nearest even and
// saturates to [-127, 127], e4m3 with satfinite (backend.h, KvCacheLayer; core/dtype.h). So a
// quantized cache is exactly quantize(bf16/fp16 cache), which tests check byte for byte.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/kernels/common/pdl.cuh"
#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

constexpr int kRopeMaxPairsPerLane = 4;  // head_dim <= 256

enum class KvStore { kSame, kFp8E4M3, kInt8 };  // cache element: the 16-bit dtype, or 8-bit codes

struct RopeKvParams {
  const uint16_t* qkv = nullptr;     // [num_tokens, (Hq + 2 Hkv) * D]
  const uint16_t* q_norm = nullptr;  // [D] or null
  const uint16_t* k_norm = nullptr;  // [D] or null
  float eps = 1e-6f;
  const float* inv_freq = nullptr;   // [D / 2]
  float scaling = 1.0f;              // attention_scaling, multiplies cos and sin
  const int32_t* positions = nullptr;  // [num_tokens]
  const int32_t* slot_map = nullptr;   // [num_tokens]; < 0: no cache write
  uint16_t* q_out = nullptr;         // [num_tokens, Hq, D]
  void* k_cache = nullptr;           // [num_blocks, Hkv, block_size, D] of 16-bit or 8-bit elements
  void* v_cache = nullptr;
  const float* k_scale = nullptr;    // [Hkv], quantized caches only
  const float* v_scale = nullptr;
  int num_tokens = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
};

// Element index of register slot k (0 .. kRopeMaxPairsPerLane - 1) of a lane in the first half.
__device__ __forceinline__ int rope_index(int lane, int k) { return 64 * (k >> 1) + 2 * lane + (k & 1); }

template <bool kPairs>
__device__ __forceinline__ void load_two(const uint16_t* p, int i, uint16_t& a, uint16_t& b) {
  if constexpr (kPairs) {
    const uint32_t v = *reinterpret_cast<const uint32_t*>(p + i);
    a = static_cast<uint16_t>(v & 0xffffu);
    b = static_cast<uint16_t>(v >> 16);
  } else {
    a = p[i];
    b = p[i + 1];
  }
}
template <bool kPairs>
__device__ __forceinline__ void store_two(uint16_t* p, int i, uint16_t a, uint16_t b) {
  if constexpr (kPairs) {
    *reinterpret_cast<uint32_t*>(p + i) = static_cast<uint32_t>(a) | (static_cast<uint32_t>(b) << 16);
  } else {
    p[i] = a;
    p[i + 1] = b;
  }
}

// The 8-bit code of x under a KV head's scale (see the header comment).
template <KvStore S>
__device__ __forceinline__ uint8_t kv_code(float x, float scale) {
  const float v = __fdiv_rn(x, scale);
  if constexpr (S == KvStore::kInt8) {
    return static_cast<uint8_t>(static_cast<int8_t>(__float2int_rn(fminf(fmaxf(v, -127.0f), 127.0f))));
  } else {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
  }
}

// Stores elements i, i + 1 of a head: 16-bit storage as is, or (quantized) the codes of the
// 16-bit values a, b as two bytes.
template <class E, KvStore S, bool kPairs>
__device__ __forceinline__ void store_kv_two(void* dst, int i, uint16_t a, uint16_t b, float scale) {
  if constexpr (S == KvStore::kSame) {
    store_two<kPairs>(static_cast<uint16_t*>(dst), i, a, b);
  } else {
    uint8_t* d = static_cast<uint8_t*>(dst);
    const uint8_t qa = kv_code<S>(E::load(a), scale), qb = kv_code<S>(E::load(b), scale);
    if constexpr (kPairs) {
      *reinterpret_cast<uint16_t*>(d + i) = static_cast<uint16_t>(qa | (qb << 8));
    } else {
      d[i] = qa;
      d[i + 1] = qb;
    }
  }
}

template <bool kPairs>
__device__ __forceinline__ void rope_load_head(const uint16_t* src, int lane, int half, uint16_t* ra, uint16_t* rb) {
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; j += 2) {
    const int i = rope_index(lane, j);
    ra[j] = ra[j + 1] = rb[j] = rb[j + 1] = 0;
    if (i < half) {
      load_two<kPairs>(src, i, ra[j], ra[j + 1]);
      load_two<kPairs>(src, i + half, rb[j], rb[j + 1]);
    }
  }
}

// Norm (q/k with weights), rotation and the store of one head already in registers.
template <class E, bool kPairs, KvStore S>
__device__ __forceinline__ void rope_finish_head(const RopeKvParams& p, int t, int h, int lane, int64_t cache_base,
                                                 const float* cs, const float* sn, const uint16_t* ra,
                                                 const uint16_t* rb) {
  const int d = p.head_dim, half = d / 2;
  const bool is_q = h < p.num_heads;
  const bool is_v = h >= p.num_heads + p.num_kv_heads;
  void* dst;  // q_out row (16-bit), or the cache row (16-bit or 8-bit elements)
  float scale = 1.0f;
  if (is_q) {
    dst = p.q_out + (static_cast<int64_t>(t) * p.num_heads + h) * d;
  } else {
    if (cache_base < 0) return;  // padding token: no cache write
    const int kvh = is_v ? h - p.num_heads - p.num_kv_heads : h - p.num_heads;
    const int64_t off = cache_base + static_cast<int64_t>(kvh) * p.block_size * d;  // elements
    void* pool = is_v ? p.v_cache : p.k_cache;
    if constexpr (S == KvStore::kSame) {
      dst = static_cast<uint16_t*>(pool) + off;
    } else {
      dst = static_cast<uint8_t*>(pool) + off;
      scale = __ldg(is_v ? &p.v_scale[kvh] : &p.k_scale[kvh]);
    }
  }
  if (is_v) {
#pragma unroll
    for (int j = 0; j < kRopeMaxPairsPerLane; j += 2) {
      const int i = rope_index(lane, j);
      if (i < half) {
        store_kv_two<E, S, kPairs>(dst, i, ra[j], ra[j + 1], scale);
        store_kv_two<E, S, kPairs>(dst, i + half, rb[j], rb[j + 1], scale);
      }
    }
    return;
  }
  float a[kRopeMaxPairsPerLane], b[kRopeMaxPairsPerLane];
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
    a[j] = E::load(ra[j]);
    b[j] = E::load(rb[j]);
  }
  const uint16_t* norm_w = is_q ? p.q_norm : p.k_norm;
  if (norm_w) {
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < kRopeMaxPairsPerLane; ++j) ss += a[j] * a[j] + b[j] * b[j];
    ss = warp_sum(ss);
    const float inv = rsqrtf(ss / static_cast<float>(d) + p.eps);
#pragma unroll
    for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
      const int i = rope_index(lane, j);
      if (i < half) {
        a[j] = E::round(E::load(norm_w[i]) * E::round(a[j] * inv));
        b[j] = E::round(E::load(norm_w[i + half]) * E::round(b[j] * inv));
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; j += 2) {
    const int i = rope_index(lane, j);
    if (i < half) {
      const uint16_t o0 = E::store(a[j] * cs[j] - b[j] * sn[j]), o1 = E::store(a[j + 1] * cs[j + 1] - b[j + 1] * sn[j + 1]);
      const uint16_t o2 = E::store(b[j] * cs[j] + a[j] * sn[j]), o3 = E::store(b[j + 1] * cs[j + 1] + a[j + 1] * sn[j + 1]);
      if (is_q) {
        store_two<kPairs>(static_cast<uint16_t*>(dst), i, o0, o1);
        store_two<kPairs>(static_cast<uint16_t*>(dst), i + half, o2, o3);
      } else {
        store_kv_two<E, S, kPairs>(dst, i, o0, o1, scale);
        store_kv_two<E, S, kPairs>(dst, i + half, o2, o3, scale);
      }
    }
  }
}

// head_dim % 4 == 0 (so each lane's two elements sit together in one half).
template <class E, bool kPairs, KvStore S = KvStore::kSame>
__global__ void rope_kv_write_kernel(RopeKvParams p) {
  // PDL chain: positions, slot_map and inv_freq are step metadata (host copies before the step's
  // first kernel) and weights, never written by a kernel of the step, so the angles are computed
  // while the previous kernel (the QKV projection) still runs; qkv is read after the wait.
  launch_dependents();
  const int t = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, num_warps = blockDim.x >> 5;
  const int d = p.head_dim, half = d / 2;
  const int total_heads = p.num_heads + 2 * p.num_kv_heads;
  const uint16_t* src_row = p.qkv + static_cast<int64_t>(t) * total_heads * d;
  const float pos = static_cast<float>(p.positions[t]);
  const int32_t slot = p.slot_map[t];
  int64_t cache_base = -1;  // element offset of (block, head 0, row) in the cache
  if (slot >= 0) {
    const int64_t block = slot / p.block_size, row = slot % p.block_size;
    cache_base = (block * p.num_kv_heads * p.block_size + row) * d;
  }
  // cos/sin of this lane's pairs, shared by every head of the token.
  float cs[kRopeMaxPairsPerLane], sn[kRopeMaxPairsPerLane];
#pragma unroll
  for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
    const int i = rope_index(lane, j);
    cs[j] = 1.0f;
    sn[j] = 0.0f;
    if (i < half) {
      sincosf(pos * p.inv_freq[i], &sn[j], &cs[j]);
      cs[j] *= p.scaling;
      sn[j] *= p.scaling;
    }
  }
  grid_dependency_wait();
  // One head per warp iteration. (Pipelining two heads per warp with 24-warp blocks measured
  // slower on H100: 45.3 us vs 35.9 us at T=2048, Hq=32, Hkv=8; see bench/cuda_kernels.md.)
  for (int h = warp; h < total_heads; h += num_warps) {
    uint16_t ra[kRopeMaxPairsPerLane], rb[kRopeMaxPairsPerLane];
    rope_load_head<kPairs>(src_row + static_cast<int64_t>(h) * d, lane, half, ra, rb);
    rope_finish_head<E, kPairs, S>(p, t, h, lane, cache_base, cs, sn, ra, rb);
  }
}

}  // namespace anvil::cuda::kern
