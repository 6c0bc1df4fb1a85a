// ModelSpec: everything anvil needs to know about a decoder-only model's architecture, read from
// a Hugging Face config.json (+ generation_config.json). Architecture-specific switches are plain
// fields (qkv_bias, qk_norm) so one builder serves the Llama family.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace anvil {

enum class ArchFamily { kLlama, kMistral, kQwen2, kQwen3 };

enum class RopeScalingType { kNone, kLinear, kLlama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelSpec {
  ArchFamily family = ArchFamily::kLlama;
  std::string architecture;  // e.g. "LlamaForCausalLM"
  std::string model_type;    // e.g. "llama"

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // config head_dim, else hidden_size / num_heads
  int64_t max_position_embeddings = 0;

  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;

  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // qwen2; llama's attention_bias
  bool o_bias = false;    // llama's attention_bias also covers o_proj
  bool mlp_bias = false;  // llama's mlp_bias
  bool qk_norm = false;   // qwen3: per-head RMSNorm on q and k before rope
  std::string hidden_act = "silu";
  std::string torch_dtype = "float32";

  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = -1;

  int64_t q_size() const { return num_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }
};

const char* arch_family_name(ArchFamily f);

// Parses a config.json text. `origin` names the file in errors. Unsupported architectures or
// fields (e.g. Mistral's sliding_window when it is smaller than the context) are refused with an
// error that names them.
Result<ModelSpec> parse_model_config(const std::string& json_text, const std::string& origin);

// Reads DIR/config.json and, if present, DIR/generation_config.json (whose eos_token_id wins).
Result<ModelSpec> load_model_config(const std::string& model_dir);

// Inverse frequencies for rotary embedding, [head_dim / 2], with rope_scaling applied as HF
// transformers 5 computes them: step by step in float32, as its torch ops do (not in float64: that
// differs from transformers by 1 ulp in about a quarter of the entries). Matches transformers
// bit for bit except where torch's vectorized powf (<= 1 ulp) rounds a power the other way.
std::vector<float> rope_inv_freq(const ModelSpec& spec);

}  // namespace anvil
