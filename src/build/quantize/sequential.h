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

// A projection as the sequential run quantized it: the packed weight and, when the quantizer
// changed coordinates (AWQ's column scales, folded elsewhere), the f32 [n, k] weight in the
// checkpoint's coordinates that the calibration model runs from then on (so the later layers see
// what the engine will compute); empty: dequantize(q).
struct SequentialProjection {
  QuantizedLinear q;
  std::vector<float> runtime_weight;
};

// Quantizes one projection: w is its f32 [n, k] weight as the checkpoint has it, input the
// statistics of its input from the sequential run (k, tokens, abs_mean [k] and the
// symmetric Hessian sum_t x_t x_t^T [k, k]).
using ProjectionQuantizer = std::function<Result<SequentialProjection>(
    const std::string& weight, const std::vector<float>& w, int64_t n, int64_t k, const LinearInputStats& input)>;

// Optional: called once per layer after its calibration pass, before its first projection is
// quantized, with every projection's input statistics by weight name (a method whose choices for
// one projection depend on another's, as AWQ's down_proj scales fold into gate_up, plans here).
using LayerPlanner = std::function<Status(int64_t layer, const std::map<std::string, const LinearInputStats*>& inputs)>;

// Every layer projection of `def` (projection_inputs), quantized in layer order by `quantize`.
// Runs on `device` or, when null, the CPU. Cost: num_layers calibration passes plus the
// quantizer's own work.
Result<std::map<std::string, QuantizedLinear>> quantize_sequentially(const ModelDefinition& def, const Checkpoint& ckpt,
                                                                     Backend* device, const CalibrationData& data,
                                                                     const ProjectionQuantizer& quantize,
                                                                     const LayerPlanner& plan_layer = nullptr);

}  // namespace anvil
