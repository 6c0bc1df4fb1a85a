// SmoothQuant (Xiao et al. 2022) for W8A8: per-input-channel factors s that move activation
// outliers into the weights, x' = x / s and W' = W diag(s), so per-token int8 activation scales
// stop being dominated by a few channels. The caller folds 1/s into the op producing x.
#pragma once

#include <cstdint>
#include <vector>

#include "build/quantize/quant_types.h"

namespace anvil {

// Bounds of a smoothing factor: outside them one side's int8 range would be wasted entirely.
constexpr float kSmoothQuantMinFactor = 1e-5f;
constexpr float kSmoothQuantMaxFactor = 1e5f;

// s_c = max|X_c|^alpha / max|W_:,c|^(1 - alpha), clamped to [kSmoothQuantMinFactor,
// kSmoothQuantMaxFactor]; 1 for a dead channel (max|X_c| == 0 or max|W_:,c| == 0) and for any
// non-finite statistic. w is [n, k] f32; stats.abs_max must hold k entries (else every factor is
// 1: nothing is known to migrate). alpha is usually 0.5 (0.75+ for outlier-heavy models).
std::vector<float> smoothquant_factors(const float* w, int64_t n, int64_t k, const LinearInputStats& stats,
                                       float alpha);

}  // namespace anvil
