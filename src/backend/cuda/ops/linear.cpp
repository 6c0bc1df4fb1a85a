// LinearRunner: cuBLASLt plans, heuristic cache and autotuning (see linear.h).
#include "backend/cuda/ops/linear.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/ops/elementwise.h"
#include "backend/cuda/ops/gemm_util.h"
#include "backend/cuda/ops/skinny_gemm.h"

namespace anvil::cuda {
namespace {

Result<cudaDataType_t> cuda_type(DType t, const char* what) {
  if (std::optional<cudaDataType_t> d = float_data_type(t)) return *d;
  return unsupported(std::string("linear: ") + what + " dtype " + std::string(dtype_name(t)) +
                     " (bf16/f16 inputs with bf16/f16/f32 output are supported)");
}

int64_t m_bucket(int64_t m) {
  int64_t b = 1;
  while (b < m) b <<= 1;
  return b;
}

}  // namespace

Result<std::unique_ptr<LinearRunner>> LinearRunner::create(cudaStream_t stream) {
  cublasLtHandle_t handle = nullptr;
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle), "creating the handle");
  void* ws = nullptr;
  Status st = cuda_status(cudaMalloc(&ws, kWorkspaceBytes), "linear: allocating the 32 MiB cuBLASLt workspace");
  if (!st.is_ok()) {
    cublasLtDestroy(handle);
    return st;
  }
  return std::unique_ptr<LinearRunner>(new LinearRunner(stream, handle, ws));
}

LinearRunner::~LinearRunner() {
  for (auto& [key, plan] : plans_) destroy(plan);
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

void LinearRunner::destroy(Plan& p) {
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  if (p.op) cublasLtMatmulDescDestroy(p.op);
  p = Plan{};
}

Status LinearRunner::make_descriptors(const LinearShape& s, Plan& plan) {
  ANVIL_ASSIGN_OR_RETURN(cudaDataType_t in_t, cuda_type(s.in_dtype, "input"));
  ANVIL_ASSIGN_OR_RETURN(cudaDataType_t out_t, cuda_type(s.out_dtype, "output"));
  if (s.in_dtype == DType::kF32) return unsupported("linear: f32 inputs (the CUDA backend computes in bf16/f16)");
  if (s.out_dtype != DType::kF32 && s.out_dtype != s.in_dtype) {
    return unsupported("linear: output dtype must be the input dtype or f32");
  }
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  ANVIL_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)), "transa");
  ANVIL_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)), "transb");
  if (s.has_bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    ANVIL_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)), "bias epilogue");
    ANVIL_ASSIGN_OR_RETURN(cudaDataType_t bias_t, cuda_type(s.bias_dtype, "bias"));
    ANVIL_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_t, sizeof(bias_t)),
        "bias dtype");
  }
  // Column-major: A = w as [K, N] (ld K), B = x as [K, M] (ld K), D = out^T as [N, M] (ld N).
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.a, in_t, s.k, s.n, s.k), "layout A");
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.b, in_t, s.k, s.m, s.k), "layout B");
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.d, out_t, s.n, s.m, s.n), "layout D");
  return Status::ok();
}

Result<int> LinearRunner::heuristics(const LinearShape& s, const Plan& plan, int align_bytes,
                                     cublasLtMatmulHeuristicResult_t* out, int max_results) {
  cublasLtMatmulPreference_t pref = nullptr;
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const uint64_t ws = kWorkspaceBytes;
  const uint32_t align = static_cast<uint32_t>(align_bytes);
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
  }
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_, plan.op, plan.a, plan.b, plan.d, plan.d, pref, max_results, out, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  ANVIL_CUBLAS_RETURN_IF_ERROR(st, "algorithm heuristic");
  if (found == 0) {
    return unsupported("linear: cuBLASLt has no algorithm for M=" + std::to_string(s.m) + " N=" + std::to_string(s.n) +
                       " K=" + std::to_string(s.k) + " " + std::string(dtype_name(s.in_dtype)) + " -> " +
                       std::string(dtype_name(s.out_dtype)));
  }
  return found;
}

Result<LinearRunner::Plan*> LinearRunner::plan_for(const LinearShape& s, int align_bytes) {
  const PlanKey key{s.m, s.n, s.k, static_cast<int>(s.in_dtype), static_cast<int>(s.out_dtype),
                    s.has_bias ? static_cast<int>(s.bias_dtype) : -1, align_bytes};
  auto it = plans_.find(key);
  if (it != plans_.end()) return &it->second;
  Plan plan;
  Status st = make_descriptors(s, plan);
  if (!st.is_ok()) {
    destroy(plan);
    return st;
  }
  // A pinned (autotuned) algorithm for this M bucket, if cuBLASLt accepts it for this exact shape.
  bool have_algo = false;
  const PinKey pin{m_bucket(s.m), s.n, s.k, static_cast<int>(s.in_dtype), static_cast<int>(s.out_dtype),
                   s.has_bias ? static_cast<int>(s.bias_dtype) : -1};
  auto pit = pinned_.find(pin);
  if (pit != pinned_.end()) {
    cublasLtMatmulHeuristicResult_t check{};
    if (cublasLtMatmulAlgoCheck(handle_, plan.op, plan.a, plan.b, plan.d, plan.d, &pit->second, &check) ==
            CUBLAS_STATUS_SUCCESS &&
        check.workspaceSize <= kWorkspaceBytes) {
      plan.algo = pit->second;
      have_algo = true;
    }
  }
  if (!have_algo) {
    cublasLtMatmulHeuristicResult_t result{};
    Result<int> found = heuristics(s, plan, align_bytes, &result, 1);
    if (!found.is_ok()) {
      destroy(plan);
      return found.status();
    }
    plan.algo = result.algo;
  }
  return &plans_.emplace(key, plan).first->second;
}

Status LinearRunner::launch(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const void* x, const void* w,
                            const void* bias, void* out) {
  if (bias) {
    ANVIL_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), "bias pointer");
  }
  const float alpha = 1.0f, beta = 0.0f;
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, plan.op, &alpha, w, plan.a, x, plan.b, &beta, out, plan.d, out,
                                              plan.d, &algo, workspace_, kWorkspaceBytes, stream_),
                               "matmul");
  return Status::ok();
}

Status LinearRunner::run(const LinearShape& s, const void* x, const void* w, const void* bias, void* out) {
  if (s.m == 0 || s.n == 0) return Status::ok();
  if (s.k == 0) return unsupported("linear: K = 0");
  if (s.has_bias && !bias) return invalid_argument("linear: has_bias without a bias pointer");
  if (s.m <= skinny_max_m_ && skinny_gemm_preferred(s.m, s.n, s.k)) {
    // Decode: the weight-streaming kernel, when its dtype / alignment contract holds.
    SkinnyGemmArgs sk{x, w, s.has_bias ? bias : nullptr, out, s.m, s.n, s.k, s.in_dtype, s.bias_dtype, s.out_dtype};
    sk.early_weight_reads = true;  // w is a weight: never written by the kernel just before (PDL)
    if (skinny_gemm_supported(sk)) return launch_skinny_gemm(sk, stream_);
  }
  if (s.has_bias && s.out_dtype == DType::kF32 && s.bias_dtype != DType::kF32) {
    // No 16-bit bias with an f32 output in the epilogue: GEMM, then a bias pass.
    LinearShape plain = s;
    plain.has_bias = false;
    ANVIL_RETURN_IF_ERROR(run(plain, x, w, nullptr, out));
    return launch_bias_add_f32(static_cast<float*>(out), bias, s.m, s.n, s.bias_dtype, stream_);
  }
  int align = std::min({pointer_alignment(x), pointer_alignment(w), pointer_alignment(out)});
  if (s.has_bias) align = std::min(align, pointer_alignment(bias));
  ANVIL_ASSIGN_OR_RETURN(Plan * plan, plan_for(s, align));
  return launch(*plan, plan->algo, x, w, s.has_bias ? bias : nullptr, out);
}

void LinearRunner::set_pinned(const LinearShape& s, const cublasLtMatmulAlgo_t& algo) {
  const PinKey pin{m_bucket(s.m), s.n, s.k, static_cast<int>(s.in_dtype), static_cast<int>(s.out_dtype),
                   s.has_bias ? static_cast<int>(s.bias_dtype) : -1};
  pinned_[pin] = algo;
  // Plans already built for this bucket take the pinned algorithm on their next build.
  for (auto it = plans_.begin(); it != plans_.end();) {
    const auto& k = it->first;
    if (m_bucket(std::get<0>(k)) == std::get<0>(pin) && std::get<1>(k) == s.n && std::get<2>(k) == s.k &&
        std::get<3>(k) == std::get<3>(pin) && std::get<4>(k) == std::get<4>(pin) && std::get<5>(k) == std::get<5>(pin)) {
      destroy(it->second);
      it = plans_.erase(it);
    } else {
      ++it;
    }
  }
}

Status LinearRunner::pin(const LinearShape& shape, const LinearAlgoBytes& bytes) {
  LinearShape s = shape;
  if (s.has_bias && s.out_dtype == DType::kF32 && s.bias_dtype != DType::kF32) s.has_bias = false;  // see run()
  if (s.m <= 0 || s.n <= 0 || s.k <= 0) return invalid_argument("linear pin: empty shape");
  cublasLtMatmulAlgo_t algo;
  std::memcpy(&algo, bytes.data(), sizeof(algo));
  Plan plan;
  Status st = make_descriptors(s, plan);
  if (st.is_ok()) {
    cublasLtMatmulHeuristicResult_t check{};
    const cublasStatus_t cs = cublasLtMatmulAlgoCheck(handle_, plan.op, plan.a, plan.b, plan.d, plan.d, &algo, &check);
    if (cs != CUBLAS_STATUS_SUCCESS || check.workspaceSize > kWorkspaceBytes) {
      st = unsupported("cuBLASLt rejects the saved algorithm for M=" + std::to_string(s.m) + " N=" + std::to_string(s.n) +
                       " K=" + std::to_string(s.k) + " (" + cublasLtGetStatusString(cs) + ")");
    }
  }
  destroy(plan);
  if (!st.is_ok()) return st;
  set_pinned(s, algo);
  return Status::ok();
}

int64_t cublaslt_version() { return static_cast<int64_t>(cublasLtGetVersion()); }

Result<LinearAutotuneResult> LinearRunner::autotune(const LinearShape& shape, int max_candidates, int iterations) {
  LinearShape s = shape;
  if (s.has_bias && s.out_dtype == DType::kF32 && s.bias_dtype != DType::kF32) s.has_bias = false;  // see run()
  if (s.m <= 0 || s.n <= 0 || s.k <= 0) return invalid_argument("linear autotune: empty shape");
  max_candidates = std::clamp(max_candidates, 1, 32);
  iterations = std::max(iterations, 1);
  const size_t in_sz = dtype_size(s.in_dtype), out_sz = dtype_size(s.out_dtype);
  const size_t bytes_x = s.m * s.k * in_sz, bytes_w = s.n * s.k * in_sz, bytes_o = s.m * s.n * out_sz;
  const size_t bytes_b = s.has_bias ? s.n * dtype_size(s.bias_dtype) : 0;
  void *x = nullptr, *w = nullptr, *o = nullptr, *b = nullptr;
  cudaEvent_t ev0 = nullptr, ev1 = nullptr;
  LinearAutotuneResult res;
  Plan plan;
  auto cleanup = [&] {
    destroy(plan);
    cudaFree(x);
    cudaFree(w);
    cudaFree(o);
    cudaFree(b);
    if (ev0) cudaEventDestroy(ev0);
    if (ev1) cudaEventDestroy(ev1);
  };
  auto body = [&]() -> Status {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&x, bytes_x), "autotune: x");
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&w, bytes_w), "autotune: w");
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&o, bytes_o), "autotune: out");
    if (bytes_b) ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&b, bytes_b), "autotune: bias");
    // 0x3c bytes: bf16 ~0.0115, f16 ~1.06: nonzero, finite, no overflow at these K.
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(x, 0x3c, bytes_x, stream_), "autotune: fill");
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(w, 0x1c, bytes_w, stream_), "autotune: fill");
    if (b) ANVIL_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(b, 0x1c, bytes_b, stream_), "autotune: fill");
    ANVIL_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ev0), "autotune: event");
    ANVIL_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ev1), "autotune: event");
    ANVIL_RETURN_IF_ERROR(make_descriptors(s, plan));
    std::vector<cublasLtMatmulHeuristicResult_t> cands(max_candidates);
    ANVIL_ASSIGN_OR_RETURN(int found, heuristics(s, plan, 256, cands.data(), max_candidates));
    float best = 0.0f;
    int best_i = -1;
    for (int i = 0; i < found; ++i) {
      // Warm up once; an algorithm that fails to launch is skipped.
      if (!launch(plan, cands[i].algo, x, w, b, o).is_ok()) continue;
      std::vector<float> times;
      for (int it = 0; it < iterations; ++it) {
        ANVIL_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev0, stream_), "autotune: record");
        ANVIL_RETURN_IF_ERROR(launch(plan, cands[i].algo, x, w, b, o));
        ANVIL_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev1, stream_), "autotune: record");
        ANVIL_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(ev1), "autotune: sync");
        float ms = 0.0f;
        ANVIL_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, ev0, ev1), "autotune: elapsed");
        times.push_back(ms * 1000.0f);
      }
      std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
      const float med = times[times.size() / 2];
      if (i == 0) res.heuristic_us = med;
      ++res.candidates_timed;
      if (best_i < 0 || med < best) {
        best = med;
        best_i = i;
      }
    }
    if (best_i < 0) return internal_error("linear autotune: no candidate algorithm ran");
    res.best_us = best;
    set_pinned(s, cands[best_i].algo);
    static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(LinearAlgoBytes), "cublasLtMatmulAlgo_t is 8 u64");
    std::memcpy(res.algo.data(), &cands[best_i].algo, sizeof(LinearAlgoBytes));
    return Status::ok();
  };
  Status st = body();
  const Status sync = cuda_status(cudaStreamSynchronize(stream_), "autotune: sync");
  cleanup();
  if (!st.is_ok()) return st;
  if (!sync.is_ok()) return sync;
  return res;
}

}  // namespace anvil::cuda
