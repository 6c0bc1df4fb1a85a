// quantize_sequentially: group the projections by layer, then per layer one calibration pass that
// gathers the statistics (Hessian, mean |x|) of that layer's projection inputs, plan,
// quantize, write the quantized weights back into the calibration model.
#include "build/quantize/sequential.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>

#include "build/quantize/quantize_pass.h"
#include "core/logging.h"
#include "runtime/weights.h"

namespace anvil {
namespace {

// "layers.12.mlp.down.weight" -> 12; -1 when the name has no layer index.
int64_t layer_of(const std::string& weight) {
  if (weight.rfind("layers.", 0) != 0) return -1;
  const size_t dot = weight.find('.', 7);
  if (dot == std::string::npos || dot == 7) return -1;
  int64_t l = 0;
  for (size_t i = 7; i < dot; ++i) {
    if (weight[i] < '0' || weight[i] > '9') return -1;
    l = l * 10 + (weight[i] - '0');
  }
  return l;
}

}  // namespace

Result<std::map<std::string, QuantizedLinear>> quantize_sequentially(const ModelDefinition& def, const Checkpoint& ckpt,
                                                                     Backend* device, const CalibrationData& data,
                                                                     const ProjectionQuantizer& quantize,
                                                                     const LayerPlanner& plan_layer) {
  // Layer -> its projections (weight, input tensor), in graph order.
  std::map<int64_t, std::vector<std::pair<std::string, std::string>>> layers;
  for (const auto& [weight, input] : projection_inputs(def.graph)) {
    const int64_t l = layer_of(weight);
    if (l < 0) return internal_error("sequential quantization: projection " + weight + " has no layer index");
    layers[l].emplace_back(weight, input);
  }
  if (layers.empty()) return invalid_argument("sequential quantization: the model has no layer projections");
  ANVIL_ASSIGN_OR_RETURN(CalibrationRun run, CalibrationRun::create(def, ckpt, device, data));

  std::map<std::string, QuantizedLinear> out;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& [l, projections] : layers) {
    // Statistics of this layer's inputs (qkv and gate_up may share none; o and down have their own).
    std::map<std::string, LinearInputStats> inputs;  // by input tensor
    std::map<std::string, std::vector<double>> abs_sum;
    std::set<std::string> dumps;
    for (const auto& [weight, input] : projections) {
      if (dumps.insert(input).second) {
        LinearInputStats& st = inputs[input];
        st.k = def.graph.tensor(def.graph.find(input)).shape.numel();
        st.hessian.assign(static_cast<size_t>(st.k * st.k), 0.0f);
        abs_sum[input].assign(static_cast<size_t>(st.k), 0.0);
      }
    }
    ANVIL_RETURN_IF_ERROR(run.run(dumps, [&](const std::vector<int32_t>& seq) -> Status {
      for (auto& [input, st] : inputs) {
        ANVIL_ASSIGN_OR_RETURN(const float* x, run.dumped(input));
        const int64_t t = static_cast<int64_t>(seq.size());
        add_to_hessian(x, t, st.k, &st.hessian);
        std::vector<double>& sum = abs_sum[input];
        for (int64_t r = 0; r < t; ++r)
          for (int64_t c = 0; c < st.k; ++c) sum[c] += std::fabs(x[r * st.k + c]);
        st.tokens += t;
      }
      return Status::ok();
    }, /*stop_after_dumps=*/true).with_context("sequential calibration of layer " + std::to_string(l)));
    for (auto& [input, st] : inputs) {
      symmetrize_lower(&st.hessian, st.k);
      st.abs_mean.resize(static_cast<size_t>(st.k));
      for (int64_t c = 0; c < st.k; ++c)
        st.abs_mean[c] = static_cast<float>(abs_sum[input][c] / static_cast<double>(std::max<int64_t>(1, st.tokens)));
    }
    if (plan_layer) {
      std::map<std::string, const LinearInputStats*> by_weight;
      for (const auto& [weight, input] : projections) by_weight[weight] = &inputs.at(input);
      ANVIL_RETURN_IF_ERROR(plan_layer(l, by_weight).with_context("planning layer " + std::to_string(l)));
    }
    for (const auto& [weight, input] : projections) {
      const WeightSource* ws = find_weight_source(def, weight);
      if (!ws || ws->shape.rank != 2) return internal_error("sequential quantization: " + weight + " has no 2-D table entry");
      const int64_t n = ws->shape[0], k = ws->shape[1];
      ANVIL_ASSIGN_OR_RETURN(std::vector<float> w, gather_weight_f32(def, *ws, ckpt, nullptr));
      Result<SequentialProjection> q = quantize(weight, w, n, k, inputs.at(input));
      if (!q.is_ok()) return q.status().with_context("quantizing " + weight);
      ANVIL_RETURN_IF_ERROR(run.set_projection_weight(
          weight, q->runtime_weight.empty() ? dequantize(q->q) : std::move(q->runtime_weight)));
      out[weight] = std::move(q->q);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ANVIL_LOG_INFO("sequential quantization: layer %lld of %zu done (%.1f s)", static_cast<long long>(l + 1), layers.size(), s);
  }
  return out;
}

}  // namespace anvil
