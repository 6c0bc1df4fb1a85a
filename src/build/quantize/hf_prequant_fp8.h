// Import of FP8 (E4M3) Hugging Face checkpoints that carry weight scales into kFp8W8A8
// QuantizedLinear: quant_method "fp8" without weight_block_size (AutoFP8 / vLLM per-tensor) and
// compressed-tensors "float-quantized" (llm-compressor FP8, per-channel or per-tensor). Codes and
// scales are copied bit for bit; a per-tensor scale is broadcast to every output row.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "build/quantize/quant_types.h"
#include "core/status.h"
#include "core/tensor.h"

namespace anvil {

// What config.json's quantization_config says about an FP8 checkpoint.
struct Fp8PrequantConfig {
  std::string quant_method;            // "fp8" | "compressed-tensors"
  std::string weight_strategy;         // "tensor" | "channel" | "" ("fp8": the scale shapes decide)
  bool activations_static = false;     // input_scale tensors are expected (anvil ignores them)
  std::vector<std::string> ignored;    // "ignore" / "ignored_layers": left unquantized (informative)
};

// Reads an FP8 quantization_config (the object itself, or config.json holding it). Errors name the
// field: quant_method "fp8" with weight_block_size (block-wise scales), compressed-tensors formats
// other than float-quantized / naive-quantized, weights that are not 8-bit floats per channel or
// per tensor, a kv_cache_scheme or sparsity_config.
Result<Fp8PrequantConfig> parse_fp8_quantization_config(const nlohmann::json& config);

// One FP8 linear `name` (e.g. "model.layers.0.mlp.down_proj"):
//   weight       F8_E4M3 [N, K]       w[n, k] = e4m3(weight[n, k]) * scale[n]
//   weight_scale F32 | BF16 | F16: [] or [1] or [1, 1] (per tensor) | [N] or [N, 1] (per channel)
// NaN codes, and scales that are negative or not finite, are errors naming the tensor and index.
Result<QuantizedLinear> import_fp8(const std::string& name, const Tensor& weight, const Tensor& weight_scale);

}  // namespace anvil
