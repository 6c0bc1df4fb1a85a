// CpuBackend::linear_quantized: the reference semantics of backend.h's QuantFormat. Each thread
// dequantizes its own weight rows to f32 once and dots them with every input row; W8A8 formats
// first quantize each activation row (per-token scale) so the result matches an integer / fp8
// GEMM up to f32 summation order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/thread_pool.h"

namespace anvil {
namespace {

// Row j of the weight, dequantized into `row` [k].
void dequant_row(const QuantizedWeight& w, int64_t j, float* row) {
  const int64_t k = w.k;
  switch (w.format) {
    case QuantFormat::kInt8WeightOnly:
    case QuantFormat::kInt8W8A8: {
      const auto* q = static_cast<const int8_t*>(w.data) + j * k;
      const float s = w.format == QuantFormat::kInt8WeightOnly ? static_cast<const float*>(w.scales)[j] : 1.0f;
      for (int64_t c = 0; c < k; ++c) row[c] = static_cast<float>(q[c]) * s;
      return;
    }
    case QuantFormat::kFp8W8A8: {
      const auto* q = static_cast<const uint8_t*>(w.data) + j * k;
      for (int64_t c = 0; c < k; ++c) row[c] = f8e4m3_to_f32(q[c]);
      return;
    }
    case QuantFormat::kInt4Group: {
      const auto* q = static_cast<const uint8_t*>(w.data) + j * (k / 2);
      const int64_t groups = k / w.group_size;
      const auto* sc = static_cast<const uint16_t*>(w.scales) + j * groups;
      const auto* of = static_cast<const uint16_t*>(w.offsets) + j * groups;
      for (int64_t g = 0; g < groups; ++g) {
        const float s = f16_to_f32(sc[g]), o = f16_to_f32(of[g]);
        for (int64_t c = g * w.group_size; c < (g + 1) * w.group_size; ++c) {
          const int code = (q[c / 2] >> ((c & 1) * 4)) & 0xf;
          row[c] = static_cast<float>(code) * s + o;
        }
      }
      return;
    }
  }
}

// Per-token activation quantization of the W8A8 formats: returns s_t and writes the quantized
// values (as f32) into qx.
float quantize_activation_row(QuantFormat f, const float* x, int64_t k, float* qx) {
  float amax = 0.0f;
  for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(x[c]));
  const float qmax = f == QuantFormat::kInt8W8A8 ? 127.0f : 448.0f;
  const float s = amax > 0.0f ? amax / qmax : 1.0f;
  const float inv = 1.0f / s;
  for (int64_t c = 0; c < k; ++c) {
    if (f == QuantFormat::kInt8W8A8) {
      qx[c] = std::clamp(std::nearbyint(x[c] * inv), -127.0f, 127.0f);
    } else {
      qx[c] = f8e4m3_to_f32(f32_to_f8e4m3(x[c] * inv));
    }
  }
  return s;
}

Status check_quantized(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, const Tensor& out) {
  const std::string what = std::string("linear_quantized (") + quant_format_name(w.format) + ")";
  if (x.dtype != DType::kF32 || x.rank() != 2) return invalid_argument(what + ": x must be f32 [M, K], got " + x.shape.to_string());
  if (!w.data || !w.scales || w.n <= 0 || w.k <= 0) return invalid_argument(what + ": weight data or scales missing");
  if (x.dim(1) != w.k) return invalid_argument(what + ": x has K=" + std::to_string(x.dim(1)) + " but the weight has K=" + std::to_string(w.k));
  if (out.dtype != DType::kF32 || out.rank() != 2 || out.dim(0) != x.dim(0) || out.dim(1) != w.n) {
    return invalid_argument(what + ": out must be f32 [" + std::to_string(x.dim(0)) + ", " + std::to_string(w.n) + "], got " +
                            out.shape.to_string());
  }
  if (bias.defined() && (bias.dtype != DType::kF32 || bias.numel() != w.n)) return invalid_argument(what + ": bias must be f32 [N]");
  if (w.format == QuantFormat::kInt4Group) {
    if (!w.offsets) return invalid_argument(what + ": offsets missing");
    if (w.group_size <= 0 || w.k % w.group_size != 0 || w.group_size % 2 != 0) {
      return invalid_argument(what + ": group_size " + std::to_string(w.group_size) + " does not divide K=" + std::to_string(w.k));
    }
  }
  return Status::ok();
}

}  // namespace

Status CpuBackend::linear_quantized(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor out) {
  ANVIL_RETURN_IF_ERROR(check_quantized(x, w, bias, out));
  const int64_t m = x.dim(0), k = w.k, n = w.n;
  const bool w8a8 = w.format == QuantFormat::kInt8W8A8 || w.format == QuantFormat::kFp8W8A8;
  const float* xp = x.ptr<float>();
  std::vector<float> qx;
  std::vector<float> act_scale(static_cast<size_t>(m), 1.0f);
  if (w8a8) {
    qx.resize(static_cast<size_t>(m * k));
    for (int64_t i = 0; i < m; ++i) act_scale[i] = quantize_activation_row(w.format, xp + i * k, k, qx.data() + i * k);
    xp = qx.data();
  }
  const float* bp = bias.defined() ? bias.ptr<float>() : nullptr;
  const auto* wscale = static_cast<const float*>(w.scales);
  float* op = out.ptr<float>();
  ThreadPool::global().parallel_for(n, [&](int64_t nb, int64_t ne) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t j = nb; j < ne; ++j) {
      dequant_row(w, j, row.data());
      for (int64_t i = 0; i < m; ++i) {
        double acc = 0.0;
        const float* xr = xp + i * k;
        for (int64_t c = 0; c < k; ++c) acc += static_cast<double>(xr[c]) * row[c];
        float v = static_cast<float>(acc);
        if (w8a8) v *= act_scale[i] * wscale[j];
        op[i * n + j] = v + (bp ? bp[j] : 0.0f);
      }
    }
  });
  return Status::ok();
}

}  // namespace anvil
