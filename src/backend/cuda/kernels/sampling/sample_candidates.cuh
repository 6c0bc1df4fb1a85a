// The fast path of sample_kernel: collect the few tokens that can matter, sort them, scan.
//
// Every filter keeps a prefix of the descending order, and the draw lands where the running mass
// reaches u * S_kept. So a candidate set C = {z >= theta} decides the row exactly as long as it
// holds the top-k tokens (when top-k is on) or enough mass to reach the top-p / draw target. One
// pass counts tokens per distance-below-max bucket (width 1/16, integer shared atomics only); the
// mass of a bucket is bounded below by count * exp(-(b + 1) / 16), which picks theta. A second
// pass gathers C (<= cap entries) into shared memory as 64-bit keys (value key << 32 | ~id), a
// bitonic sort orders them (value desc, id asc) and a block scan gives the cumulative mass in
// sorted order, the CPU reference's own arithmetic. Rows where C would exceed the cap, or where
// the bound cannot decide, return false and take the radix path.
#pragma once

#include "backend/cuda/kernels/sampling/sample_common.cuh"

namespace anvil::cuda::kern {

constexpr int kDistBuckets = 256;
constexpr float kDistScale = 16.0f;  // buckets per unit of z below the max

__device__ __forceinline__ float key_to_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ int dist_bucket(float zm, float z) {
  const float d = (zm - z) * kDistScale;
  return d < static_cast<float>(kDistBuckets) ? static_cast<int>(d) : kDistBuckets;  // NaN / far: out
}

struct CandidateArgs {
  float zm, total;  // max and sum of exp(z - zm) over the row
  int32_t top_k;    // 0 = off (already clamped: < vocab)
  float top_p, min_p, u;
  uint64_t* keys;   // [cap] shared
  float* prefix;    // [cap] shared
  int cap;          // a power of two
};

// Returns true and sets *chosen when the candidate set decides the row.
__device__ bool sample_from_candidates(const RowView& row, SampleShared& sh, const CandidateArgs& a,
                                       int32_t* chosen) {
  // Pass 1: counts per distance bucket.
  for (int b = threadIdx.x; b < 256; b += blockDim.x) sh.count[b] = 0;
  __syncthreads();
  row.for_each([&](int32_t, float, float z) {
    const int b = dist_bucket(a.zm, z);
    if (b < kDistBuckets) atomicAdd(&sh.count[b], 1u);
  });
  __syncthreads();
  // Warp 0 picks the last bucket of C: the first where the running count reaches top_k (top-k
  // on) or the mass lower bound reaches the target mass (top-k off).
  const float need_mass = (a.top_p < 1.0f ? fmaxf(a.top_p, 0.0f) : a.u) * a.total;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    uint32_t lc = 0;
    float lm = 0.0f;
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int b = lane * 8 + t;
      lc += sh.count[b];
      lm += static_cast<float>(sh.count[b]) * __expf(-static_cast<float>(b + 1) / kDistScale);
    }
    uint32_t ic = lc;
    float im = lm;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t c2 = __shfl_up_sync(0xffffffffu, ic, o);
      const float m2 = __shfl_up_sync(0xffffffffu, im, o);
      if (lane >= o) {
        ic += c2;
        im += m2;
      }
    }
    auto done = [&](uint32_t c, float m) {
      return a.top_k > 0 ? c >= static_cast<uint32_t>(a.top_k) : m >= need_mass;
    };
    const uint32_t ballot = __ballot_sync(0xffffffffu, done(ic, im));
    int last = -1;
    uint32_t n = 0;
    if (ballot) {
      const int owner = __ffs(ballot) - 1;
      if (lane == owner) {
        uint32_t c = ic - lc;
        float m = im - lm;
        for (int t = 0; t < 8; ++t) {
          const int b = lane * 8 + t;
          c += sh.count[b];
          m += static_cast<float>(sh.count[b]) * __expf(-static_cast<float>(b + 1) / kDistScale);
          if (done(c, m)) {
            last = b;
            n = c;
            break;
          }
        }
        if (last < 0) {  // rounding between the scan and the walk: take the lane's end
          last = lane * 8 + 7;
          n = ic;
        }
      }
      last = __shfl_sync(0xffffffffu, last, owner);
      n = __shfl_sync(0xffffffffu, n, owner);
    }
    if (lane == 0) {
      sh.sel_bin = (last < 0 || n > static_cast<uint32_t>(a.cap)) ? 0xffffffffu : static_cast<uint32_t>(last);
      sh.min_u32 = 0;  // candidate counter for pass 2
    }
  }
  __syncthreads();
  const uint32_t last_bucket = sh.sel_bin;
  if (last_bucket == 0xffffffffu) return false;

  // Pass 2: gather C.
  row.for_each([&](int32_t id, float, float z) {
    if (dist_bucket(a.zm, z) <= static_cast<int>(last_bucket)) {
      const uint32_t slot = atomicAdd(&sh.min_u32, 1u);
      if (slot < static_cast<uint32_t>(a.cap)) {
        a.keys[slot] = (static_cast<uint64_t>(order_key(z)) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(id));
      }
    }
  });
  __syncthreads();
  const int m = static_cast<int>(min(sh.min_u32, static_cast<uint32_t>(a.cap)));
  if (m == 0) return false;  // a NaN max: no candidates
  int p2 = 1;
  while (p2 < m) p2 <<= 1;
  for (int i = m + threadIdx.x; i < p2; i += blockDim.x) a.keys[i] = 0;  // sorts last
  __syncthreads();
  // Bitonic sort, descending.
  for (int k = 2; k <= p2; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < p2; i += blockDim.x) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const uint64_t x = a.keys[i], y = a.keys[ixj];
          const bool desc = (i & k) == 0;
          if (desc ? x < y : x > y) {
            a.keys[i] = y;
            a.keys[ixj] = x;
          }
        }
      }
      __syncthreads();
    }
  }
  // Inclusive prefix of w over the sorted order: each thread scans a contiguous run.
  const int per = (m + blockDim.x - 1) / blockDim.x;
  const int begin = min(m, static_cast<int>(threadIdx.x) * per), end = min(m, begin + per);
  float run = 0.0f;
  for (int i = begin; i < end; ++i) run += __expf(key_to_value(static_cast<uint32_t>(a.keys[i] >> 32)) - a.zm);
  // Exclusive scan of the run totals across the block.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float incl = run;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) sh.red_a[warp] = incl;
  __syncthreads();
  float offset = incl - run;
  for (int w = 0; w < warp; ++w) offset += sh.red_a[w];
  for (int i = begin; i < end; ++i) {
    offset += __expf(key_to_value(static_cast<uint32_t>(a.keys[i] >> 32)) - a.zm);
    a.prefix[i] = offset;
  }
  __syncthreads();

  // Thread 0 applies the filters on the sorted prefix (all monotone: binary searches).
  if (threadIdx.x == 0) {
    auto first_reaching = [&](float target, bool strict, int limit) {  // first i < limit with prefix >= / > target
      int lo = 0, hi = limit;
      while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (strict ? a.prefix[mid] > target : a.prefix[mid] >= target) hi = mid; else lo = mid + 1;
      }
      return lo;  // == limit: none
    };
    constexpr int kAll = 0x7fffffff;  // the kept set extends past C
    int keep = kAll;
    float kept_mass = a.total;
    if (a.top_k > 0) {
      keep = min(a.top_k, m);
      kept_mass = a.prefix[keep - 1];
    }
    int result = -1;
    bool ok = true;
    if (a.top_p < 1.0f) {
      const int limit = keep == kAll ? m : keep;
      const int i = first_reaching(fmaxf(a.top_p, 0.0f) * kept_mass, false, limit);
      if (i < limit) {
        keep = i + 1;
      } else if (keep == kAll) {
        ok = false;  // the nucleus boundary is outside C
      }
    }
    if (ok && a.min_p > 0.0f) {
      // w is descending: the first index with w < min_p (index 0 always stays).
      int lo = 1, hi = keep == kAll ? m : keep;
      const int limit = hi;
      while (lo < hi) {
        const int mid = (lo + hi) / 2;
        const float w = __expf(key_to_value(static_cast<uint32_t>(a.keys[mid] >> 32)) - a.zm);
        if (w < a.min_p) hi = mid; else lo = mid + 1;
      }
      if (lo < limit) keep = lo;
      else if (keep == kAll) ok = false;  // min-p keeps tokens beyond C
    }
    if (ok) {
      if (keep != kAll) kept_mass = a.prefix[keep - 1];
      const int limit = keep == kAll ? m : keep;
      const int i = first_reaching(a.u * kept_mass, true, limit);
      if (i < limit) {
        result = i;
      } else if (keep != kAll) {
        result = limit - 1;  // rounding: the last kept token, as the reference does
      }
    }
    sh.min_i32 = result < 0 ? -1 : static_cast<int32_t>(~static_cast<uint32_t>(a.keys[result]));
  }
  __syncthreads();
  const int32_t r = sh.min_i32;
  __syncthreads();
  if (r < 0) return false;
  *chosen = r;
  return true;
}

}  // namespace anvil::cuda::kern
