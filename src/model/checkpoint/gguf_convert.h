// GGUF -> Hugging Face model folder: config.json, generation_config.json, model.safetensors,
// tokenizer.json, tokenizer_config.json, so a GGUF model runs through the same path as an HF
// checkpoint. Weights are dequantized to f32 (exactly as ggml does), then stored as `dtype`.
// Only the llama architecture is converted; others are refused by name.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/checkpoint/gguf_file.h"

namespace anvil {

// Converts `gguf_path` into `out_dir` (created if needed; existing files of the same names are
// replaced). `dtype` is kF32, kBF16 or kF16. Each file is written under a temporary name and
// renamed; config.json is written last, so a folder with config.json holds a complete conversion.
Status convert_gguf_to_hf(const std::string& gguf_path, const std::string& out_dir, DType dtype);

namespace gguf {

// The llama-family hyperparameters a GGUF file states (llama.* keys), validated.
struct LlamaConfig {
  int64_t vocab_size = 0;  // rows of token_embd
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::optional<double> rope_linear_factor;  // llama.rope.scaling.type == "linear"
  bool tie_word_embeddings = false;          // no output.weight in the file
};

Result<LlamaConfig> read_llama_config(const GgufFile& file);

// The HF name for a llama.cpp tensor name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); nullopt for names with no HF counterpart.
std::optional<std::string> llama_hf_tensor_name(const std::string& gguf_name);

// Undoes convert_hf_to_gguf's permute() of q_proj / k_proj rows. Within each head llama.cpp
// interleaves the two rotary halves; HF keeps them apart:
//   gguf row  h*head_dim + 2*i + j   <-   HF row  h*head_dim + j*(head_dim/2) + i
// `src` and `dst` are [n_heads * head_dim, cols] row-major and must not alias.
void unpermute_qk_rows(const float* src, float* dst, int64_t n_heads, int64_t head_dim, int64_t cols);

// One HF tensor converted from the file: row-major `shape`, f32 data.
struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Dequantizes, renames and un-permutes one GGUF tensor. Fails naming the tensor if it has no HF
// counterpart or its shape does not match `config`.
Result<HfTensor> convert_llama_tensor(const GgufFile& file, const TensorInfo& info, const LlamaConfig& config);

// config.json text (LlamaForCausalLM) for `config` with the tokenizer's special ids.
std::string llama_hf_config_json(const LlamaConfig& config, DType dtype, int64_t bos_id, int64_t eos_id,
                                 int64_t pad_id);

}  // namespace gguf
}  // namespace anvil
