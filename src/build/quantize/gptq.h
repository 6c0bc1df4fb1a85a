// GPTQ (Frantar et al. 2022) for int4 group and fp8 weights: columns are quantized one at a time and each
// column's error is spread over the not-yet-quantized columns through the inverse Hessian of the
// layer's input, so the layer output X W^T moves as little as possible. Host only, f64 factorization.
#pragma once

#include <cstdint>
#include <vector>

#include "build/quantize/quant_types.h"
#include "core/status.h"

namespace anvil {

// Defaults measured on SmolLM2-135M (docs/quantization.md): each of act_order, the H_ii-weighted
// range search and per-channel damping lowered the held-out perplexity delta.
struct GptqOptions {
  // Damping before factorizing: H_ii += damp * H_ii (relative_damp; at least 1e-3 * mean(diag))
  // or H_ii += damp * mean(diag H). Raised x10, up to 3 times, if H is still not positive definite.
  // Relative damping keeps a few outlier channels (|x| ~100x the rest in real models) from
  // inflating the damping of every other channel, which would turn GPTQ back into RTN there.
  double damp = 0.1;
  bool relative_damp = true;
  int64_t block_size = 128;  // lazy-update block width (rounded up to a multiple of group_size)
  bool act_order = true;     // quantize columns by descending diag(H)
  // Group parameters from int4_group_params_mse weighted by H_ii (the output error a column's
  // rounding costs, to first order) instead of plain min/max.
  bool mse_group_params = true;
};

// Quantizes w [n, k] (out x in, f32) to kInt4Group with groups of group_size consecutive input
// columns, minimising tr((W - Q) H (W - Q)^T) greedily.
//   hessian: [k, k] row-major, H = sum_t x_t x_t^T over the calibration tokens (any positive
//            multiple works); only its lower triangle is read.
//   Dead input channels (H_ii == 0) get W[:, i] = 0 before quantization and H_ii = 1.
//   Group parameters (kInt4Group, f16; min/max or the weighted range search) are taken when the
//   group's first column comes up, from the weights as error compensation has updated them. With act_order the columns are
//   visited by descending H_ii but the groups stay the original consecutive columns (the format's),
//   so every group's parameters are fixed up front from W ("static groups").
// Cost: ~k^3/1.5 f64 flops (Cholesky and triangular inverse) + ~n k^2 f32 flops, over
// ThreadPool::global(); must not be called from inside one of its jobs.
Result<QuantizedLinear> gptq_quantize_int4(const float* w, int64_t n, int64_t k, int32_t group_size,
                                           const std::vector<float>& hessian, const GptqOptions& opts);

// GPTQ for kFp8W8A8 weights (per output channel scales): each row's scale is the one
// quantize_fp8_per_channel_searched picks from w, fixed up front; the columns are then rounded
// to e4m3 one at a time (satfinite) with the error spread as above. Same options (mse_group_params
// has no effect), same cost.
Result<QuantizedLinear> gptq_quantize_fp8(const float* w, int64_t n, int64_t k, const std::vector<float>& hessian,
                                          const GptqOptions& opts);

// tr((W - Wq) H_d (W - Wq)^T) with H_d = H damped as `opts` damps it before the sweep (the
// objective GPTQ minimises; dead channels contribute nothing). f32 GEMM, over ThreadPool::global().
double gptq_damped_output_error(const float* w, const float* wq, int64_t n, int64_t k, const std::vector<float>& hessian,
                                const GptqOptions& opts);

// The undamped quantity: tr((W - Wq) H (W - Wq)^T), f64. w, wq [n, k]; hessian [k, k].
// For tests and build-log reports.
double gptq_output_error(const float* w, const float* wq, int64_t n, int64_t k, const std::vector<float>& hessian);

}  // namespace anvil
