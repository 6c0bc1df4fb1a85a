// Dense GEMM through cuBLASLt for Backend::linear: out[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]).
//
// In cuBLASLt's column-major terms the row-major problem is the TN case: D^T[N, M] =
// op(A = w viewed as K x N, transposed) x (B = x viewed as K x M). Inputs bf16/fp16, fp32
// accumulation and scaling, output the input dtype or fp32 (logits); bias through the BIAS
// epilogue. A plan (descriptors + algorithm) is cached per (M, N, K, dtypes, bias, alignment);
// the algorithm comes from cublasLtMatmulAlgoGetHeuristic, or from autotune(), which times the
// top candidates for a shape and pins the fastest for every M in the same power-of-two bucket.
// The workspace is allocated once, so run() never allocates and can be captured in a CUDA graph.
// Decode-sized problems (M <= skinny_max_m() where skinny_gemm_preferred(), K % 8 == 0, 16-byte
// aligned x and w) bypass cuBLASLt for the weight-streaming kernel of ops/skinny_gemm.h (see
// bench/cuda_kernels.md). On sm_90 that kernel starts reading w before the previous kernel on the
// stream has finished (PDL): w must not be written by the kernel launched just before run().
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "core/dtype.h"
#include "core/status.h"

namespace anvil::cuda {

struct LinearShape {
  int64_t m = 0, n = 0, k = 0;
  DType in_dtype = DType::kBF16;   // x and w
  DType out_dtype = DType::kBF16;  // the input dtype or f32
  DType bias_dtype = DType::kBF16;
  bool has_bias = false;
};

// A cuBLASLt algorithm as plain bytes (cublasLtMatmulAlgo_t is 8 opaque u64), so an engine can
// carry the autotuned choice; valid for the cuBLASLt version that produced it.
using LinearAlgoBytes = std::array<uint64_t, 8>;

struct LinearAutotuneResult {
  int candidates_timed = 0;
  float best_us = 0.0f;       // median time of the pinned algorithm
  float heuristic_us = 0.0f;  // median time of the heuristic's first choice
  LinearAlgoBytes algo{};     // the pinned algorithm
};

// cublasLtGetVersion() of the library anvil runs with.
int64_t cublaslt_version();

class LinearRunner {
 public:
  static constexpr size_t kWorkspaceBytes = 32u << 20;

  static Result<std::unique_ptr<LinearRunner>> create(cudaStream_t stream);
  ~LinearRunner();
  LinearRunner(const LinearRunner&) = delete;
  LinearRunner& operator=(const LinearRunner&) = delete;

  // Enqueues the GEMM on the stream. bias may be null when !shape.has_bias.
  Status run(const LinearShape& shape, const void* x, const void* w, const void* bias, void* out);

  // Largest M routed to the skinny GEMM kernel (0: always cuBLASLt); below it the measured rule
  // skinny_gemm_preferred() decides.
  static constexpr int64_t kSkinnyMaxMDefault = 8;
  void set_skinny_max_m(int64_t m) { skinny_max_m_ = m; }
  int64_t skinny_max_m() const { return skinny_max_m_; }

  // Times up to `max_candidates` heuristic algorithms on scratch buffers of this shape (filled
  // with a nonzero pattern) and pins the fastest for M's power-of-two bucket. Allocates and
  // synchronizes: call it at build / load time, never while capturing.
  Result<LinearAutotuneResult> autotune(const LinearShape& shape, int max_candidates, int iterations);

  // Pins a saved algorithm (from autotune() on the same GPU and cuBLASLt version) for M's
  // bucket without timing. kUnsupported when cuBLASLt rejects it for this shape (another
  // library version or GPU): the caller re-times instead. Never while capturing.
  Status pin(const LinearShape& shape, const LinearAlgoBytes& algo);

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // (m, n, k, in, out, bias dtype or -1, alignment bits of x | w | out | bias)
  using PlanKey = std::tuple<int64_t, int64_t, int64_t, int, int, int, int>;
  // (m bucket, n, k, in, out, bias dtype or -1)
  using PinKey = std::tuple<int64_t, int64_t, int64_t, int, int, int>;

  LinearRunner(cudaStream_t stream, cublasLtHandle_t handle, void* workspace)
      : stream_(stream), handle_(handle), workspace_(workspace) {}
  Result<Plan*> plan_for(const LinearShape& s, int align_bytes);
  Status make_descriptors(const LinearShape& s, Plan& plan);
  Result<int> heuristics(const LinearShape& s, const Plan& plan, int align_bytes, cublasLtMatmulHeuristicResult_t* out,
                         int max_results);
  Status launch(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const void* x, const void* w, const void* bias,
                void* out);
  static void destroy(Plan& p);
  // Records `algo` for the shape's bucket and drops built plans of that bucket.
  void set_pinned(const LinearShape& s, const cublasLtMatmulAlgo_t& algo);

  cudaStream_t stream_;
  cublasLtHandle_t handle_;
  void* workspace_;
  std::map<PlanKey, Plan> plans_;
  std::map<PinKey, cublasLtMatmulAlgo_t> pinned_;
  int64_t skinny_max_m_ = kSkinnyMaxMDefault;
};

}  // namespace anvil::cuda
