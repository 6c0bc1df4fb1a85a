// Turns CUDA runtime and cuBLASLt return codes into anvil Status values naming the failed op.
// Host-only; included by the backend and the launchers in ops/. Nothing here throws or aborts.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <string>

#include "core/status.h"

namespace anvil::cuda {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::ok();
  const std::string msg = std::string("cuda: ") + what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  if (err == cudaErrorMemoryAllocation) return out_of_memory(msg);
  return internal_error(msg);
}

inline Status cublas_status(cublasStatus_t err, const char* what) {
  if (err == CUBLAS_STATUS_SUCCESS) return Status::ok();
  return internal_error(std::string("cublasLt: ") + what + ": " + cublasLtGetStatusName(err) + " (" +
                        cublasLtGetStatusString(err) + ")");
}

// After a kernel launch: a bad configuration or an earlier asynchronous fault becomes a Status
// naming the kernel.
inline Status check_launch(const char* kernel) { return cuda_status(cudaGetLastError(), kernel); }

}  // namespace anvil::cuda

#define ANVIL_CUDA_RETURN_IF_ERROR(call, what) ANVIL_RETURN_IF_ERROR(::anvil::cuda::cuda_status((call), (what)))
#define ANVIL_CUBLAS_RETURN_IF_ERROR(call, what) ANVIL_RETURN_IF_ERROR(::anvil::cuda::cublas_status((call), (what)))
