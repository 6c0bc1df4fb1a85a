// Launchers of the W8A8 device code (kernels/quant/): per-token activation quantization and the
// dequantizing epilogue, with dtype dispatch and launch-shape choice (see quant_w8a8.h).
#include <algorithm>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/quant/act_quant.cuh"
#include "backend/cuda/kernels/quant/w8a8_epilogue.cuh"
#include "backend/cuda/ops/quant_w8a8.h"

namespace anvil::cuda {
namespace {

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <class E, class Q>
Status launch_act_quant_typed(const kern::ActQuantParams& p, cudaStream_t stream) {
  const int packs = p.k / 8;
  // Packs per thread: the fewest (up to 8) that keep a CTA at <= 256 threads, or <= 512 for
  // long rows (the register limit at 8 packs); longer rows take the two-read variant.
  int per = 1;
  while (per < 8 && packs > per * 256) per *= 2;
  int threads = (packs + per - 1) / per;
  if (threads > 512) {
    threads = std::min(packs, 1024);
    per = 0;
  }
  threads = std::max(32, (threads + 31) / 32 * 32);
  const dim3 grid(static_cast<unsigned>(p.rows));
  switch (per) {
    case 0: kern::act_quant_kernel<E, Q, 0><<<grid, threads, 0, stream>>>(p); break;
    case 1: kern::act_quant_kernel<E, Q, 1><<<grid, threads, 0, stream>>>(p); break;
    case 2: kern::act_quant_kernel<E, Q, 2><<<grid, threads, 0, stream>>>(p); break;
    case 4: kern::act_quant_kernel<E, Q, 4><<<grid, threads, 0, stream>>>(p); break;
    default: kern::act_quant_kernel<E, Q, 8><<<grid, threads, 0, stream>>>(p); break;
  }
  return check_launch("act_quant_kernel");
}

template <class Acc>
Status launch_epilogue_typed(const kern::W8A8EpilogueParams& p, DType out_dtype, cudaStream_t stream) {
  const int64_t groups = p.m * (p.n / 8);
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((groups + threads - 1) / threads, 132 * 16);
  const dim3 grid(static_cast<unsigned>(std::max<int64_t>(blocks, 1)));
  switch (out_dtype) {
    case DType::kBF16: kern::w8a8_epilogue_kernel<Acc, kern::Bf16><<<grid, threads, 0, stream>>>(p); break;
    case DType::kF16: kern::w8a8_epilogue_kernel<Acc, kern::F16><<<grid, threads, 0, stream>>>(p); break;
    case DType::kF32: kern::w8a8_epilogue_kernel<Acc, kern::OutF32><<<grid, threads, 0, stream>>>(p); break;
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kI8:
    case DType::kI4:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8:
      return unsupported("w8a8 epilogue: output dtype " + std::string(dtype_name(out_dtype)) + " (bf16, f16 or f32)");
  }
  return check_launch("w8a8_epilogue_kernel");
}

}  // namespace

Status launch_act_quant(const void* x, DType x_dtype, QuantFormat format, int64_t rows, int64_t k, void* q,
                        float* scales, cudaStream_t stream) {
  if (rows == 0) return Status::ok();
  if (k <= 0 || k % 8 != 0 || k > (int64_t{1} << 30)) {
    return invalid_argument("act_quant: K=" + std::to_string(k) + " must be a positive multiple of 8");
  }
  if (rows < 0 || rows > 0x7fffffff) return invalid_argument("act_quant: rows=" + std::to_string(rows));
  if (!aligned16(x) || !aligned16(q)) return invalid_argument("act_quant: x and q must be 16-byte aligned");
  kern::ActQuantParams p{static_cast<const uint16_t*>(x), static_cast<uint8_t*>(q), scales, rows, static_cast<int>(k)};
  const bool bf16 = x_dtype == DType::kBF16;
  if (!bf16 && x_dtype != DType::kF16) {
    return unsupported("act_quant: x dtype " + std::string(dtype_name(x_dtype)) + " (bf16 or f16)");
  }
  switch (format) {
    case QuantFormat::kInt8W8A8:
      return bf16 ? launch_act_quant_typed<kern::Bf16, kern::QuantI8>(p, stream)
                  : launch_act_quant_typed<kern::F16, kern::QuantI8>(p, stream);
    case QuantFormat::kFp8W8A8:
      return bf16 ? launch_act_quant_typed<kern::Bf16, kern::QuantE4M3>(p, stream)
                  : launch_act_quant_typed<kern::F16, kern::QuantE4M3>(p, stream);
    case QuantFormat::kInt8WeightOnly:
    case QuantFormat::kInt4Group: break;
  }
  return invalid_argument(std::string("act_quant: format ") + quant_format_name(format) + " quantizes no activations");
}

Status launch_w8a8_epilogue(const void* acc, bool acc_is_int, const float* s_t, const float* s_w, const void* bias,
                            DType bias_dtype, void* out, DType out_dtype, int64_t m, int64_t n, cudaStream_t stream) {
  if (m == 0 || n == 0) return Status::ok();
  if (n % 8 != 0) return invalid_argument("w8a8 epilogue: N=" + std::to_string(n) + " must be a multiple of 8");
  if (!aligned16(acc) || !aligned16(s_w) || !aligned16(out)) {
    return invalid_argument("w8a8 epilogue: acc, weight scales and out must be 16-byte aligned");
  }
  kern::W8A8EpilogueParams p;
  p.acc = acc;
  p.s_t = s_t;
  p.s_w = s_w;
  p.bias = bias;
  p.out = out;
  p.m = m;
  p.n = n;
  if (bias) {
    switch (bias_dtype) {
      case DType::kBF16: p.bias_kind = kern::EpilogueBias::kBf16; break;
      case DType::kF16: p.bias_kind = kern::EpilogueBias::kF16; break;
      case DType::kF32: p.bias_kind = kern::EpilogueBias::kF32; break;
      case DType::kF8E4M3:
      case DType::kF8E5M2:
      case DType::kI8:
      case DType::kI4:
      case DType::kI32:
      case DType::kI64:
      case DType::kU8:
        return unsupported("w8a8 epilogue: bias dtype " + std::string(dtype_name(bias_dtype)) + " (bf16, f16 or f32)");
    }
  }
  return acc_is_int ? launch_epilogue_typed<int32_t>(p, out_dtype, stream)
                    : launch_epilogue_typed<float>(p, out_dtype, stream);
}

}  // namespace anvil::cuda
