// PrequantImport: which weight-table entries a pre-quantized checkpoint stores quantized, their
// import (per HF module, then concatenated along N in the table's packing order), the kQLinear
// rewrite and the engine weights, laid out exactly as QuantizePass lays out its own.
#include "build/quantize/prequant_import.h"

#include <cstring>
#include <filesystem>

#include "build/passes/dead_code.h"
#include "build/quantize/calibration.h"
#include "build/quantize/quantize_pass.h"
#include "core/dtype.h"
#include "core/logging.h"
#include "core/mmap_file.h"

namespace anvil {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip(const std::string& s, const std::string& suffix) { return s.substr(0, s.size() - suffix.size()); }

template <typename T>
std::vector<uint8_t> to_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// kInt4Group q with its groups split into groups of g (g divides q.group_size): each group's
// scale and offset are repeated, so every weight dequantizes to the same value.
QuantizedLinear regroup(QuantizedLinear q, int32_t g) {
  if (q.group_size == g) return q;
  const int64_t old_groups = q.k / q.group_size, groups = q.k / g, repeat = q.group_size / g;
  std::vector<uint16_t> scales(static_cast<size_t>(q.n * groups)), offsets(scales.size());
  for (int64_t r = 0; r < q.n; ++r) {
    for (int64_t og = 0; og < old_groups; ++og) {
      for (int64_t i = 0; i < repeat; ++i) {
        const size_t to = static_cast<size_t>(r * groups + og * repeat + i), from = static_cast<size_t>(r * old_groups + og);
        scales[to] = q.scales_f16[from];
        offsets[to] = q.offsets_f16[from];
      }
    }
  }
  q.scales_f16 = std::move(scales);
  q.offsets_f16 = std::move(offsets);
  q.group_size = g;
  return q;
}

std::string group_text(int32_t g) { return g > 0 ? "group " + std::to_string(g) : "one group per row"; }

}  // namespace

std::string PrequantScheme::description() const {
  switch (method) {
    case QuantMethod::kInt4Awq: return "AutoAWQ GEMM int4 (" + group_text(int4.group_size) + ")";
    case QuantMethod::kInt4Gptq:
      return std::string("GPTQ int4 (") + group_text(int4.group_size) + (int4.sym ? ", symmetric" : ", asymmetric") +
             (int4.desc_act ? ", desc_act" : "") + (int4.zeros_minus_one ? ", gptq v1" : ", gptq_v2") + ")";
    case QuantMethod::kFp8:
      return "FP8 e4m3 (" + quant_method +
             (fp8.weight_strategy.empty() ? std::string() : ", per-" + fp8.weight_strategy + " scales") + ")";
    case QuantMethod::kNone:
    case QuantMethod::kInt8WeightOnly:
    case QuantMethod::kInt4WeightOnly:
    case QuantMethod::kW8A8SmoothQuant:
    case QuantMethod::kFp8Gptq: break;
  }
  return quant_method;
}

Result<std::optional<PrequantScheme>> parse_prequant_scheme(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("quantization_config") || config["quantization_config"].is_null()) {
    return std::optional<PrequantScheme>{};
  }
  const nlohmann::json& qc = config["quantization_config"];
  if (!qc.is_object() || !qc.contains("quant_method") || !qc["quant_method"].is_string()) {
    return invalid_argument("config.json: quantization_config.quant_method is missing");
  }
  PrequantScheme s;
  s.quant_method = qc["quant_method"].get<std::string>();
  if (s.quant_method == "awq" || s.quant_method == "gptq") {
    ANVIL_ASSIGN_OR_RETURN(s.int4, parse_quantization_config(qc));
    s.method = s.int4.method == PrequantMethod::kAwq ? QuantMethod::kInt4Awq : QuantMethod::kInt4Gptq;
    if (s.int4.lm_head) {
      return unsupported("config.json: quantization_config.lm_head is true (a GPTQModel checkpoint with a quantized "
                         "LM head), which is not supported: anvil keeps the LM head in the compute dtype; re-export "
                         "with lm_head=false");
    }
  } else if (s.quant_method == "fp8" || s.quant_method == "compressed-tensors") {
    ANVIL_ASSIGN_OR_RETURN(s.fp8, parse_fp8_quantization_config(qc));
    s.method = QuantMethod::kFp8;
  } else {
    return unsupported("config.json: quantization_config.quant_method is \"" + s.quant_method +
                       "\"; anvil builds pre-quantized awq (AutoAWQ GEMM), gptq and FP8 (fp8, compressed-tensors "
                       "float-quantized) checkpoints");
  }
  return std::optional<PrequantScheme>(std::move(s));
}

Result<std::optional<PrequantScheme>> read_prequant_scheme(const std::string& model_dir) {
  std::error_code ec;
  const std::filesystem::path path = std::filesystem::path(model_dir) / "config.json";
  if (!std::filesystem::is_directory(model_dir, ec) || !std::filesystem::is_regular_file(path, ec)) {
    return std::optional<PrequantScheme>{};
  }
  ANVIL_ASSIGN_OR_RETURN(std::string text, read_file(path.string()));
  const nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return invalid_argument(path.string() + " is not valid JSON");
  Result<std::optional<PrequantScheme>> s = parse_prequant_scheme(config);
  if (!s.is_ok()) return s.status().with_context(path.string());
  return s;
}

Result<std::optional<PrequantImport>> PrequantImport::plan_build(const ModelDefinition& def, const Checkpoint& ckpt,
                                                                 EngineBuildOptions* o, EngineBuildOptions* recorded) {
  ANVIL_ASSIGN_OR_RETURN(std::optional<PrequantScheme> scheme, read_prequant_scheme(ckpt.dir()));
  if (!scheme) return std::optional<PrequantImport>{};
  const std::string what = ckpt.dir() + " is a pre-quantized " + scheme->description() +
                           " checkpoint (config.json quantization_config.quant_method \"" + scheme->quant_method + "\")";
  if (o->quant != QuantMethod::kNone && o->quant != scheme->method) {
    return invalid_argument("--quant " + std::string(quant_method_name(o->quant)) + ": " + what +
                            "; drop --quant to build it as it is stored, or pass --quant " +
                            quant_method_name(scheme->method));
  }
  if (o->kv_cache_dtype == DType::kF8E4M3 || o->kv_cache_dtype == DType::kI8) {
    return unsupported("--kv-cache " + std::string(o->kv_cache_dtype == DType::kI8 ? "int8" : "fp8") + ": " + what +
                       ", and the KV scales come from calibrating the float model, which it does not hold; drop --kv-cache");
  }
  ANVIL_ASSIGN_OR_RETURN(PrequantImport p, plan(def, ckpt, *scheme));
  if (o->quant != QuantMethod::kNone && p.format_ == QuantFormat::kInt4Group && o->group_size != p.group_size_) {
    ANVIL_LOG_INFO("--group-size %d ignored: the checkpoint's groups (%s) are imported as groups of %d", o->group_size,
                   group_text(scheme->int4.group_size).c_str(), p.group_size_);
  }
  recorded->quant = scheme->method;
  recorded->group_size = p.group_size_;
  o->quant = QuantMethod::kNone;
  o->group_size = 0;
  return std::optional<PrequantImport>(std::move(p));
}

Result<PrequantImport> PrequantImport::plan(const ModelDefinition& def, const Checkpoint& ckpt, const PrequantScheme& scheme) {
  PrequantImport p;
  p.ckpt_ = &ckpt;
  p.scheme_ = scheme;
  const bool int4 = scheme.method == QuantMethod::kInt4Awq || scheme.method == QuantMethod::kInt4Gptq;
  if (!int4 && scheme.method != QuantMethod::kFp8) {
    return internal_error(std::string("pre-quantized import: method ") + quant_method_name(scheme.method) + " is not an import");
  }
  p.format_ = int4 ? QuantFormat::kInt4Group : QuantFormat::kFp8W8A8;
  const std::string where = " in " + ckpt.dir();

  // Is HF module `m` (e.g. "model.layers.0.self_attn.q_proj") stored quantized?
  auto stored_quantized = [&](const std::string& m) -> Result<bool> {
    if (int4) {
      const bool q = ckpt.contains(m + ".qweight");
      if (q && ckpt.contains(m + ".weight")) {
        return invalid_argument(m + " has both a .qweight and a .weight tensor" + where + ": which one holds it is ambiguous");
      }
      return q;
    }
    Result<CheckpointTensor> t = ckpt.get(m + ".weight");
    if (!t.is_ok()) return false;  // the float load names the missing tensor
    if (t->view.dtype == DType::kF8E5M2) {
      return unsupported(m + ".weight in " + t->file + " is F8_E5M2; FP8 checkpoints must store e4m3 weights");
    }
    return t->view.dtype == DType::kF8E4M3;
  };

  std::set<std::string> projections, table_biases;
  for (const auto& [weight, input] : projection_inputs(def.graph)) {
    (void)input;
    projections.insert(weight);
  }
  for (const WeightSource& ws : def.weights)
    for (const std::string& hf : ws.hf_names)
      if (ends_with(hf, ".bias")) table_biases.insert(strip(hf, ".bias"));

  for (const WeightSource& ws : def.weights) {
    if (ws.computed || ws.hf_names.empty()) continue;
    std::vector<std::string> modules;
    size_t quantized = 0;
    bool weights_only = true;
    for (const std::string& hf : ws.hf_names) weights_only = weights_only && ends_with(hf, ".weight");
    if (!weights_only) continue;  // biases: plain tensors
    for (const std::string& hf : ws.hf_names) {
      modules.push_back(strip(hf, ".weight"));
      ANVIL_ASSIGN_OR_RETURN(bool q, stored_quantized(modules.back()));
      quantized += q;
    }
    if (quantized == 0) continue;
    if (!projections.count(ws.name)) {
      return unsupported(modules[0] + " is stored quantized" + where +
                         ", but anvil imports quantized weights for the layer projections only (q/k/v, o, gate/up, "
                         "down): the embeddings and the LM head must be stored unquantized");
    }
    if (quantized != modules.size()) {
      std::string list;
      for (const std::string& m : modules) list += (list.empty() ? "" : ", ") + m;
      return unsupported(ws.name + " packs " + list + " into one weight, but the checkpoint stores only some of them "
                         "quantized: its parts must be all quantized or all unquantized");
    }
    if (ws.shape.rank != 2) return internal_error("pre-quantized import: " + ws.name + " is not 2-D");
    p.projections_[ws.name] = Projection{ws.shape[0], ws.shape[1], modules};
  }
  if (p.projections_.empty()) {
    return invalid_argument(ckpt.dir() + ": config.json declares a " + scheme.description() +
                            " checkpoint, but no layer projection is stored quantized (no " +
                            (int4 ? "<module>.qweight tensors" : "F8_E4M3 <module>.weight tensors") + ")");
  }

  if (int4) {
    // The engine group: the largest kernel group size dividing every imported group.
    const int32_t cfg = scheme.int4.group_size;
    for (const auto& [name, pr] : p.projections_) {
      if (cfg > 0 && pr.k % cfg != 0) {
        return invalid_argument("config.json: quantization_config.group_size " + std::to_string(cfg) +
                                " does not divide the input size K=" + std::to_string(pr.k) + " of " + pr.modules[0]);
      }
    }
    for (int32_t cand : {128, 64, 32}) {
      bool all = true;
      for (const auto& [name, pr] : p.projections_) all = all && (cfg > 0 ? cfg : pr.k) % cand == 0;
      if (all) {
        p.group_size_ = cand;
        break;
      }
    }
    if (p.group_size_ == 0) {
      return unsupported("config.json: quantization_config.group_size " + std::to_string(cfg) +
                         (cfg > 0 ? "" : " (one group per row)") +
                         ": anvil's int4 kernels take groups of 32, 64 or 128 input channels (larger multiples of 32 "
                         "are split into those), which this checkpoint's groups are not");
    }
  }

  // The tensors read, and those deliberately skipped.
  int64_t input_scales = 0;
  for (const auto& [name, pr] : p.projections_) {
    for (const std::string& m : pr.modules) {
      if (int4) {
        for (const char* s : {".qweight", ".qzeros", ".scales"}) p.hf_tensors_.insert(m + s);
        if (scheme.method == QuantMethod::kInt4Gptq && ckpt.contains(m + ".g_idx")) p.hf_tensors_.insert(m + ".g_idx");
      } else {
        p.hf_tensors_.insert(m + ".weight");
        p.hf_tensors_.insert(m + ".weight_scale");
        if (ckpt.contains(m + ".input_scale")) {
          p.hf_tensors_.insert(m + ".input_scale");
          ++input_scales;
        }
      }
      // Old AutoGPTQ writes a zero bias for every quantized linear; the model may have none.
      if (!table_biases.count(m) && ckpt.contains(m + ".bias")) {
        ANVIL_ASSIGN_OR_RETURN(CheckpointTensor b, ckpt.get(m + ".bias"));
        if (b.view.dtype != DType::kF32 && b.view.dtype != DType::kBF16 && b.view.dtype != DType::kF16) {
          return invalid_argument(m + ".bias in " + b.file + " has dtype " + std::string(dtype_name(b.view.dtype)));
        }
        std::vector<float> v(static_cast<size_t>(b.view.numel()));
        convert_to_f32(b.view.dtype, b.view.data, v.data(), v.size());
        for (float x : v) {
          if (x != 0.0f) {
            return invalid_argument(m + ".bias in " + b.file + " holds non-zero values, but config.json gives this "
                                    "projection no bias (attention_bias / mlp_bias)");
          }
        }
        p.hf_tensors_.insert(m + ".bias");
      }
    }
  }
  ANVIL_LOG_INFO("pre-quantized checkpoint %s: importing %zu layer projections as %s%s", scheme.description().c_str(),
                 p.projections_.size(), quant_format_name(p.format_),
                 int4 ? (" (groups of " + std::to_string(p.group_size_) + ")").c_str() : "");
  if (!int4) {
    ANVIL_LOG_INFO("fp8: activations are quantized per token with dynamic scales at run time; the checkpoint's static "
                   "input_scale tensors (%lld found) are not used",
                   static_cast<long long>(input_scales));
  }
  return p;
}

Graph PrequantImport::rewrite(const Graph& g) const {
  Graph out;
  for (const GraphTensor& t : g.tensors()) out.add_tensor(t);
  for (const Node& n : g.nodes()) {
    const bool linear = n.op == OpKind::kLinear && n.inputs.size() >= 3 && n.inputs[1] >= 0;
    const std::string weight = linear ? g.tensor(n.inputs[1]).name : "";
    auto it = projections_.find(weight);
    if (it == projections_.end()) {
      out.add_node(n);
      continue;
    }
    const Projection& pr = it->second;
    out.add_node(qlinear_node(out, n, strip(weight, ".weight"), pr.n, pr.k, format_, group_size_));
  }
  for (int o : g.outputs()) out.mark_output(o);
  return eliminate_dead_code(out, nullptr);  // drops the float weight tensors
}

std::vector<EngineWeight> PrequantImport::engine_weights(const WeightSource& ws) const {
  auto it = projections_.find(ws.name);
  if (it == projections_.end()) return {};
  const Projection& pr = it->second;
  std::vector<EngineWeight> out = qlinear_engine_weights(strip(ws.name, ".weight"), pr.n, pr.k, format_, group_size_);
  // packed_from: the checkpoint tensors holding the codes, one per packed part.
  const char* codes = format_ == QuantFormat::kInt4Group ? ".qweight" : ".weight";
  for (const std::string& m : pr.modules) out[0].packed_from.push_back(m + codes);
  return out;
}

Result<QuantizedLinear> PrequantImport::import_module(const std::string& m) const {
  auto tensor = [&](const std::string& name, bool required) -> Result<Tensor> {
    Result<CheckpointTensor> t = ckpt_->get(name);
    if (t.is_ok()) return t->view;
    if (!required) return Tensor{};
    return invalid_argument(name + " is missing from " + ckpt_->dir() + ": " + scheme_.description() +
                            " checkpoints store " +
                            (format_ == QuantFormat::kInt4Group ? "qweight, qzeros and scales" : "weight and weight_scale") +
                            " for every quantized linear");
  };
  switch (scheme_.method) {
    case QuantMethod::kInt4Awq:
    case QuantMethod::kInt4Gptq: {
      ANVIL_ASSIGN_OR_RETURN(Tensor qweight, tensor(m + ".qweight", true));
      ANVIL_ASSIGN_OR_RETURN(Tensor qzeros, tensor(m + ".qzeros", true));
      ANVIL_ASSIGN_OR_RETURN(Tensor scales, tensor(m + ".scales", true));
      if (scheme_.method == QuantMethod::kInt4Awq) return import_awq_gemm(m, qweight, qzeros, scales, scheme_.int4);
      ANVIL_ASSIGN_OR_RETURN(Tensor g_idx, tensor(m + ".g_idx", false));
      return import_gptq(m, qweight, qzeros, scales, g_idx, scheme_.int4);
    }
    case QuantMethod::kFp8: {
      ANVIL_ASSIGN_OR_RETURN(Tensor weight, tensor(m + ".weight", true));
      ANVIL_ASSIGN_OR_RETURN(Tensor scale, tensor(m + ".weight_scale", true));
      return import_fp8(m, weight, scale);
    }
    case QuantMethod::kNone:
    case QuantMethod::kInt8WeightOnly:
    case QuantMethod::kInt4WeightOnly:
    case QuantMethod::kW8A8SmoothQuant:
    case QuantMethod::kFp8Gptq: break;
  }
  return internal_error("pre-quantized import: no importer for " + std::string(quant_method_name(scheme_.method)));
}

Result<QuantizedLinear> PrequantImport::import(const WeightSource& ws) const {
  auto it = projections_.find(ws.name);
  if (it == projections_.end()) return internal_error("pre-quantized import: " + ws.name + " is not imported");
  const Projection& pr = it->second;
  QuantizedLinear out;
  for (size_t i = 0; i < pr.modules.size(); ++i) {
    ANVIL_ASSIGN_OR_RETURN(QuantizedLinear part, import_module(pr.modules[i]));
    if (part.k != pr.k) {
      return invalid_argument(pr.modules[i] + " holds a quantized [" + std::to_string(part.n) + ", " + std::to_string(part.k) +
                              "] weight (out x in), but config.json gives " + ws.name + " " + std::to_string(pr.k) +
                              " inputs (check the config.json sizes)");
    }
    if (format_ == QuantFormat::kInt4Group) part = regroup(std::move(part), group_size_);
    if (i == 0) {
      out = std::move(part);
      continue;
    }
    // Concatenation along N: every per-row array appends its rows.
    out.n += part.n;
    out.data.insert(out.data.end(), part.data.begin(), part.data.end());
    out.scales.insert(out.scales.end(), part.scales.begin(), part.scales.end());
    out.scales_f16.insert(out.scales_f16.end(), part.scales_f16.begin(), part.scales_f16.end());
    out.offsets_f16.insert(out.offsets_f16.end(), part.offsets_f16.begin(), part.offsets_f16.end());
  }
  if (out.n != pr.n) {
    return invalid_argument("the quantized tensors of " + ws.name + " hold " + std::to_string(out.n) +
                            " output rows in total, but config.json gives " + std::to_string(pr.n) +
                            " (check the config.json sizes)");
  }
  return out;
}

Result<std::vector<std::vector<uint8_t>>> PrequantImport::produce(const WeightSource& ws) const {
  ANVIL_ASSIGN_OR_RETURN(QuantizedLinear q, import(ws));
  std::vector<std::vector<uint8_t>> out;
  out.push_back(std::move(q.data));
  if (format_ == QuantFormat::kInt4Group) {
    out.push_back(to_bytes(q.scales_f16));
    out.push_back(to_bytes(q.offsets_f16));
  } else {
    out.push_back(to_bytes(q.scales));
  }
  return out;
}

}  // namespace anvil
