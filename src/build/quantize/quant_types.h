// Host-side types shared by the quantizers (build/quantize/): a linear weight's f32 values in,
// a packed QuantizedLinear out, in exactly the layout backend.h's QuantFormat describes, plus the
// calibration statistics the activation-aware methods (AWQ, SmoothQuant, GPTQ, KV scales) read.
// Everything here is plain data: no backend, no device.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/status.h"

namespace anvil {

// The --quant choices of `anvil build`.
enum class QuantMethod { kNone, kInt8WeightOnly, kInt4WeightOnly, kInt4Awq, kInt4Gptq, kW8A8SmoothQuant, kFp8, kFp8Gptq };
const char* quant_method_name(QuantMethod m);            // "none", "int8-wo", "int4-wo", "int4-awq", "int4-gptq", "w8a8-sq", "fp8", "fp8-gptq"
Result<QuantMethod> quant_method_from_name(const std::string& name);  // error lists the choices

// A packed quantized linear weight of n x k (out x in), host memory, backend.h layout:
//   data: i8 [n, k] | u8 [n, k / 2] (int4) | e4m3 [n, k]
//   scales/offsets: f32 [n] (per channel; offsets empty) or, for kInt4Group, f16 bits
//   [n, k / group_size] each (scales_f16 / offsets_f16).
struct QuantizedLinear {
  QuantFormat format = QuantFormat::kInt8WeightOnly;
  int64_t n = 0, k = 0;
  int32_t group_size = 0;
  std::vector<uint8_t> data;
  std::vector<float> scales;          // per-channel formats
  std::vector<uint16_t> scales_f16;   // kInt4Group
  std::vector<uint16_t> offsets_f16;  // kInt4Group
};

// Dequantizes back to f32 [n, k] (tests, error reports, the CPU reference).
std::vector<float> dequantize(const QuantizedLinear& q);

// Activation statistics of one linear's input, gathered over the calibration tokens.
struct LinearInputStats {
  int64_t k = 0;
  int64_t tokens = 0;
  std::vector<float> abs_max;   // [k] max |x[:, c]|
  std::vector<float> abs_mean;  // [k] mean |x[:, c]|
  // Optional (GPTQ): H = sum_t x_t x_t^T, [k, k] row-major, f32 (one GEMM per sequence);
  // empty unless asked for.
  std::vector<float> hessian;
  // Optional (AWQ): a subsample of input rows kept for the scale search, [rows, k].
  std::vector<float> sample_rows;
};

// What calibration produced: per linear input (keyed by the graph's linear weight name, e.g.
// "layers.3.attn.qkv.weight") and per layer's K/V absolute maxima per KV head.
struct CalibrationStats {
  std::map<std::string, LinearInputStats> linear_inputs;
  std::vector<std::vector<float>> k_abs_max;  // [layer][kv_head]
  std::vector<std::vector<float>> v_abs_max;
  int64_t tokens = 0;
};

}  // namespace anvil
