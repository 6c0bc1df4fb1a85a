// Rotary inverse frequencies, bit-for-bit as HF transformers 5 computes them on CPU: every step in
// float32 in the same order as modeling_rope_utils (torch float32 tensor ops, Python scalars cast
// to float32). Each float op here is one IEEE-rounded torch op; keep them as separate statements.
#include <cmath>
#include <numbers>

#include "model/model_spec.h"

namespace anvil {
namespace {

// inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)), float32 throughout. torch's
// `1.0 / t` is `t.reciprocal() * 1.0`. pow is rounded once from float64, which matches torch's
// vectorized powf except where that one (<= 1 ulp accurate) rounds the other way.
std::vector<float> default_inv_freq(double theta, int64_t dim) {
  const float base = static_cast<float>(theta);
  const float dim_f = static_cast<float>(dim);
  std::vector<float> inv(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / dim_f;
    const float p = static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(exponent)));
    inv[static_cast<size_t>(i)] = 1.0f / p;
  }
  return inv;
}

// transformers' _compute_llama3_parameters: frequencies whose wavelength exceeds
// old_context_len / low_freq_factor are divided by `factor`, those below
// old_context_len / high_freq_factor are kept, and the band between is interpolated smoothly.
void apply_llama3(const RopeScaling& rs, std::vector<float>& inv) {
  const float factor = static_cast<float>(rs.factor);
  const float low_freq_factor = static_cast<float>(rs.low_freq_factor);
  const float old_context_len = static_cast<float>(rs.original_max_position_embeddings);
  // Python computes these scalars in float64; torch casts them to float32 for the comparisons.
  const double old_len_d = static_cast<double>(rs.original_max_position_embeddings);
  const float low_freq_wavelen = static_cast<float>(old_len_d / rs.low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(old_len_d / rs.high_freq_factor);
  const float freq_factor_span = static_cast<float>(rs.high_freq_factor - rs.low_freq_factor);
  const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
  for (float& f : inv) {
    const float wavelen = (1.0f / f) * two_pi;  // 2 * math.pi / inv_freq
    const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
    const float ratio = (1.0f / wavelen) * old_context_len;  // old_context_len / wavelen
    const float smooth = (ratio - low_freq_factor) / freq_factor_span;
    const float one_minus = 1.0f - smooth;
    const float low_part = (one_minus * scaled) / factor;
    const float high_part = smooth * scaled;
    const float smoothed = low_part + high_part;
    const bool is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    f = is_medium ? smoothed : scaled;
  }
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelSpec& spec) {
  std::vector<float> inv = default_inv_freq(spec.rope_theta, spec.head_dim);
  switch (spec.rope_scaling.type) {
    case RopeScalingType::kNone:
      break;
    case RopeScalingType::kLinear: {
      const float factor = static_cast<float>(spec.rope_scaling.factor);
      for (float& f : inv) f = f / factor;
      break;
    }
    case RopeScalingType::kLlama3:
      apply_llama3(spec.rope_scaling, inv);
      break;
  }
  return inv;
}

}  // namespace anvil
