// Launcher for kernels/activation/act_mul.cuh: dtype x activation dispatch, 16-byte packs when
// f % 8 == 0 and the pointers are aligned.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/activation/act_mul.cuh"
#include "backend/cuda/ops/elementwise.h"
#include "backend/cuda/ops/pdl_launch.h"

namespace anvil::cuda {
namespace {

template <class E, kern::ActKind kAct>
Status launch_typed(const kern::ActMulParams& p, cudaStream_t stream) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(p.gate_up) | reinterpret_cast<uintptr_t>(p.out);
  const bool vec = p.f % 8 == 0 && bits % 16 == 0;
  const int64_t cols = vec ? p.f / 8 : p.f;
  const int threads = static_cast<int>(std::min<int64_t>(256, (cols + 31) / 32 * 32));
  const dim3 grid(static_cast<unsigned>((cols + threads - 1) / threads),
                  static_cast<unsigned>(std::min<int64_t>(p.rows, 65535)));
  if (vec) {
    ANVIL_CUDA_RETURN_IF_ERROR(launch_chained(kern::act_mul_vec_kernel<E, kAct>, grid, threads, 0, stream, p),
                               "act_mul_vec_kernel");
  } else {
    ANVIL_CUDA_RETURN_IF_ERROR(launch_chained(kern::act_mul_scalar_kernel<E, kAct>, grid, threads, 0, stream, p),
                               "act_mul_scalar_kernel");
  }
  return check_launch(vec ? "act_mul_vec_kernel" : "act_mul_scalar_kernel");
}

template <class E>
Status launch_act(const kern::ActMulParams& p, Activation act, cudaStream_t stream) {
  switch (act) {
    case Activation::kSilu: return launch_typed<E, kern::ActKind::kSilu>(p, stream);
    case Activation::kGeluTanh: return launch_typed<E, kern::ActKind::kGeluTanh>(p, stream);
  }
  return invalid_argument("act_mul: unknown activation");
}

}  // namespace

Status launch_act_mul(const void* gate_up, void* out, int64_t rows, int64_t f, Activation act, DType dtype,
                      cudaStream_t stream) {
  if (rows == 0 || f == 0) return Status::ok();
  kern::ActMulParams p;
  p.gate_up = static_cast<const uint16_t*>(gate_up);
  p.out = static_cast<uint16_t*>(out);
  p.rows = rows;
  p.f = f;
  if (dtype == DType::kBF16) return launch_act<kern::Bf16>(p, act, stream);
  if (dtype == DType::kF16) return launch_act<kern::F16>(p, act, stream);
  return unsupported("act_mul: dtype " + std::string(dtype_name(dtype)) + " (the CUDA backend runs bf16 or f16)");
}

}  // namespace anvil::cuda
