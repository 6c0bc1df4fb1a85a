// Sequential (layer-by-layer) quantization for the Hessian-based methods (GPTQ int4, GPTQ fp8):
// the Hessians of layer l come from a calibration run in which layers 0..l-1 already hold their
// quantized (dequantized back) weights, so each layer compensates the error the layers before it
// left in its inputs, as the GPTQ paper runs it. One calibration pass per layer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "build/quantize/calibration.h"
#include "build/quantize/quant_types.h"

namespace anvil {

// Quantizes one projection: w is its f32 [n, k] weight as the checkpoint has it, hessian its
// input's sum_t x_t x_t^T [k, k] (symmetric) from the sequential run.
using ProjectionQuantizer = std::function<Result<QuantizedLinear>(const std::string& weight, const std::vector<float>& w,
                                                                  int64_t n, int64_t k, const std::vector<float>& hessian)>;

// Every layer projection of `def` (projection_inputs), quantized in layer order by `quantize`.
// Runs on `device` or, when null, the CPU. Cost: num_layers calibration passes plus the
// quantizer's own work.
Result<std::map<std::string, QuantizedLinear>> quantize_sequentially(const ModelDefinition& def, const Checkpoint& ckpt,
                                                                     Backend* device, const CalibrationData& data,
                                                                     const ProjectionQuantizer& quantize);

}  // namespace anvil
