// collect_calibration_stats: the unquantized model runs one calibration sequence per step with
// the projection inputs dumped (ModelRunner::set_dump_names); each dump is folded into running
// statistics, then the KV cache blocks the sequence wrote are read back for |K| / |V| maxima.
#include "build/quantize/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>

#include "backend/cpu/cpu_backend.h"
#include "build/quantize/dense_linalg.h"
#include "core/logging.h"
#include "core/thread_pool.h"
#include "runtime/model_runner.h"
#include "runtime/weights.h"

namespace anvil {
namespace {

constexpr int32_t kBlockSize = 16;

// Running statistics of one projection input.
struct Accumulator {
  LinearInputStats stats;
  std::vector<double> abs_sum;  // [k]
  int64_t rows_per_sequence = 0;
};

void accumulate(const float* x, int64_t t, int64_t k, const CalibrationNeeds& needs, Accumulator* acc) {
  LinearInputStats& s = acc->stats;
  for (int64_t r = 0; r < t; ++r) {
    const float* row = x + r * k;
    for (int64_t c = 0; c < k; ++c) {
      const float a = std::fabs(row[c]);
      s.abs_max[c] = std::max(s.abs_max[c], a);
      acc->abs_sum[c] += a;
    }
  }
  s.tokens += t;
  if (needs.hessian) add_to_hessian(x, t, k, &s.hessian);
  if (acc->rows_per_sequence > 0) {
    // Evenly spaced rows of this sequence, up to the per-sequence quota and the overall bound.
    const int64_t have = static_cast<int64_t>(s.sample_rows.size()) / k;
    const int64_t take = std::min({acc->rows_per_sequence, t, needs.sample_rows - have});
    for (int64_t i = 0; i < take; ++i) {
      const int64_t r = i * t / take;
      s.sample_rows.insert(s.sample_rows.end(), x + r * k, x + (r + 1) * k);
    }
  }
}

// Median of a copy of v.
float median(std::vector<float> v) {
  if (v.empty()) return 0.0f;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// One log line per projection input; warnings for a dead input or an extreme channel.
void log_input_stats(const std::string& weight, const LinearInputStats& s) {
  const auto top = std::max_element(s.abs_max.begin(), s.abs_max.end());
  const float mx = top == s.abs_max.end() ? 0.0f : *top;
  const float med = median(s.abs_max);
  float mean = 0.0f;
  for (float m : s.abs_mean) mean += m;
  mean /= static_cast<float>(std::max<size_t>(1, s.abs_mean.size()));
  ANVIL_LOG_INFO("calib %-28s |x| max %.4g (channel %lld), channel-max median %.4g, mean %.4g", weight.c_str(), mx,
                 static_cast<long long>(top - s.abs_max.begin()), med, mean);
  if (!std::isfinite(mx)) {
    ANVIL_LOG_WARN("calib %s: the input holds non-finite values; the model itself overflows on this text", weight.c_str());
  } else if (mx == 0.0f) {
    ANVIL_LOG_WARN("calib %s: the input is all zeros over %lld tokens; its scales would be meaningless (all ones)",
                   weight.c_str(), static_cast<long long>(s.tokens));
  } else if (med > 0.0f && mx / med > 1000.0f) {
    ANVIL_LOG_WARN("calib %s: channel %lld reaches %.4g, %.0fx the median channel max; per-tensor or per-token "
                   "activation scales will lose the other channels (w8a8-sq / int4-awq handle this)",
                   weight.c_str(), static_cast<long long>(top - s.abs_max.begin()), mx, mx / med);
  }
}

std::string join(const std::vector<float>& v) {
  std::string s;
  char buf[32];
  for (size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%s%.3g", i ? " " : "", v[i]);
    s += buf;
  }
  return s;
}

}  // namespace

void add_to_hessian(const float* x, int64_t t, int64_t k, std::vector<float>* hessian) {
  // H += X^T X as one GEMM (dense_linalg.h: C -= A B with A = -X^T). Its tiles are fixed by the
  // shapes, not the thread count, so the sums are the same on every machine size.
  thread_local std::vector<float> xt;  // -X^T [k, t], reused across projections
  xt.resize(static_cast<size_t>(k * t));
  for (int64_t r = 0; r < t; ++r)
    for (int64_t c = 0; c < k; ++c) xt[static_cast<size_t>(c * t + r)] = -x[r * k + c];
  quant_detail::gemm_sub(hessian->data(), k, xt.data(), t, x, k, k, k, t);
}

void symmetrize_lower(std::vector<float>* hessian, int64_t k) {
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < i; ++j) (*hessian)[j * k + i] = (*hessian)[i * k + j];
}

std::vector<std::vector<int32_t>> split_calibration_tokens(const std::vector<int32_t>& ids, int32_t samples, int32_t max_len) {
  std::vector<std::vector<int32_t>> out;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n == 0 || samples <= 0 || max_len <= 0) return out;
  const int64_t min_len = std::min<int64_t>(16, max_len);
  if (n < min_len) return {ids};
  const int64_t len = std::clamp<int64_t>(n / samples, min_len, max_len);
  const int64_t count = std::min<int64_t>(samples, n / len);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t start = count > 1 ? i * (n - len) / (count - 1) : 0;  // first at 0, last ending at n
    out.emplace_back(ids.begin() + start, ids.begin() + start + len);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> projection_inputs(const Graph& g) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Node& n : g.nodes()) {
    if (n.op != OpKind::kLinear || n.inputs.size() < 2 || n.inputs[1] < 0) continue;
    const std::string& w = g.tensor(n.inputs[1]).name;
    // Layer projections only: "layers.{i}.attn.qkv.weight" and friends, never lm_head / embeddings.
    static const char* kSuffixes[] = {".attn.qkv.weight", ".attn.o.weight", ".mlp.gate_up.weight", ".mlp.down.weight"};
    bool match = false;
    for (const char* s : kSuffixes) {
      const std::string suffix(s);
      match = match || (w.rfind("layers.", 0) == 0 && w.size() > suffix.size() &&
                        w.compare(w.size() - suffix.size(), suffix.size(), suffix) == 0);
    }
    if (match) out.emplace_back(w, g.tensor(n.inputs[0]).name);
  }
  return out;
}

Result<CalibrationRun> CalibrationRun::create(const ModelDefinition& def, const Checkpoint& ckpt, Backend* device,
                                              const CalibrationData& data) {
  const ModelSpec& spec = def.spec;
  const int64_t max_pos = spec.max_position_embeddings > 0 ? spec.max_position_embeddings : int64_t{1} << 30;
  CalibrationRun run;
  int64_t truncated = 0;
  for (const std::vector<int32_t>& s : data.sequences) {
    if (s.empty()) continue;
    for (int32_t id : s) {
      if (id < 0 || id >= spec.vocab_size) {
        return invalid_argument("calibration text (" + data.source + ") holds token id " + std::to_string(id) +
                                ", outside the model's vocabulary of " + std::to_string(spec.vocab_size) +
                                " (was it tokenized with another model's tokenizer?)");
      }
    }
    if (static_cast<int64_t>(s.size()) > max_pos) ++truncated;
    run.seqs_.emplace_back(s.begin(), s.begin() + std::min<int64_t>(max_pos, static_cast<int64_t>(s.size())));
  }
  if (run.seqs_.empty()) return invalid_argument("calibration text (" + data.source + ") gave no tokens; pass --calib FILE with text in it");
  if (truncated > 0) {
    ANVIL_LOG_WARN("calibration: %lld sequences cut to the model's %lld positions", static_cast<long long>(truncated),
                   static_cast<long long>(max_pos));
  }
  int32_t longest = 0;
  for (const auto& s : run.seqs_) {
    longest = std::max(longest, static_cast<int32_t>(s.size()));
    run.tokens_ += static_cast<int64_t>(s.size());
  }

  run.backend_ = device;
  if (!run.backend_) {
    run.own_backend_ = std::make_unique<CpuBackend>();
    run.backend_ = run.own_backend_.get();
  }
  ANVIL_LOG_INFO("calibration: %zu sequences, %lld tokens (%s) on %s", run.seqs_.size(), static_cast<long long>(run.tokens_),
                 data.source.c_str(), run.backend_->name().c_str());
  ANVIL_ASSIGN_OR_RETURN(WeightStore weights, WeightStore::load(def, ckpt, run.backend_));
  for (const auto& [weight, input] : projection_inputs(def.graph)) {
    (void)input;
    run.projection_weights_[weight] = weights.get(weight);  // device memory stays put when the store moves
  }
  RunnerOptions ro;
  ro.max_num_tokens = longest;
  ro.max_num_seqs = 1;
  ro.max_logit_rows = 1;
  ro.max_seq_len = (longest + kBlockSize - 1) / kBlockSize * kBlockSize;
  ro.block_size = kBlockSize;
  ro.num_kv_blocks = ro.max_seq_len / kBlockSize;
  ro.use_graphs = false;
  ANVIL_ASSIGN_OR_RETURN(run.runner_, ModelRunner::create(run.backend_, def, std::move(weights), ro));
  return run;
}

Status CalibrationRun::run(const std::set<std::string>& dump_names,
                           const std::function<Status(const std::vector<int32_t>& seq)>& after_each, bool stop_after_dumps) {
  runner_->set_dump_names(dump_names, stop_after_dumps);
  for (const std::vector<int32_t>& seq : seqs_) {
    const int32_t t = static_cast<int32_t>(seq.size());
    StepInput s;
    s.token_ids = seq;
    s.seq_starts = {0, t};
    s.context_lens = {t};
    s.logit_rows = {t - 1};
    std::vector<int32_t> table;
    for (int32_t b = 0; b * kBlockSize < t; ++b) table.push_back(b);
    s.block_tables = {table};
    for (int32_t p = 0; p < t; ++p) {
      s.positions.push_back(p);
      s.slot_map.push_back(p);
    }
    Tensor logits;
    ANVIL_RETURN_IF_ERROR(runner_->forward(s, &logits).with_context("calibration forward"));
    ANVIL_RETURN_IF_ERROR(backend_->synchronize());
    ANVIL_RETURN_IF_ERROR(after_each(seq));
  }
  return Status::ok();
}

Result<const float*> CalibrationRun::dumped(const std::string& name) const {
  auto d = runner_->dumps().find(name);
  if (d == runner_->dumps().end()) return internal_error("calibration: tensor " + name + " was not dumped");
  return d->second.data.data();
}

Status CalibrationRun::set_projection_weight(const std::string& weight, const std::vector<float>& values) {
  auto it = projection_weights_.find(weight);
  if (it == projection_weights_.end() || !it->second.data) {
    return internal_error("calibration: no projection weight " + weight + " to replace");
  }
  const Tensor& t = it->second;
  if (static_cast<int64_t>(values.size()) != t.numel()) {
    return internal_error("calibration: " + weight + " has " + std::to_string(t.numel()) + " values, got " +
                          std::to_string(values.size()));
  }
  std::vector<uint8_t> bytes(dtype_bytes_for(t.dtype, values.size()));
  convert_from_f32(t.dtype, values.data(), bytes.data(), values.size());
  ANVIL_RETURN_IF_ERROR(backend_->copy_h2d(t.data, bytes.data(), bytes.size()));
  return backend_->synchronize();
}

Result<CalibrationStats> collect_calibration_stats(const ModelDefinition& def, const Checkpoint& ckpt, Backend* device,
                                                   const CalibrationData& data, const CalibrationNeeds& needs) {
  const ModelSpec& spec = def.spec;
  ANVIL_ASSIGN_OR_RETURN(CalibrationRun run, CalibrationRun::create(def, ckpt, device, data));
  const int64_t num_seqs = static_cast<int64_t>(run.sequences().size());
  Backend* backend = run.backend();

  // Which dumped tensor feeds which projection (qkv <- attn_norm, o <- attn.core, ...).
  const std::vector<std::pair<std::string, std::string>> inputs = projection_inputs(def.graph);
  std::map<std::string, Accumulator> acc;
  std::set<std::string> dump_names;
  if (needs.linear_inputs) {
    for (const auto& [weight, input] : inputs) {
      const int id = def.graph.find(input);
      const int64_t k = def.graph.tensor(id).shape.numel();
      Accumulator& a = acc[weight];
      a.stats.k = k;
      a.stats.abs_max.assign(static_cast<size_t>(k), 0.0f);
      a.abs_sum.assign(static_cast<size_t>(k), 0.0);
      if (needs.hessian) a.stats.hessian.assign(static_cast<size_t>(k * k), 0.0f);
      if (needs.sample_rows > 0) a.rows_per_sequence = (needs.sample_rows + num_seqs - 1) / num_seqs;
      dump_names.insert(input);
    }
  }

  CalibrationStats out;
  const int64_t layers = spec.num_layers, kv_heads = spec.num_kv_heads, head_dim = spec.head_dim;
  if (needs.kv) {
    out.k_abs_max.assign(static_cast<size_t>(layers), std::vector<float>(static_cast<size_t>(kv_heads), 0.0f));
    out.v_abs_max = out.k_abs_max;
  }
  std::vector<uint8_t> raw;
  std::vector<float> vals;
  ModelRunner& runner = run.runner();
  ANVIL_RETURN_IF_ERROR(run.run(dump_names, [&](const std::vector<int32_t>& seq) -> Status {
    const int32_t t = static_cast<int32_t>(seq.size());
    for (const auto& [weight, input] : inputs) {
      auto a = acc.find(weight);
      if (a == acc.end()) continue;
      ANVIL_ASSIGN_OR_RETURN(const float* x, run.dumped(input));
      accumulate(x, t, a->second.stats.k, needs, &a->second);
    }
    if (needs.kv) {
      // Slots 0..t-1: block p / 16, row p % 16 of [num_blocks, kv_heads, 16, head_dim].
      for (int64_t l = 0; l < layers; ++l) {
        const KvCacheLayer& kv = runner.kv_cache().layer(static_cast<int>(l));
        const size_t elems = static_cast<size_t>(kv.num_blocks) * kv.num_kv_heads * kv.block_size * kv.head_dim;
        for (int which = 0; which < 2; ++which) {
          raw.resize(dtype_bytes_for(kv.dtype, elems));
          ANVIL_RETURN_IF_ERROR(backend->copy_d2h(raw.data(), which == 0 ? kv.k : kv.v, raw.size()));
          vals.resize(elems);
          convert_to_f32(kv.dtype, raw.data(), vals.data(), elems);
          std::vector<float>& amax = (which == 0 ? out.k_abs_max : out.v_abs_max)[static_cast<size_t>(l)];
          for (int32_t p = 0; p < t; ++p) {
            for (int64_t h = 0; h < kv_heads; ++h) {
              const float* x = vals.data() + ((static_cast<int64_t>(p / kv.block_size) * kv_heads + h) * kv.block_size +
                                               p % kv.block_size) * head_dim;
              for (int64_t d = 0; d < head_dim; ++d) amax[static_cast<size_t>(h)] = std::max(amax[static_cast<size_t>(h)], std::fabs(x[d]));
            }
          }
        }
      }
    }
    return Status::ok();
  }));

  out.tokens = run.tokens();
  for (auto& [weight, a] : acc) {
    LinearInputStats& s = a.stats;
    s.abs_mean.resize(static_cast<size_t>(s.k));
    for (int64_t c = 0; c < s.k; ++c) s.abs_mean[c] = static_cast<float>(a.abs_sum[c] / static_cast<double>(s.tokens));
    if (needs.hessian) symmetrize_lower(&s.hessian, s.k);
    out.linear_inputs[weight] = std::move(s);
  }
  // The build log: every projection input in graph order, then each layer's K/V maxima.
  for (const auto& [weight, input] : inputs) {
    auto it = out.linear_inputs.find(weight);
    if (it != out.linear_inputs.end()) log_input_stats(weight, it->second);
  }
  for (size_t l = 0; l < out.k_abs_max.size(); ++l) {
    ANVIL_LOG_INFO("calib layers.%zu kv |K| max per head [%s], |V| max [%s]", l, join(out.k_abs_max[l]).c_str(),
                   join(out.v_abs_max[l]).c_str());
    for (int which = 0; which < 2; ++which) {
      const std::vector<float>& m = which == 0 ? out.k_abs_max[l] : out.v_abs_max[l];
      for (size_t h = 0; h < m.size(); ++h) {
        if (!(m[h] > 0.0f) || !std::isfinite(m[h])) {
          ANVIL_LOG_WARN("calib layers.%zu: %s head %zu max is %g; its KV scale falls back to 1", l, which == 0 ? "K" : "V", h, m[h]);
        }
      }
    }
  }
  return out;
}

}  // namespace anvil
