// FP8 checkpoint import (see hf_prequant_fp8.h): quantization_config parsing for quant_method
// "fp8" and compressed-tensors, and the copy of e4m3 codes plus scales into kFp8W8A8. Tensor data
// may sit unaligned in a mapped file; it is read through memcpy / convert_to_f32.
#include "build/quantize/hf_prequant_fp8.h"

#include <cmath>
#include <cstring>

#include "core/dtype.h"

namespace anvil {
namespace {

std::string field(const std::string& key) { return "config.json: quantization_config." + key; }

bool is_null_or_missing(const nlohmann::json& j, const char* key) { return !j.contains(key) || j[key].is_null(); }

Status read_string_list(const nlohmann::json& j, const char* key, std::vector<std::string>* out) {
  if (is_null_or_missing(j, key)) return Status::ok();
  if (!j[key].is_array()) return invalid_argument(field(key) + " must be a list of module names");
  for (const auto& m : j[key]) {
    if (!m.is_string()) return invalid_argument(field(key) + " must list strings, got " + m.dump());
    out->push_back(m.get<std::string>());
  }
  return Status::ok();
}

// One compressed-tensors quantization args object ("weights" / "input_activations"): 8-bit float.
Status check_float8_args(const std::string& where, const nlohmann::json& a) {
  if (!a.is_object()) return invalid_argument(field(where) + " must be an object");
  const std::string type = a.value("type", std::string("int"));
  const int64_t bits = a.contains("num_bits") && a["num_bits"].is_number_integer() ? a["num_bits"].get<int64_t>() : 8;
  if (type != "float" || bits != 8) {
    return unsupported(field(where) + " is " + std::to_string(bits) + "-bit " + type +
                       "; only 8-bit float (e4m3) compressed-tensors checkpoints are supported");
  }
  return Status::ok();
}

}  // namespace

Result<Fp8PrequantConfig> parse_fp8_quantization_config(const nlohmann::json& config) {
  const nlohmann::json* qc = &config;
  if (config.is_object() && config.contains("quantization_config")) qc = &config["quantization_config"];
  if (!qc->is_object() || !qc->contains("quant_method") || !(*qc)["quant_method"].is_string()) {
    return invalid_argument(field("quant_method") + " is missing (expected \"fp8\" or \"compressed-tensors\")");
  }
  const nlohmann::json& j = *qc;
  Fp8PrequantConfig out;
  out.quant_method = j["quant_method"].get<std::string>();
  if (out.quant_method == "fp8") {
    if (!is_null_or_missing(j, "weight_block_size")) {
      return unsupported(field("weight_block_size") + " is " + j["weight_block_size"].dump() +
                         ": block-wise FP8 scales (transformers FineGrainedFP8) are not supported; anvil reads "
                         "per-tensor or per-channel FP8 checkpoints");
    }
    if (!is_null_or_missing(j, "fmt") && j["fmt"] != "e4m3") {
      return unsupported(field("fmt") + " is " + j["fmt"].dump() + "; only e4m3 weights are supported");
    }
    const std::string scheme = j.value("activation_scheme", std::string("dynamic"));
    if (scheme != "static" && scheme != "dynamic") {
      return invalid_argument(field("activation_scheme") + " is \"" + scheme + "\"; expected static or dynamic");
    }
    out.activations_static = scheme == "static";
    ANVIL_RETURN_IF_ERROR(read_string_list(j, "ignored_layers", &out.ignored));
    return out;
  }
  if (out.quant_method != "compressed-tensors") {
    return unsupported(field("quant_method") + " is \"" + out.quant_method +
                       "\"; FP8 checkpoints are read from \"fp8\" or \"compressed-tensors\"");
  }
  const std::string format = j.value("format", std::string());
  if (format != "float-quantized" && format != "naive-quantized") {
    return unsupported(field("format") + " is \"" + format +
                       "\"; anvil reads compressed-tensors FP8 weights stored as float-quantized (or naive-quantized)");
  }
  if (!is_null_or_missing(j, "kv_cache_scheme")) {
    return unsupported(field("kv_cache_scheme") +
                       " is set: checkpoint KV-cache scales are not read; re-export without it and use --kv-cache");
  }
  if (!is_null_or_missing(j, "sparsity_config") && !j["sparsity_config"].empty()) {
    return unsupported(field("sparsity_config") + " is set: sparse compressed-tensors checkpoints are not supported");
  }
  if (!j.contains("config_groups") || !j["config_groups"].is_object() || j["config_groups"].empty()) {
    return invalid_argument(field("config_groups") + " is missing or empty");
  }
  for (const auto& [group, g] : j["config_groups"].items()) {
    const std::string at = "config_groups." + group;
    if (!g.is_object()) return invalid_argument(field(at) + " must be an object");
    if (is_null_or_missing(g, "weights")) return unsupported(field(at + ".weights") + " is missing: the weights are not quantized");
    const nlohmann::json& w = g["weights"];
    ANVIL_RETURN_IF_ERROR(check_float8_args(at + ".weights", w));
    const std::string strategy = w.value("strategy", std::string("tensor"));
    if (strategy != "tensor" && strategy != "channel") {
      return unsupported(field(at + ".weights.strategy") + " is \"" + strategy +
                         "\"; FP8 weights with per-tensor or per-channel scales are supported (not group or block)");
    }
    if (!is_null_or_missing(w, "block_structure")) {
      return unsupported(field(at + ".weights.block_structure") + " is set: block-wise FP8 scales are not supported");
    }
    if (w.contains("dynamic") && w["dynamic"] == true) {
      return unsupported(field(at + ".weights.dynamic") + " is true: the checkpoint stores no weight scales");
    }
    if (w.contains("symmetric") && w["symmetric"] == false) {
      return unsupported(field(at + ".weights.symmetric") + " is false: FP8 weights with zero points are not supported");
    }
    if (!out.weight_strategy.empty() && out.weight_strategy != strategy) {
      return unsupported(field("config_groups") + " mixes per-tensor and per-channel weight scales");
    }
    out.weight_strategy = strategy;
    if (!is_null_or_missing(g, "output_activations")) {
      return unsupported(field(at + ".output_activations") + " is set: output quantization is not supported");
    }
    if (!is_null_or_missing(g, "input_activations")) {
      const nlohmann::json& a = g["input_activations"];
      ANVIL_RETURN_IF_ERROR(check_float8_args(at + ".input_activations", a));
      out.activations_static = out.activations_static || !(a.contains("dynamic") && a["dynamic"] == true);
    }
  }
  ANVIL_RETURN_IF_ERROR(read_string_list(j, "ignore", &out.ignored));
  return out;
}

Result<QuantizedLinear> import_fp8(const std::string& name, const Tensor& weight, const Tensor& weight_scale) {
  if (!weight.defined()) return invalid_argument(name + ".weight is missing");
  if (weight.device != Device::kCpu) return invalid_argument(name + ".weight must be in host memory");
  if (weight.dtype != DType::kF8E4M3) {
    return unsupported(name + ".weight has dtype " + std::string(dtype_name(weight.dtype)) +
                       "; FP8 checkpoints must store e4m3 weights (F8_E4M3)");
  }
  if (weight.rank() != 2 || weight.dim(0) <= 0 || weight.dim(1) <= 0) {
    return invalid_argument(name + ".weight has shape " + weight.shape.to_string() + ", expected [N, K]");
  }
  const int64_t n = weight.dim(0), k = weight.dim(1);
  if (!weight_scale.defined()) {
    return invalid_argument(name + ".weight_scale is missing: an F8_E4M3 weight needs its scale");
  }
  if (weight_scale.dtype != DType::kF32 && weight_scale.dtype != DType::kBF16 && weight_scale.dtype != DType::kF16) {
    return invalid_argument(name + ".weight_scale has dtype " + std::string(dtype_name(weight_scale.dtype)) +
                            ", expected F32, BF16 or F16");
  }
  const int64_t count = weight_scale.numel();
  const bool per_tensor = count == 1 && weight_scale.rank() <= 2;
  const bool per_channel = count == n && (weight_scale.rank() == 1 || (weight_scale.rank() == 2 && weight_scale.dim(1) == 1));
  if (!per_tensor && !per_channel) {
    return unsupported(name + ".weight_scale has shape " + weight_scale.shape.to_string() + " for a weight of [" +
                       std::to_string(n) + ", " + std::to_string(k) + "]: expected one scale per tensor ([] or [1]) or per "
                       "output channel ([" + std::to_string(n) + "] or [" + std::to_string(n) +
                       ", 1]); block-wise scales are not supported");
  }
  std::vector<float> scales(static_cast<size_t>(count));
  convert_to_f32(weight_scale.dtype, weight_scale.data, scales.data(), scales.size());
  for (size_t i = 0; i < scales.size(); ++i) {
    if (!std::isfinite(scales[i]) || scales[i] < 0.0f) {
      return invalid_argument(name + ".weight_scale[" + std::to_string(i) + "] = " + std::to_string(scales[i]) +
                              " is not a finite, non-negative scale");
    }
  }
  QuantizedLinear q;
  q.format = QuantFormat::kFp8W8A8;
  q.n = n;
  q.k = k;
  q.data.resize(static_cast<size_t>(n * k));
  std::memcpy(q.data.data(), weight.data, q.data.size());
  for (size_t i = 0; i < q.data.size(); ++i) {
    if ((q.data[i] & 0x7f) == 0x7f) {  // e4m3fn has no infinities; S.1111.111 is NaN
      return invalid_argument(name + ".weight[" + std::to_string(static_cast<int64_t>(i) / k) + ", " +
                              std::to_string(static_cast<int64_t>(i) % k) + "] is an e4m3 NaN");
    }
  }
  q.scales = per_tensor ? std::vector<float>(static_cast<size_t>(n), scales[0]) : std::move(scales);
  return q;
}

}  // namespace anvil
