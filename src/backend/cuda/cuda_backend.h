// CudaBackend: the Backend of backend.h on one NVIDIA GPU. One stream per backend; activations
// and weights in bf16 or fp16 (BackendOptions::compute_dtype) with fp32 math; GEMMs through
// cuBLASLt, the other ops through the kernels in kernels/ (launchers in ops/). Memory comes from
// cudaMalloc with a cache of freed blocks (reuse is stream-ordered: one stream). Every op only
// enqueues work, so a decode step can be captured once per batch-size bucket and replayed; the
// GEMM workspace is allocated at creation and attention scratch grows only outside capture.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/ops/linear.h"
#include "backend/cuda/ops/quant_w8a8.h"
#include "backend/cuda/ops/quant_weight_only.h"
#include "backend/cuda/ops/sample.h"

namespace anvil {

// True when the CUDA runtime sees at least one device.
bool cuda_device_present();

// Creates the CUDA backend on options.device_index. compute_dtype must be kBF16 or kF16.
Result<std::unique_ptr<Backend>> create_cuda_backend(const BackendOptions& options);

class CudaBackend final : public Backend {
 public:
  ~CudaBackend() override;

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return name_; }
  DType compute_dtype() const override { return dtype_; }

  Result<void*> allocate(size_t bytes) override;
  void deallocate(void* p) override;
  Status copy_h2d(void* dst, const void* src, size_t bytes) override;
  Status copy_d2h(void* dst, const void* src, size_t bytes) override;
  Status copy_d2d(void* dst, const void* src, size_t bytes) override;
  Status memset_zero(void* dst, size_t bytes) override;
  Status synchronize() override;
  Result<MemoryInfo> memory_info() override;

  Status embedding(const Tensor& ids, const Tensor& table, Tensor out) override;
  Status rms_norm(const Tensor& x, Tensor residual, const Tensor& weight, float eps, Tensor out) override;
  Status linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor out) override;
  // Weight-only formats through cuda::WeightOnlyLinear (ops/quant_weight_only.h); W8A8 formats
  // through cuda::W8A8Linear (ops/quant_w8a8.h).
  Status linear_quantized(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor out) override;
  Status rope_kv_write(const Tensor& qkv, const Tensor& q_norm, const Tensor& k_norm, float qk_norm_eps,
                       const Tensor& inv_freq, float attention_scaling, const BatchView& batch, Tensor q_out,
                       const KvCacheLayer& kv) override;
  Status attention(const Tensor& q, const KvCacheLayer& kv, const BatchView& batch, float scale,
                   Tensor out) override;
  Status act_mul(const Tensor& gate_up, Activation act, Tensor out) override;
  Status gather_rows(const Tensor& x, const Tensor& rows, Tensor out) override;
  // The logits are left unmodified (the contract allows modification; keeping the raw row gives
  // the log-probability without a copy). No host sync.
  Status sample(Tensor logits, const SamplingBatch& params, Tensor out_ids, Tensor out_logprobs) override;

  Status begin_capture() override;
  Result<int> end_capture() override;
  Status replay(int graph_id) override;

  // Times up to `candidates` cuBLASLt algorithms for x [m, k] @ w [n, k]^T in the compute dtype
  // (out_dtype: the compute dtype or f32; bias in the compute dtype when has_bias) and pins the
  // fastest for every M in m's power-of-two bucket. Allocates and synchronizes: build/load time.
  Result<cuda::LinearAutotuneResult> autotune_linear(int64_t m, int64_t n, int64_t k, DType out_dtype, bool has_bias,
                                                     int candidates = 8, int iterations = 20);

  // Pins a saved algorithm (LinearAutotuneResult::algo) for the same shape; kUnsupported when
  // this cuBLASLt does not accept it (the caller re-times with autotune_linear).
  Status pin_linear_algorithm(int64_t m, int64_t n, int64_t k, DType out_dtype, bool has_bias,
                              const cuda::LinearAlgoBytes& algo);

  cudaStream_t stream() const { return stream_; }
  int device_index() const { return device_index_; }

 private:
  friend Result<std::unique_ptr<Backend>> create_cuda_backend(const BackendOptions& options);
  CudaBackend() = default;
  Status check_not_capturing(const char* what) const;
  // x [m, k] @ w [n, k]^T in the compute dtype (bias too), output out_dtype: what the autotuner
  // times and pins.
  cuda::LinearShape weight_gemm_shape(int64_t m, int64_t n, int64_t k, DType out_dtype, bool has_bias) const;
  // Grows the attention scratch to `bytes` (outside capture only).
  Status reserve_attention_workspace(size_t bytes);
  void release_cached_blocks();

  int device_index_ = 0;
  DType dtype_ = DType::kBF16;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::LinearRunner> linear_;
  std::unique_ptr<cuda::WeightOnlyLinear> weight_only_;  // uses linear_ for prefill
  std::unique_ptr<cuda::W8A8Linear> w8a8_;               // fp8 / int8 W8A8 (ops/quant_w8a8.h)
  bool capturing_ = false;
  std::vector<cudaGraphExec_t> graphs_;
  void* attention_ws_ = nullptr;
  size_t attention_ws_bytes_ = 0;
  void* sample_ws_mem_ = nullptr;  // zeroed once; the split sampler's partials and counters
  cuda::SampleWorkspace sample_ws_;

  std::mutex mem_mu_;
  std::unordered_map<void*, size_t> live_;       // pointer -> rounded size
  std::multimap<size_t, void*> cached_;          // freed blocks by size
  size_t cached_bytes_ = 0;
};

}  // namespace anvil
