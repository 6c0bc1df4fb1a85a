// Shared pieces of the sampling kernel: the order-preserving value key, the per-row view that
// applies penalties and temperature on the fly (the logits stay raw), the online log-sum-exp,
// and the block's shared-memory workspace.
#pragma once

#include <cfloat>
#include <climits>
#include <cstdint>

#include "backend/cuda/kernels/common/vec.cuh"

namespace anvil::cuda::kern {

// Monotone map float -> uint32: a > b  <=>  key(a) > key(b).
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The kept set: elements with key > key, or key == key and id <= max_id; mass = their sum of
// exp(z - zmax).
struct Cutoff {
  uint32_t key;
  int32_t max_id;
  float mass;
};
__device__ __forceinline__ bool kept(const Cutoff& c, uint32_t key, int32_t id) {
  return key > c.key || (key == c.key && id <= c.max_id);
}

struct SampleShared {
  uint32_t count[256];
  float mass[256];
  float red_a[32], red_b[32], red_c[32], red_d[32];
  int32_t red_i[32];
  uint32_t sel_bin;
  float sel_above, sel_above_mass;
  uint32_t min_u32;
  int32_t min_i32;
  int32_t last_split;  // split pass 0: this block arrived last and finishes the row
};

// One row's view: raw logits, penalty entries and the temperature.
struct RowView {
  const float* x;
  int64_t vocab;
  const uint32_t* bitmap;  // null when no penalties apply to this row
  const int32_t* ids;
  const int32_t* counts;
  int32_t e_begin, e_end;
  float rep, pres, freq;
  float temp;  // > 0 divides; <= 0 leaves z = penalized logit (greedy)
  int64_t lo = 0, hi = 0;  // the ids one sweep visits: [lo, hi) (the whole row but in a split pass 0)

  __device__ __forceinline__ float penalized(float l, int32_t count) const {
    if (rep != 1.0f) l = l > 0.0f ? l / rep : l * rep;
    return l - (pres * (count > 0 ? 1.0f : 0.0f) + freq * static_cast<float>(count));
  }
  __device__ __forceinline__ float scaled(float l) const { return temp > 0.0f ? l / temp : l; }

  template <class F>
  __device__ __forceinline__ void visit(int64_t i, float raw, F& f) const {
    if (bitmap && ((bitmap[i >> 5] >> (i & 31)) & 1u)) return;
    f(static_cast<int32_t>(i), raw, scaled(raw));
  }
  template <class F>
  __device__ __forceinline__ void visit4(int64_t i, const float4& v, F& f) const {
    visit(i, v.x, f);
    visit(i + 1, v.y, f);
    visit(i + 2, v.z, f);
    visit(i + 3, v.w, f);
  }

  // Calls f(id, raw, z) once per vocabulary id, spread over the block's threads. The sweep keeps
  // two 16-byte loads in flight per thread: a pass is latency-bound otherwise.
  template <class F>
  __device__ __forceinline__ void for_each(F&& f) const {
    int64_t start = lo;
    if ((reinterpret_cast<uintptr_t>(x + lo) & 15u) == 0) {
      const float4* x4 = reinterpret_cast<const float4*>(x + lo);
      const int64_t n4 = (hi - lo) >> 2, stride = blockDim.x;
      for (int64_t v = threadIdx.x; v < n4; v += 2 * stride) {
        const float4 a = __ldg(x4 + v);
        const bool has_b = v + stride < n4;
        const float4 b = has_b ? __ldg(x4 + v + stride) : a;
        visit4(lo + v * 4, a, f);
        if (has_b) visit4(lo + (v + stride) * 4, b, f);
      }
      start = lo + n4 * 4;
    }
    for (int64_t i = start + threadIdx.x; i < hi; i += blockDim.x) visit(i, __ldg(x + i), f);
    if (!bitmap) return;
    for (int32_t e = e_begin + static_cast<int32_t>(threadIdx.x); e < e_end; e += blockDim.x) {
      const int32_t id = ids[e];
      if (id < 0 || id >= vocab) continue;
      const float raw = x[id];
      f(id, raw, scaled(penalized(raw, counts[e])));
    }
  }
};

// Running argmax: takes (v, id) when it is larger, or equal with a lower id (ties go to the
// lowest id wherever the candidates come from).
__device__ __forceinline__ void argmax_take(float& best, int32_t& best_id, float v, int32_t id) {
  if (v > best || (v == best && id < best_id)) {
    best = v;
    best_id = id;
  }
}

// Online (max, sum of exp(v - max)) pair.
__device__ __forceinline__ void lse_add(float& m, float& s, float v) {
  if (v == -INFINITY) return;
  if (v > m) {
    s = s * __expf(m - v) + 1.0f;
    m = v;
  } else {
    s += __expf(v - m);
  }
}
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float mx = fmaxf(m, m2);
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
  m = mx;
}

}  // namespace anvil::cuda::kern
