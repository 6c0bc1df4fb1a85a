// Token sampling, one thread block per logits row, no host sync and no global scratch.
//
// Why this shape: a row (V up to ~1M, 128256 for llama3) is 0.5 MB of fp32 and stays in L2, so a
// block makes a few passes over it instead of sorting it. Every filter of Backend::sample keeps a
// prefix of the row in descending order (value desc, id asc), so each reduces to a boundary:
// top-k by count, top-p and the final draw by probability mass.
//   1. pass 0: raw log-sum-exp (for the log-prob), max / sum of the scaled row, argmax (greedy
//      rows stop here);
//   2. fast path (sample_candidates.cuh): gather the few tokens that can matter, sort, scan;
//   3. fallback when that set would be too large (flat distributions): 4-pass MSB radix selects
//      over the order-preserving uint32 key (256-bin count + mass histograms in shared memory),
//      ties at a boundary resolved by id; min-p is a plain threshold (p >= min_p * p_max).
//
// Penalties are applied on the fly and the logits row is left unmodified: a shared-memory bitmap
// marks the row's penalized ids; passes skip them in the vocabulary sweep and visit them through
// the row's CSR entries with their penalized value. The raw row thus still gives the chosen
// token's log-probability, log_softmax of the raw logits.
#pragma once

#include <cfloat>
#include <climits>
#include <cstdint>

#include "backend/cuda/kernels/sampling/sample_candidates.cuh"
#include "backend/cuda/kernels/sampling/sample_common.cuh"
#include "core/random.h"

namespace anvil::cuda::kern {

constexpr int kSampleThreads = 512;

struct SampleParams {
  const float* logits = nullptr;  // [rows, vocab]
  int64_t vocab = 0;
  int num_rows = 0;
  const float* temperature = nullptr;  // [rows]; <= 0: greedy
  const int32_t* top_k = nullptr;
  const float* top_p = nullptr;
  const float* min_p = nullptr;
  const float* repetition_penalty = nullptr;
  const float* presence_penalty = nullptr;
  const float* frequency_penalty = nullptr;
  const uint64_t* seeds = nullptr;
  const int64_t* steps = nullptr;
  const int32_t* penalty_offsets = nullptr;  // null: no penalties
  const int32_t* penalty_token_ids = nullptr;
  const int32_t* penalty_output_counts = nullptr;
  int32_t* out_ids = nullptr;       // [rows]
  float* out_logprobs = nullptr;    // [rows] or null
  // Dynamic shared memory: [bitmap_words u32, padded to 8 bytes][cap u64 keys][cap f32 prefix].
  int bitmap_words = 0;             // 0 when no penalties apply
  int candidate_cap = 0;            // a power of two; 0 disables the fast path
  // Split pass 0 (rows without penalties): grid.y = splits blocks per row each sweep a slice of
  // ids_per_split ids (a multiple of 4), write their pass-0 partial to split_partials
  // [rows][splits][kSamplePartial] and bump split_counters[row] (zero between launches); the block
  // that arrives last merges the partials in split order and does the rest of the row alone.
  int splits = 1;
  int64_t ids_per_split = 0;
  float* split_partials = nullptr;
  unsigned* split_counters = nullptr;
};

constexpr int kSamplePartial = 6;  // raw max, raw sum, scaled max, scaled sum, best value, best id

inline size_t sample_smem_bytes(int bitmap_words, int candidate_cap) {
  return (static_cast<size_t>(bitmap_words) * 4 + 7) / 8 * 8 + static_cast<size_t>(candidate_cap) * 12;
}

// Weighted radix select over the members (pred) in descending key order: finds the first
// element at which the running weight (count, or mass if by_mass) reaches target (>= target, or
// > target if strict). Returns its key, its 1-based rank j among the members with that key
// (ties are ordered by id), the tie count n, and the mass through it. When no element reaches the
// target (rounding), the last member is returned.
struct SelectResult {
  uint32_t key;
  uint32_t j;
  uint32_t n;
  float mass_through;
};

template <class KeyFn>
__device__ SelectResult radix_select(const RowView& row, SampleShared& sh, KeyFn key_fn, bool by_mass, float target,
                                     bool strict) {
  uint32_t prefix = 0, mask = 0;
  float above = 0.0f, above_mass = 0.0f;
  uint32_t bin = 0;
  for (int level = 0; level < 4; ++level) {
    const int shift = 24 - 8 * level;
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sh.count[b] = 0;
      sh.mass[b] = 0.0f;
    }
    __syncthreads();
    row.for_each([&](int32_t id, float, float z) {
      uint32_t key;
      float w;
      if (!key_fn(id, z, key, w)) return;
      if ((key & mask) != prefix) return;
      const uint32_t b = (key >> shift) & 255u;
      atomicAdd(&sh.count[b], 1u);
      atomicAdd(&sh.mass[b], w);
    });
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l owns bins 255 - 8l .. 248 - 8l, in descending order.
      const int lane = threadIdx.x;
      float lw = 0.0f, lm = 0.0f;
      uint32_t lc = 0;
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const int b = 255 - (lane * 8 + t);
        lw += by_mass ? sh.mass[b] : static_cast<float>(sh.count[b]);
        lm += sh.mass[b];
        lc += sh.count[b];
      }
      float iw = lw, im = lm;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float w2 = __shfl_up_sync(0xffffffffu, iw, o);
        const float m2 = __shfl_up_sync(0xffffffffu, im, o);
        if (lane >= o) {
          iw += w2;
          im += m2;
        }
      }
      const float total_w = above + iw;
      const bool cross = lc > 0 && (strict ? total_w > target : total_w >= target);
      const uint32_t crossing = __ballot_sync(0xffffffffu, cross);
      const uint32_t nonempty = __ballot_sync(0xffffffffu, lc > 0);
      const int owner = crossing ? __ffs(crossing) - 1 : 31 - __clz(nonempty);
      if (lane == owner) {
        float run = above + iw - lw, run_m = above_mass + im - lm;
        int chosen = -1, last = -1;
        float last_run = run, last_run_m = run_m;
        for (int t = 0; t < 8; ++t) {
          const int b = 255 - (lane * 8 + t);
          if (sh.count[b] == 0) continue;
          const float wb = by_mass ? sh.mass[b] : static_cast<float>(sh.count[b]);
          last = b;
          last_run = run;
          last_run_m = run_m;
          if (crossing && (strict ? run + wb > target : run + wb >= target)) {
            chosen = b;
            break;
          }
          run += wb;
          run_m += sh.mass[b];
        }
        if (chosen < 0) {  // no crossing (or lost to rounding): the lowest non-empty bin
          chosen = last;
          run = last_run;
          run_m = last_run_m;
        }
        sh.sel_bin = static_cast<uint32_t>(chosen);
        sh.sel_above = run;
        sh.sel_above_mass = run_m;
      }
    }
    __syncthreads();
    bin = sh.sel_bin;
    above = sh.sel_above;
    above_mass = sh.sel_above_mass;
    prefix |= bin << shift;
    mask |= 255u << shift;
  }
  SelectResult r;
  r.key = prefix;
  r.n = sh.count[bin];
  const float tie_mass = sh.mass[bin] / static_cast<float>(r.n);
  const float tie_w = by_mass ? tie_mass : 1.0f;
  const float need = (target - above) / tie_w;
  float jf = strict ? floorf(need) + 1.0f : ceilf(need);
  jf = fminf(fmaxf(jf, 1.0f), static_cast<float>(r.n));
  r.j = static_cast<uint32_t>(jf);
  r.mass_through = above_mass + static_cast<float>(r.j) * tie_mass;
  __syncthreads();  // sh.count / sh.mass are reused by the next call
  return r;
}

// The j-th smallest id (1-based) among the kept members whose value key equals `key`.
__device__ int32_t tie_id(const RowView& row, SampleShared& sh, const Cutoff& lim, uint32_t key, uint32_t j) {
  if (j == 1) {
    if (threadIdx.x == 0) sh.min_i32 = INT_MAX;
    __syncthreads();
    int32_t best = INT_MAX;
    row.for_each([&](int32_t id, float, float z) {
      const uint32_t k = order_key(z);
      if (k == key && kept(lim, k, id) && id < best) best = id;
    });
    atomicMin(&sh.min_i32, best);
    __syncthreads();
    const int32_t r = sh.min_i32;
    __syncthreads();
    return r;
  }
  // Radix select on the complemented id (descending ~id = ascending id), by count.
  const SelectResult s = radix_select(
      row, sh,
      [&](int32_t id, float z, uint32_t& k, float& w) {
        const uint32_t vk = order_key(z);
        if (vk != key || !kept(lim, vk, id)) return false;
        k = ~static_cast<uint32_t>(id);
        w = 1.0f;
        return true;
      },
      false, static_cast<float>(j), false);
  return static_cast<int32_t>(~s.key);
}

// Turns a select result into the cutoff that keeps everything up to and including it.
__device__ Cutoff cutoff_through(const RowView& row, SampleShared& sh, const Cutoff& lim, const SelectResult& s) {
  Cutoff c;
  c.key = s.key;
  c.mass = s.mass_through;
  c.max_id = s.j == s.n ? (s.key == lim.key ? lim.max_id : INT_MAX) : tie_id(row, sh, lim, s.key, s.j);
  return c;
}

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(SampleParams p) {
  extern __shared__ __align__(16) unsigned char dyn_smem[];
  uint32_t* bitmap = reinterpret_cast<uint32_t*>(dyn_smem);
  uint64_t* cand_keys = reinterpret_cast<uint64_t*>(dyn_smem + (static_cast<size_t>(p.bitmap_words) * 4 + 7) / 8 * 8);
  float* cand_prefix = reinterpret_cast<float*>(cand_keys + p.candidate_cap);
  __shared__ SampleShared sh;
  const int r = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, num_warps = blockDim.x >> 5;

  RowView row;
  row.x = p.logits + static_cast<int64_t>(r) * p.vocab;
  row.vocab = p.vocab;
  row.bitmap = nullptr;
  row.ids = p.penalty_token_ids;
  row.counts = p.penalty_output_counts;
  row.e_begin = row.e_end = 0;
  row.rep = p.repetition_penalty ? p.repetition_penalty[r] : 1.0f;
  row.pres = p.presence_penalty ? p.presence_penalty[r] : 0.0f;
  row.freq = p.frequency_penalty ? p.frequency_penalty[r] : 0.0f;
  row.temp = p.temperature ? p.temperature[r] : 0.0f;
  row.lo = 0;
  row.hi = p.vocab;
  if (p.splits > 1) {
    row.lo = min(p.vocab, static_cast<int64_t>(blockIdx.y) * p.ids_per_split);
    row.hi = min(p.vocab, row.lo + p.ids_per_split);
  }
  if (p.penalty_offsets) {  // never with splits (the launcher's rule)
    row.e_begin = p.penalty_offsets[r];
    row.e_end = p.penalty_offsets[r + 1];
    if (row.e_end > row.e_begin && p.bitmap_words > 0) {
      const int64_t words = (p.vocab + 31) / 32;
      for (int64_t w = threadIdx.x; w < words; w += blockDim.x) bitmap[w] = 0;
      __syncthreads();
      for (int32_t e = row.e_begin + static_cast<int32_t>(threadIdx.x); e < row.e_end; e += blockDim.x) {
        const int32_t id = p.penalty_token_ids[e];
        if (id >= 0 && id < p.vocab) atomicOr(&bitmap[id >> 5], 1u << (id & 31));
      }
      __syncthreads();
      row.bitmap = bitmap;
    }
  }

  // Pass 0: raw log-sum-exp, the (scaled, penalized) max / sum, and the argmax (lowest id on ties).
  float raw_m = -INFINITY, raw_s = 0.0f, zm = -INFINITY, zs = 0.0f, best = -INFINITY;
  int32_t best_id = INT_MAX;
  // Specialized sweeps: greedy rows need no scaled sums, sampling rows no argmax.
  if (row.temp > 0.0f) {
    row.for_each([&](int32_t, float raw, float z) {
      lse_add(raw_m, raw_s, raw);
      lse_add(zm, zs, z);
    });
  } else {
    row.for_each([&](int32_t id, float raw, float z) {
      lse_add(raw_m, raw_s, raw);
      argmax_take(best, best_id, z, id);
    });
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    lse_merge(raw_m, raw_s, __shfl_xor_sync(0xffffffffu, raw_m, o), __shfl_xor_sync(0xffffffffu, raw_s, o));
    lse_merge(zm, zs, __shfl_xor_sync(0xffffffffu, zm, o), __shfl_xor_sync(0xffffffffu, zs, o));
    const float b2 = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t i2 = __shfl_xor_sync(0xffffffffu, best_id, o);
    argmax_take(best, best_id, b2, i2);
  }
  if (lane == 0) {
    sh.red_a[warp] = raw_m;
    sh.red_b[warp] = raw_s;
    sh.red_c[warp] = zm;
    sh.red_d[warp] = zs;
    sh.red_i[warp] = best_id;
    sh.count[warp] = __float_as_uint(best);
  }
  __syncthreads();
  raw_m = -INFINITY, raw_s = 0.0f, zm = -INFINITY, zs = 0.0f, best = -INFINITY, best_id = INT_MAX;
  for (int w = 0; w < num_warps; ++w) {
    lse_merge(raw_m, raw_s, sh.red_a[w], sh.red_b[w]);
    lse_merge(zm, zs, sh.red_c[w], sh.red_d[w]);
    argmax_take(best, best_id, __uint_as_float(sh.count[w]), sh.red_i[w]);
  }
  __syncthreads();
  if (p.splits > 1) {
    float* part = p.split_partials + (static_cast<int64_t>(r) * p.splits + blockIdx.y) * kSamplePartial;
    if (threadIdx.x == 0) {
      part[0] = raw_m;
      part[1] = raw_s;
      part[2] = zm;
      part[3] = zs;
      part[4] = best;
      part[5] = __int_as_float(best_id);
      __threadfence();
      const unsigned done = atomicAdd(p.split_counters + r, 1u);
      sh.last_split = done == static_cast<unsigned>(p.splits - 1);
    }
    __syncthreads();
    if (!sh.last_split) return;
    __threadfence();
    raw_m = -INFINITY, raw_s = 0.0f, zm = -INFINITY, zs = 0.0f, best = -INFINITY, best_id = INT_MAX;
    const float* row_parts = p.split_partials + static_cast<int64_t>(r) * p.splits * kSamplePartial;
    for (int sp = 0; sp < p.splits; ++sp) {  // split order: deterministic
      const float* q = row_parts + sp * kSamplePartial;
      lse_merge(raw_m, raw_s, __ldcg(q), __ldcg(q + 1));
      lse_merge(zm, zs, __ldcg(q + 2), __ldcg(q + 3));
      argmax_take(best, best_id, __ldcg(q + 4), __float_as_int(__ldcg(q + 5)));
    }
    __syncthreads();
    if (threadIdx.x == 0) p.split_counters[r] = 0;  // ready for the next launch
    row.lo = 0;
    row.hi = p.vocab;
  }
  if (best_id == INT_MAX) best_id = 0;  // an all -inf / NaN row

  int32_t chosen = best_id;
  if (row.temp > 0.0f) {
    const int32_t top_k_raw = p.top_k ? p.top_k[r] : 0;
    const int32_t top_k = top_k_raw > 0 && top_k_raw < p.vocab ? top_k_raw : 0;
    const float top_p = p.top_p ? p.top_p[r] : 1.0f;
    const float min_p = p.min_p ? fminf(p.min_p[r], 1.0f) : 0.0f;
    const float u = philox_uniform(p.seeds ? p.seeds[r] : 0, p.steps ? static_cast<uint64_t>(p.steps[r]) : 0);
    bool done = false;
    if (p.candidate_cap > 0) {
      CandidateArgs ca{zm, zs, top_k, top_p, min_p, u, cand_keys, cand_prefix, p.candidate_cap};
      done = sample_from_candidates(row, sh, ca, &chosen);
    }
    if (!done) {
      Cutoff lim{0u, INT_MAX, zs};
      // Members of a value select: the kept elements, weighted by exp(z - zmax).
      auto value_key = [&](int32_t id, float z, uint32_t& k, float& w) {
        k = order_key(z);
        if (!kept(lim, k, id)) return false;
        w = __expf(z - zm);
        return true;
      };
      if (top_k > 0) {
        const SelectResult s = radix_select(row, sh, value_key, false, static_cast<float>(top_k), false);
        lim = cutoff_through(row, sh, lim, s);
      }
      if (top_p < 1.0f) {
        const SelectResult s = radix_select(row, sh, value_key, true, fmaxf(top_p, 0.0f) * lim.mass, false);
        lim = cutoff_through(row, sh, lim, s);
      }
      if (min_p > 0.0f) {
        // Keep w >= min_p (w = p / p_max); all ties of a value share w, so no id cut is needed.
        if (threadIdx.x == 0) sh.min_u32 = 0xffffffffu;
        __syncthreads();
        uint32_t kmin = 0xffffffffu;
        float mass = 0.0f;
        row.for_each([&](int32_t id, float, float z) {
          const uint32_t k = order_key(z);
          const float w = __expf(z - zm);
          if (kept(lim, k, id) && w >= min_p) {
            kmin = min(kmin, k);
            mass += w;
          }
        });
        atomicMin(&sh.min_u32, kmin);
        mass = block_sum(mass, sh.red_a);
        const uint32_t km = sh.min_u32;
        if (km > lim.key) lim = Cutoff{km, INT_MAX, mass};
        __syncthreads();
      }
      const SelectResult s = radix_select(row, sh, value_key, true, u * lim.mass, true);
      chosen = tie_id(row, sh, lim, s.key, s.j);
    }
  }
  if (threadIdx.x == 0) {
    p.out_ids[r] = chosen;
    if (p.out_logprobs) p.out_logprobs[r] = row.x[chosen] - (raw_m + logf(raw_s));
  }
}

}  // namespace anvil::cuda::kern
