// Launcher of the weight-streaming skinny GEMM (kernels/gemm/skinny_gemm.cuh) used for decode:
// out[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]) for 1 <= M <= 8. Enqueues one kernel on the stream,
// never allocates or synchronizes (safe inside CUDA graph capture).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace anvil::cuda {

// Largest M the kernel is instantiated for.
constexpr int64_t kSkinnyGemmMaxM = 8;

struct SkinnyGemmArgs {
  const void* x = nullptr;     // [m, k] in `dtype`
  const void* w = nullptr;     // [n, k] row-major in `dtype`
  const void* bias = nullptr;  // [n] in `dtype` or f32 (bias_dtype), or null
  void* out = nullptr;         // [m, n] in `dtype` or f32 (out_dtype)
  int64_t m = 0, n = 0, k = 0;
  DType dtype = DType::kBF16;  // x and w: bf16 or f16
  DType bias_dtype = DType::kBF16;
  DType out_dtype = DType::kBF16;
  // sm_90: launch with programmatic dependent launch and read the first weights before the
  // previous kernel on the stream has finished. Only valid when that kernel does not write w.
  bool early_weight_reads = false;
};

// True when the kernel accepts the problem: 1 <= m <= 8, n >= 1, k >= 8 with k % 8 == 0, x and w
// 16-byte aligned, dtype bf16/f16, out and bias (if any) in dtype or f32. Anything else belongs to
// cuBLASLt.
bool skinny_gemm_supported(const SkinnyGemmArgs& a);

// Where the kernel beat cuBLASLt on H100 (bench/cuda_kernels.md, Skinny GEMM): M <= 2 on every
// llama-8b decode shape; M = 3..4 only for weights of >= 64 Mi elements (gate_up, lm_head), where
// it ties or loses below; never at M > 4 (cuBLASLt's tensor cores win there).
bool skinny_gemm_preferred(int64_t m, int64_t n, int64_t k);

// Output rows per CTA chosen for (m, n): see skinny_gemm.cu for the measured rule.
int skinny_gemm_rows_per_cta(int64_t m, int64_t n);

// Enqueues the GEMM. rows_per_cta: 0 picks skinny_gemm_rows_per_cta(); 2, 4 or (M <= 2 only) 8
// force a variant (benchmarks). Returns InvalidArgument when !skinny_gemm_supported(a).
Status launch_skinny_gemm(const SkinnyGemmArgs& a, cudaStream_t stream, int rows_per_cta = 0);

}  // namespace anvil::cuda
