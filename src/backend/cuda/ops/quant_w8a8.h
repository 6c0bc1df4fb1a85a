// W8A8 linear (backend.h QuantFormat::kFp8W8A8 / kInt8W8A8): out[M, N] = x[M, K] @ dequant(w)^T
// (+ bias) with 8-bit weights AND 8-bit activations quantized per token at run time.
//
//   x [M, K] bf16/f16 ──act_quant──> qx [M, K] e4m3/i8 + s_t [M] f32        (scratch, this class)
//   w [N, K] e4m3/i8 + s_w [N] f32 (per output channel)
//   fp8,  fused:    cuBLASLt e4m3 x e4m3, outer-vector scales A = s_w, B = s_t, bias epilogue -> out
//   fp8,  epilogue: cuBLASLt e4m3 x e4m3 -> f32 acc [M, N] (scratch) -> w8a8_epilogue -> out
//   int8:           cuBLASLt i8 x i8 (COMPUTE_32I) -> i32 acc [M, N] (scratch) -> w8a8_epilogue -> out
//
// cuBLASLt sees the row-major problem as the column-major TN case (like ops/linear.h): A = w as
// [K, N] (ld K, transposed), B = qx as [K, M] (ld K), D = out^T as [N, M] (ld N). Shapes: K % 16 == 0
// and N % 8 == 0 (16-byte rows for the 8-bit operands and the 16-bit output; IMMA needs K, N % 4),
// any M >= 1. FP8 needs sm_89+; the outer-vector (per-channel x per-token) scaling needs cuBLASLt
// 12.9+ on sm_90+ and is used when cuBLASLt offers an algorithm for it, else the epilogue path.
// Plans (descriptors + algorithm) are cached per shape. The scratch (quantized activations, token
// scales, accumulators) and the cuBLASLt workspace grow only outside CUDA-graph capture: run the
// largest shape once (or reserve()) before capturing; run() never allocates or syncs otherwise.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>
#include <tuple>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/status.h"

namespace anvil::cuda {

struct W8A8Shape {
  QuantFormat format = QuantFormat::kFp8W8A8;  // kFp8W8A8 or kInt8W8A8
  int64_t m = 0, n = 0, k = 0;
  DType in_dtype = DType::kBF16;   // x: bf16 or f16
  DType out_dtype = DType::kBF16;  // bf16, f16 or f32
  DType bias_dtype = DType::kBF16; // bf16, f16 or f32
  bool has_bias = false;
};

// How a shape runs (see the picture above).
enum class W8A8Path { kFusedScales, kEpilogue };
const char* w8a8_path_name(W8A8Path p);

// Per-token quantization (kernels/quant/act_quant.cuh): q [rows, k] e4m3 or i8, scales [rows] f32.
// x [rows, k] bf16/f16, 16-byte aligned, k % 8 == 0.
Status launch_act_quant(const void* x, DType x_dtype, QuantFormat format, int64_t rows, int64_t k, void* q,
                        float* scales, cudaStream_t stream);

// out = acc * (s_t[m] * s_w[n]) (+ bias[n]) (kernels/quant/w8a8_epilogue.cuh). acc i32 (acc_is_int) or
// f32 [m, n]; n % 8 == 0; acc, s_w and out 16-byte aligned.
Status launch_w8a8_epilogue(const void* acc, bool acc_is_int, const float* s_t, const float* s_w, const void* bias,
                            DType bias_dtype, void* out, DType out_dtype, int64_t m, int64_t n, cudaStream_t stream);

class W8A8Linear {
 public:
  static constexpr size_t kWorkspaceBytes = 32u << 20;

  // The stream's device decides what runs: fp8 needs compute capability 8.9+.
  static Result<std::unique_ptr<W8A8Linear>> create(cudaStream_t stream);
  ~W8A8Linear();
  W8A8Linear(const W8A8Linear&) = delete;
  W8A8Linear& operator=(const W8A8Linear&) = delete;

  // A clear error for shapes / dtypes / devices this class cannot run; ok otherwise.
  Status check(const W8A8Shape& s) const;

  // Quantizes x per token into the scratch, then runs the GEMM. w [N, K] 8-bit, w_scales [N] f32,
  // bias [N] (shape.bias_dtype) or null, out [M, N] (shape.out_dtype). Enqueued on the stream.
  Status run(const W8A8Shape& s, const void* x, const void* w, const float* w_scales, const void* bias, void* out);

  // The GEMM alone, for activations already quantized per token (a fused norm + quant upstream):
  // qx [M, K] 8-bit of the weight's kind, x_scales [M] f32.
  Status run_prequantized(const W8A8Shape& s, const void* qx, const float* x_scales, const void* w,
                          const float* w_scales, const void* bias, void* out);

  // Grows the scratch and workspace for every shape up to (max_m, max_n, max_k). Allocates and
  // synchronizes: call before graph capture.
  Status reserve(int64_t max_m, int64_t max_n, int64_t max_k);

  // The path `s` takes (plans it if needed; outside capture).
  Result<W8A8Path> path_for(const W8A8Shape& s);

  bool fp8_supported() const { return cc_ >= 89; }
  // Knobs (tests and benchmarks). Outer-vector scaling: on by default where cuBLASLt offers it.
  // Fast accumulation: off by default (fp8 partial sums are promoted to f32 periodically).
  void set_fp8_outer_vec_scaling(bool on) { outer_vec_ = on; }
  void set_fp8_fast_accum(bool on) { fast_accum_ = on; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    W8A8Path path = W8A8Path::kEpilogue;
  };
  // (format, m, n, k, out, bias dtype or -1, alignment, fused allowed, fast accum)
  using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, int, int, int, bool, bool>;

  W8A8Linear(cudaStream_t stream, cublasLtHandle_t handle, int cc) : stream_(stream), handle_(handle), cc_(cc) {}
  Result<Plan*> plan_for(const W8A8Shape& s, int align);
  Status build_plan(const W8A8Shape& s, bool fused, int align, Plan& plan);
  // qx_in_scratch: qx / x_scales live in scratch_ (run()) and move with it if it grows.
  Status gemm(const W8A8Shape& s, Plan* plan, int align, const void* qx, const float* x_scales, bool qx_in_scratch,
              const void* w, const float* w_scales, const void* bias, void* out);
  // Alignment hint for the heuristic: the smallest of the operands' (capped at 16 bytes; null = 256).
  static int align_of(const W8A8Shape& s, const void* qx, const void* w, const void* bias, const void* out);
  Status grow(size_t scratch_bytes);
  static size_t qx_bytes(int64_t m, int64_t k);
  static size_t st_offset(int64_t m, int64_t k);
  static size_t acc_bytes(int64_t m, int64_t n);
  static void destroy(Plan& p);

  cudaStream_t stream_;
  cublasLtHandle_t handle_;
  int cc_ = 0;  // compute capability, major * 10 + minor
  bool outer_vec_ = true;
  bool fast_accum_ = false;
  void* workspace_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  // Outgrown scratch buffers: freed only at destruction, since a captured CUDA graph may still
  // point into one (a decode bucket captured before a longer prefill grew the scratch).
  std::vector<void*> retired_;
  std::map<PlanKey, Plan> plans_;
};

// Backend glue: validates CudaBackend::linear_quantized's tensors for the W8A8 formats (x in the
// compute dtype, out compute dtype or f32, bias compute dtype or f32) and runs them.
Status w8a8_linear(W8A8Linear& runner, DType compute_dtype, const Tensor& x, const QuantizedWeight& w,
                   const Tensor& bias, Tensor out);

}  // namespace anvil::cuda
