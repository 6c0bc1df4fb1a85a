// Launcher for kernels/norm/rms_norm.cuh: the register-resident 16-byte kernel when the row is
// aligned and fits (hidden / 8 <= 8 packs per thread x 1024 threads), the scalar one otherwise.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/norm/rms_norm.cuh"
#include "backend/cuda/ops/elementwise.h"
#include "backend/cuda/ops/pdl_launch.h"

namespace anvil::cuda {
namespace {

template <class E>
Status launch_typed(const kern::RmsNormParams& p, cudaStream_t stream) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(p.x) | reinterpret_cast<uintptr_t>(p.residual) |
                         reinterpret_cast<uintptr_t>(p.weight) | reinterpret_cast<uintptr_t>(p.out);
  const int packs = p.hidden / 8;
  const unsigned grid = static_cast<unsigned>(p.rows);
  if (p.hidden % 8 == 0 && bits % 16 == 0 && packs <= 8 * 1024) {
    // Packs per thread: the fewest power of two (<= 8) that keeps the block at <= 256 threads;
    // beyond 2048 packs the block grows to 1024 threads.
    int vecs = 1;
    while (vecs < 8 && packs > vecs * 256) vecs *= 2;
    int threads = std::min(1024, (packs + vecs - 1) / vecs);
    threads = std::max(32, (threads + 31) / 32 * 32);
    cudaError_t err = cudaSuccess;
    switch (vecs) {
      case 1: err = launch_chained(kern::rms_norm_vec_kernel<E, 1>, grid, threads, 0, stream, p); break;
      case 2: err = launch_chained(kern::rms_norm_vec_kernel<E, 2>, grid, threads, 0, stream, p); break;
      case 4: err = launch_chained(kern::rms_norm_vec_kernel<E, 4>, grid, threads, 0, stream, p); break;
      default: err = launch_chained(kern::rms_norm_vec_kernel<E, 8>, grid, threads, 0, stream, p); break;
    }
    ANVIL_CUDA_RETURN_IF_ERROR(err, "rms_norm_vec_kernel");
    return check_launch("rms_norm_vec_kernel");
  }
  const int threads = std::min(1024, std::max(32, (p.hidden + 31) / 32 * 32));
  ANVIL_CUDA_RETURN_IF_ERROR(launch_chained(kern::rms_norm_scalar_kernel<E>, grid, threads, 0, stream, p),
                             "rms_norm_scalar_kernel");
  return check_launch("rms_norm_scalar_kernel");
}

}  // namespace

Status launch_rms_norm(const void* x, void* residual, const void* weight, void* out, int64_t rows, int hidden,
                       float eps, DType dtype, cudaStream_t stream) {
  if (rows == 0) return Status::ok();
  if (rows > 0x7fffffff) return invalid_argument("rms_norm: too many rows: " + std::to_string(rows));
  kern::RmsNormParams p;
  p.x = static_cast<const uint16_t*>(x);
  p.residual = static_cast<uint16_t*>(residual);
  p.weight = static_cast<const uint16_t*>(weight);
  p.out = static_cast<uint16_t*>(out);
  p.rows = rows;
  p.hidden = hidden;
  p.eps = eps;
  if (dtype == DType::kBF16) return launch_typed<kern::Bf16>(p, stream);
  if (dtype == DType::kF16) return launch_typed<kern::F16>(p, stream);
  return unsupported("rms_norm: dtype " + std::string(dtype_name(dtype)) + " (the CUDA backend runs bf16 or f16)");
}

}  // namespace anvil::cuda
