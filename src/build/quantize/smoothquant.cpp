// SmoothQuant factor computation (see smoothquant.h): one pass over W for the per-column maxima,
// then the closed-form factor per channel.
#include "build/quantize/smoothquant.h"

#include <algorithm>
#include <cmath>

namespace anvil {

std::vector<float> smoothquant_factors(const float* w, int64_t n, int64_t k, const LinearInputStats& stats,
                                       float alpha) {
  std::vector<float> s(static_cast<size_t>(std::max<int64_t>(k, 0)), 1.0f);
  if (w == nullptr || n <= 0 || k <= 0 || static_cast<int64_t>(stats.abs_max.size()) != k || !std::isfinite(alpha)) {
    return s;
  }
  alpha = std::clamp(alpha, 0.0f, 1.0f);
  std::vector<float> w_max(static_cast<size_t>(k), 0.0f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) w_max[c] = std::max(w_max[c], std::fabs(w[r * k + c]));
  for (int64_t c = 0; c < k; ++c) {
    const double x = stats.abs_max[c], wm = w_max[c];
    if (!(x > 0.0) || !(wm > 0.0) || !std::isfinite(x) || !std::isfinite(wm)) continue;  // dead: keep 1
    const double f = std::pow(x, static_cast<double>(alpha)) / std::pow(wm, 1.0 - static_cast<double>(alpha));
    s[c] = static_cast<float>(std::clamp(f, static_cast<double>(kSmoothQuantMinFactor),
                                         static_cast<double>(kSmoothQuantMaxFactor)));
  }
  return s;
}

}  // namespace anvil
