// The floors a benchmark figure is judged against (PERFORMANCE.md): a decode step cannot beat
// (weight bytes + KV bytes read) / bandwidth, a prefill cannot beat its GEMM FLOPs / peak.
// Pure arithmetic over the model's shape; the bandwidth and peak are given, not measured here.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

#include "model/model_spec.h"

namespace anvil::bench {

struct ModelCost {
  int64_t linear_params = 0;   // per-token GEMM weights of all layers (QKV, O, gate/up, down)
  int64_t lm_head_params = 0;  // vocab x hidden; run only for the logit rows
  int64_t total_params = 0;    // every weight, embeddings and norms included (tied: counted once)
  int64_t weight_bytes = 0;    // as loaded on the backend (ModelRunner::weight_bytes)
  // The token-embedding table: loaded, but a decode step reads only one row of it per sequence
  // (a tied LM head is loaded as its own copy, which the step does read in full).
  int64_t embedding_bytes = 0;
  int64_t kv_bytes_per_token = 0;  // 2 (K and V) * layers * kv_heads * head_dim * KV dtype bytes
  int64_t num_layers = 0, num_heads = 0, head_dim = 0;
};

// `weight_dtype_bytes`: bytes per element of the embedding table as loaded.
ModelCost model_cost(const ModelSpec& spec, int64_t weight_bytes, int64_t weight_dtype_bytes, int64_t kv_dtype_bytes);

// Bytes one decode step of `batch` sequences reads: every loaded weight but the embedding table
// (weight_bytes - embedding_bytes) once, plus each sequence's KV at `avg_context` tokens.
double decode_step_bytes(const ModelCost& c, int64_t batch, double avg_context);
// Mean context length over the decode steps of an ISL/OSL request: step k (1 .. OSL-1) attends
// over ISL + k tokens, so the mean is ISL + OSL/2.
double mean_decode_context(int64_t isl, int64_t osl);

// FLOPs of one prefill of `batch` prompts of `isl` tokens: GEMMs 2 * linear_params * tokens, the
// LM head for one row per prompt, and causal attention (QK^T and PV: 2 * 2 * heads * head_dim
// per query-key pair, isl * (isl + 1) / 2 pairs per layer).
struct PrefillFlops {
  double gemm = 0;
  double lm_head = 0;
  double attention = 0;
  double total() const { return gemm + lm_head + attention; }
};
PrefillFlops prefill_flops(const ModelCost& c, int64_t batch, int64_t isl);

}  // namespace anvil::bench
