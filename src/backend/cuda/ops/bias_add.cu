// Launcher for kernels/elementwise/bias_add.cuh.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/elementwise/bias_add.cuh"
#include "backend/cuda/ops/elementwise.h"

namespace anvil::cuda {

Status launch_bias_add_f32(float* out, const void* bias, int64_t rows, int64_t n, DType bias_dtype,
                           cudaStream_t stream) {
  if (rows == 0 || n == 0) return Status::ok();
  kern::BiasAddParams p{out, static_cast<const uint16_t*>(bias), rows, n};
  const dim3 grid(static_cast<unsigned>((n + 255) / 256), static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  if (bias_dtype == DType::kBF16) {
    kern::bias_add_f32_kernel<kern::Bf16><<<grid, 256, 0, stream>>>(p);
  } else if (bias_dtype == DType::kF16) {
    kern::bias_add_f32_kernel<kern::F16><<<grid, 256, 0, stream>>>(p);
  } else {
    return unsupported("linear: bias dtype " + std::string(dtype_name(bias_dtype)));
  }
  return check_launch("bias_add_f32_kernel");
}

}  // namespace anvil::cuda
