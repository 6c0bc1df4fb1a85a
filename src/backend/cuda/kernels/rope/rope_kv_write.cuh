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
#pragma once

#include <cstdint>

#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

constexpr int kRopeMaxPairsPerLane = 4;  // head_dim <= 256

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
  uint16_t* k_cache = nullptr;       // [num_blocks, Hkv, block_size, D]
  uint16_t* v_cache = nullptr;
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
template <class E, bool kPairs>
__device__ __forceinline__ void rope_finish_head(const RopeKvParams& p, int t, int h, int lane, int64_t cache_base,
                                                 const float* cs, const float* sn, const uint16_t* ra,
                                                 const uint16_t* rb) {
  const int d = p.head_dim, half = d / 2;
  const bool is_q = h < p.num_heads;
  const bool is_v = h >= p.num_heads + p.num_kv_heads;
  uint16_t* dst;
  if (is_q) {
    dst = p.q_out + (static_cast<int64_t>(t) * p.num_heads + h) * d;
  } else {
    if (cache_base < 0) return;  // padding token: no cache write
    const int kvh = is_v ? h - p.num_heads - p.num_kv_heads : h - p.num_heads;
    dst = (is_v ? p.v_cache : p.k_cache) + cache_base + static_cast<int64_t>(kvh) * p.block_size * d;
  }
  if (is_v) {
#pragma unroll
    for (int j = 0; j < kRopeMaxPairsPerLane; j += 2) {
      const int i = rope_index(lane, j);
      if (i < half) {
        store_two<kPairs>(dst, i, ra[j], ra[j + 1]);
        store_two<kPairs>(dst, i + half, rb[j], rb[j + 1]);
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
      store_two<kPairs>(dst, i, E::store(a[j] * cs[j] - b[j] * sn[j]), E::store(a[j + 1] * cs[j + 1] - b[j + 1] * sn[j + 1]));
      store_two<kPairs>(dst, i + half, E::store(b[j] * cs[j] + a[j] * sn[j]),
                        E::store(b[j + 1] * cs[j + 1] + a[j + 1] * sn[j + 1]));
    }
  }
}

// head_dim % 4 == 0 (so each lane's two elements sit together in one half).
template <class E, bool kPairs>
__global__ void rope_kv_write_kernel(RopeKvParams p) {
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
  // One head per warp iteration. (Pipelining two heads per warp with 24-warp blocks measured
  // slower on H100: 45.3 us vs 35.9 us at T=2048, Hq=32, Hkv=8; see bench/cuda_kernels.md.)
  for (int h = warp; h < total_heads; h += num_warps) {
    uint16_t ra[kRopeMaxPairsPerLane], rb[kRopeMaxPairsPerLane];
    rope_load_head<kPairs>(src_row + static_cast<int64_t>(h) * d, lane, half, ra, rb);
    rope_finish_head<E, kPairs>(p, t, h, lane, cache_base, cs, sn, ra, rb);
  }
}

}  // namespace anvil::cuda::kern
