// Internal to build/quantize/ (GPTQ): the few dense kernels it needs on the host, row-major,
// blocked for cache and split over ThreadPool::global(). Not a BLAS: just enough for k <= ~8192
// Hessians and the lazy GPTQ updates. Callers must not be inside a ThreadPool::global() job.
#pragma once

#include <cstdint>

#include "core/status.h"

namespace anvil::quant_detail {

// C[m, n] -= A[m, p] * B[p, n]; leading dimensions lda, ldb, ldc (elements). lower_only: only
// the entries with column <= row are needed (others may or may not be updated).
void gemm_sub(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m, int64_t n,
              int64_t p);
void gemm_sub(double* c, int64_t ldc, const double* a, int64_t lda, const double* b, int64_t ldb, int64_t m,
              int64_t n, int64_t p, bool lower_only = false);

// In-place Cholesky A = L L^T of a symmetric positive definite a [k, k]; reads the lower
// triangle, leaves L there and zeros above the diagonal. Error (naming the column) when a pivot is
// not positive: the matrix is not positive definite in double precision.
Status cholesky_lower(double* a, int64_t k);

// In place: l [k, k] lower triangular with a non-zero diagonal becomes l^-1 (lower triangular).
void invert_lower_triangular(double* l, int64_t k);

}  // namespace anvil::quant_detail
