// CudaBackend: memory, copies, graph capture and the op methods, which validate their tensors
// and hand raw pointers to the launchers in ops/. Errors name the op and the offending tensor.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/ops/attention.h"
#include "backend/cuda/ops/elementwise.h"
#include "backend/cuda/ops/sample.h"

namespace anvil {
namespace {

using cuda::cuda_status;

std::string dt(DType t) { return std::string(dtype_name(t)); }

Status expect(const Tensor& t, DType dtype, const char* op, const char* what) {
  if (!t.defined()) return invalid_argument(std::string(op) + ": " + what + " is empty");
  if (t.device != Device::kCuda) return invalid_argument(std::string(op) + ": " + what + " is not in CUDA memory");
  if (t.dtype != dtype) {
    return invalid_argument(std::string(op) + ": " + what + " must be " + dt(dtype) + ", got " + dt(t.dtype));
  }
  return Status::ok();
}

Status expect_rows(const Tensor& t, int64_t rows, int64_t cols, const char* op, const char* what) {
  if (t.rank() == 0 || t.dim(-1) != cols || t.numel() != rows * cols) {
    return invalid_argument(std::string(op) + ": " + what + " has shape " + t.shape.to_string() + ", expected [" +
                            std::to_string(rows) + ", " + std::to_string(cols) + "]");
  }
  return Status::ok();
}

constexpr size_t kAllocAlign = 512;

}  // namespace

bool cuda_device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

Result<std::unique_ptr<Backend>> create_cuda_backend(const BackendOptions& options) {
  if (options.compute_dtype != DType::kBF16 && options.compute_dtype != DType::kF16) {
    return invalid_argument("cuda backend: compute_dtype must be bf16 or f16, got " + dt(options.compute_dtype));
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return unavailable("cuda backend: no CUDA device is visible");
  }
  if (options.device_index < 0 || options.device_index >= count) {
    return invalid_argument("cuda backend: device_index " + std::to_string(options.device_index) + " but " +
                            std::to_string(count) + " device(s) are visible");
  }
  ANVIL_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device_index), "selecting the device");
  cudaDeviceProp prop{};
  ANVIL_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options.device_index), "reading device properties");
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_index_ = options.device_index;
  b->dtype_ = options.compute_dtype;
  b->name_ = "cuda:" + std::to_string(options.device_index) + " (" + prop.name + ", sm_" +
             std::to_string(prop.major * 10 + prop.minor) + ")";
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking), "creating the stream");
  ANVIL_ASSIGN_OR_RETURN(b->linear_, cuda::LinearRunner::create(b->stream_));
  ANVIL_ASSIGN_OR_RETURN(b->w8a8_, cuda::W8A8Linear::create(b->stream_));
  ANVIL_ASSIGN_OR_RETURN(b->weight_only_, cuda::WeightOnlyLinear::create(b->stream_, b->linear_.get()));
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&b->sample_ws_mem_, cuda::SampleWorkspace::bytes()),
                             "allocating the sampler's workspace");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(b->sample_ws_mem_, 0, cuda::SampleWorkspace::bytes(), b->stream_),
                             "zeroing the sampler's workspace");
  b->sample_ws_ = cuda::SampleWorkspace::over(b->sample_ws_mem_);
  return std::unique_ptr<Backend>(std::move(b));
}

CudaBackend::~CudaBackend() {
  if (capturing_) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream_, &g);
    if (g) cudaGraphDestroy(g);
  }
  if (stream_) cudaStreamSynchronize(stream_);
  for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
  weight_only_.reset();
  w8a8_.reset();
  linear_.reset();
  if (attention_ws_) cudaFree(attention_ws_);
  if (sample_ws_mem_) cudaFree(sample_ws_mem_);
  for (auto& [p, size] : live_) cudaFree(p);
  release_cached_blocks();
  if (stream_) cudaStreamDestroy(stream_);
}

Status CudaBackend::check_not_capturing(const char* what) const {
  if (capturing_) return invalid_argument(std::string("cuda: ") + what + " is not allowed during graph capture");
  return Status::ok();
}

// ---- memory ----

void CudaBackend::release_cached_blocks() {
  for (auto& [size, p] : cached_) cudaFree(p);
  cached_.clear();
  cached_bytes_ = 0;
}

Result<void*> CudaBackend::allocate(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + kAllocAlign - 1) / kAllocAlign * kAllocAlign;
  std::lock_guard<std::mutex> lock(mem_mu_);
  // Best fit among cached blocks, wasting at most a quarter of the request.
  auto it = cached_.lower_bound(rounded);
  if (it != cached_.end() && it->first <= rounded + rounded / 4) {
    void* p = it->second;
    live_[p] = it->first;
    cached_bytes_ -= it->first;
    cached_.erase(it);
    return p;
  }
  if (capturing_) {
    return invalid_argument("cuda: allocating " + std::to_string(bytes) +
                            " bytes during graph capture; allocate buffers before begin_capture()");
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, rounded);
  if (err == cudaErrorMemoryAllocation && !cached_.empty()) {
    cudaGetLastError();
    cudaStreamSynchronize(stream_);
    release_cached_blocks();
    err = cudaMalloc(&p, rounded);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    return cuda_status(err, ("allocating " + std::to_string(bytes) + " bytes").c_str());
  }
  live_[p] = rounded;
  return p;
}

void CudaBackend::deallocate(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mem_mu_);
  auto it = live_.find(p);
  if (it == live_.end()) return;  // not ours: ignore rather than corrupt the cache
  // Stream-ordered reuse: work already queued on the one stream finishes before any later use.
  cached_.emplace(it->second, p);
  cached_bytes_ += it->second;
  live_.erase(it);
}

Status CudaBackend::copy_h2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::ok();
  return cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "copy_h2d");
}

Status CudaBackend::copy_d2h(void* dst, const void* src, size_t bytes) {
  ANVIL_RETURN_IF_ERROR(check_not_capturing("copy_d2h"));
  if (bytes == 0) return Status::ok();
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy_d2h");
  return cuda_status(cudaStreamSynchronize(stream_), "copy_d2h: waiting for the stream");
}

Status CudaBackend::copy_d2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::ok();
  return cuda_status(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "copy_d2d");
}

Status CudaBackend::memset_zero(void* dst, size_t bytes) {
  if (bytes == 0) return Status::ok();
  return cuda_status(cudaMemsetAsync(dst, 0, bytes, stream_), "memset_zero");
}

Status CudaBackend::synchronize() {
  ANVIL_RETURN_IF_ERROR(check_not_capturing("synchronize"));
  return cuda_status(cudaStreamSynchronize(stream_), "synchronize");
}

Result<MemoryInfo> CudaBackend::memory_info() {
  MemoryInfo info;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&info.free_bytes, &info.total_bytes), "memory_info");
  std::lock_guard<std::mutex> lock(mem_mu_);
  info.free_bytes += cached_bytes_;  // cached blocks are free to this backend
  return info;
}

Status CudaBackend::reserve_attention_workspace(size_t bytes) {
  if (bytes <= attention_ws_bytes_) return Status::ok();
  if (capturing_) {
    return invalid_argument("attention: needs " + std::to_string(bytes) +
                            " bytes of split-KV scratch during graph capture; run the largest batch once before "
                            "begin_capture()");
  }
  if (attention_ws_) {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "attention: growing scratch");
    cudaFree(attention_ws_);
    attention_ws_ = nullptr;
    attention_ws_bytes_ = 0;
  }
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&attention_ws_, bytes), "attention: allocating split-KV scratch");
  attention_ws_bytes_ = bytes;
  // Zeroed once: the decode kernel's split counters live in it (AttentionLaunch::workspace_zeroed).
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(attention_ws_, 0, bytes, stream_), "attention: zeroing split-KV scratch");
  return Status::ok();
}

// ---- graphs ----

Status CudaBackend::begin_capture() {
  ANVIL_RETURN_IF_ERROR(check_not_capturing("begin_capture"));
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin_capture");
  capturing_ = true;
  return Status::ok();
}

Result<int> CudaBackend::end_capture() {
  if (!capturing_) return invalid_argument("cuda: end_capture without begin_capture");
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamEndCapture(stream_, &graph), "end_capture (an op inside the capture failed?)");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  ANVIL_CUDA_RETURN_IF_ERROR(err, "end_capture: instantiating the graph");
  graphs_.push_back(exec);
  return static_cast<int>(graphs_.size()) - 1;
}

Status CudaBackend::replay(int graph_id) {
  if (graph_id < 0 || graph_id >= static_cast<int>(graphs_.size())) {
    return invalid_argument("cuda: replay of unknown graph id " + std::to_string(graph_id));
  }
  return cuda_status(cudaGraphLaunch(graphs_[graph_id], stream_), "replay");
}

// ---- ops ----

Status CudaBackend::embedding(const Tensor& ids, const Tensor& table, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect(ids, DType::kI32, "embedding", "ids"));
  ANVIL_RETURN_IF_ERROR(expect(table, dtype_, "embedding", "table"));
  ANVIL_RETURN_IF_ERROR(expect(out, dtype_, "embedding", "out"));
  if (table.rank() != 2) return invalid_argument("embedding: table must be [V, H], got " + table.shape.to_string());
  const int64_t t = ids.numel(), h = table.dim(1);
  ANVIL_RETURN_IF_ERROR(expect_rows(out, t, h, "embedding", "out"));
  return cuda::launch_gather_rows(table.data, table.dim(0), h * static_cast<int64_t>(dtype_size(dtype_)),
                                  ids.ptr<int32_t>(), t, out.data, stream_);
}

Status CudaBackend::rms_norm(const Tensor& x, Tensor residual, const Tensor& weight, float eps, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect(x, dtype_, "rms_norm", "x"));
  ANVIL_RETURN_IF_ERROR(expect(weight, dtype_, "rms_norm", "weight"));
  ANVIL_RETURN_IF_ERROR(expect(out, dtype_, "rms_norm", "out"));
  const int64_t h = weight.numel();
  if (h <= 0 || h > 0x7fffffff || x.numel() % h != 0) {
    return invalid_argument("rms_norm: x " + x.shape.to_string() + " does not match weight " + weight.shape.to_string());
  }
  const int64_t rows = x.numel() / h;
  ANVIL_RETURN_IF_ERROR(expect_rows(x, rows, h, "rms_norm", "x"));
  ANVIL_RETURN_IF_ERROR(expect_rows(out, rows, h, "rms_norm", "out"));
  if (residual.defined()) {
    ANVIL_RETURN_IF_ERROR(expect(residual, dtype_, "rms_norm", "residual"));
    ANVIL_RETURN_IF_ERROR(expect_rows(residual, rows, h, "rms_norm", "residual"));
  }
  return cuda::launch_rms_norm(x.data, residual.data, weight.data, out.data, rows, static_cast<int>(h), eps, dtype_,
                               stream_);
}

Status CudaBackend::linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect(x, dtype_, "linear", "x"));
  ANVIL_RETURN_IF_ERROR(expect(w, dtype_, "linear", "w"));
  if (w.rank() != 2) return invalid_argument("linear: w must be [N, K], got " + w.shape.to_string());
  if (!out.defined() || out.device != Device::kCuda) return invalid_argument("linear: out is empty or not on CUDA");
  if (out.dtype != dtype_ && out.dtype != DType::kF32) {
    return invalid_argument("linear: out must be " + dt(dtype_) + " or f32, got " + dt(out.dtype));
  }
  const int64_t n = w.dim(0), k = w.dim(1);
  if (x.rank() == 0 || x.dim(-1) != k) {
    return invalid_argument("linear: x " + x.shape.to_string() + " does not match w " + w.shape.to_string());
  }
  const int64_t m = x.numel() / k;
  ANVIL_RETURN_IF_ERROR(expect_rows(out, m, n, "linear", "out"));
  cuda::LinearShape s;
  s.m = m;
  s.n = n;
  s.k = k;
  s.in_dtype = dtype_;
  s.out_dtype = out.dtype;
  if (bias.defined()) {
    if (bias.dtype != dtype_ && bias.dtype != DType::kF32) {
      return invalid_argument("linear: bias must be " + dt(dtype_) + " or f32, got " + dt(bias.dtype));
    }
    if (bias.numel() != n) return invalid_argument("linear: bias " + bias.shape.to_string() + " for N=" + std::to_string(n));
    s.has_bias = true;
    s.bias_dtype = bias.dtype;
  }
  return linear_->run(s, x.data, w.data, bias.data, out.data);
}

Status CudaBackend::linear_quantized(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor out) {
  const std::string op = std::string("linear_quantized (") + quant_format_name(w.format) + ")";
  ANVIL_RETURN_IF_ERROR(expect(x, dtype_, op.c_str(), "x"));
  if (!out.defined() || out.device != Device::kCuda) return invalid_argument(op + ": out is empty or not on CUDA");
  if (out.dtype != dtype_ && out.dtype != DType::kF32) {
    return invalid_argument(op + ": out must be " + dt(dtype_) + " or f32, got " + dt(out.dtype));
  }
  if (w.n <= 0 || w.k <= 0) return invalid_argument(op + ": weight shape N=" + std::to_string(w.n) + " K=" + std::to_string(w.k));
  if (x.rank() != 2 || x.dim(1) != w.k) {
    return invalid_argument(op + ": x must be [M, " + std::to_string(w.k) + "], got " + x.shape.to_string());
  }
  const int64_t m = x.dim(0);
  ANVIL_RETURN_IF_ERROR(expect_rows(out, m, w.n, op.c_str(), "out"));
  if (bias.defined()) {
    ANVIL_RETURN_IF_ERROR(expect(bias, dtype_, op.c_str(), "bias"));
    if (bias.numel() != w.n) return invalid_argument(op + ": bias " + bias.shape.to_string() + " for N=" + std::to_string(w.n));
  }
  cuda::WeightOnlyArgs a;
  a.x = x.data;
  a.m = m;
  a.dtype = dtype_;
  a.bias = bias.defined() ? bias.data : nullptr;
  a.out = out.data;
  a.out_dtype = out.dtype;
  switch (w.format) {
    case QuantFormat::kInt8WeightOnly:
    case QuantFormat::kInt4Group: return weight_only_->run(w, a);
    case QuantFormat::kInt8W8A8:
    case QuantFormat::kFp8W8A8:
      // Decode sizes stream the 8-bit weights against unquantized activations (backend.h): the
      // GEMM is bound by the weight read there, where cuBLASLt's 8-bit GEMMs reach only 28-48%
      // of the floor (bench/cuda_kernels.md).
      if (m <= std::min<int64_t>(weight_only_->decode_max_m(), 16)) return weight_only_->run(w, a);
      return cuda::w8a8_linear(*w8a8_, dtype_, x, w, bias, out);
  }
  return internal_error(op + ": unknown format");
}

cuda::LinearShape CudaBackend::weight_gemm_shape(int64_t m, int64_t n, int64_t k, DType out_dtype, bool has_bias) const {
  cuda::LinearShape s;
  s.m = m;
  s.n = n;
  s.k = k;
  s.in_dtype = dtype_;
  s.out_dtype = out_dtype;
  s.has_bias = has_bias;
  s.bias_dtype = dtype_;
  return s;
}

Result<cuda::LinearAutotuneResult> CudaBackend::autotune_linear(int64_t m, int64_t n, int64_t k, DType out_dtype,
                                                                bool has_bias, int candidates, int iterations) {
  ANVIL_RETURN_IF_ERROR(check_not_capturing("autotune_linear"));
  return linear_->autotune(weight_gemm_shape(m, n, k, out_dtype, has_bias), candidates, iterations);
}

Status CudaBackend::pin_linear_algorithm(int64_t m, int64_t n, int64_t k, DType out_dtype, bool has_bias,
                                         const cuda::LinearAlgoBytes& algo) {
  ANVIL_RETURN_IF_ERROR(check_not_capturing("pin_linear_algorithm"));
  return linear_->pin(weight_gemm_shape(m, n, k, out_dtype, has_bias), algo);
}

Status CudaBackend::rope_kv_write(const Tensor& qkv, const Tensor& q_norm, const Tensor& k_norm, float qk_norm_eps,
                                  const Tensor& inv_freq, float attention_scaling, const BatchView& batch,
                                  Tensor q_out, const KvCacheLayer& kv) {
  ANVIL_RETURN_IF_ERROR(expect(qkv, dtype_, "rope_kv_write", "qkv"));
  ANVIL_RETURN_IF_ERROR(expect(q_out, dtype_, "rope_kv_write", "q_out"));
  ANVIL_RETURN_IF_ERROR(expect(inv_freq, DType::kF32, "rope_kv_write", "inv_freq"));
  if (kv.dtype != dtype_ && kv.dtype != DType::kF8E4M3 && kv.dtype != DType::kI8) {
    return unsupported("rope_kv_write: kv cache dtype " + dt(kv.dtype) + " (the CUDA backend stores " + dt(dtype_) +
                       ", f8e4m3 or i8)");
  }
  if (q_out.rank() != 3) return invalid_argument("rope_kv_write: q_out must be [T, Hq, D], got " + q_out.shape.to_string());
  const int64_t t = batch.num_tokens, hq = q_out.dim(1), d = q_out.dim(2), hkv = kv.num_kv_heads;
  if (d != kv.head_dim) return invalid_argument("rope_kv_write: q_out head_dim != kv.head_dim");
  ANVIL_RETURN_IF_ERROR(expect_rows(qkv, t, (hq + 2 * hkv) * d, "rope_kv_write", "qkv"));
  if (q_out.dim(0) != t) return invalid_argument("rope_kv_write: q_out rows != batch.num_tokens");
  if (inv_freq.numel() != d / 2) return invalid_argument("rope_kv_write: inv_freq must have head_dim / 2 entries");
  for (const Tensor* nt : {&q_norm, &k_norm}) {
    if (!nt->defined()) continue;
    ANVIL_RETURN_IF_ERROR(expect(*nt, dtype_, "rope_kv_write", nt == &q_norm ? "q_norm" : "k_norm"));
    if (nt->numel() != d) return invalid_argument("rope_kv_write: q_norm/k_norm must have head_dim entries");
  }
  cuda::RopeKvLaunch p;
  p.qkv = qkv.data;
  p.q_norm = q_norm.data;
  p.k_norm = k_norm.data;
  p.eps = qk_norm_eps;
  p.inv_freq = inv_freq.ptr<float>();
  p.scaling = attention_scaling;
  p.positions = batch.positions;
  p.slot_map = batch.slot_map;
  p.q_out = q_out.data;
  p.k_cache = kv.k;
  p.v_cache = kv.v;
  p.num_tokens = static_cast<int>(t);
  p.num_heads = static_cast<int>(hq);
  p.num_kv_heads = static_cast<int>(hkv);
  p.head_dim = static_cast<int>(d);
  p.block_size = kv.block_size;
  p.dtype = dtype_;
  p.kv_dtype = kv.dtype;
  p.k_scale = kv.k_scale;
  p.v_scale = kv.v_scale;
  return cuda::launch_rope_kv_write(p, stream_);
}

Status CudaBackend::attention(const Tensor& q, const KvCacheLayer& kv, const BatchView& batch, float scale,
                              Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect(q, dtype_, "attention", "q"));
  ANVIL_RETURN_IF_ERROR(expect(out, dtype_, "attention", "out"));
  if (kv.dtype != dtype_ && kv.dtype != DType::kF8E4M3 && kv.dtype != DType::kI8) {
    return unsupported("attention: kv cache dtype " + dt(kv.dtype) + " (the CUDA backend reads " + dt(dtype_) +
                       ", f8e4m3 or i8)");
  }
  if (q.rank() != 3 || !(q.shape == out.shape)) {
    return invalid_argument("attention: q " + q.shape.to_string() + " and out " + out.shape.to_string() +
                            " must both be [T, Hq, D]");
  }
  cuda::AttentionLaunch p;
  p.q = q.data;
  p.out = out.data;
  p.k_cache = kv.k;
  p.v_cache = kv.v;
  p.dtype = dtype_;
  if (kv.dtype != dtype_) p.kv_dtype = kv.dtype;
  p.k_scale = kv.k_scale;
  p.v_scale = kv.v_scale;
  p.num_heads = static_cast<int>(q.dim(1));
  p.num_kv_heads = kv.num_kv_heads;
  p.head_dim = static_cast<int>(q.dim(2));
  p.block_size = kv.block_size;
  p.scale = scale;
  p.batch = batch;
  const size_t ws = cuda::attention_workspace_bytes(batch.num_seqs, p.num_heads, p.num_kv_heads, p.head_dim);
  ANVIL_RETURN_IF_ERROR(reserve_attention_workspace(ws));
  p.workspace = attention_ws_;
  p.workspace_bytes = attention_ws_bytes_;
  p.workspace_zeroed = true;
  return cuda::launch_attention(p, stream_);
}

Status CudaBackend::act_mul(const Tensor& gate_up, Activation act, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect(gate_up, dtype_, "act_mul", "gate_up"));
  ANVIL_RETURN_IF_ERROR(expect(out, dtype_, "act_mul", "out"));
  const int64_t two_f = gate_up.rank() ? gate_up.dim(-1) : 0;
  if (two_f % 2 != 0 || two_f == 0) return invalid_argument("act_mul: gate_up last dim must be 2F, got " + gate_up.shape.to_string());
  const int64_t rows = gate_up.numel() / two_f, f = two_f / 2;
  ANVIL_RETURN_IF_ERROR(expect_rows(out, rows, f, "act_mul", "out"));
  return cuda::launch_act_mul(gate_up.data, out.data, rows, f, act, dtype_, stream_);
}

Status CudaBackend::gather_rows(const Tensor& x, const Tensor& rows, Tensor out) {
  ANVIL_RETURN_IF_ERROR(expect(rows, DType::kI32, "gather_rows", "rows"));
  ANVIL_RETURN_IF_ERROR(expect(x, x.dtype, "gather_rows", "x"));
  ANVIL_RETURN_IF_ERROR(expect(out, x.dtype, "gather_rows", "out"));
  if (x.rank() == 0) return invalid_argument("gather_rows: x must be [T, ...]");
  const int64_t h = x.row_size(), n = rows.numel();
  if (out.rank() == 0 || out.dim(0) != n || out.numel() != n * h) {
    return invalid_argument("gather_rows: out " + out.shape.to_string() + " for " + std::to_string(n) + " rows of " +
                            std::to_string(h));
  }
  return cuda::launch_gather_rows(x.data, x.dim(0), static_cast<int64_t>(dtype_bytes_for(x.dtype, h)),
                                  rows.ptr<int32_t>(), n, out.data, stream_);
}

Status CudaBackend::sample(Tensor logits, const SamplingBatch& params, Tensor out_ids, Tensor out_logprobs) {
  ANVIL_RETURN_IF_ERROR(expect(logits, DType::kF32, "sample", "logits"));
  ANVIL_RETURN_IF_ERROR(expect(out_ids, DType::kI32, "sample", "out_ids"));
  if (logits.rank() != 2 || logits.dim(0) < params.num_rows) {
    return invalid_argument("sample: logits " + logits.shape.to_string() + " for " + std::to_string(params.num_rows) +
                            " rows");
  }
  if (out_ids.numel() < params.num_rows) return invalid_argument("sample: out_ids too small");
  float* lp = nullptr;
  if (out_logprobs.defined()) {
    ANVIL_RETURN_IF_ERROR(expect(out_logprobs, DType::kF32, "sample", "out_logprobs"));
    if (out_logprobs.numel() < params.num_rows) return invalid_argument("sample: out_logprobs too small");
    lp = out_logprobs.ptr<float>();
  }
  return cuda::launch_sample(logits.ptr<float>(), logits.dim(1), params, out_ids.ptr<int32_t>(), lp, stream_,
                             cuda::kSampleCandidateCap, &sample_ws_);
}

}  // namespace anvil
