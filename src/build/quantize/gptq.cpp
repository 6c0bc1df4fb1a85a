// GPTQ int4 group quantization (see gptq.h). Working copy W is f32 [n, k] in visiting order; U is
// the upper Cholesky factor of (H + damp I)^-1 in that order, f32 [k, k]:
//   for each block [i1, i2) of columns (rows of W in parallel):
//     for i in block: q = Q(W[:, i]); e = (W[:, i] - q) / U[i, i]; W[:, i+1:i2] -= e U[i, i+1:i2]
//   then the lazy update W[:, i2:] -= E[:, block] U[block, i2:] (one GEMM).
#include "build/quantize/gptq.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <string>

#include "build/quantize/dense_linalg.h"
#include "build/quantize/int4_group_codec.h"
#include "build/quantize/rtn.h"
#include "core/dtype.h"
#include "core/logging.h"
#include "core/thread_pool.h"

namespace anvil {
namespace {

using quant_detail::Int4GroupParams;

// GptqOptions' damping of one diagonal entry v of H (mean_diag: the mean of H's diagonal).
double damped_diagonal(double v, double mean_diag, double damp, bool relative) {
  return v + damp * (relative ? std::max(v, 1e-3 * mean_diag) : mean_diag);
}

// U = upper Cholesky factor of A^-1 for A = H_perm + damp I, through the reversed matrix: if
// J A J = L L^T (J reverses the order) then A = (J L J)(J L J)^T with J L J upper, and
// A^-1 = U^T U for U = (J L J)^-1 = J L^-1 J, upper. One Cholesky and one triangular inverse.
Result<std::vector<float>> inverse_hessian_factor(const std::vector<float>& hessian, const std::vector<int64_t>& perm,
                                                  const std::vector<char>& dead, int64_t k, double damp,
                                                  bool relative) {
  double mean_diag = 0.0;
  for (int64_t i = 0; i < k; ++i) mean_diag += dead[i] ? 1.0 : static_cast<double>(hessian[i * k + i]);
  mean_diag /= static_cast<double>(k);
  std::vector<double> a(static_cast<size_t>(k * k));
  Status last = Status::ok();
  for (int attempt = 0; attempt < 4; ++attempt, damp *= 10.0) {
    // a[i][j] = Hp[k-1-i][k-1-j], Hp[x][y] = H[perm[x]][perm[y]]; lower triangle of a only.
    for (int64_t i = 0; i < k; ++i) {
      const int64_t pi = perm[k - 1 - i];
      for (int64_t j = 0; j <= i; ++j) {
        const int64_t pj = perm[k - 1 - j];
        const int64_t r = std::max(pi, pj), c = std::min(pi, pj);
        double v = (dead[pi] || dead[pj]) ? 0.0 : static_cast<double>(hessian[r * k + c]);
        if (i == j) {
          v = damped_diagonal(dead[pi] ? 1.0 : v, mean_diag, damp, relative);
        }
        a[static_cast<size_t>(i * k + j)] = v;
      }
    }
    last = quant_detail::cholesky_lower(a.data(), k);
    if (last.is_ok()) break;
    ANVIL_LOG_WARN("GPTQ: Hessian + %.3g * mean(diag) is not positive definite (%s); raising the damping", damp,
                   last.message().c_str());
  }
  if (!last.is_ok()) {
    return invalid_argument("gptq_quantize_int4: the Hessian is not positive definite even with damping " +
                            std::to_string(damp / 10.0) + " * mean(diag): " + last.message());
  }
  quant_detail::invert_lower_triangular(a.data(), k);
  std::vector<float> u(static_cast<size_t>(k * k), 0.0f);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i; j < k; ++j)
      u[static_cast<size_t>(i * k + j)] = static_cast<float>(a[static_cast<size_t>((k - 1 - i) * k + (k - 1 - j))]);
  return u;
}

// Checks shared by both formats.
Status check_gptq_args(const std::string& who, int64_t k, const std::vector<float>& hessian, const GptqOptions& opts) {
  if (static_cast<int64_t>(hessian.size()) != k * k) {
    return invalid_argument(who + ": hessian has " + std::to_string(hessian.size()) + " elements, expected K*K = " +
                            std::to_string(k * k) + " (was the calibration run asked for Hessians?)");
  }
  if (!(opts.damp >= 0.0) || !std::isfinite(opts.damp)) {
    return invalid_argument(who + ": damp " + std::to_string(opts.damp) + " must be finite and >= 0");
  }
  if (opts.block_size <= 0) {
    return invalid_argument(who + ": block_size " + std::to_string(opts.block_size) + " must be > 0");
  }
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      if (!std::isfinite(hessian[i * k + j])) {
        return invalid_argument(who + ": hessian[" + std::to_string(i) + ", " + std::to_string(j) + "] is not finite");
      }
    }
    if (hessian[i * k + i] < 0.0f) {
      return invalid_argument(who + ": hessian diagonal [" + std::to_string(i) + "] = " +
                              std::to_string(hessian[i * k + i]) + " is negative (not a sum of x x^T)");
    }
  }
  return Status::ok();
}

// The visiting order (act_order: descending H_ii, stable) and the dead-channel mask.
void visiting_order(const std::vector<float>& hessian, int64_t k, bool act_order, std::vector<int64_t>* perm,
                    std::vector<char>* dead) {
  dead->assign(static_cast<size_t>(k), 0);
  for (int64_t i = 0; i < k; ++i) (*dead)[i] = hessian[i * k + i] == 0.0f;
  perm->resize(static_cast<size_t>(k));
  std::iota(perm->begin(), perm->end(), 0);
  if (act_order) {
    std::stable_sort(perm->begin(), perm->end(),
                     [&](int64_t a, int64_t b) { return hessian[a * k + a] > hessian[b * k + b]; });
  }
}

// The GPTQ sweep shared by every format. wp [n, k] holds the working weights in visiting order;
// quantize(r, i, wr) returns the dequantized value of wr[i] (row r, visiting position i) and
// stores its code; wr is the row's working copy, fully updated up to column i.
template <typename ColumnQuantizer>
void gptq_sweep(std::vector<float>& wp, int64_t n, int64_t k, int64_t block, const std::vector<float>& u,
                ColumnQuantizer&& quantize) {
  std::vector<float> err(static_cast<size_t>(n * block));  // [n, block]
  for (int64_t i1 = 0; i1 < k; i1 += block) {
    const int64_t i2 = std::min(k, i1 + block), bw = i2 - i1;
    ThreadPool::global().parallel_for(n, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* wr = wp.data() + r * k;
        float* er = err.data() + r * block;
        for (int64_t i = i1; i < i2; ++i) {
          const float e = (wr[i] - quantize(r, i, wr)) / u[i * k + i];
          const float* ui = u.data() + i * k;
          for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
          er[i - i1] = e;
        }
      }
    });
    if (i2 < k) quant_detail::gemm_sub(wp.data() + i2, k, err.data(), block, u.data() + i1 * k + i2, k, n, k - i2, bw);
  }
}

// H in visiting order, both triangles, dead channels zeroed, damped as the sweep's objective is
// (the shrinkage that keeps GPTQ from fitting the calibration tokens too closely): [k, k].
std::vector<float> damped_hessian_in_order(const std::vector<float>& hessian, const std::vector<int64_t>& perm,
                                           const std::vector<char>& dead, int64_t k, const GptqOptions& opts) {
  std::vector<float> hp(static_cast<size_t>(k * k));
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t a = std::max(perm[i], perm[j]), b = std::min(perm[i], perm[j]);
      hp[i * k + j] = (dead[a] || dead[b]) ? 0.0f : hessian[a * k + b];
    }
  double mean_diag = 0.0;
  for (int64_t i = 0; i < k; ++i) mean_diag += hp[i * k + i];
  mean_diag /= static_cast<double>(k);
  for (int64_t i = 0; i < k; ++i) {
    hp[i * k + i] = static_cast<float>(damped_diagonal(hp[i * k + i], mean_diag, opts.damp, opts.relative_damp));
  }
  return hp;
}

// d H d^T per row, d = w0 - dq (both [n, k], in hp's column order; hp [k, k] symmetric).
std::vector<double> row_output_errors(const std::vector<float>& w0, const std::vector<float>& dq,
                                      const std::vector<float>& hp, int64_t n, int64_t k) {
  std::vector<float> d(static_cast<size_t>(n * k)), dh(static_cast<size_t>(n * k), 0.0f);
  for (int64_t x = 0; x < n * k; ++x) d[x] = w0[x] - dq[x];
  quant_detail::gemm_sub(dh.data(), k, d.data(), k, hp.data(), k, n, k, k);  // -D H
  std::vector<double> err(static_cast<size_t>(n), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i) err[r] -= static_cast<double>(d[r * k + i]) * dh[r * k + i];
  return err;
}

}  // namespace

Result<QuantizedLinear> gptq_quantize_int4(const float* w, int64_t n, int64_t k, int32_t group_size,
                                           const std::vector<float>& hessian, const GptqOptions& opts) {
  ANVIL_RETURN_IF_ERROR(quant_detail::check_int4_group_args("gptq_quantize_int4", w, n, k, group_size));
  ANVIL_RETURN_IF_ERROR(check_gptq_args("gptq_quantize_int4", k, hessian, opts));
  std::vector<char> dead;
  std::vector<int64_t> perm;  // perm[visit position] = original column
  visiting_order(hessian, k, opts.act_order, &perm, &dead);

  const int64_t groups = k / group_size;
  QuantizedLinear q = quant_detail::make_int4_group(n, k, group_size);
  std::vector<float> wp(static_cast<size_t>(n * k));  // working weights, visiting order
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i) wp[r * k + i] = dead[perm[i]] ? 0.0f : w[r * k + perm[i]];

  // H_ii, the weights of the group range search: original column order with act_order (static
  // groups are consecutive original columns), else visiting order (the identity).
  std::vector<float> diag(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) diag[i] = dead[i] ? 0.0f : hessian[i * k + i];
  auto group_params = [&](const float* v, const float* h) {
    return opts.mse_group_params ? quant_detail::int4_group_params_mse(v, group_size, h)
                                 : quant_detail::int4_group_params(v, group_size);
  };
  // Group parameters [n, groups]: with act_order fixed up front from W ("static groups"), else
  // taken when the group's first column comes up.
  std::vector<Int4GroupParams> params(static_cast<size_t>(n * groups));
  if (opts.act_order) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < k; ++c) row[c] = dead[c] ? 0.0f : w[r * k + c];
      for (int64_t g = 0; g < groups; ++g) {
        params[r * groups + g] = group_params(row.data() + g * group_size, diag.data() + g * group_size);
        quant_detail::int4_store_params(q, r, g, params[r * groups + g]);
      }
    }
  }

  ANVIL_ASSIGN_OR_RETURN(std::vector<float> u, inverse_hessian_factor(hessian, perm, dead, k, opts.damp, opts.relative_damp));

  // Without act_order a group must not straddle two blocks: its parameters are read from the
  // block's current (fully updated) columns.
  int64_t block = opts.block_size;
  if (!opts.act_order) block = (block + group_size - 1) / group_size * group_size;
  gptq_sweep(wp, n, k, block, u, [&](int64_t r, int64_t i, const float* wr) {
    const int64_t col = perm[i];
    Int4GroupParams& p = params[r * groups + col / group_size];
    if (!opts.act_order && i % group_size == 0) {
      p = group_params(wr + i, diag.data() + i);
      quant_detail::int4_store_params(q, r, i / group_size, p);
    }
    const int code = quant_detail::int4_code(wr[i], p);
    quant_detail::int4_store_code(q, r, col, code);
    return quant_detail::int4_value(code, p);
  });
  return q;
}

Result<QuantizedLinear> gptq_quantize_fp8(const float* w, int64_t n, int64_t k, const std::vector<float>& hessian,
                                          const GptqOptions& opts) {
  // The row scales of the searched round-to-nearest quantizer (which also validates w).
  ANVIL_ASSIGN_OR_RETURN(QuantizedLinear q, quantize_fp8_per_channel_searched(w, n, k));
  ANVIL_RETURN_IF_ERROR(check_gptq_args("gptq_quantize_fp8", k, hessian, opts));
  std::vector<char> dead;
  std::vector<int64_t> perm;
  visiting_order(hessian, k, opts.act_order, &perm, &dead);
  std::vector<float> wp(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i) wp[r * k + i] = dead[perm[i]] ? 0.0f : w[r * k + perm[i]];
  ANVIL_ASSIGN_OR_RETURN(std::vector<float> u, inverse_hessian_factor(hessian, perm, dead, k, opts.damp, opts.relative_damp));
  std::array<float, 256> value{};
  for (int c = 0; c < 256; ++c) value[c] = f8e4m3_to_f32(static_cast<uint8_t>(c));
  std::vector<float> inv(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) inv[r] = 1.0f / q.scales[r];
  gptq_sweep(wp, n, k, opts.block_size, u, [&](int64_t r, int64_t i, const float* wr) {
    // satfinite: compensation can push a value past 448 * scale; it clamps to +-448.
    const uint8_t code = fp8_e4m3_encode_fast(wr[i] * inv[r]);
    q.data[r * k + perm[i]] = code;
    return value[code] * q.scales[r];
  });
  return q;
}

double gptq_damped_output_error(const float* w, const float* wq, int64_t n, int64_t k, const std::vector<float>& hessian,
                                const GptqOptions& opts) {
  std::vector<char> dead;
  std::vector<int64_t> perm;
  visiting_order(hessian, k, /*act_order=*/false, &perm, &dead);
  const std::vector<float> hp = damped_hessian_in_order(hessian, perm, dead, k, opts);
  const std::vector<double> err = row_output_errors(std::vector<float>(w, w + n * k), std::vector<float>(wq, wq + n * k), hp, n, k);
  double total = 0.0;
  for (double e : err) total += e;
  return total;
}

double gptq_output_error(const float* w, const float* wq, int64_t n, int64_t k, const std::vector<float>& hessian) {
  double total = 0.0;
  std::vector<double> d(static_cast<size_t>(k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) d[c] = static_cast<double>(w[r * k + c]) - static_cast<double>(wq[r * k + c]);
    for (int64_t i = 0; i < k; ++i) {
      double s = 0.0;
      for (int64_t j = 0; j < k; ++j) s += static_cast<double>(hessian[i * k + j]) * d[j];
      total += d[i] * s;
    }
  }
  return total;
}

}  // namespace anvil
