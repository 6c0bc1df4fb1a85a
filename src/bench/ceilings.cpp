// Parameter, byte and FLOP counts for the decode and prefill floors.
#include "bench/ceilings.h"

#include <algorithm>

namespace anvil::bench {

ModelCost model_cost(const ModelSpec& s, int64_t weight_bytes, int64_t weight_dtype_bytes, int64_t kv_dtype_bytes) {
  ModelCost c;
  const int64_t h = s.hidden_size;
  const int64_t per_layer = h * (s.q_size() + 2 * s.kv_size()) + s.q_size() * h + 3 * h * s.intermediate_size;
  c.linear_params = s.num_layers * per_layer;
  c.lm_head_params = s.vocab_size * h;
  const int64_t norms = s.num_layers * 2 * h + h + (s.qk_norm ? s.num_layers * 2 * s.head_dim : 0);
  c.total_params = c.linear_params + c.lm_head_params * (s.tie_word_embeddings ? 1 : 2) + norms;
  c.weight_bytes = weight_bytes;
  c.embedding_bytes = s.vocab_size * h * weight_dtype_bytes;
  c.kv_bytes_per_token = 2 * s.num_layers * s.num_kv_heads * s.head_dim * kv_dtype_bytes;
  c.num_layers = s.num_layers;
  c.num_heads = s.num_heads;
  c.head_dim = s.head_dim;
  return c;
}

double decode_step_bytes(const ModelCost& c, int64_t batch, double avg_context) {
  return static_cast<double>(std::max<int64_t>(c.weight_bytes - c.embedding_bytes, 0)) +
         static_cast<double>(batch) * avg_context * static_cast<double>(c.kv_bytes_per_token);
}

double mean_decode_context(int64_t isl, int64_t osl) {
  return static_cast<double>(isl) + static_cast<double>(osl) / 2.0;
}

PrefillFlops prefill_flops(const ModelCost& c, int64_t batch, int64_t isl) {
  PrefillFlops f;
  const double tokens = static_cast<double>(batch) * static_cast<double>(isl);
  f.gemm = 2.0 * static_cast<double>(c.linear_params) * tokens;
  f.lm_head = 2.0 * static_cast<double>(c.lm_head_params) * static_cast<double>(batch);
  const double pairs = static_cast<double>(isl) * static_cast<double>(isl + 1) / 2.0;
  f.attention = 4.0 * static_cast<double>(c.num_layers * c.num_heads * c.head_dim) * pairs * static_cast<double>(batch);
  return f;
}

}  // namespace anvil::bench
