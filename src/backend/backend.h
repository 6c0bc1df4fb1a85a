// Backend: the fixed op set every device implements (ARCHITECTURE.md, "Backends and ops").
// The CPU backend is the reference (fp32 everywhere); the CUDA backend runs bf16/fp16 activations
// and weights with fp32 accumulation. Ops are asynchronous on the backend's stream; only
// copy_d2h and synchronize wait. Kernels get batch metadata as arguments (BatchView), never from
// a global. Every pointer in a BatchView / Tensor passed to an op lives in this backend's memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "core/status.h"
#include "core/tensor.h"

namespace anvil {

// Metadata of one step's batch: the tokens of all scheduled sequences concatenated with no
// padding; prefill chunks and decode tokens mix freely.
//
//   seq 0: 5 new tokens (prefill)   seq 1: 1 new token (decode)   seq 2: 3 new tokens (chunk)
//   token_ids  [ a a a a a | b | c c c ]         num_tokens = 9, num_seqs = 3
//   seq_starts [ 0, 5, 6, 9 ]                    query offsets (cu_seqlens)
//   context_lens [ 5, 40, 67 ]                   tokens in the KV cache after this step's write
//   positions  [ 0 1 2 3 4 | 39 | 64 65 66 ]     = context_len - q_len + i
//
// The host-side hints are upper bounds: kernels read real lengths from the device arrays, so a
// captured CUDA graph stays valid while the hints stay above the real values.
struct BatchView {
  int32_t num_tokens = 0;
  int32_t num_seqs = 0;
  int32_t max_query_len = 0;       // hint: >= max over seqs of query length
  int32_t max_context_len = 0;     // hint: >= max over seqs of context_lens
  int32_t max_blocks_per_seq = 0;  // row stride of block_tables
  const int32_t* token_ids = nullptr;     // [num_tokens]
  const int32_t* positions = nullptr;     // [num_tokens]
  const int32_t* seq_starts = nullptr;    // [num_seqs + 1]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  const int32_t* slot_map = nullptr;      // [num_tokens]  slot = block_id * block_size + offset
  const int32_t* logit_rows = nullptr;    // [num_seqs]    row of each seq's last token
};

// One layer's paged KV cache. Blocks are per layer; K and V are separate pools:
//
//   k: [num_blocks, num_kv_heads, block_size, head_dim]   (one head's block is contiguous:
//   v: [num_blocks, num_kv_heads, block_size, head_dim]    block_size * head_dim elements)
//
// Token slot s lives in block s / block_size at row s % block_size.
//
// Quantized KV cache (dtype kF8E4M3 or kI8): each element is stored as round(x / scale[h]) with
// one f32 scale per KV head and layer (k_scale / v_scale, [num_kv_heads], backend memory; set
// by calibration at build time). kI8 rounds to nearest and saturates to [-127, 127]; kF8E4M3
// converts with satfinite (core/dtype.h). Readers multiply back by the scale. For the compute
// dtype (and f32 on the CPU) the scales are null and unused.
struct KvCacheLayer {
  void* k = nullptr;
  void* v = nullptr;
  DType dtype = DType::kF32;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  const float* k_scale = nullptr;  // [num_kv_heads] for kF8E4M3 / kI8
  const float* v_scale = nullptr;
};

// Quantized linear weights (docs/quantization.md). A weight of N output and K input channels;
// element (n, k) dequantizes as:
//   kInt8WeightOnly  data i8 [N, K]; w = q * scales[n]                       (W8A16, per channel)
//   kInt4Group       data u8 [N, K / 2], two unsigned 4-bit codes q in 0..15 per byte, the low
//                    nibble holding the even k; g = k / group_size;
//                    w = q * scales[n, g] + offsets[n, g]   (offsets = -zero_point * scale; a
//                    symmetric quantizer uses zero point 8)                 (W4A16: RTN, AWQ, GPTQ)
//   kInt8W8A8        data i8 [N, K]; scales[n]. Activations are quantized per token at run time:
//                    s_t = max_k |x[t, k]| / 127, qx = round(x / s_t) clamped to [-127, 127];
//                    out = (sum_k qx * q) * s_t * scales[n] (+ bias)          (SmoothQuant; the
//                    smoothing factors are folded into the preceding weights at build time)
//   kFp8W8A8         data e4m3 [N, K]; scales[n] (per-tensor scaling = all equal). Activations:
//                    s_t = max_k |x[t, k]| / 448, qx = e4m3(x / s_t) (satfinite);
//                    out = (sum_k qx * q) * s_t * scales[n] (+ bias)
// scales / offsets: kInt4Group stores them as f16 [N, K / group_size]; the others as f32 [N]
// (offsets null). Accumulation is f32 (int32 for kInt8W8A8).
// Decode sizes: the CUDA backend runs the W8A8 formats at M <= 16 as weight-only GEMMs
// (w = q * scales[n] against the unquantized activations): bound by the weight read, where
// skipping the activation quantization is faster and more precise. Results at M <= 16 therefore
// differ from the per-token-quantized semantics by that quantization's error.
enum class QuantFormat { kInt8WeightOnly, kInt4Group, kInt8W8A8, kFp8W8A8 };
const char* quant_format_name(QuantFormat f);  // "int8_wo", "int4_group", "int8_w8a8", "fp8_w8a8"

struct QuantizedWeight {
  QuantFormat format = QuantFormat::kInt8WeightOnly;
  int64_t n = 0, k = 0;
  int32_t group_size = 0;  // kInt4Group: 32, 64 or 128 (K a multiple of it); else 0
  const void* data = nullptr;
  const void* scales = nullptr;
  const void* offsets = nullptr;  // kInt4Group only
};

enum class Activation { kSilu, kGeluTanh };

// Per-row sampling parameters for one step, in backend memory. Row r samples from logits[r].
// Penalty entries are a CSR list per row over the distinct tokens seen so far:
//   penalty_offsets [rows + 1]; for entry e: penalty_token_ids[e], penalty_output_counts[e]
//   (occurrences among generated tokens; 0 if seen only in the prompt).
// Logit bias entries, the same CSR shape: bias_offsets [rows + 1], bias_token_ids[e],
// bias_values[e], added to the raw logits first (-inf bans a token: min_tokens, OpenAI logit_bias).
// HF/vLLM semantics: repetition penalty p applies to every seen token (logit > 0 ? logit / p :
// logit * p); presence and frequency apply to generated tokens only
// (logit -= presence * (count > 0) + frequency * count). Then temperature, then top-k, top-p,
// min-p filtering, then one uniform draw u = philox_uniform(seed, step) (core/random.h) picks
// the first token in descending-probability order (ties: lower id first) whose cumulative
// probability exceeds u. temperature == 0 means greedy (argmax, lowest id on ties).
struct SamplingBatch {
  int32_t num_rows = 0;
  bool all_greedy = true;    // hint: skip the sampling path entirely
  bool any_penalty = false;  // hint: skip the penalty pass
  const float* temperature = nullptr;         // [rows]
  const int32_t* top_k = nullptr;             // [rows] 0 = off
  const float* top_p = nullptr;               // [rows] 1 = off
  const float* min_p = nullptr;               // [rows] 0 = off
  const float* repetition_penalty = nullptr;  // [rows] 1 = off
  const float* presence_penalty = nullptr;    // [rows] 0 = off
  const float* frequency_penalty = nullptr;   // [rows] 0 = off
  const uint64_t* seeds = nullptr;            // [rows]
  const int64_t* steps = nullptr;             // [rows] tokens generated so far (RNG counter)
  const int32_t* penalty_offsets = nullptr;   // [rows + 1]
  const int32_t* penalty_token_ids = nullptr;
  const int32_t* penalty_output_counts = nullptr;
  bool any_bias = false;  // hint: skip the bias pass
  const int32_t* bias_offsets = nullptr;      // [rows + 1]
  const int32_t* bias_token_ids = nullptr;
  const float* bias_values = nullptr;
};

struct MemoryInfo {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)"
  // Dtype of activations and (unquantized) weights this backend computes in.
  virtual DType compute_dtype() const = 0;

  // ---- memory ----
  virtual Result<void*> allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  // Host -> backend. The host memory must stay valid until the next synchronize().
  virtual Status copy_h2d(void* dst, const void* src, size_t bytes) = 0;
  // Backend -> host; waits for queued work first.
  virtual Status copy_d2h(void* dst, const void* src, size_t bytes) = 0;
  virtual Status copy_d2d(void* dst, const void* src, size_t bytes) = 0;
  virtual Status memset_zero(void* dst, size_t bytes) = 0;
  virtual Status synchronize() = 0;
  virtual Result<MemoryInfo> memory_info() = 0;

  // ---- ops ----
  // out[t] = table[ids[t]].  ids [T] i32; table [V, H]; out [T, H]. Out-of-range ids are an error
  // on the CPU backend and clamp to a zero row on the GPU (the executor validates ids first).
  virtual Status embedding(const Tensor& ids, const Tensor& table, Tensor out) = 0;

  // RMSNorm with optional fused residual add:
  //   residual defined:  residual += x;  out = residual * rsqrt(mean(residual^2) + eps) * weight
  //   residual empty:    out = x * rsqrt(mean(x^2) + eps) * weight
  // x, residual, out [T, H]; weight [H]. x may alias out.
  virtual Status rms_norm(const Tensor& x, Tensor residual, const Tensor& weight, float eps, Tensor out) = 0;

  // out = x @ w^T (+ bias).  x [M, K]; w [N, K] (HF layout: out_features x in_features);
  // bias [N] or empty; out [M, N]. out may be f32 while x/w are the compute dtype (logits).
  virtual Status linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor out) = 0;

  // The attention prologue, fused: split the packed QKV rows, apply per-head RMSNorm to q and k
  // when q_norm/k_norm are given (Qwen3), rotate q and k (HF rotate_half convention, angle =
  // position * inv_freq[i], cos/sin in fp32, times attention_scaling), write q to q_out and k, v
  // into the paged cache at batch.slot_map.
  //   qkv [T, (Hq + 2 * Hkv) * D]  laid out [q heads | k heads | v heads]
  //   q_norm, k_norm [D] or empty;  inv_freq [D / 2] f32;  q_out [T, Hq, D]
  virtual Status rope_kv_write(const Tensor& qkv, const Tensor& q_norm, const Tensor& k_norm, float qk_norm_eps,
                               const Tensor& inv_freq, float attention_scaling, const BatchView& batch,
                               Tensor q_out, const KvCacheLayer& kv) = 0;

  // Causal attention of each query token over its sequence's cached keys/values (which include
  // this step's tokens, written by rope_kv_write). Query i of a sequence with query length q and
  // context length c sits at position c - q + i and sees keys 0 .. c - q + i. GQA: query head h
  // reads KV head h / (Hq / Hkv). Softmax in fp32.
  //   q [T, Hq, D]; out [T, Hq, D]
  virtual Status attention(const Tensor& q, const KvCacheLayer& kv, const BatchView& batch, float scale,
                           Tensor out) = 0;

  // out = x @ dequant(w)^T (+ bias) for a quantized weight (see QuantFormat). x [M, K] in the
  // compute dtype; bias [N] or empty; out [M, N] (the compute dtype, or f32).
  virtual Status linear_quantized(const Tensor& x, const QuantizedWeight& w, const Tensor& bias, Tensor out) {
    (void)x, (void)w, (void)bias, (void)out;
    return unsupported(name() + ": quantized linear (" + quant_format_name(w.format) + ")");
  }

  // out = act(gate) * up.  gate_up [T, 2F] laid out [gate | up]; out [T, F].
  virtual Status act_mul(const Tensor& gate_up, Activation act, Tensor out) = 0;

  // out[i] = x[rows[i]].  x [T, H]; rows [n] i32 (backend memory); out [n, H].
  virtual Status gather_rows(const Tensor& x, const Tensor& rows, Tensor out) = 0;

  // Samples one token per row (see SamplingBatch). logits [rows, V] f32, modified in place by
  // penalties and temperature; out_ids [rows] i32; out_logprobs [rows] f32 or empty: the
  // log-probability of the chosen token under the unmodified distribution (log_softmax of the raw
  // logits row, before penalties/temperature), as OpenAI's logprobs report it.
  virtual Status sample(Tensor logits, const SamplingBatch& params, Tensor out_ids, Tensor out_logprobs) = 0;

  // ---- graph capture (optional; the CUDA backend implements it) ----
  // Ops issued between begin_capture() and end_capture() are recorded, not run; replay(id) runs
  // the recording again on the backend's stream with the same pointers. Nothing may allocate or
  // wait on the host while capturing. Default: unsupported.
  virtual Status begin_capture() { return unsupported(name() + ": graph capture"); }
  virtual Result<int> end_capture() { return unsupported(name() + ": graph capture"); }
  virtual Status replay(int graph_id) { return unsupported(name() + ": graph replay"); }
};

// Owns one allocation of a backend. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* backend, void* ptr, size_t bytes) : backend_(backend), ptr_(ptr), bytes_(bytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : backend_(o.backend_), ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_;
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static Result<DeviceBuffer> create(Backend* backend, size_t bytes) {
    if (bytes == 0) return DeviceBuffer(backend, nullptr, 0);
    ANVIL_ASSIGN_OR_RETURN(void* p, backend->allocate(bytes));
    return DeviceBuffer(backend, p, bytes);
  }
  void reset() {
    if (ptr_ && backend_) backend_->deallocate(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Tensor tensor(DType t, Shape s) const { return Tensor(ptr_, t, s, backend_ ? backend_->device() : Device::kCpu); }

 private:
  Backend* backend_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

enum class BackendKind { kCpu, kCuda };

struct BackendOptions {
  BackendKind kind = BackendKind::kCpu;
  int device_index = 0;
  DType compute_dtype = DType::kBF16;  // CUDA only; the CPU backend always computes in f32
};

// Creates a backend. kCuda fails with kUnavailable when anvil was built without CUDA or no GPU
// is present.
Result<std::unique_ptr<Backend>> create_backend(const BackendOptions& options);
// True when a CUDA backend can be created (built with CUDA and a device is visible).
bool cuda_available();

}  // namespace anvil
