// Import of pre-quantized Hugging Face int4 checkpoints (AutoAWQ GEMM, AutoGPTQ / GPTQModel) into
// kInt4Group QuantizedLinear. Codes and scales are carried over bit for bit; the integer zero
// point z becomes offset = f16(-z * scale), the one rounding (relative 2^-11 of z * scale).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "build/quantize/quant_types.h"
#include "core/status.h"
#include "core/tensor.h"

namespace anvil {

enum class PrequantMethod { kAwq, kGptq };
const char* prequant_method_name(PrequantMethod m);  // "awq", "gptq"

// config.json's quantization_config, the fields that decide the tensor layout.
struct PrequantConfig {
  PrequantMethod method = PrequantMethod::kAwq;
  int32_t bits = 4;
  int32_t group_size = 128;     // -1: one group over all of K
  bool desc_act = false;        // GPTQ act-order: g_idx may be non-trivial
  bool sym = true;              // GPTQ symmetric quantization (zero point 8); informative
  bool zero_point = true;       // AWQ asymmetric (the GEMM format always stores zeros)
  std::string version = "gemm"; // AWQ kernel layout; only "gemm" is a storage layout we read
  // GPTQ "checkpoint_format": "gptq" (v1, the default) stores zero - 1 in qzeros; "gptq_v2" stores zero.
  bool zeros_minus_one = true;
  bool lm_head = false;                            // GPTQModel: the lm_head is quantized too
  std::vector<std::string> modules_not_converted;  // AWQ modules_to_not_convert
};

// Reads the quantization config from a parsed config.json (its "quantization_config" object, or
// the object itself when it carries "quant_method"). Errors name the field: a method other than
// awq/gptq, bits != 4, a group size that is not -1 or a positive even number, AWQ versions other
// than gemm, GPTQ checkpoint formats other than gptq/gptq_v2, per-module "dynamic" overrides.
Result<PrequantConfig> parse_quantization_config(const nlohmann::json& config);

// AutoAWQ GEMM tensors of one linear `name` (e.g. "model.layers.0.mlp.down_proj"):
//   qweight I32 [K, N/8]   scales F16 [K/g, N] (BF16 / F32 accepted, rounded to f16)
//   qzeros  I32 [K/g, N/8]
// Word layout (qweight and qzeros alike): nibble i (bits 4i..4i+3) of word [row, j] holds output
// column 8j + kAwqOrder[i], kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7}. w[n, k] = (q - z) * s.
Result<QuantizedLinear> import_awq_gemm(const std::string& name, const Tensor& qweight, const Tensor& qzeros,
                                        const Tensor& scales, const PrequantConfig& config);

// AutoGPTQ / GPTQModel tensors of one linear `name`:
//   qweight I32 [K/8, N]: nibble i of word [r, n] holds input row 8r + i
//   qzeros  I32 [K/g, N/8]: nibble i of word [g, j] holds column 8j + i's zero (minus one in v1)
//   scales  F16 [K/g, N]; g_idx I32/I64 [K] (an undefined Tensor means k / g)
// w[n, k] = (q - z) * s with the group g_idx[k]. Every run of g consecutive input columns must share
// one g_idx value (the group labels may be permuted: their rows are gathered); an act-order
// checkpoint whose groups scatter over the columns is rejected as unsupported, naming g_idx.
Result<QuantizedLinear> import_gptq(const std::string& name, const Tensor& qweight, const Tensor& qzeros,
                                    const Tensor& scales, const Tensor& g_idx, const PrequantConfig& config);

}  // namespace anvil
