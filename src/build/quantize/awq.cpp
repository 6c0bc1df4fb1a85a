// AWQ scale and clip searches (see awq.h). The loss of a candidate is measured exactly as the
// engine will compute: fake-quantize W diag(s) with the kInt4Group RTN quantizer, undo s, and
// multiply the error by the sampled inputs (one GEMM per grid point).
#include "build/quantize/awq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "build/quantize/dense_linalg.h"
#include "build/quantize/int4_group_codec.h"
#include "core/thread_pool.h"

namespace anvil {
namespace {

constexpr int kAlphaGrid = 20;
constexpr int64_t kLossBudget = int64_t{1} << 29;  // multiply-adds per grid point
constexpr int kClipSteps = 10;                      // thresholds 1, 0.95, ..., 0.55 of max|w|
constexpr int64_t kClipRows = 128;

Status check_stats(const std::string& who, int64_t k, const LinearInputStats& stats, bool need_mean) {
  if (stats.k != k) {
    return invalid_argument(who + ": calibration stats are for K=" + std::to_string(stats.k) + ", the weight has K=" +
                            std::to_string(k));
  }
  if (need_mean && static_cast<int64_t>(stats.abs_mean.size()) != k) {
    return invalid_argument(who + ": stats.abs_mean has " + std::to_string(stats.abs_mean.size()) +
                            " entries, expected K=" + std::to_string(k));
  }
  if (stats.sample_rows.empty() || static_cast<int64_t>(stats.sample_rows.size()) % k != 0) {
    return invalid_argument(who + ": stats.sample_rows has " + std::to_string(stats.sample_rows.size()) +
                            " values, expected a non-empty multiple of K=" + std::to_string(k) +
                            " (was the calibration run asked to keep sample rows?)");
  }
  for (size_t i = 0; i < stats.sample_rows.size(); ++i) {
    if (!std::isfinite(stats.sample_rows[i])) {
      return invalid_argument(who + ": stats.sample_rows[" + std::to_string(i / k) + ", " + std::to_string(i % k) +
                              "] is not finite");
    }
  }
  if (need_mean) {
    for (int64_t c = 0; c < k; ++c) {
      if (!(stats.abs_mean[c] >= 0.0f) || !std::isfinite(stats.abs_mean[c])) {
        return invalid_argument(who + ": stats.abs_mean[" + std::to_string(c) + "] = " +
                                std::to_string(stats.abs_mean[c]) + " is not a finite non-negative mean");
      }
    }
  }
  return Status::ok();
}

// ||X E^T||^2 for E [m, k] and X [rows, k]; et is scratch [k, m], out scratch [rows, m].
double output_error(const float* x, int64_t rows, const float* e, int64_t m, int64_t k, std::vector<float>& et,
                    std::vector<float>& out) {
  et.resize(static_cast<size_t>(k * m));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < k; ++c) et[static_cast<size_t>(c * m + r)] = e[r * k + c];
  out.assign(static_cast<size_t>(rows * m), 0.0f);
  quant_detail::gemm_sub(out.data(), m, x, k, et.data(), m, rows, m, k);
  double s = 0.0;
  for (float v : out) s += static_cast<double>(v) * v;
  return s;
}

// The Hessian path's inputs: abs_mean [k] as check_stats checks it, hessian [k, k] finite.
Status check_hessian_stats(const std::string& who, int64_t k, const LinearInputStats& stats) {
  if (stats.k != k || static_cast<int64_t>(stats.abs_mean.size()) != k ||
      static_cast<int64_t>(stats.hessian.size()) != k * k) {
    return invalid_argument(who + ": calibration stats (K=" + std::to_string(stats.k) + ", " +
                            std::to_string(stats.abs_mean.size()) + " means, " + std::to_string(stats.hessian.size()) +
                            " Hessian entries) do not fit the weight's K=" + std::to_string(k));
  }
  for (int64_t c = 0; c < k; ++c) {
    if (!(stats.abs_mean[c] >= 0.0f) || !std::isfinite(stats.abs_mean[c])) {
      return invalid_argument(who + ": stats.abs_mean[" + std::to_string(c) + "] = " +
                              std::to_string(stats.abs_mean[c]) + " is not a finite non-negative mean");
    }
  }
  for (float v : stats.hessian) {
    if (!std::isfinite(v)) return invalid_argument(who + ": the Hessian holds a value that is not finite");
  }
  return Status::ok();
}

// The alpha grid shared by both loss measures: for each alpha, E = W - Q(W diag(s)) diag(1/s)
// over m evenly strided output rows of w [n, k], scored by loss(E [m, k], m).
template <typename Loss>
AwqScaleSearch search_alpha(const float* w, int64_t n, int64_t k, int32_t group_size, const std::vector<float>& abs_mean,
                            int64_t m, Loss&& loss) {
  std::vector<float> wsub(static_cast<size_t>(m * k));
  for (int64_t i = 0; i < m; ++i) {
    const int64_t r = i * n / m;
    std::copy(w + r * k, w + (r + 1) * k, wsub.begin() + i * k);
  }

  float mean_max = 0.0f;
  for (float v : abs_mean) mean_max = std::max(mean_max, v);
  const float mean_floor = std::max(mean_max * 1e-6f, 1e-12f);  // dead channels: a tiny, finite base

  AwqScaleSearch best;
  best.outputs_evaluated = m;
  best.error_best = std::numeric_limits<double>::infinity();
  std::vector<float> s(static_cast<size_t>(k)), ws(wsub.size()), wq(wsub.size());
  for (int step = 0; step < kAlphaGrid; ++step) {
    const float alpha = static_cast<float>(step) / kAlphaGrid;
    float s_max = 0.0f, s_min = std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < k; ++c) {
      s[c] = std::pow(std::max(abs_mean[c], mean_floor), alpha);
      s_max = std::max(s_max, s[c]);
      s_min = std::min(s_min, s[c]);
    }
    const float norm = std::sqrt(s_max * s_min);
    for (float& v : s) v /= norm;
    // W diag(s) must stay in the f16 range of the group parameters; else skip this alpha.
    bool representable = true;
    for (int64_t i = 0; i < m && representable; ++i)
      for (int64_t c = 0; c < k; ++c) {
        ws[i * k + c] = wsub[i * k + c] * s[c];
        if (!(std::fabs(ws[i * k + c]) <= quant_detail::kF16Max)) representable = false;
      }
    if (!representable) continue;
    quant_detail::int4_group_fake_quant(ws.data(), m, k, group_size, wq.data());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t c = 0; c < k; ++c) wq[i * k + c] = wsub[i * k + c] - wq[i * k + c] / s[c];  // error E
    const double err = loss(wq.data(), m);
    if (step == 0) best.error_rtn = err;
    if (err < best.error_best) {
      best.error_best = err;
      best.alpha = alpha;
      best.scales = s;
    }
  }
  // alpha = 0 gives s = 1 whose values are all representable (checked by the callers), so a scale is set.
  return best;
}

}  // namespace

Result<AwqScaleSearch> awq_search(const float* w, int64_t n, int64_t k, int32_t group_size,
                                  const LinearInputStats& stats) {
  const std::string who = "awq_search_scales";
  ANVIL_RETURN_IF_ERROR(quant_detail::check_int4_group_args(who, w, n, k, group_size));
  ANVIL_RETURN_IF_ERROR(check_stats(who, k, stats, /*need_mean=*/true));
  const int64_t rows = static_cast<int64_t>(stats.sample_rows.size()) / k;
  // Output channels the loss is measured on: all, or an even stride under the budget.
  const int64_t m = std::clamp<int64_t>(kLossBudget / std::max<int64_t>(1, rows * k), 1, n);
  std::vector<float> et, out;
  return search_alpha(w, n, k, group_size, stats.abs_mean, m, [&](const float* e, int64_t mm) {
    return output_error(stats.sample_rows.data(), rows, e, mm, k, et, out);
  });
}

Result<AwqScaleSearch> awq_search_hessian(const float* w, int64_t n, int64_t k, int32_t group_size,
                                          const LinearInputStats& stats) {
  const std::string who = "awq_search_hessian";
  ANVIL_RETURN_IF_ERROR(quant_detail::check_int4_group_args(who, w, n, k, group_size));
  ANVIL_RETURN_IF_ERROR(check_hessian_stats(who, k, stats));
  const int64_t m = std::clamp<int64_t>(kLossBudget / std::max<int64_t>(1, k * k), 1, n);
  std::vector<float> eh;
  return search_alpha(w, n, k, group_size, stats.abs_mean, m, [&](const float* e, int64_t mm) {
    // tr(E H E^T) = sum(E o (E H)); gemm_sub leaves -E H.
    eh.assign(static_cast<size_t>(mm * k), 0.0f);
    quant_detail::gemm_sub(eh.data(), k, e, k, stats.hessian.data(), k, mm, k, k);
    double s = 0.0;
    for (size_t i = 0; i < eh.size(); ++i) s -= static_cast<double>(e[i]) * eh[i];
    return s;
  });
}

Result<std::vector<float>> awq_search_scales(const float* w, int64_t n, int64_t k, int32_t group_size,
                                             const LinearInputStats& stats) {
  ANVIL_ASSIGN_OR_RETURN(AwqScaleSearch found, awq_search(w, n, k, group_size, stats));
  return std::move(found.scales);
}

Result<std::vector<float>> awq_search_clip(const float* w_scaled, int64_t n, int64_t k, int32_t group_size,
                                           const LinearInputStats& stats, const std::vector<float>& input_scales) {
  const std::string who = "awq_search_clip";
  ANVIL_RETURN_IF_ERROR(quant_detail::check_int4_group_args(who, w_scaled, n, k, group_size));
  ANVIL_RETURN_IF_ERROR(check_stats(who, k, stats, /*need_mean=*/false));
  if (!input_scales.empty() && static_cast<int64_t>(input_scales.size()) != k) {
    return invalid_argument(who + ": input_scales has " + std::to_string(input_scales.size()) +
                            " entries, expected K=" + std::to_string(k) + " or none");
  }
  for (float v : input_scales) {
    if (!(v > 0.0f) || !std::isfinite(v)) return invalid_argument(who + ": input_scales holds " + std::to_string(v));
  }
  const int64_t all_rows = static_cast<int64_t>(stats.sample_rows.size()) / k;
  const int64_t rows = std::min(all_rows, kClipRows);
  // xt [k, rows]: the (scaled) sample rows transposed, so a group's contribution is an axpy per column.
  std::vector<float> xt(static_cast<size_t>(k * rows));
  for (int64_t t = 0; t < rows; ++t) {
    const float* x = stats.sample_rows.data() + (t * all_rows / rows) * k;
    for (int64_t c = 0; c < k; ++c) xt[c * rows + t] = input_scales.empty() ? x[c] : x[c] / input_scales[c];
  }
  const int64_t groups = k / group_size;
  std::vector<float> clip(static_cast<size_t>(n * groups));
  ThreadPool::global().parallel_for(n, [&](int64_t r0, int64_t r1) {
    std::vector<float> d(static_cast<size_t>(rows));
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const float* v = w_scaled + r * k + g * group_size;
        float amax = 0.0f;
        for (int64_t i = 0; i < group_size; ++i) amax = std::max(amax, std::fabs(v[i]));
        double best_err = std::numeric_limits<double>::infinity();
        float best_t = amax;
        for (int step = 0; step < kClipSteps; ++step) {
          const float t = amax * (1.0f - static_cast<float>(step) / 20.0f);
          const quant_detail::Int4GroupParams p = quant_detail::int4_group_params(v, group_size, t);
          std::fill(d.begin(), d.end(), 0.0f);
          for (int64_t i = 0; i < group_size; ++i) {
            const float e = v[i] - quant_detail::int4_value(quant_detail::int4_code(std::clamp(v[i], -t, t), p), p);
            const float* xc = xt.data() + (g * group_size + i) * rows;
            for (int64_t j = 0; j < rows; ++j) d[j] += e * xc[j];
          }
          double err = 0.0;
          for (float x : d) err += static_cast<double>(x) * x;
          if (err < best_err) {
            best_err = err;
            best_t = t;
          }
        }
        clip[r * groups + g] = best_t;
      }
    }
  });
  return clip;
}

void awq_apply_clip(float* w, int64_t n, int64_t k, int32_t group_size, const std::vector<float>& clip) {
  const int64_t groups = k / group_size;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const float t = clip[r * groups + c / group_size];
      w[r * k + c] = std::clamp(w[r * k + c], -t, t);
    }
}

}  // namespace anvil
