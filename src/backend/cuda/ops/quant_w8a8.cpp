// W8A8Linear: cuBLASLt plans for the fp8 / int8 W8A8 GEMMs, the scratch they need, and the
// backend glue (see quant_w8a8.h for the data flow and the shape rules).
#include "backend/cuda/ops/quant_w8a8.h"

#include <algorithm>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/ops/gemm_util.h"

namespace anvil::cuda {
namespace {

constexpr size_t kRound = 256;
size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

std::string shape_str(const W8A8Shape& s) {
  return std::string(quant_format_name(s.format)) + " M=" + std::to_string(s.m) + " N=" + std::to_string(s.n) +
         " K=" + std::to_string(s.k);
}

Result<cudaDataType_t> out_type(DType t) {
  if (std::optional<cudaDataType_t> d = float_data_type(t)) return *d;
  return unsupported("w8a8 linear: output/bias dtype " + std::string(dtype_name(t)) + " (bf16, f16 or f32)");
}

// Bias dtypes cuBLASLt's fp8 BIAS epilogue takes: the output dtype for 16-bit outputs, bf16 for f32.
bool fp8_epilogue_takes_bias(DType out, DType bias) {
  return out == DType::kF32 ? bias == DType::kBF16 : bias == out;
}

template <class T>
Status set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v, const char* what) {
  return cublas_status(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)), what);
}

}  // namespace

const char* w8a8_path_name(W8A8Path p) {
  switch (p) {
    case W8A8Path::kFusedScales: return "cublaslt-outer-vec-scales";
    case W8A8Path::kEpilogue: return "gemm+epilogue";
  }
  return "?";
}

Result<std::unique_ptr<W8A8Linear>> W8A8Linear::create(cudaStream_t stream) {
  int dev = 0, major = 0, minor = 0;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev), "w8a8 linear: current device");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "w8a8: cc");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "w8a8: cc");
  cublasLtHandle_t handle = nullptr;
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle), "w8a8 linear: creating the handle");
  return std::unique_ptr<W8A8Linear>(new W8A8Linear(stream, handle, major * 10 + minor));
}

W8A8Linear::~W8A8Linear() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& [key, plan] : plans_) destroy(plan);
  if (workspace_) cudaFree(workspace_);
  if (scratch_) cudaFree(scratch_);
  for (void* p : retired_) cudaFree(p);
  if (handle_) cublasLtDestroy(handle_);
}

void W8A8Linear::destroy(Plan& p) {
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  if (p.op) cublasLtMatmulDescDestroy(p.op);
  p = Plan{};
}

// [ qx: M*K bytes | s_t: M f32 ] then [ acc: M*N x 4 bytes ] (epilogue path only).
size_t W8A8Linear::qx_bytes(int64_t m, int64_t k) {
  return round_up(static_cast<size_t>(m * k), kRound) + round_up(static_cast<size_t>(m) * 4, kRound);
}
size_t W8A8Linear::st_offset(int64_t m, int64_t k) { return round_up(static_cast<size_t>(m * k), kRound); }
size_t W8A8Linear::acc_bytes(int64_t m, int64_t n) { return round_up(static_cast<size_t>(m * n) * 4, kRound); }

Status W8A8Linear::check(const W8A8Shape& s) const {
  const std::string what = "w8a8 linear (" + shape_str(s) + ")";
  if (s.format != QuantFormat::kFp8W8A8 && s.format != QuantFormat::kInt8W8A8) {
    return invalid_argument(what + ": format must be fp8_w8a8 or int8_w8a8");
  }
  if (s.format == QuantFormat::kFp8W8A8 && !fp8_supported()) {
    return unsupported(what + ": fp8 GEMMs need compute capability 8.9+ (this device is sm_" + std::to_string(cc_) +
                       "); build the engine with int8 W8A8 or weight-only quantization");
  }
  if (s.m < 0 || s.n <= 0 || s.k <= 0) return invalid_argument(what + ": empty or negative dimensions");
  if (s.k % 16 != 0) {
    return unsupported(what + ": K must be a multiple of 16 for the 8-bit cuBLASLt GEMMs (16-byte rows)");
  }
  if (s.n % 8 != 0) return unsupported(what + ": N must be a multiple of 8 (16-byte output rows)");
  if (s.in_dtype != DType::kBF16 && s.in_dtype != DType::kF16) {
    return unsupported(what + ": x dtype " + std::string(dtype_name(s.in_dtype)) + " (bf16 or f16)");
  }
  ANVIL_RETURN_IF_ERROR(out_type(s.out_dtype).status());
  if (s.has_bias) ANVIL_RETURN_IF_ERROR(out_type(s.bias_dtype).status());
  return Status::ok();
}

Status W8A8Linear::grow(size_t scratch_bytes) {
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream_, &cap), "w8a8 linear: capture status");
  const bool need_ws = workspace_ == nullptr;
  const bool need_scratch = scratch_bytes > scratch_bytes_;
  if (!need_ws && !need_scratch) return Status::ok();
  if (cap != cudaStreamCaptureStatusNone) {
    return invalid_argument("w8a8 linear: needs " + std::to_string(scratch_bytes) +
                            " bytes of scratch during graph capture; run the largest batch once (or reserve()) "
                            "before begin_capture()");
  }
  if (need_ws) {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&workspace_, kWorkspaceBytes), "w8a8 linear: allocating the workspace");
  }
  if (need_scratch) {
    // The old contents move along (stream-ordered copy): quantized activations already written
    // stay valid at the same offsets.
    const size_t bytes = round_up(scratch_bytes, size_t{1} << 20);
    void* fresh = nullptr;
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&fresh, bytes), "w8a8 linear: allocating scratch");
    if (scratch_) {
      cudaError_t err = cudaMemcpyAsync(fresh, scratch_, scratch_bytes_, cudaMemcpyDeviceToDevice, stream_);
      if (err == cudaSuccess) err = cudaStreamSynchronize(stream_);
      if (err != cudaSuccess) {
        cudaFree(fresh);
        return cuda_status(err, "w8a8 linear: growing scratch");
      }
      // Kept, not freed: CUDA graphs captured earlier (decode buckets) hold its address.
      retired_.push_back(scratch_);
    }
    scratch_ = fresh;
    scratch_bytes_ = bytes;
  }
  return Status::ok();
}

Status W8A8Linear::reserve(int64_t max_m, int64_t max_n, int64_t max_k) {
  if (max_m <= 0 || max_n <= 0 || max_k <= 0) return invalid_argument("w8a8 linear: reserve of an empty shape");
  return grow(qx_bytes(max_m, max_k) + acc_bytes(max_m, max_n));
}

Status W8A8Linear::build_plan(const W8A8Shape& s, bool fused, int align, Plan& plan) {
  const bool fp8 = s.format == QuantFormat::kFp8W8A8;
  plan.path = fused ? W8A8Path::kFusedScales : W8A8Path::kEpilogue;
  const cudaDataType_t in_t = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_8I;
  cudaDataType_t d_t = fp8 ? CUDA_R_32F : CUDA_R_32I;
  if (fused) {
    ANVIL_ASSIGN_OR_RETURN(d_t, out_type(s.out_dtype));
  }
  ANVIL_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescCreate(&plan.op, fp8 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32I, fp8 ? CUDA_R_32F : CUDA_R_32I),
      "w8a8: matmul desc");
  ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T, "w8a8: transa"));
  ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N, "w8a8: transb"));
  if (fp8) {
    const int8_t fast = fast_accum_ ? 1 : 0;
    ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, fast, "w8a8: fast accum"));
  }
  if (fused) {
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode, "w8a8: A scale mode"));
    ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode, "w8a8: B scale mode"));
    // Placeholders so the heuristic sees a scaled problem; run() sets the real vectors.
    const void* ph = workspace_;
    ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, ph, "w8a8: A scale"));
    ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, ph, "w8a8: B scale"));
    if (s.has_bias) {
      ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS, "w8a8: epilogue"));
      ANVIL_ASSIGN_OR_RETURN(cudaDataType_t bias_t, out_type(s.bias_dtype));
      ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(bias_t),
                                     "w8a8: bias dtype"));
      ANVIL_RETURN_IF_ERROR(set_attr(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, ph, "w8a8: bias"));
    }
  }
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.a, in_t, s.k, s.n, s.k), "w8a8: layout A");
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.b, in_t, s.k, s.m, s.k), "w8a8: layout B");
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.d, d_t, s.n, s.m, s.n), "w8a8: layout D");

  cublasLtMatmulPreference_t pref = nullptr;
  ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref), "w8a8: preference");
  const uint64_t ws = kWorkspaceBytes;
  const uint32_t al = static_cast<uint32_t>(align);
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_, plan.op, plan.a, plan.b, plan.d, plan.d, pref, 1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) {
    return cublas_status(st, "w8a8: algorithm heuristic");
  }
  if (found == 0 || st == CUBLAS_STATUS_NOT_SUPPORTED) {
    return unsupported("w8a8 linear: cuBLASLt has no " + std::string(w8a8_path_name(plan.path)) + " algorithm for " +
                       shape_str(s) + " -> " + std::string(dtype_name(s.out_dtype)));
  }
  plan.algo = result.algo;
  return Status::ok();
}

Result<W8A8Linear::Plan*> W8A8Linear::plan_for(const W8A8Shape& s, int align) {
  const bool fp8 = s.format == QuantFormat::kFp8W8A8;
  const bool fused_ok = fp8 && outer_vec_ && cc_ >= 90 && (!s.has_bias || fp8_epilogue_takes_bias(s.out_dtype, s.bias_dtype));
  const PlanKey key{static_cast<int>(s.format), s.m, s.n, s.k, static_cast<int>(s.out_dtype),
                    s.has_bias ? static_cast<int>(s.bias_dtype) : -1, align, fused_ok, fp8 && fast_accum_};
  auto it = plans_.find(key);
  if (it != plans_.end()) return &it->second;
  ANVIL_RETURN_IF_ERROR(grow(0));  // the workspace, before the first plan
  Plan plan;
  Status st = fused_ok ? build_plan(s, true, align, plan) : unsupported("fused scales not applicable");
  if (!st.is_ok()) {
    destroy(plan);
    st = build_plan(s, false, align, plan);
    if (!st.is_ok()) {
      destroy(plan);
      return st;
    }
  }
  return &plans_.emplace(key, plan).first->second;
}

Result<W8A8Path> W8A8Linear::path_for(const W8A8Shape& s) {
  ANVIL_RETURN_IF_ERROR(check(s));
  ANVIL_ASSIGN_OR_RETURN(Plan * plan, plan_for(s, 16));
  return plan->path;
}

Status W8A8Linear::gemm(const W8A8Shape& s, Plan* plan, int align, const void* qx, const float* x_scales,
                        bool qx_in_scratch, const void* w, const float* w_scales, const void* bias, void* out) {
  const bool fp8 = s.format == QuantFormat::kFp8W8A8;
  if (plan->path == W8A8Path::kFusedScales) {
    ANVIL_RETURN_IF_ERROR(set_attr(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(w_scales),
                                   "w8a8: A scale"));
    ANVIL_RETURN_IF_ERROR(set_attr(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(x_scales),
                                   "w8a8: B scale"));
    if (s.has_bias) ANVIL_RETURN_IF_ERROR(set_attr(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias, "w8a8: bias"));
    const float alpha = 1.0f, beta = 0.0f;
    const cublasStatus_t st = cublasLtMatmul(handle_, plan->op, &alpha, w, plan->a, qx, plan->b, &beta, out, plan->d,
                                             out, plan->d, &plan->algo, workspace_, kWorkspaceBytes, stream_);
    if (st == CUBLAS_STATUS_SUCCESS) return Status::ok();
    if (st != CUBLAS_STATUS_INVALID_VALUE && st != CUBLAS_STATUS_NOT_SUPPORTED) {
      return cublas_status(st, "w8a8: fp8 matmul (outer-vector scales)");
    }
    // Refused at matmul time (cuBLASLt validates scale pointers here, not in the heuristic): this
    // shape takes the epilogue path from now on.
    destroy(*plan);
    ANVIL_RETURN_IF_ERROR(build_plan(s, false, align, *plan));
  }
  // Epilogue path: unit-scale GEMM into the f32 / i32 accumulator scratch, then dequantize.
  const size_t acc_off = qx_bytes(s.m, s.k);
  if (scratch_bytes_ < acc_off + acc_bytes(s.m, s.n)) {
    ANVIL_RETURN_IF_ERROR(grow(acc_off + acc_bytes(s.m, s.n)));
    if (qx_in_scratch) {  // moved with the scratch
      qx = scratch_;
      x_scales = reinterpret_cast<const float*>(static_cast<char*>(scratch_) + st_offset(s.m, s.k));
    }
  }
  void* acc = static_cast<char*>(scratch_) + acc_off;
  if (fp8) {
    const float alpha = 1.0f, beta = 0.0f;
    ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, plan->op, &alpha, w, plan->a, qx, plan->b, &beta, acc, plan->d,
                                                acc, plan->d, &plan->algo, workspace_, kWorkspaceBytes, stream_),
                                 "w8a8: fp8 matmul");
  } else {
    const int32_t alpha = 1, beta = 0;
    ANVIL_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, plan->op, &alpha, w, plan->a, qx, plan->b, &beta, acc, plan->d,
                                                acc, plan->d, &plan->algo, workspace_, kWorkspaceBytes, stream_),
                                 "w8a8: int8 matmul");
  }
  return launch_w8a8_epilogue(acc, !fp8, x_scales, w_scales, s.has_bias ? bias : nullptr, s.bias_dtype, out,
                              s.out_dtype, s.m, s.n, stream_);
}

int W8A8Linear::align_of(const W8A8Shape& s, const void* qx, const void* w, const void* bias, const void* out) {
  int align = std::min({pointer_alignment(qx), pointer_alignment(w), pointer_alignment(out), 16});
  if (s.has_bias) align = std::min(align, pointer_alignment(bias));
  return align;
}

Status W8A8Linear::run_prequantized(const W8A8Shape& s, const void* qx, const float* x_scales, const void* w,
                                    const float* w_scales, const void* bias, void* out) {
  ANVIL_RETURN_IF_ERROR(check(s));
  if (s.m == 0) return Status::ok();
  if (!qx || !x_scales || !w || !w_scales || !out || (s.has_bias && !bias)) {
    return invalid_argument("w8a8 linear (" + shape_str(s) + "): a null pointer among x, scales, w, bias, out");
  }
  const int align = align_of(s, qx, w, bias, out);
  ANVIL_ASSIGN_OR_RETURN(Plan * plan, plan_for(s, align));
  return gemm(s, plan, align, qx, x_scales, false, w, w_scales, bias, out);
}

Status W8A8Linear::run(const W8A8Shape& s, const void* x, const void* w, const float* w_scales, const void* bias,
                       void* out) {
  ANVIL_RETURN_IF_ERROR(check(s));
  if (s.m == 0) return Status::ok();
  if (!x || !w || !w_scales || !out || (s.has_bias && !bias)) {
    return invalid_argument("w8a8 linear (" + shape_str(s) + "): a null pointer among x, w, scales, bias, out");
  }
  // Plan first: the path decides whether the accumulators need scratch too.
  const int align = align_of(s, nullptr, w, bias, out);
  ANVIL_ASSIGN_OR_RETURN(Plan * plan, plan_for(s, align));
  size_t need = qx_bytes(s.m, s.k);
  if (plan->path == W8A8Path::kEpilogue) need += acc_bytes(s.m, s.n);
  ANVIL_RETURN_IF_ERROR(grow(need));
  void* qx = scratch_;
  float* st = reinterpret_cast<float*>(static_cast<char*>(scratch_) + st_offset(s.m, s.k));
  ANVIL_RETURN_IF_ERROR(launch_act_quant(x, s.in_dtype, s.format, s.m, s.k, qx, st, stream_));
  return gemm(s, plan, align, qx, st, true, w, w_scales, bias, out);
}

Status w8a8_linear(W8A8Linear& runner, DType compute_dtype, const Tensor& x, const QuantizedWeight& w,
                   const Tensor& bias, Tensor out) {
  const std::string op = std::string("linear_quantized (") + quant_format_name(w.format) + ")";
  if (!x.defined() || x.device != Device::kCuda || x.dtype != compute_dtype) {
    return invalid_argument(op + ": x must be " + std::string(dtype_name(compute_dtype)) + " in CUDA memory");
  }
  if (!w.data || !w.scales) return invalid_argument(op + ": weight data or scales missing");
  if (x.rank() == 0 || x.dim(-1) != w.k) {
    return invalid_argument(op + ": x " + x.shape.to_string() + " does not match the weight's K=" + std::to_string(w.k));
  }
  if (!out.defined() || out.device != Device::kCuda || (out.dtype != compute_dtype && out.dtype != DType::kF32)) {
    return invalid_argument(op + ": out must be " + std::string(dtype_name(compute_dtype)) + " or f32 in CUDA memory");
  }
  W8A8Shape s;
  s.format = w.format;
  s.m = x.numel() / w.k;
  s.n = w.n;
  s.k = w.k;
  s.in_dtype = compute_dtype;
  s.out_dtype = out.dtype;
  if (out.rank() == 0 || out.dim(-1) != s.n || out.numel() != s.m * s.n) {
    return invalid_argument(op + ": out has shape " + out.shape.to_string() + ", expected [" + std::to_string(s.m) +
                            ", " + std::to_string(s.n) + "]");
  }
  if (bias.defined()) {
    if (bias.device != Device::kCuda || (bias.dtype != compute_dtype && bias.dtype != DType::kF32) ||
        bias.numel() != s.n) {
      return invalid_argument(op + ": bias must be " + std::string(dtype_name(compute_dtype)) + " or f32 [" +
                              std::to_string(s.n) + "] in CUDA memory, got " + bias.shape.to_string());
    }
    s.has_bias = true;
    s.bias_dtype = bias.dtype;
  }
  return runner.run(s, x.data, w.data, static_cast<const float*>(w.scales), bias.data, out.data);
}

}  // namespace anvil::cuda
