// Building from a pre-quantized Hugging Face checkpoint (docs/quantization.md, "Pre-quantized
// checkpoints"): AutoAWQ GEMM / GPTQ int4 and FP8 layer projections are imported as they are
// (hf_prequant.h, hf_prequant_fp8.h), packed like the float weight table (q|k|v, gate|up rows) and
// written as the same kQLinear engine weights the quantize pass makes; nothing is re-quantized
// and no calibration runs. Every other weight (embeddings, norms, lm_head, biases) loads as usual.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "build/engine_file.h"
#include "build/quantize/hf_prequant.h"
#include "build/quantize/hf_prequant_fp8.h"
#include "model/archs/arch.h"
#include "model/checkpoint/checkpoint.h"

namespace anvil {

// What config.json's quantization_config declares.
struct PrequantScheme {
  QuantMethod method = QuantMethod::kNone;  // kInt4Awq | kInt4Gptq | kFp8: what --quant must name, if given
  std::string quant_method;                 // as config.json spells it: awq, gptq, fp8, compressed-tensors
  PrequantConfig int4;                      // kInt4Awq / kInt4Gptq
  Fp8PrequantConfig fp8;                    // kFp8
  std::string description() const;          // "AutoAWQ GEMM int4 (group 128)", for messages
};

// nullopt when `config` (a parsed config.json) has no quantization_config. Errors name the field
// (an unsupported quant_method, bits, layout, GPTQModel lm_head = true, FP8 block-wise scales...).
Result<std::optional<PrequantScheme>> parse_prequant_scheme(const nlohmann::json& config);
// The same for DIR/config.json; nullopt when DIR is not a folder holding one.
Result<std::optional<PrequantScheme>> read_prequant_scheme(const std::string& model_dir);

class PrequantImport {
 public:
  // For build_engine, after resolve_build_options: nullopt when ckpt.dir() holds no pre-quantized
  // checkpoint. Otherwise checks the options against it (--quant none or the checkpoint's own
  // method; no quantized --kv-cache, whose calibration needs float weights), plans the import,
  // records the engine's quantization (quant = the method, group_size = the int4 group) in
  // *recorded, and sets o->quant to none: the quantize pass has nothing left to do.
  static Result<std::optional<PrequantImport>> plan_build(const ModelDefinition& def, const Checkpoint& ckpt,
                                                         EngineBuildOptions* o, EngineBuildOptions* recorded);

  // Finds the layer projections the checkpoint stores quantized. Every HF part of a packed weight
  // (q, k, v; gate, up) must be quantized alike; a projection the checkpoint keeps in float
  // (modules_to_not_convert, ignore) stays a kLinear. Any other weight stored quantized (lm_head,
  // embeddings) is an error. int4: the config's group size must divide every imported K; groups
  // that are multiples of 32 but not 32, 64 or 128 (GPTQ group_size -1 included) are split into
  // the largest of those that divides them all (scales repeated: the same values, bit for bit).
  // `ckpt` must outlive the plan.
  static Result<PrequantImport> plan(const ModelDefinition& def, const Checkpoint& ckpt, const PrequantScheme& scheme);

  const PrequantScheme& scheme() const { return scheme_; }
  QuantFormat format() const { return format_; }
  int32_t group_size() const { return group_size_; }  // kInt4Group: the engine's group; else 0
  int64_t num_imported() const { return static_cast<int64_t>(projections_.size()); }

  // Every checkpoint tensor the import reads or deliberately skips (FP8 input_scale, the all-zero
  // biases old AutoGPTQ writes for bias-free projections): the unexpected-tensor check admits them.
  const std::set<std::string>& hf_tensors() const { return hf_tensors_; }

  // True when the table entry `ws` is an imported projection.
  bool imports(const WeightSource& ws) const { return projections_.count(ws.name) > 0; }

  // The graph with every imported projection's kLinear turned into kQLinear (its float weight
  // tensor dropped).
  Graph rewrite(const Graph& g) const;

  // The engine weights an imported entry becomes, in order: qweight, scales (, offsets).
  std::vector<EngineWeight> engine_weights(const WeightSource& ws) const;

  // The entry's QuantizedLinear: its parts imported and concatenated along N, regrouped to
  // group_size() (int4).
  Result<QuantizedLinear> import(const WeightSource& ws) const;

  // import()'s bytes, one vector per engine_weights() entry.
  Result<std::vector<std::vector<uint8_t>>> produce(const WeightSource& ws) const;

 private:
  struct Projection {
    int64_t n = 0, k = 0;
    std::vector<std::string> modules;  // HF module names, in packing order ("model.layers.0.self_attn.q_proj", ...)
  };
  Result<QuantizedLinear> import_module(const std::string& module) const;

  const Checkpoint* ckpt_ = nullptr;
  PrequantScheme scheme_;
  QuantFormat format_ = QuantFormat::kInt4Group;
  int32_t group_size_ = 0;
  std::map<std::string, Projection> projections_;  // by weight-table name ("layers.0.attn.qkv.weight")
  std::set<std::string> hf_tensors_;
};

}  // namespace anvil
