// The int4 group quantizer shared by AWQ and GPTQ (see int4_group_codec.h): parameter choice,
// RTN over a matrix, fake quantization and dequantization, all in kInt4Group arithmetic.
#include "build/quantize/int4_group_codec.h"

#include <algorithm>

#include "core/dtype.h"
#include "core/thread_pool.h"

namespace anvil::quant_detail {

namespace {

// Parameters covering [lo, hi] (lo <= hi).
Int4GroupParams params_for_range(float lo, float hi) {
  Int4GroupParams p;
  p.offset_f16 = f32_to_f16(lo);
  p.offset = f16_to_f32(p.offset_f16);
  const float range = hi - p.offset;
  p.scale_f16 = f32_to_f16(range > 0.0f ? range / 15.0f : 0.0f);
  p.scale = f16_to_f32(p.scale_f16);
  p.inv_scale = p.scale > 0.0f ? 1.0f / p.scale : 0.0f;
  return p;
}

}  // namespace

Int4GroupParams int4_group_params(const float* v, int64_t len, float clip) {
  float lo = v[0], hi = v[0];
  for (int64_t i = 1; i < len; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  lo = std::max(lo, -clip);
  hi = std::min(hi, clip);
  if (hi < lo) hi = lo;  // a clip below every value collapses the group onto one value
  return params_for_range(lo, hi);
}

Int4GroupParams int4_group_params_mse(const float* v, int64_t len, const float* importance) {
  float lo = v[0], hi = v[0];
  for (int64_t i = 1; i < len; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  Int4GroupParams best = params_for_range(lo, hi);
  double best_err = std::numeric_limits<double>::infinity();
  for (int step = 0; step < kInt4MseSteps; ++step) {
    const float shrink = 1.0f - static_cast<float>(step) / 20.0f;
    const Int4GroupParams p = params_for_range(lo * shrink, hi * shrink);
    double err = 0.0;
    for (int64_t i = 0; i < len; ++i) {
      const double d = static_cast<double>(v[i]) - int4_value(int4_code(v[i], p), p);
      err += d * d * (importance ? static_cast<double>(importance[i]) : 1.0);
    }
    if (err < best_err) {  // strict: ties keep the wider range
      best_err = err;
      best = p;
    }
  }
  return best;
}

Status check_int4_group_args(const std::string& who, const float* w, int64_t n, int64_t k, int32_t group_size) {
  if (n <= 0 || k <= 0) {
    return invalid_argument(who + ": weight shape [" + std::to_string(n) + ", " + std::to_string(k) + "] is empty");
  }
  if (group_size <= 0 || group_size % 2 != 0 || k % group_size != 0) {
    return invalid_argument(who + ": group_size " + std::to_string(group_size) + " must be even and divide K=" +
                            std::to_string(k));
  }
  if (w == nullptr) return invalid_argument(who + ": weight pointer is null");
  const int64_t total = n * k;
  for (int64_t i = 0; i < total; ++i) {
    if (!(std::fabs(w[i]) <= kF16Max)) {
      return invalid_argument(who + ": weight element [" + std::to_string(i / k) + ", " + std::to_string(i % k) +
                              "] = " + std::to_string(w[i]) + " is not finite or exceeds the f16 range of the group "
                              "parameters");
    }
  }
  return Status::ok();
}

QuantizedLinear make_int4_group(int64_t n, int64_t k, int32_t group_size) {
  QuantizedLinear q;
  q.format = QuantFormat::kInt4Group;
  q.n = n;
  q.k = k;
  q.group_size = group_size;
  q.data.assign(static_cast<size_t>(n * (k / 2)), 0);
  q.scales_f16.assign(static_cast<size_t>(n * (k / group_size)), 0);
  q.offsets_f16.assign(static_cast<size_t>(n * (k / group_size)), 0);
  return q;
}

QuantizedLinear int4_group_rtn(const float* w, int64_t n, int64_t k, int32_t group_size) {
  QuantizedLinear q = make_int4_group(n, k, group_size);
  ThreadPool::global().parallel_for(n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = w + r * k;
      for (int64_t g = 0; g < k / group_size; ++g) {
        const Int4GroupParams p = int4_group_params(row + g * group_size, group_size);
        int4_store_params(q, r, g, p);
        for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) int4_store_code(q, r, c, int4_code(row[c], p));
      }
    }
  });
  return q;
}

void int4_group_fake_quant(const float* w, int64_t n, int64_t k, int32_t group_size, float* out, const float* clip) {
  const int64_t groups = k / group_size;
  ThreadPool::global().parallel_for(n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const float* v = w + r * k + g * group_size;
        float* o = out + r * k + g * group_size;
        const float c = clip ? clip[r * groups + g] : std::numeric_limits<float>::infinity();
        const Int4GroupParams p = int4_group_params(v, group_size, c);
        for (int64_t i = 0; i < group_size; ++i) o[i] = int4_value(int4_code(v[i], p), p);
      }
    }
  });
}

std::vector<float> int4_group_dequantize(const QuantizedLinear& q) {
  std::vector<float> out(static_cast<size_t>(q.n * q.k));
  const int64_t groups = q.k / q.group_size;
  for (int64_t r = 0; r < q.n; ++r) {
    for (int64_t c = 0; c < q.k; ++c) {
      const size_t gi = static_cast<size_t>(r * groups + c / q.group_size);
      const int code = (q.data[static_cast<size_t>(r * (q.k / 2) + c / 2)] >> ((c & 1) * 4)) & 0xf;
      out[static_cast<size_t>(r * q.k + c)] =
          static_cast<float>(code) * f16_to_f32(q.scales_f16[gi]) + f16_to_f32(q.offsets_f16[gi]);
    }
  }
  return out;
}

}  // namespace anvil::quant_detail
