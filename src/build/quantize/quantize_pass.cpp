// QuantizePass: plan (check options, compute SmoothQuant / AWQ factors and the KV scales), rewrite
// the graph, then produce each engine weight from its table entry's f32 values.
#include "build/quantize/quantize_pass.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "build/passes/dead_code.h"
#include "build/quantize/awq.h"
#include "build/quantize/gptq.h"
#include "build/quantize/int4_group_codec.h"
#include "build/quantize/rtn.h"
#include "build/quantize/sequential.h"
#include "build/quantize/smoothquant.h"
#include "core/logging.h"
#include "runtime/weights.h"

namespace anvil {
namespace {

std::string base_name(const std::string& weight) {
  const std::string suffix = ".weight";
  return weight.size() > suffix.size() && weight.compare(weight.size() - suffix.size(), suffix.size(), suffix) == 0
             ? weight.substr(0, weight.size() - suffix.size())
             : weight;
}

template <typename T>
std::vector<uint8_t> to_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Where a projection's input comes from, and so where its 1/s can be folded.
struct Producer {
  enum Kind { kNone, kNorm, kActMul } kind = kNone;
  int norm_weight = -1;     // kNorm: the RMSNorm weight tensor
  int gate_up_weight = -1;  // kActMul: the linear producing gate_up
  int gate_up_bias = -1;
};

Producer producer_of(const Graph& g, int tensor) {
  Producer p;
  int consumers = 0;
  for (const Node& n : g.nodes())
    for (int in : n.inputs) consumers += in == tensor;
  if (consumers != 1) return p;  // a fold would change another reader too
  for (const Node& n : g.nodes()) {
    if (n.outputs.empty() || n.outputs[0] != tensor) continue;
    if (n.op == OpKind::kRmsNorm) {
      p.kind = Producer::kNorm;
      p.norm_weight = n.inputs[2];
    } else if (n.op == OpKind::kActMul) {
      for (const Node& m : g.nodes()) {
        if (m.op == OpKind::kLinear && !m.outputs.empty() && m.outputs[0] == n.inputs[0]) {
          int uses = 0;
          for (const Node& u : g.nodes())
            for (int in : u.inputs) uses += in == n.inputs[0];
          if (uses != 1) return p;
          p.kind = Producer::kActMul;
          p.gate_up_weight = m.inputs[1];
          p.gate_up_bias = m.inputs[2];
        }
      }
    }
  }
  return p;
}

// min / median / max of the scales, with a warning when they look wrong.
void report_scales(const std::string& name, std::vector<float> s, double rel_error, const char* format) {
  if (s.empty()) return;
  std::sort(s.begin(), s.end());
  const float lo = s.front(), med = s[s.size() / 2], hi = s.back();
  ANVIL_LOG_INFO("quant %-28s %s: relative error %.3f%%, scales min %.3g median %.3g max %.3g", name.c_str(), format,
                 100.0 * rel_error, lo, med, hi);
  if (lo == 1.0f && hi == 1.0f) {
    ANVIL_LOG_WARN("quant %s: every scale is 1 (an all-zero weight?); check the checkpoint", name.c_str());
  } else if (med > 0.0f && hi / med > 1000.0f) {
    ANVIL_LOG_WARN("quant %s: a scale %.3g is %.0fx the median; one outlier row/group dominates its range", name.c_str(),
                   hi, hi / med);
  }
  if (rel_error > 0.25) ANVIL_LOG_WARN("quant %s: relative weight error %.1f%% is unusually large", name.c_str(), 100.0 * rel_error);
}

}  // namespace

Result<QuantFormat> quant_format_of(QuantMethod m) {
  switch (m) {
    case QuantMethod::kNone: return invalid_argument("quant method none has no quantized format");
    case QuantMethod::kInt8WeightOnly: return QuantFormat::kInt8WeightOnly;
    case QuantMethod::kInt4WeightOnly:
    case QuantMethod::kInt4Awq:
    case QuantMethod::kInt4Gptq: return QuantFormat::kInt4Group;
    case QuantMethod::kW8A8SmoothQuant: return QuantFormat::kInt8W8A8;
    case QuantMethod::kFp8:
    case QuantMethod::kFp8Gptq: return QuantFormat::kFp8W8A8;
  }
  return invalid_argument("unknown quant method");
}

CalibrationNeeds calibration_needs(const EngineBuildOptions& o) {
  CalibrationNeeds n;
  switch (o.quant) {
    case QuantMethod::kNone:
    case QuantMethod::kInt8WeightOnly:
    case QuantMethod::kInt4WeightOnly:
    case QuantMethod::kFp8: break;
    case QuantMethod::kInt4Awq:
      n.linear_inputs = true;
      n.sample_rows = kAwqSampleRows;
      break;
    case QuantMethod::kInt4Gptq:
    case QuantMethod::kFp8Gptq: n.linear_inputs = true; break;  // Hessians: quantize_sequentially
    case QuantMethod::kW8A8SmoothQuant: n.linear_inputs = true; break;
  }
  n.kv = o.kv_cache_dtype == DType::kF8E4M3 || o.kv_cache_dtype == DType::kI8;
  return n;
}

bool quantizes_sequentially(QuantMethod m) { return m == QuantMethod::kInt4Gptq || m == QuantMethod::kFp8Gptq; }

Result<SequentialQuantization> quantize_gptq_sequentially(const ModelDefinition& def, const Checkpoint& ckpt,
                                                          Backend* device, const CalibrationData& calib,
                                                          const EngineBuildOptions& o) {
  if (!quantizes_sequentially(o.quant)) {
    return internal_error(std::string("--quant ") + quant_method_name(o.quant) + " does not quantize sequentially");
  }
  const int32_t group_size = o.group_size;
  const bool int4 = o.quant == QuantMethod::kInt4Gptq;
  for (const auto& [weight, input] : projection_inputs(def.graph)) {
    if (!int4) break;
    (void)input;
    const WeightSource* ws = find_weight_source(def, weight);
    if (ws && ws->shape.rank == 2 && ws->shape[1] % group_size != 0) {
      // plan() words this error with the group sizes that fit; let it.
      return SequentialQuantization{};
    }
  }
  // int4: AWQ scales where 1/s folds into the input's producer (as plan folds int4-awq's).
  // down_of[gate_up] = the down_proj whose 1/s its up rows absorb.
  std::map<std::string, Producer> producer;
  std::map<std::string, std::string> down_of;
  if (int4) {
    for (const auto& [weight, input] : projection_inputs(def.graph)) {
      const Producer prod = producer_of(def.graph, def.graph.find(input));
      if (prod.kind == Producer::kNone) continue;
      producer[weight] = prod;
      if (prod.kind == Producer::kActMul) down_of[def.graph.tensor(prod.gate_up_weight).name] = weight;
    }
  }
  SequentialQuantization out;
  // The weight a projection is quantized from: its own W with, for gate_up, the up rows divided
  // by down's scales, then the columns multiplied by its own scales.
  auto scaled_weight = [&](const std::string& weight, std::vector<float> w, int64_t k, bool own_scales) {
    if (auto d = down_of.find(weight); d != down_of.end()) {
      const std::vector<float>& sd = out.column_scales.at(d->second);
      const int64_t f = static_cast<int64_t>(sd.size());
      for (int64_t j = 0; j < f; ++j)
        for (int64_t c = 0; c < k; ++c) w[(f + j) * k + c] /= sd[j];
    }
    if (auto s = out.column_scales.find(weight); own_scales && s != out.column_scales.end()) {
      const int64_t n = static_cast<int64_t>(w.size()) / k;
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c) w[r * k + c] *= s->second[c];
    }
    return w;
  };
  LayerPlanner plan_layer = nullptr;
  if (int4) {
    plan_layer = [&](int64_t, const std::map<std::string, const LinearInputStats*>& inputs) -> Status {
      // down first: gate_up's search sees its up rows divided by down's scales.
      std::vector<std::string> order;
      for (const auto& [weight, st] : inputs)
        if (producer.count(weight) && producer.at(weight).kind == Producer::kActMul) order.push_back(weight);
      for (const auto& [weight, st] : inputs)
        if (producer.count(weight) && producer.at(weight).kind == Producer::kNorm) order.push_back(weight);
      for (const std::string& weight : order) {
        const WeightSource* ws = find_weight_source(def, weight);
        if (!ws || ws->shape.rank != 2) return internal_error("AWQ: " + weight + " has no 2-D table entry");
        const int64_t n = ws->shape[0], k = ws->shape[1];
        ANVIL_ASSIGN_OR_RETURN(std::vector<float> w0, gather_weight_f32(def, *ws, ckpt, nullptr));
        const std::vector<float> w = scaled_weight(weight, std::move(w0), k, /*own_scales=*/false);
        Result<AwqScaleSearch> r = awq_search_hessian(w.data(), n, k, group_size, *inputs.at(weight));
        if (!r.is_ok()) return r.status().with_context("AWQ scale search for " + weight);
        ANVIL_LOG_INFO("awq %-28s alpha %.2f: output error %.4g (rtn) -> %.4g", weight.c_str(), r->alpha, r->error_rtn,
                       r->error_best);
        out.column_scales[weight] = std::move(r->scales);
      }
      return Status::ok();
    };
  }
  auto quantize = [&](const std::string& weight, const std::vector<float>& w, int64_t n, int64_t k,
                      const LinearInputStats& input) -> Result<SequentialProjection> {
    SequentialProjection p;
    auto s = out.column_scales.find(weight);
    const bool folded = s != out.column_scales.end() || down_of.count(weight);
    // W' = W diag(s) (gate_up: its up rows divided by down's scales) against the input x / s.
    const std::vector<float> ws = folded ? scaled_weight(weight, w, k, /*own_scales=*/true) : w;
    if (!int4) {
      ANVIL_ASSIGN_OR_RETURN(p.q, gptq_quantize_fp8(w.data(), n, k, input.hessian, GptqOptions{}));
    } else if (s == out.column_scales.end()) {
      ANVIL_ASSIGN_OR_RETURN(p.q, gptq_quantize_int4(ws.data(), n, k, group_size, input.hessian, GptqOptions{}));
    } else {
      // The scaled input's Hessian: H' = diag(1/s) H diag(1/s).
      std::vector<float> h = input.hessian;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) h[i * k + j] /= s->second[i] * s->second[j];
      ANVIL_ASSIGN_OR_RETURN(p.q, gptq_quantize_int4(ws.data(), n, k, group_size, h, GptqOptions{}));
      if (producer.at(weight).kind == Producer::kNorm) {
        // AWQ's search measured its scales with RTN; GPTQ may do better without them. Keep the
        // better of the two by GPTQ's own objective (relative damping commutes with the column
        // scaling, so both errors are in one measure). down_proj keeps its scales: gate_up, in
        // front of it, has already absorbed them.
        const std::vector<float> wu = scaled_weight(weight, w, k, /*own_scales=*/false);
        ANVIL_ASSIGN_OR_RETURN(QuantizedLinear plain, gptq_quantize_int4(wu.data(), n, k, group_size, input.hessian, GptqOptions{}));
        const double e_scaled = gptq_damped_output_error(ws.data(), dequantize(p.q).data(), n, k, h, GptqOptions{});
        const double e_plain = gptq_damped_output_error(wu.data(), dequantize(plain).data(), n, k, input.hessian, GptqOptions{});
        ANVIL_LOG_INFO("awq+gptq %-28s error scaled %.4g plain %.4g", weight.c_str(), e_scaled, e_plain);
        if (e_plain < e_scaled) {
          p.q = std::move(plain);
          out.column_scales.erase(s);
          s = out.column_scales.end();
        }
      }
    }
    if (!folded) return p;
    // Back to the checkpoint's coordinates for the calibration model: undo the column scales and
    // (gate_up) the up rows' division.
    p.runtime_weight = dequantize(p.q);
    if (s != out.column_scales.end()) {
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c) p.runtime_weight[r * k + c] /= s->second[c];
    }
    if (auto d = down_of.find(weight); d != down_of.end()) {
      const std::vector<float>& sd = out.column_scales.at(d->second);
      const int64_t f = static_cast<int64_t>(sd.size());
      for (int64_t j = 0; j < f; ++j)
        for (int64_t c = 0; c < k; ++c) p.runtime_weight[(f + j) * k + c] *= sd[j];
    }
    return p;
  };
  ANVIL_ASSIGN_OR_RETURN(out.weights, quantize_sequentially(def, ckpt, device, calib, quantize, plan_layer));
  return out;
}

Result<QuantizePass> QuantizePass::plan(const ModelDefinition& def, const Checkpoint& ckpt, const EngineBuildOptions& o,
                                        const CalibrationStats* stats, SequentialQuantization sequential) {
  QuantizePass p;
  p.sequential_ = std::move(sequential.weights);
  if (!p.sequential_.empty() && !quantizes_sequentially(o.quant)) {
    return internal_error(std::string("quantize pass: --quant ") + quant_method_name(o.quant) + " takes no sequentially quantized weights");
  }
  p.method_ = o.quant;
  p.group_size_ = o.group_size;
  p.stats_ = stats;
  const CalibrationNeeds needs = calibration_needs(o);
  if (needs.any() && !stats) return internal_error("quantize pass: calibration statistics missing");

  if (needs.kv) {
    const float qmax = o.kv_cache_dtype == DType::kF8E4M3 ? 448.0f : 127.0f;
    const int64_t layers = def.spec.num_layers, heads = def.spec.num_kv_heads;
    if (static_cast<int64_t>(stats->k_abs_max.size()) != layers || static_cast<int64_t>(stats->v_abs_max.size()) != layers) {
      return internal_error("quantize pass: calibration has no K/V maxima for every layer");
    }
    for (int64_t l = 0; l < layers; ++l) {
      for (int which = 0; which < 2; ++which) {
        const std::vector<float>& amax = (which == 0 ? stats->k_abs_max : stats->v_abs_max)[static_cast<size_t>(l)];
        if (static_cast<int64_t>(amax.size()) != heads) return internal_error("quantize pass: K/V maxima have the wrong head count");
        std::vector<float> scale(static_cast<size_t>(heads));
        for (int64_t h = 0; h < heads; ++h) {
          const float a = amax[static_cast<size_t>(h)];
          scale[static_cast<size_t>(h)] = a > 0.0f && std::isfinite(a) ? a / qmax : 1.0f;
        }
        EngineWeight w;
        w.name = "layers." + std::to_string(l) + (which == 0 ? ".attn.k_scale" : ".attn.v_scale");
        w.dtype = DType::kF32;
        w.shape = {heads};
        w.bytes = dtype_bytes_for(DType::kF32, static_cast<size_t>(heads));
        w.computed = true;
        p.kv_scales_.emplace_back(std::move(w), to_bytes(scale));
      }
    }
  }
  if (o.quant == QuantMethod::kNone) return p;
  ANVIL_ASSIGN_OR_RETURN(p.format_, quant_format_of(o.quant));
  if (p.format_ != QuantFormat::kInt4Group) p.group_size_ = 0;

  // The projections, checked against the format.
  const Graph& g = def.graph;
  std::string bad_k;
  int bad_count = 0;
  for (const auto& [weight, input] : projection_inputs(g)) {
    const WeightSource* ws = find_weight_source(def, weight);
    if (!ws || ws->shape.rank != 2) return internal_error("quantize pass: projection " + weight + " has no 2-D table entry");
    Projection pr;
    pr.n = ws->shape[0];
    pr.k = ws->shape[1];
    const std::string qkv = ".attn.qkv.weight";
    if (weight.size() > qkv.size() && weight.compare(weight.size() - qkv.size(), qkv.size(), qkv) == 0) {
      pr.unclipped_rows = def.spec.q_size() + def.spec.kv_size();
    }
    if (p.format_ == QuantFormat::kInt4Group && pr.k % p.group_size_ != 0 && bad_count++ < 2) {
      bad_k += (bad_k.empty() ? "" : ", ") + weight + " (K=" + std::to_string(pr.k) + ")";
    }
    if (needs.linear_inputs && !stats->linear_inputs.count(weight)) {
      return internal_error("quantize pass: calibration gathered no statistics for " + weight);
    }
    p.projections_[weight] = std::move(pr);
  }
  if (p.projections_.empty()) return invalid_argument("--quant " + std::string(quant_method_name(o.quant)) + ": the model has no layer projections to quantize");
  if (!bad_k.empty()) {
    int32_t fits = 0;
    for (int32_t cand : {128, 64, 32}) {
      bool all = true;
      for (const auto& [name, pr] : p.projections_) all = all && pr.k % cand == 0;
      if (all && fits == 0) fits = cand;
    }
    if (bad_count > 2) bad_k += " and " + std::to_string(bad_count - 2) + " more";
    return invalid_argument("--group-size " + std::to_string(p.group_size_) + " does not divide the input size of " + bad_k +
                            (fits ? "; use --group-size " + std::to_string(fits) : "; no group size of 32, 64 or 128 fits this model"));
  }

  if (quantizes_sequentially(o.quant)) {
    for (const auto& [weight, pr] : p.projections_) {
      auto it = p.sequential_.find(weight);
      if (it == p.sequential_.end() || it->second.n != pr.n || it->second.k != pr.k || it->second.format != p.format_) {
        return internal_error("quantize pass: " + weight + " was not quantized sequentially (or not as " +
                              quant_format_name(p.format_) + " [" + std::to_string(pr.n) + ", " + std::to_string(pr.k) + "])");
      }
    }
  }

  // Activation-aware factors, folded into the producer of each projection's input.
  const bool sq = o.quant == QuantMethod::kW8A8SmoothQuant;
  // Sequential methods bring their scales (AWQ's, for int4): a projection without any has none.
  const bool seq_scales = quantizes_sequentially(o.quant);
  if (!sq && o.quant != QuantMethod::kInt4Awq && !seq_scales) return p;
  for (const auto& [weight, input] : projection_inputs(g)) {
    const Producer prod = producer_of(g, g.find(input));
    // Both methods fold 1/s into the RMSNorm before qkv / gate_up and into the up rows of gate_up
    // before down_proj (act = silu(gate) * up is linear in up). o_proj gets none: its only
    // foldable producer is V, shared by several query heads under GQA and stored in the (maybe
    // quantized) KV cache (docs/quantization.md).
    const bool fold_norm = prod.kind == Producer::kNorm;
    const bool fold_up = prod.kind == Producer::kActMul;
    if (!fold_norm && !fold_up) continue;
    Projection& pr = p.projections_[weight];
    std::vector<float> s;
    if (seq_scales) {
      auto found = sequential.column_scales.find(weight);
      if (found == sequential.column_scales.end()) continue;
      s = std::move(found->second);
    } else {
      const WeightSource* ws = find_weight_source(def, weight);
      ANVIL_ASSIGN_OR_RETURN(std::vector<float> w, gather_weight_f32(def, *ws, ckpt, nullptr));
      const LinearInputStats& st = stats->linear_inputs.at(weight);
      if (sq) {
        s = smoothquant_factors(w.data(), pr.n, pr.k, st, kSmoothQuantAlpha);
        const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
        ANVIL_LOG_INFO("smoothquant %-28s alpha %.2f: factors min %.3g max %.3g", weight.c_str(), kSmoothQuantAlpha, *lo, *hi);
        if (*lo == 1.0f && *hi == 1.0f) ANVIL_LOG_WARN("smoothquant %s: every factor is 1; the calibration statistics carry nothing", weight.c_str());
      } else {
        Result<AwqScaleSearch> r = awq_search(w.data(), pr.n, pr.k, p.group_size_, st);
        if (!r.is_ok()) return r.status().with_context("AWQ scale search for " + weight);
        ANVIL_LOG_INFO("awq %-28s alpha %.2f: output error %.4g (rtn) -> %.4g", weight.c_str(), r->alpha, r->error_rtn, r->error_best);
        s = std::move(r->scales);
      }
    }
    if (static_cast<int64_t>(s.size()) != pr.k) return internal_error("quantize pass: factor count differs from K for " + weight);
    if (fold_norm) {
      p.divide_[g.tensor(prod.norm_weight).name] = s;
    } else {
      const std::string gu = g.tensor(prod.gate_up_weight).name;
      if (p.projections_.count(gu) == 0 || p.projections_[gu].n != 2 * pr.k) {
        return internal_error("quantize pass: " + gu + " is not [2 x " + std::to_string(pr.k) + ", *]");
      }
      p.divide_up_[gu] = s;
      if (prod.gate_up_bias >= 0) p.divide_up_[g.tensor(prod.gate_up_bias).name] = s;
    }
    pr.column_scale = std::move(s);
  }
  return p;
}

Node qlinear_node(Graph& out, const Node& n, const std::string& base, int64_t n_out, int64_t k, QuantFormat format,
                  int32_t group_size) {
  const bool int4 = format == QuantFormat::kInt4Group;
  Node q = n;
  q.op = OpKind::kQLinear;
  q.attrs.quant = format;
  q.attrs.group_size = int4 ? group_size : 0;
  const int qweight = out.weight(base + ".qweight", {n_out, int4 ? k / 2 : k});
  const int scales = int4 ? out.weight(base + ".scales", {n_out, k / group_size}) : out.weight(base + ".scales", {n_out});
  const int offsets = int4 ? out.weight(base + ".offsets", {n_out, k / group_size}) : -1;
  q.inputs = {n.inputs[0], qweight, n.inputs[2], scales, offsets};
  return q;
}

std::vector<EngineWeight> qlinear_engine_weights(const std::string& base, int64_t n_out, int64_t k, QuantFormat format,
                                                 int32_t group_size) {
  auto make = [](const std::string& name, DType dt, Shape shape) {
    EngineWeight w;
    w.name = name;
    w.dtype = dt;
    w.shape = shape;
    w.bytes = dtype_bytes_for(dt, static_cast<size_t>(shape.numel()));
    return w;
  };
  switch (format) {
    case QuantFormat::kInt8WeightOnly:
    case QuantFormat::kInt8W8A8:
      return {make(base + ".qweight", DType::kI8, {n_out, k}), make(base + ".scales", DType::kF32, {n_out})};
    case QuantFormat::kFp8W8A8:
      return {make(base + ".qweight", DType::kF8E4M3, {n_out, k}), make(base + ".scales", DType::kF32, {n_out})};
    case QuantFormat::kInt4Group: {
      const Shape groups{n_out, k / group_size};
      return {make(base + ".qweight", DType::kU8, {n_out, k / 2}), make(base + ".scales", DType::kF16, groups),
              make(base + ".offsets", DType::kF16, groups)};
    }
  }
  return {};
}

const WeightSource* find_weight_source(const ModelDefinition& def, const std::string& name) {
  for (const WeightSource& ws : def.weights)
    if (ws.name == name) return &ws;
  return nullptr;
}

Graph QuantizePass::rewrite(const Graph& g) const {
  if (method_ == QuantMethod::kNone) return g;
  Graph out;
  for (const GraphTensor& t : g.tensors()) out.add_tensor(t);
  for (const Node& n : g.nodes()) {
    const std::string weight = n.op == OpKind::kLinear && n.inputs[1] >= 0 ? g.tensor(n.inputs[1]).name : "";
    auto it = projections_.find(weight);
    if (it == projections_.end()) {
      out.add_node(n);
      continue;
    }
    const Projection& pr = it->second;
    out.add_node(qlinear_node(out, n, base_name(weight), pr.n, pr.k, format_, group_size_));
  }
  for (int o : g.outputs()) out.mark_output(o);
  return eliminate_dead_code(out, nullptr);  // drops the unquantized weight tensors
}

std::vector<EngineWeight> QuantizePass::engine_weights(const WeightSource& ws, DType dtype) const {
  auto it = projections_.find(ws.name);
  std::vector<EngineWeight> out;
  if (it == projections_.end()) {
    EngineWeight w;
    w.name = ws.name;
    w.dtype = dtype;
    w.shape = ws.shape;
    w.bytes = dtype_bytes_for(dtype, static_cast<size_t>(ws.shape.numel()));
    out.push_back(std::move(w));
  } else {
    out = qlinear_engine_weights(base_name(ws.name), it->second.n, it->second.k, format_, group_size_);
  }
  // packed_from goes on the first weight only (a quantized projection's scales are not packed).
  out[0].packed_from = ws.hf_names;
  for (EngineWeight& w : out) w.computed = ws.computed;
  return out;
}

Result<std::vector<std::vector<uint8_t>>> QuantizePass::produce(const WeightSource& ws, std::vector<float> values,
                                                                 DType dtype) const {
  auto up = divide_up_.find(ws.name);
  auto it = projections_.find(ws.name);
  if (it == projections_.end()) {
    // A plain weight, possibly absorbing smoothing factors (norm weight, gate_up bias).
    if (auto d = divide_.find(ws.name); d != divide_.end()) {
      if (d->second.size() != values.size()) return internal_error("quantize pass: factor count differs for " + ws.name);
      for (size_t c = 0; c < values.size(); ++c) values[c] /= d->second[c];
    }
    if (up != divide_up_.end()) {
      const size_t f = up->second.size();
      if (values.size() != 2 * f) return internal_error("quantize pass: " + ws.name + " is not [2 x " + std::to_string(f) + "]");
      for (size_t j = 0; j < f; ++j) values[f + j] /= up->second[j];
    }
    std::vector<uint8_t> bytes(dtype_bytes_for(dtype, values.size()));
    convert_from_f32(dtype, values.data(), bytes.data(), values.size());
    return std::vector<std::vector<uint8_t>>{std::move(bytes)};
  }

  const Projection& pr = it->second;
  const int64_t n = pr.n, k = pr.k;
  if (static_cast<int64_t>(values.size()) != n * k) return internal_error("quantize pass: " + ws.name + " has the wrong size");
  if (!pr.column_scale.empty()) {
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) values[r * k + c] *= pr.column_scale[c];
  }
  if (method_ == QuantMethod::kInt4Awq) {
    // AWQ's clipping search on the scaled weight (its sample rows divided by the same factors).
    ANVIL_RETURN_IF_ERROR(quant_detail::check_int4_group_args("AWQ " + ws.name, values.data(), n, k, group_size_));
    Result<std::vector<float>> clip =
        awq_search_clip(values.data(), n, k, group_size_, stats_->linear_inputs.at(ws.name), pr.column_scale);
    if (!clip.is_ok()) return clip.status().with_context("AWQ clip search for " + ws.name);
    // As AutoAWQ does, the q and k rows are never clipped: their error passes through softmax.
    const int64_t groups = k / group_size_;
    for (int64_t r = 0; r < std::min(pr.unclipped_rows, n); ++r)
      for (int64_t gi = 0; gi < groups; ++gi) (*clip)[static_cast<size_t>(r * groups + gi)] = std::numeric_limits<float>::infinity();
    awq_apply_clip(values.data(), n, k, group_size_, *clip);
  }
  if (up != divide_up_.end()) {  // AWQ for down_proj: the up rows absorb 1/s
    const int64_t f = static_cast<int64_t>(up->second.size());
    for (int64_t j = 0; j < f; ++j)
      for (int64_t c = 0; c < k; ++c) values[(f + j) * k + c] /= up->second[static_cast<size_t>(j)];
  }

  Result<QuantizedLinear> q = internal_error("unreachable");
  switch (method_) {
    case QuantMethod::kNone: return internal_error("quantize pass: nothing to quantize");
    case QuantMethod::kInt8WeightOnly: q = quantize_int8_per_channel(values.data(), n, k, QuantFormat::kInt8WeightOnly); break;
    case QuantMethod::kW8A8SmoothQuant: q = quantize_int8_per_channel(values.data(), n, k, QuantFormat::kInt8W8A8); break;
    case QuantMethod::kFp8: q = quantize_fp8_per_channel_searched(values.data(), n, k); break;
    case QuantMethod::kInt4WeightOnly: q = quantize_int4_group(values.data(), n, k, group_size_); break;
    case QuantMethod::kInt4Awq:
      // The quantizer AWQ's searches measured against (int4_group_codec.h).
      q = quant_detail::int4_group_rtn(values.data(), n, k, group_size_);
      break;
    case QuantMethod::kInt4Gptq:
    case QuantMethod::kFp8Gptq: {
      auto seq = sequential_.find(ws.name);  // present: plan checked every projection
      if (seq == sequential_.end()) return internal_error("quantize pass: no sequential GPTQ result for " + ws.name);
      q = seq->second;
      break;
    }
  }
  if (!q.is_ok()) return q.status().with_context("quantizing " + ws.name);

  // Build log: the weight error this format costs, and its scales.
  const std::vector<float> back = dequantize(*q);
  double err = 0, ref = 0;
  for (size_t i = 0; i < back.size(); ++i) {
    const double d = static_cast<double>(back[i]) - values[i];
    err += d * d;
    ref += static_cast<double>(values[i]) * values[i];
  }
  const double rel = ref > 0 ? std::sqrt(err / ref) : 0.0;
  std::vector<std::vector<uint8_t>> out;
  out.push_back(std::move(q->data));
  if (format_ == QuantFormat::kInt4Group) {
    std::vector<float> s(q->scales_f16.size());
    for (size_t i = 0; i < s.size(); ++i) s[i] = f16_to_f32(q->scales_f16[i]);
    report_scales(ws.name, std::move(s), rel, "int4");
    out.push_back(to_bytes(q->scales_f16));
    out.push_back(to_bytes(q->offsets_f16));
  } else {
    report_scales(ws.name, q->scales, rel, quant_format_name(format_));
    out.push_back(to_bytes(q->scales));
  }
  return out;
}

}  // namespace anvil
