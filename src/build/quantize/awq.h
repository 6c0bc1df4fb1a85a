// AWQ (Lin et al. 2023) for int4 group weights: a per-input-channel scale s makes the salient
// channels (large mean |x_c|) take a larger share of each group's code range. The caller quantizes
// W diag(s) and divides the layer input by s (folded into the op that produces it).
#pragma once

#include <cstdint>
#include <vector>

#include "build/quantize/quant_types.h"
#include "core/status.h"

namespace anvil {

// What the scale search found, for the build log.
struct AwqScaleSearch {
  std::vector<float> scales;  // [k], s_c > 0
  float alpha = 0.0f;         // the grid point chosen; 0 means all ones (plain RTN was best)
  double error_rtn = 0.0;     // ||X (W - RTN(W))^T||^2 on the sample (rows x evaluated outputs)
  double error_best = 0.0;    // the same with the chosen scales; <= error_rtn
  int64_t outputs_evaluated = 0;  // output channels the loss was measured on (all, or a stride)
};

// Grid search over alpha in {0, 1/20, ..., 19/20}: s = mean|x_c|^alpha normalised by
// sqrt(max(s) * min(s)), chosen to minimise || X W^T - X diag(1/s) Q(W diag(s))^T ||^2 over the
// calibration rows stats.sample_rows [rows, k], with Q the kInt4Group RTN quantizer (min/max,
// f16 parameters). When rows * n * k exceeds ~2^29 the loss is measured on an evenly strided
// subset of output channels (every output channel's error is independent, so this estimates the
// same sum). Needs stats.abs_mean [k] and stats.sample_rows; w is [n, k] f32.
Result<AwqScaleSearch> awq_search(const float* w, int64_t n, int64_t k, int32_t group_size,
                                  const LinearInputStats& stats);

// The same search with the loss measured over every calibration token through the input's
// Hessian: ||X E^T||^2 = tr(E H E^T), E = W - diag(1/s)-undone Q(W diag(s)). Needs stats.abs_mean
// [k] and stats.hessian [k, k] (symmetric; sum_t x_t x_t^T); the output channels are strided
// under the same budget (rows * k^2 multiply-adds per grid point). What int4-gptq runs before
// GPTQ (sequential.h gives each layer's Hessians).
Result<AwqScaleSearch> awq_search_hessian(const float* w, int64_t n, int64_t k, int32_t group_size,
                                          const LinearInputStats& stats);

// awq_search(...).scales.
Result<std::vector<float>> awq_search_scales(const float* w, int64_t n, int64_t k, int32_t group_size,
                                             const LinearInputStats& stats);

// AWQ's clipping search, run after scaling: for every (output row, group) the threshold
// t = max|w_g| * (1 - i/20), i = 0..9, minimising the group's contribution to the output error,
// mean_t (x_t,g . (w_g - Q(clip(w_g, t))))^2, over at most 128 sample rows. w_scaled is
// W diag(s) [n, k]; input_scales is s [k] (the sample rows are divided by it) or empty for none.
// Returns the thresholds [n, k / group_size]; apply them with awq_apply_clip.
Result<std::vector<float>> awq_search_clip(const float* w_scaled, int64_t n, int64_t k, int32_t group_size,
                                           const LinearInputStats& stats, const std::vector<float>& input_scales);

// Clamps w [n, k] in place to [-t, t] per (row, group), t from awq_search_clip.
void awq_apply_clip(float* w, int64_t n, int64_t k, int32_t group_size, const std::vector<float>& clip);

}  // namespace anvil
