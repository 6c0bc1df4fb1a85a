// Launchers for paged causal attention on CUDA (Backend::attention): a split-KV decode kernel for
// q_len == 1 rows, a flash-style tensor-core prefill kernel for longer rows, and a naive reference
// kernel for tests. All are CUDA-graph safe: grids come from host hints, real lengths from device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <optional>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/status.h"

namespace anvil::cuda {

// Which kernels launch_attention runs. kAuto is what the backend uses; the others exist so that
// tests can drive each kernel over every row kind.
enum class AttentionPath {
  kAuto,       // decode kernel (v3, or v2 for groups > 16) for q_len == 1 sequences, prefill
               // kernel for q_len > 1 ones
  kPrefill,    // the tiled prefill kernel for every sequence (decode rows included)
  kDecode,     // the split-KV decode kernel only; every sequence must have q_len == 1
  kReference,  // the naive kernel (one thread block per (token, head)); slow, for tests
};

// One attention call. Every pointer is device memory on the current device.
//
//   q        [num_tokens, num_heads, head_dim]                          dtype
//   out      [num_tokens, num_heads, head_dim]                          dtype (may not alias q)
//   k_cache  [num_blocks, num_kv_heads, block_size, head_dim]           kv_dtype (default dtype)
//   v_cache  [num_blocks, num_kv_heads, block_size, head_dim]           kv_dtype
//   k_scale, v_scale [num_kv_heads] f32                                 quantized caches only
//
// batch carries the device arrays (seq_starts, context_lens, block_tables) and the host hints
// (num_tokens, num_seqs, max_query_len, max_context_len, max_blocks_per_seq), which must be upper
// bounds of the real values stored on the device (see BatchView).
struct AttentionLaunch {
  const void* q = nullptr;
  void* out = nullptr;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  DType dtype = DType::kBF16;  // kBF16 or kF16
  // Cache element type; unset: dtype. kF8E4M3 / kI8: codes that read as code * k_scale[h] (K)
  // and code * v_scale[h] (V) (backend.h, KvCacheLayer). The decode and prefill kernels read
  // them; the reference kernel and the frozen v1 decode kernel do not (kUnsupported).
  std::optional<DType> kv_dtype;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  int num_heads = 0;           // Hq, a multiple of num_kv_heads
  int num_kv_heads = 0;        // Hkv
  int head_dim = 0;            // 64 or 128
  int block_size = 0;          // 16, 32 or 64
  float scale = 1.0f;          // softmax scale, usually 1 / sqrt(head_dim)
  BatchView batch;
  // Scratch for the split-KV decode path (partial outputs and log-sum-exps, and at its end
  // arrival counters); at least attention_workspace_bytes(...) for the largest batch this call can
  // see. May be null when workspace_bytes == 0: decode then runs without splitting.
  //
  //   workspace: [ partials (from the start) ......... | counters: workspace_bytes / 256 int32 ]
  //
  // workspace_zeroed: the caller zeroed the whole workspace once after allocating it (cudaMemset)
  // and has since used it only for launch_attention calls on one stream. The decode kernel then
  // merges its splits in the last CTA of each (sequence, KV head), in one launch, and leaves the
  // counters zero again (also under graph replay). false: a separate combine kernel merges.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  bool workspace_zeroed = false;
  // Host hint: an upper bound of the number of decode rows (q_len == 1 sequences), or -1 when
  // unknown. 0 with max_query_len > 1 (a prefill-only step) skips the decode kernel's launch; a
  // graph captured for decode steps must leave it -1 or pass its bound.
  int max_decode_seqs = -1;
  AttentionPath path = AttentionPath::kAuto;
  // Tuning overrides for tests and benchmarks; 0 = automatic. decode_splits: KV splits of the
  // decode kernel (capped by the workspace and the context). prefill_warp_rows: query rows per
  // warp of the prefill kernel, 16 or 32. decode_version: 1 selects the frozen first decode
  // kernel (attention_decode_v1.cuh, separate combine launch, its own split choice), 2 the
  // CUDA-core split-KV kernel v2 (attention_decode.cuh), 3 the tensor-core kernel v3
  // (attention_decode_mma.cuh; group <= 16, else kUnsupported), so benchmarks and tests can drive
  // each; 0 the automatic choice: v3 for groups up to 16, v2 above.
  int decode_splits = 0;
  int prefill_warp_rows = 0;
  int decode_version = 0;
};

// Bytes of workspace that launch_attention needs for batches of up to max_seqs sequences. The
// number of KV splits is bounded by a constant, so this does not depend on the context length.
size_t attention_workspace_bytes(int max_seqs, int num_heads, int num_kv_heads, int head_dim);

// Validates the arguments (dtype, head_dim, block_size, head ratio, pointers) and enqueues the
// kernels on `stream`. Never allocates and never synchronizes. A failed launch is an
// internal error naming the kernel.
Status launch_attention(const AttentionLaunch& p, cudaStream_t stream);

}  // namespace anvil::cuda
