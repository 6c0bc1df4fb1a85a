// Launcher for kernels/gemm/skinny_gemm.cuh: checks the contract, picks rows per CTA, dispatches
// on dtype (bf16 / f16), M (1..8) and rows per CTA (2, 4, 8).
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/gemm/skinny_gemm.cuh"
#include "backend/cuda/ops/pdl_launch.h"
#include "backend/cuda/ops/skinny_gemm.h"

namespace anvil::cuda {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class E, int M, int ROWS>
cudaError_t launch_rows(const kern::SkinnyGemmParams& p, bool pdl, cudaStream_t stream) {
  PdlLaunchConfig l(dim3(static_cast<unsigned>((p.n + ROWS - 1) / ROWS)), dim3(kern::kSkinnyThreads), stream, pdl);
  return cudaLaunchKernelEx(&l.cfg, kern::skinny_gemm_kernel<E, M, ROWS>, p);
}

template <class E, int M>
cudaError_t launch_m(const kern::SkinnyGemmParams& p, int rows, bool pdl, cudaStream_t stream) {
  if (rows == 2) return launch_rows<E, M, 2>(p, pdl, stream);
  if (rows == 4) return launch_rows<E, M, 4>(p, pdl, stream);
  if constexpr (M <= 2) return launch_rows<E, M, 8>(p, pdl, stream);
  return launch_rows<E, M, 4>(p, pdl, stream);  // 8 rows x M > 2 accumulators spill: refused earlier
}

template <class E>
cudaError_t launch_dtype(const kern::SkinnyGemmParams& p, int64_t m, int rows, bool pdl, cudaStream_t stream) {
  switch (m) {
    case 1: return launch_m<E, 1>(p, rows, pdl, stream);
    case 2: return launch_m<E, 2>(p, rows, pdl, stream);
    case 3: return launch_m<E, 3>(p, rows, pdl, stream);
    case 4: return launch_m<E, 4>(p, rows, pdl, stream);
    case 5: return launch_m<E, 5>(p, rows, pdl, stream);
    case 6: return launch_m<E, 6>(p, rows, pdl, stream);
    case 7: return launch_m<E, 7>(p, rows, pdl, stream);
    default: return launch_m<E, 8>(p, rows, pdl, stream);
  }
}

// Programmatic dependent launch needs sm_90; the attribute is left off below it.
bool device_supports_pdl() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  return major >= 9;
}

}  // namespace

bool skinny_gemm_supported(const SkinnyGemmArgs& a) {
  if (a.m < 1 || a.m > kSkinnyGemmMaxM || a.n < 1 || a.k < 8 || a.k % 8 != 0) return false;
  if (a.dtype != DType::kBF16 && a.dtype != DType::kF16) return false;
  if (a.out_dtype != a.dtype && a.out_dtype != DType::kF32) return false;
  if (a.bias && a.bias_dtype != a.dtype && a.bias_dtype != DType::kF32) return false;
  // Grid x is at most 2^31 - 1 CTAs of >= 2 rows.
  if (a.n > (int64_t{1} << 31)) return false;
  return a.x && a.w && a.out && aligned16(a.x) && aligned16(a.w);
}

bool skinny_gemm_preferred(int64_t m, int64_t n, int64_t k) {
  if (m <= 2) return true;
  return m <= 4 && n * k >= (int64_t{1} << 26);
}

// Measured on H100 (bench/cuda_kernels.md, Skinny GEMM): 2 rows per CTA is fastest or within 1%
// for M <= 4 (more CTAs, shorter tail); at M > 4 the x re-reads per row pair cost more than the
// tail, and 4 rows win by 15-20%.
int skinny_gemm_rows_per_cta(int64_t m, int64_t n) {
  (void)n;
  return m <= 4 ? 2 : 4;
}

Status launch_skinny_gemm(const SkinnyGemmArgs& a, cudaStream_t stream, int rows_per_cta) {
  if (!skinny_gemm_supported(a)) {
    return invalid_argument("skinny_gemm: unsupported problem M=" + std::to_string(a.m) + " N=" + std::to_string(a.n) +
                            " K=" + std::to_string(a.k) + " " + std::string(dtype_name(a.dtype)) +
                            " (needs M in 1..8, K % 8 == 0, 16-byte aligned x and w, bf16/f16)");
  }
  if (rows_per_cta == 0) rows_per_cta = skinny_gemm_rows_per_cta(a.m, a.n);
  if (rows_per_cta != 2 && rows_per_cta != 4 && (rows_per_cta != 8 || a.m > 2)) {
    return invalid_argument("skinny_gemm: rows_per_cta must be 0, 2, 4 or (for M <= 2) 8, got " +
                            std::to_string(rows_per_cta));
  }
  kern::SkinnyGemmParams p;
  p.x = static_cast<const uint16_t*>(a.x);
  p.w = static_cast<const uint16_t*>(a.w);
  p.bias = a.bias;
  p.out = a.out;
  p.n = a.n;
  p.k = a.k;
  p.bias_f32 = a.bias_dtype == DType::kF32;
  p.out_f32 = a.out_dtype == DType::kF32;
  const bool pdl = a.early_weight_reads && device_supports_pdl();
  const cudaError_t err = a.dtype == DType::kBF16 ? launch_dtype<kern::Bf16>(p, a.m, rows_per_cta, pdl, stream)
                                                  : launch_dtype<kern::F16>(p, a.m, rows_per_cta, pdl, stream);
  ANVIL_CUDA_RETURN_IF_ERROR(err, "skinny_gemm_kernel launch");
  return check_launch("skinny_gemm_kernel");
}

}  // namespace anvil::cuda
