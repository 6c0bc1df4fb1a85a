// CpuBackend: the fp32 reference implementation of backend.h. Loops are written for clarity;
// the GEMM and attention are threaded over output rows/heads with the global ThreadPool.
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <unistd.h>
#include <vector>

#include "backend/kv_quant.h"
#include "core/random.h"
#include "core/thread_pool.h"

namespace anvil {
namespace {

Status expect_f32(const Tensor& t, const char* op, const char* what) {
  if (t.dtype != DType::kF32) {
    return invalid_argument(std::string(op) + ": " + what + " must be f32 on the CPU backend, got " +
                            std::string(dtype_name(t.dtype)));
  }
  return Status::ok();
}

// Dot product with 8 independent accumulators so the compiler can vectorize it.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[k + j] * b[k + j];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

void rms_norm_row(const float* x, const float* w, float eps, int64_t h, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < h; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(h) + eps));
  for (int64_t i = 0; i < h; ++i) out[i] = w[i] * (x[i] * inv);
}

size_t kv_offset(const KvCacheLayer& kv, int32_t slot, int32_t head) {
  const int32_t block = slot / kv.block_size;
  const int32_t row = slot % kv.block_size;
  return ((static_cast<size_t>(block) * kv.num_kv_heads + head) * kv.block_size + row) * kv.head_dim;
}

// The CPU cache holds f32, or bytes quantized per KV head (backend.h, KvCacheLayer).
Status check_kv(const KvCacheLayer& kv, const char* op) {
  if (kv_dtype_quantized(kv.dtype)) {
    if (!kv.k_scale || !kv.v_scale) {
      return invalid_argument(std::string(op) + ": a " + std::string(dtype_name(kv.dtype)) +
                              " kv cache needs k_scale and v_scale");
    }
    return Status::ok();
  }
  if (kv.dtype != DType::kF32) {
    return invalid_argument(std::string(op) + ": kv cache dtype " + std::string(dtype_name(kv.dtype)) +
                            " (the CPU backend stores f32, f8e4m3 or i8)");
  }
  return Status::ok();
}

// Row `off` of a cache pool as f32: the pool itself (f32) or `buf` filled with code * scale.
const float* kv_row(const KvCacheLayer& kv, const void* pool, size_t off, float scale, float* buf) {
  if (!kv_dtype_quantized(kv.dtype)) return static_cast<const float*>(pool) + off;
  const uint8_t* q = static_cast<const uint8_t*>(pool) + off;
  for (int32_t i = 0; i < kv.head_dim; ++i) buf[i] = kv_dequantize(kv.dtype, q[i], scale);
  return buf;
}

}  // namespace

Result<void*> CpuBackend::allocate(size_t bytes) {
  size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) return out_of_memory("cpu: cannot allocate " + std::to_string(bytes) + " bytes");
  return p;
}

void CpuBackend::deallocate(void* p) { std::free(p); }

Status CpuBackend::copy_h2d(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  return Status::ok();
}
Status CpuBackend::copy_d2h(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  return Status::ok();
}
Status CpuBackend::copy_d2d(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
  return Status::ok();
}
Status CpuBackend::memset_zero(void* dst, size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
  return Status::ok();
}

Result<MemoryInfo> CpuBackend::memory_info() {
  MemoryInfo info;
  long pages = sysconf(_SC_PHYS_PAGES);
  long avail = sysconf(_SC_AVPHYS_PAGES);
  long page = sysconf(_SC_PAGE_SIZE);
  info.total_bytes = static_cast<size_t>(pages) * static_cast<size_t>(page);
  info.free_bytes = static_cast<size_t>(avail) * static_cast<size_t>(page);
  return info;
}

Status CpuBackend::embedding(const Tensor& ids, const Tensor& table, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(table, "embedding", "table"));
  const int64_t t = ids.numel(), v = table.dim(0), h = table.dim(1);
  const int32_t* id = ids.ptr<int32_t>();
  for (int64_t i = 0; i < t; ++i) {
    if (id[i] < 0 || id[i] >= v) {
      return invalid_argument("embedding: token id " + std::to_string(id[i]) + " is outside the vocabulary [0, " +
                              std::to_string(v) + ")");
    }
    std::memcpy(out.ptr<float>() + i * h, table.ptr<float>() + id[i] * h, h * sizeof(float));
  }
  return Status::ok();
}

Status CpuBackend::rms_norm(const Tensor& x, Tensor residual, const Tensor& weight, float eps, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(x, "rms_norm", "x"));
  const int64_t t = x.dim(0), h = x.dim(1);
  ThreadPool::global().parallel_for(t, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* xr = x.ptr<float>() + i * h;
      float* o = out.ptr<float>() + i * h;
      if (residual.defined()) {
        float* r = residual.ptr<float>() + i * h;
        for (int64_t j = 0; j < h; ++j) r[j] += xr[j];
        rms_norm_row(r, weight.ptr<float>(), eps, h, o);
      } else {
        rms_norm_row(xr, weight.ptr<float>(), eps, h, o);
      }
    }
  });
  return Status::ok();
}

Status CpuBackend::linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(x, "linear", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32(w, "linear", "w"));
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  if (w.dim(1) != k) {
    return invalid_argument("linear: x has K=" + std::to_string(k) + " but w has K=" + std::to_string(w.dim(1)));
  }
  const float* xp = x.ptr<float>();
  const float* wp = w.ptr<float>();
  const float* bp = bias.defined() ? bias.ptr<float>() : nullptr;
  float* op = out.ptr<float>();
  // Threads split N; each walks its weight rows once per block of 4 input rows.
  ThreadPool::global().parallel_for(n, [&](int64_t nb, int64_t ne) {
    for (int64_t m0 = 0; m0 < m; m0 += 4) {
      const int64_t m1 = std::min(m, m0 + 4);
      for (int64_t j = nb; j < ne; ++j) {
        const float* wr = wp + j * k;
        for (int64_t i = m0; i < m1; ++i) op[i * n + j] = dot(xp + i * k, wr, k) + (bp ? bp[j] : 0.0f);
      }
    }
  });
  return Status::ok();
}

Status CpuBackend::rope_kv_write(const Tensor& qkv, const Tensor& q_norm, const Tensor& k_norm, float qk_norm_eps,
                                 const Tensor& inv_freq, float attention_scaling, const BatchView& batch,
                                 Tensor q_out, const KvCacheLayer& kv) {
  ANVIL_RETURN_IF_ERROR(expect_f32(qkv, "rope_kv_write", "qkv"));
  ANVIL_RETURN_IF_ERROR(check_kv(kv, "rope_kv_write"));
  const int64_t d = kv.head_dim, hkv = kv.num_kv_heads;
  const int64_t hq = q_out.dim(1);
  const int64_t row = qkv.dim(1);
  if (row != (hq + 2 * hkv) * d) return invalid_argument("rope_kv_write: qkv row size does not match heads");
  const int64_t half = d / 2;
  const float* freq = inv_freq.ptr<float>();
  auto rotate = [&](float* v, int32_t pos) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * freq[i];
      const float c = std::cos(angle) * attention_scaling, s = std::sin(angle) * attention_scaling;
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  };
  std::vector<float> tmp(d);
  for (int64_t t = 0; t < batch.num_tokens; ++t) {
    const float* src = qkv.ptr<float>() + t * row;
    const int32_t pos = batch.positions[t];
    const int32_t slot = batch.slot_map[t];
    for (int64_t h = 0; h < hq; ++h) {
      float* dst = q_out.ptr<float>() + (t * hq + h) * d;
      if (q_norm.defined()) {
        rms_norm_row(src + h * d, q_norm.ptr<float>(), qk_norm_eps, d, dst);
      } else {
        std::memcpy(dst, src + h * d, d * sizeof(float));
      }
      rotate(dst, pos);
    }
    if (slot < 0) continue;  // padding token: no cache write
    for (int64_t h = 0; h < hkv; ++h) {
      const float* ks = src + (hq + h) * d;
      const float* vs = src + (hq + hkv + h) * d;
      if (k_norm.defined()) {
        rms_norm_row(ks, k_norm.ptr<float>(), qk_norm_eps, d, tmp.data());
      } else {
        std::memcpy(tmp.data(), ks, d * sizeof(float));
      }
      rotate(tmp.data(), pos);
      const size_t off = kv_offset(kv, slot, static_cast<int32_t>(h));
      if (kv_dtype_quantized(kv.dtype)) {
        uint8_t* kq = static_cast<uint8_t*>(kv.k) + off;
        uint8_t* vq = static_cast<uint8_t*>(kv.v) + off;
        for (int64_t i = 0; i < d; ++i) {
          kq[i] = kv_quantize(kv.dtype, tmp[i], kv.k_scale[h]);
          vq[i] = kv_quantize(kv.dtype, vs[i], kv.v_scale[h]);
        }
      } else {
        std::memcpy(static_cast<float*>(kv.k) + off, tmp.data(), d * sizeof(float));
        std::memcpy(static_cast<float*>(kv.v) + off, vs, d * sizeof(float));
      }
    }
  }
  return Status::ok();
}

Status CpuBackend::attention(const Tensor& q, const KvCacheLayer& kv, const BatchView& batch, float scale,
                             Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(q, "attention", "q"));
  ANVIL_RETURN_IF_ERROR(check_kv(kv, "attention"));
  const int64_t hq = q.dim(1), d = q.dim(2), hkv = kv.num_kv_heads;
  const int64_t group = hq / hkv;
  const bool quantized = kv_dtype_quantized(kv.dtype);
  // Work items: (token, head).
  ThreadPool::global().parallel_for(static_cast<int64_t>(batch.num_tokens) * hq, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    std::vector<double> acc(d);
    std::vector<float> row(d);  // a dequantized K or V row
    for (int64_t item = b; item < e; ++item) {
      const int64_t t = item / hq, h = item % hq;
      // Find the sequence of token t.
      int32_t s = 0;
      while (batch.seq_starts[s + 1] <= t) ++s;
      const int32_t q_len = batch.seq_starts[s + 1] - batch.seq_starts[s];
      const int32_t ctx = batch.context_lens[s];
      const int32_t pos = ctx - q_len + static_cast<int32_t>(t - batch.seq_starts[s]);
      const int32_t* table = batch.block_tables + static_cast<int64_t>(s) * batch.max_blocks_per_seq;
      const float* qv = q.ptr<float>() + (t * hq + h) * d;
      const int32_t kvh = static_cast<int32_t>(h / group);
      const float k_scale = quantized ? kv.k_scale[kvh] : 1.0f, v_scale = quantized ? kv.v_scale[kvh] : 1.0f;
      scores.resize(pos + 1);
      float mx = -INFINITY;
      for (int32_t j = 0; j <= pos; ++j) {
        const int32_t slot = table[j / kv.block_size] * kv.block_size + j % kv.block_size;
        scores[j] = dot(qv, kv_row(kv, kv.k, kv_offset(kv, slot, kvh), k_scale, row.data()), d) * scale;
        mx = std::max(mx, scores[j]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int32_t j = 0; j <= pos; ++j) {
        const double p = std::exp(static_cast<double>(scores[j] - mx));
        denom += p;
        const int32_t slot = table[j / kv.block_size] * kv.block_size + j % kv.block_size;
        const float* vv = kv_row(kv, kv.v, kv_offset(kv, slot, kvh), v_scale, row.data());
        for (int64_t i = 0; i < d; ++i) acc[i] += p * vv[i];
      }
      float* o = out.ptr<float>() + (t * hq + h) * d;
      for (int64_t i = 0; i < d; ++i) o[i] = static_cast<float>(acc[i] / denom);
    }
  });
  return Status::ok();
}

Status CpuBackend::act_mul(const Tensor& gate_up, Activation act, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(gate_up, "act_mul", "gate_up"));
  const int64_t t = gate_up.dim(0), f = gate_up.dim(1) / 2;
  for (int64_t i = 0; i < t; ++i) {
    const float* g = gate_up.ptr<float>() + i * 2 * f;
    const float* u = g + f;
    float* o = out.ptr<float>() + i * f;
    for (int64_t j = 0; j < f; ++j) {
      float a = 0.0f;
      switch (act) {
        case Activation::kSilu: a = g[j] / (1.0f + std::exp(-g[j])); break;
        case Activation::kGeluTanh: {
          const float x = g[j];
          a = 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
          break;
        }
      }
      o[j] = a * u[j];
    }
  }
  return Status::ok();
}

Status CpuBackend::gather_rows(const Tensor& x, const Tensor& rows, Tensor out) {
  const size_t row_bytes = dtype_bytes_for(x.dtype, static_cast<size_t>(x.row_size()));
  const int32_t* r = rows.ptr<int32_t>();
  for (int64_t i = 0; i < rows.numel(); ++i) {
    if (r[i] < 0 || r[i] >= x.dim(0)) return invalid_argument("gather_rows: row index out of range");
    std::memcpy(static_cast<uint8_t*>(out.data) + i * row_bytes, static_cast<const uint8_t*>(x.data) + r[i] * row_bytes,
                row_bytes);
  }
  return Status::ok();
}

int32_t sample_row_reference(float* logits, int64_t vocab, const SamplingBatch& p, int32_t row, float* logprob) {
  // Raw log-softmax normalizer, for the reported log-probability.
  float raw_max = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) raw_max = std::max(raw_max, logits[i]);
  double raw_sum = 0;
  for (int64_t i = 0; i < vocab; ++i) raw_sum += std::exp(static_cast<double>(logits[i] - raw_max));
  const double raw_lse = raw_max + std::log(raw_sum);
  const std::vector<float> raw(logits, logits + vocab);  // logits are modified in place below
  if (p.any_bias && p.bias_offsets) {
    for (int32_t e = p.bias_offsets[row]; e < p.bias_offsets[row + 1]; ++e) {
      const int32_t id = p.bias_token_ids[e];
      if (id < 0 || id >= vocab) continue;
      logits[id] += p.bias_values[e];
    }
  }

  if (p.any_penalty && p.penalty_offsets) {
    const float rep = p.repetition_penalty ? p.repetition_penalty[row] : 1.0f;
    const float pres = p.presence_penalty ? p.presence_penalty[row] : 0.0f;
    const float freq = p.frequency_penalty ? p.frequency_penalty[row] : 0.0f;
    for (int32_t e = p.penalty_offsets[row]; e < p.penalty_offsets[row + 1]; ++e) {
      const int32_t id = p.penalty_token_ids[e];
      if (id < 0 || id >= vocab) continue;
      float& l = logits[id];
      if (rep != 1.0f) l = l > 0 ? l / rep : l * rep;
      const int32_t count = p.penalty_output_counts[e];
      l -= pres * (count > 0 ? 1.0f : 0.0f) + freq * static_cast<float>(count);
    }
  }

  const float temp = p.temperature ? p.temperature[row] : 0.0f;
  int32_t chosen = 0;
  if (temp <= 0.0f) {
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[chosen]) chosen = static_cast<int32_t>(i);
  } else {
    float mx = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) {
      logits[i] /= temp;
      mx = std::max(mx, logits[i]);
    }
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::vector<double> prob(vocab);
    for (int64_t i = 0; i < vocab; ++i) prob[i] = std::exp(static_cast<double>(logits[i] - mx));
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return prob[a] > prob[b]; });
    int64_t keep = vocab;
    const int32_t top_k = p.top_k ? p.top_k[row] : 0;
    if (top_k > 0 && top_k < keep) keep = top_k;
    // Renormalize over the kept set, then top-p: keep while the exclusive prefix sum < top_p.
    double kept_total = 0;
    for (int64_t i = 0; i < keep; ++i) kept_total += prob[order[i]];
    const float top_p = p.top_p ? p.top_p[row] : 1.0f;
    if (top_p < 1.0f) {
      double prefix = 0;
      int64_t i = 0;
      for (; i < keep; ++i) {
        if (prefix >= static_cast<double>(top_p) * kept_total) break;
        prefix += prob[order[i]];
      }
      keep = std::max<int64_t>(1, i);
    }
    const float min_p = p.min_p ? p.min_p[row] : 0.0f;
    if (min_p > 0.0f) {
      const double threshold = static_cast<double>(min_p) * prob[order[0]];
      int64_t i = 1;
      while (i < keep && prob[order[i]] >= threshold) ++i;
      keep = i;
    }
    double sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += prob[order[i]];
    const double u = static_cast<double>(philox_uniform(p.seeds ? p.seeds[row] : 0, p.steps ? p.steps[row] : 0)) * sum;
    double cum = 0;
    chosen = order[keep - 1];
    for (int64_t i = 0; i < keep; ++i) {
      cum += prob[order[i]];
      if (cum > u) {
        chosen = order[i];
        break;
      }
    }
  }
  if (logprob) *logprob = static_cast<float>(raw[chosen] - raw_lse);
  return chosen;
}

Status CpuBackend::sample(Tensor logits, const SamplingBatch& params, Tensor out_ids, Tensor out_logprobs) {
  ANVIL_RETURN_IF_ERROR(expect_f32(logits, "sample", "logits"));
  const int64_t vocab = logits.dim(1);
  for (int32_t r = 0; r < params.num_rows; ++r) {
    float lp = 0;
    out_ids.ptr<int32_t>()[r] = sample_row_reference(logits.ptr<float>() + r * vocab, vocab, params, r, &lp);
    if (out_logprobs.defined()) out_logprobs.ptr<float>()[r] = lp;
  }
  return Status::ok();
}

}  // namespace anvil
