// The CPU reference backend: plain C++, fp32 activations and weights, fp32 accumulation,
// threaded over rows with the global ThreadPool. Every CUDA op is tested against it, so it favours
// clarity over speed, but it is fast enough to run small models interactively.
#pragma once

#include "backend/backend.h"

namespace anvil {

class CpuBackend final : public Backend {
 public:
  CpuBackend() = default;

  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::kF32; }

  Result<void*> allocate(size_t bytes) override;
  void deallocate(void* p) override;
  Status copy_h2d(void* dst, const void* src, size_t bytes) override;
  Status copy_d2h(void* dst, const void* src, size_t bytes) override;
  Status copy_d2d(void* dst, const void* src, size_t bytes) override;
  Status memset_zero(void* dst, size_t bytes) override;
  Status synchronize() override { return Status::ok(); }
  Result<MemoryInfo> memory_info() override;

  Status embedding(const Tensor& ids, const Tensor& table, Tensor out) override;
  Status rms_norm(const Tensor& x, Tensor residual, const Tensor& weight, float eps, Tensor out) override;
  Status linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor out) override;
  // cpu_quant.cpp: the reference of every QuantFormat (f32 math on dequantized weights; W8A8
  // formats quantize the activations per token exactly as backend.h specifies).
  Status linear_quantized(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor out) override;
  Status rope_kv_write(const Tensor& qkv, const Tensor& q_norm, const Tensor& k_norm, float qk_norm_eps,
                       const Tensor& inv_freq, float attention_scaling, const BatchView& batch, Tensor q_out,
                       const KvCacheLayer& kv) override;
  Status attention(const Tensor& q, const KvCacheLayer& kv, const BatchView& batch, float scale,
                   Tensor out) override;
  Status act_mul(const Tensor& gate_up, Activation act, Tensor out) override;
  Status gather_rows(const Tensor& x, const Tensor& rows, Tensor out) override;
  Status sample(Tensor logits, const SamplingBatch& params, Tensor out_ids, Tensor out_logprobs) override;
};

// Samples one row on the host with exactly the semantics of Backend::sample (shared with the
// executor's tests). logits [V] is modified in place. Returns the token id; *logprob gets the
// chosen token's log-probability under the raw logits if non-null.
int32_t sample_row_reference(float* logits, int64_t vocab, const SamplingBatch& params, int32_t row,
                             float* logprob);

}  // namespace anvil
