// Small helpers shared by the cuBLASLt GEMM launchers (linear.cpp, quant_w8a8.cpp): the
// cudaDataType of a 16/32-bit float dtype and a pointer's alignment.
#pragma once

#include <library_types.h>

#include <cstdint>
#include <optional>

#include "core/dtype.h"

namespace anvil::cuda {

// CUDA_R_16BF / CUDA_R_16F / CUDA_R_32F for bf16 / f16 / f32; nullopt for the other dtypes.
inline std::optional<cudaDataType_t> float_data_type(DType t) {
  switch (t) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    case DType::kF32: return CUDA_R_32F;
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kI8:
    case DType::kI4:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8: break;
  }
  return std::nullopt;
}

// Largest power of two (<= 256) dividing the address.
inline int pointer_alignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

}  // namespace anvil::cuda
