// GGUF -> HF folder conversion for the llama architecture: config from llama.* metadata, tensor
// names and Q/K row order as transformers expects them, tokenizer from tokenizer.* metadata.
// Every expected tensor must be present with the shape the config implies; nothing is guessed.
#include "model/checkpoint/gguf_convert.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "core/logging.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/checkpoint/checkpoint.h"
#include "model/checkpoint/gguf_tokenizer.h"

namespace anvil {
namespace gguf {
using Json = nlohmann::ordered_json;

namespace {

Result<int64_t> positive_int(const GgufFile& f, const std::string& key) {
  ANVIL_ASSIGN_OR_RETURN(int64_t v, f.get_int(key));
  if (v <= 0 || v > (int64_t{1} << 32)) {
    return invalid_argument(f.path() + ": metadata '" + key + "' = " + std::to_string(v) + " is out of range");
  }
  return v;
}

// GGUF stores most hyperparameters as float32: 1e-5 arrives as 9.999999747378752e-06. Returns the
// shortest decimal that rounds to the same float32 (1e-05), so config.json reads as the original
// HF config did; torch rounds either back to the same float32. Values not exactly a float32 pass.
double shortest_decimal_of_f32(double v) {
  const float f = static_cast<float>(v);
  if (static_cast<double>(f) != v) return v;
  for (int digits = 1; digits <= 9; ++digits) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.*g", digits, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return v;
}

// "blk.12.attn_q.weight" -> (12, "attn_q.weight"); nullopt for other names.
std::optional<std::pair<int64_t, std::string>> split_block_name(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return std::nullopt;
  size_t dot = name.find('.', 4);
  if (dot == std::string::npos || dot == 4 || dot - 4 > 6) return std::nullopt;
  int64_t layer = 0;
  for (size_t i = 4; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    layer = layer * 10 + (name[i] - '0');
  }
  return std::make_pair(layer, name.substr(dot + 1));
}

// HF shape each tensor must have; empty if the name is not a llama tensor.
std::vector<int64_t> expected_shape(const std::string& gguf_name, const LlamaConfig& c) {
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  if (gguf_name == "token_embd.weight" || gguf_name == "output.weight") return {c.vocab_size, c.hidden_size};
  if (gguf_name == "output_norm.weight") return {c.hidden_size};
  auto blk = split_block_name(gguf_name);
  if (!blk || blk->first >= c.num_layers) return {};
  const std::string& s = blk->second;
  if (s == "attn_norm.weight" || s == "ffn_norm.weight") return {c.hidden_size};
  if (s == "attn_q.weight") return {q, c.hidden_size};
  if (s == "attn_k.weight" || s == "attn_v.weight") return {kv, c.hidden_size};
  if (s == "attn_output.weight") return {c.hidden_size, q};
  if (s == "ffn_gate.weight" || s == "ffn_up.weight") return {c.intermediate_size, c.hidden_size};
  if (s == "ffn_down.weight") return {c.hidden_size, c.intermediate_size};
  return {};
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

// Writes PATH.partial, then renames it to PATH, so PATH is never seen half written.
Status write_text(const std::string& path, const std::string& text) {
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    if (!out) return unavailable("cannot open " + partial + " for writing");
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.close();
    if (!out) return data_loss("failed writing " + partial);
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) return unavailable("cannot rename " + partial + " to " + path + ": " + ec.message());
  return Status::ok();
}

Result<LlamaConfig> read_llama_config(const GgufFile& f) {
  ANVIL_ASSIGN_OR_RETURN(std::string arch, f.get_string("general.architecture"));
  if (arch != "llama") {
    return unsupported(f.path() + ": architecture '" + arch + "' is not supported by the GGUF converter (it converts 'llama')");
  }
  if (f.contains("split.count")) {
    ANVIL_ASSIGN_OR_RETURN(int64_t parts, f.get_int("split.count"));
    if (parts > 1) {
      return unsupported(f.path() + ": this is one of " + std::to_string(parts) +
                         " split GGUF files; merge them first (llama-gguf-split --merge)");
    }
  }
  if (f.contains("llama.expert_count")) {
    ANVIL_ASSIGN_OR_RETURN(int64_t experts, f.get_int("llama.expert_count"));
    if (experts > 0) return unsupported(f.path() + ": mixture-of-experts llama models (llama.expert_count) are not supported");
  }
  if (f.find_tensor("rope_freqs.weight")) {
    return unsupported(f.path() + ": llama3-style rope scaling stored as tensor 'rope_freqs.weight' is not supported");
  }
  LlamaConfig c;
  ANVIL_ASSIGN_OR_RETURN(c.max_position_embeddings, positive_int(f, "llama.context_length"));
  ANVIL_ASSIGN_OR_RETURN(c.hidden_size, positive_int(f, "llama.embedding_length"));
  ANVIL_ASSIGN_OR_RETURN(c.num_layers, positive_int(f, "llama.block_count"));
  ANVIL_ASSIGN_OR_RETURN(c.intermediate_size, positive_int(f, "llama.feed_forward_length"));
  ANVIL_ASSIGN_OR_RETURN(c.num_heads, positive_int(f, "llama.attention.head_count"));
  c.num_kv_heads = c.num_heads;
  if (f.contains("llama.attention.head_count_kv")) {
    ANVIL_ASSIGN_OR_RETURN(c.num_kv_heads, positive_int(f, "llama.attention.head_count_kv"));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return invalid_argument(f.path() + ": llama.attention.head_count " + std::to_string(c.num_heads) +
                            " is not a multiple of llama.attention.head_count_kv " + std::to_string(c.num_kv_heads));
  }
  ANVIL_ASSIGN_OR_RETURN(c.rms_norm_eps, f.get_float("llama.attention.layer_norm_rms_epsilon"));
  c.rms_norm_eps = shortest_decimal_of_f32(c.rms_norm_eps);
  if (!(c.rms_norm_eps > 0)) {
    return invalid_argument(f.path() + ": llama.attention.layer_norm_rms_epsilon must be positive");
  }
  if (f.contains("llama.rope.freq_base")) {
    ANVIL_ASSIGN_OR_RETURN(c.rope_theta, f.get_float("llama.rope.freq_base"));
    c.rope_theta = shortest_decimal_of_f32(c.rope_theta);
    if (!(c.rope_theta > 0)) return invalid_argument(f.path() + ": llama.rope.freq_base must be positive");
  }
  c.head_dim = c.hidden_size / c.num_heads;
  if (f.contains("llama.attention.key_length")) {
    ANVIL_ASSIGN_OR_RETURN(c.head_dim, positive_int(f, "llama.attention.key_length"));
  } else if (c.hidden_size % c.num_heads != 0) {
    return invalid_argument(f.path() + ": llama.embedding_length is not a multiple of llama.attention.head_count");
  }
  if (c.head_dim % 2 != 0) return invalid_argument(f.path() + ": head dimension " + std::to_string(c.head_dim) + " is odd");
  if (f.contains("llama.attention.value_length")) {
    ANVIL_ASSIGN_OR_RETURN(int64_t v_dim, positive_int(f, "llama.attention.value_length"));
    if (v_dim != c.head_dim) return unsupported(f.path() + ": llama.attention.value_length differs from key_length");
  }
  if (f.contains("llama.rope.dimension_count")) {
    ANVIL_ASSIGN_OR_RETURN(int64_t rot, positive_int(f, "llama.rope.dimension_count"));
    if (rot != c.head_dim) {
      return unsupported(f.path() + ": llama.rope.dimension_count " + std::to_string(rot) +
                         " differs from the head dimension " + std::to_string(c.head_dim) + " (partial rotary)");
    }
  }
  if (f.contains("llama.rope.scaling.type")) {
    ANVIL_ASSIGN_OR_RETURN(std::string type, f.get_string("llama.rope.scaling.type"));
    if (type == "linear") {
      ANVIL_ASSIGN_OR_RETURN(double factor, f.get_float("llama.rope.scaling.factor"));
      factor = shortest_decimal_of_f32(factor);
      if (!(factor > 0)) return invalid_argument(f.path() + ": llama.rope.scaling.factor must be positive");
      if (factor != 1.0) c.rope_linear_factor = factor;
    } else if (type != "none") {
      return unsupported(f.path() + ": llama.rope.scaling.type '" + type + "' is not supported (only 'linear')");
    }
  }
  const TensorInfo* embd = f.find_tensor("token_embd.weight");
  if (!embd) return not_found(f.path() + ": tensor 'token_embd.weight' is missing");
  if (embd->dims.size() != 2) return invalid_argument(f.path() + ": tensor 'token_embd.weight' is not 2-D");
  c.vocab_size = embd->dims[1];
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  return c;
}

std::optional<std::string> llama_hf_tensor_name(const std::string& n) {
  if (n == "token_embd.weight") return "model.embed_tokens.weight";
  if (n == "output_norm.weight") return "model.norm.weight";
  if (n == "output.weight") return "lm_head.weight";
  auto blk = split_block_name(n);
  if (!blk) return std::nullopt;
  static const std::map<std::string, std::string> kBlock = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
  };
  auto it = kBlock.find(blk->second);
  if (it == kBlock.end()) return std::nullopt;
  return "model.layers." + std::to_string(blk->first) + "." + it->second;
}

void unpermute_qk_rows(const float* src, float* dst, int64_t n_heads, int64_t head_dim, int64_t cols) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const float* s = src + (h * head_dim + 2 * i + j) * cols;
        float* d = dst + (h * head_dim + j * half + i) * cols;
        std::copy(s, s + cols, d);
      }
    }
  }
}

Result<HfTensor> convert_llama_tensor(const GgufFile& f, const TensorInfo& info, const LlamaConfig& c) {
  std::optional<std::string> hf = llama_hf_tensor_name(info.name);
  std::vector<int64_t> want = expected_shape(info.name, c);
  if (!hf || want.empty()) {
    return unsupported(f.path() + ": tensor '" + info.name + "' has no counterpart in an HF llama model");
  }
  HfTensor t;
  t.name = *hf;
  t.shape = info.torch_shape();
  if (t.shape != want) {
    return invalid_argument(f.path() + ": tensor '" + info.name + "' has shape " + shape_str(t.shape) +
                            ", expected " + shape_str(want) + " from the llama.* metadata");
  }
  ANVIL_ASSIGN_OR_RETURN(t.data, f.dequantize_tensor(info));
  auto blk = split_block_name(info.name);
  if (blk && (blk->second == "attn_q.weight" || blk->second == "attn_k.weight")) {
    const int64_t heads = blk->second == "attn_q.weight" ? c.num_heads : c.num_kv_heads;
    std::vector<float> out(t.data.size());
    unpermute_qk_rows(t.data.data(), out.data(), heads, c.head_dim, c.hidden_size);
    t.data = std::move(out);
  }
  return t;
}

std::string llama_hf_config_json(const LlamaConfig& c, DType dtype, int64_t bos_id, int64_t eos_id, int64_t pad_id) {
  auto id_or_null = [](int64_t id) { return id < 0 ? Json(nullptr) : Json(id); };
  Json j = Json::object();
  j["architectures"] = Json::array({"LlamaForCausalLM"});
  j["model_type"] = "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = c.rope_linear_factor
                          ? Json{{"rope_type", "linear"}, {"type", "linear"}, {"factor", *c.rope_linear_factor}}
                          : Json(nullptr);
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = id_or_null(bos_id);
  j["eos_token_id"] = id_or_null(eos_id);
  j["pad_token_id"] = id_or_null(pad_id);
  j["torch_dtype"] = dtype == DType::kBF16 ? "bfloat16" : dtype == DType::kF16 ? "float16" : "float32";
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  return j.dump(2);
}

}  // namespace gguf

Status convert_gguf_to_hf(const std::string& gguf_path, const std::string& out_dir, DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF16) {
    return invalid_argument("convert " + gguf_path + ": output dtype " + std::string(dtype_name(dtype)) +
                            " is not one of f32, bf16, f16");
  }
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::open(gguf_path));
  ANVIL_ASSIGN_OR_RETURN(gguf::LlamaConfig config, gguf::read_llama_config(*file));
  ANVIL_ASSIGN_OR_RETURN(gguf::HfTokenizer tok, gguf::build_hf_tokenizer(*file, config.max_position_embeddings));
  if (tok.vocab_size > config.vocab_size) {
    return invalid_argument(gguf_path + ": the tokenizer has " + std::to_string(tok.vocab_size) +
                            " tokens but token_embd.weight only " + std::to_string(config.vocab_size) + " rows");
  }

  // Every tensor the config implies must be present, and nothing else.
  std::set<std::string> required = {"token_embd.weight", "output_norm.weight"};
  if (!config.tie_word_embeddings) required.insert("output.weight");
  for (int64_t l = 0; l < config.num_layers; ++l) {
    for (const char* s : {"attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                          "ffn_down"}) {
      required.insert("blk." + std::to_string(l) + "." + s + ".weight");
    }
  }
  for (const std::string& name : required) {
    if (!file->find_tensor(name)) return not_found(gguf_path + ": tensor '" + name + "' is missing");
  }
  const std::vector<gguf::TensorInfo>& infos = file->tensors();
  for (const gguf::TensorInfo& t : infos) {
    if (!required.count(t.name)) {
      return unsupported(gguf_path + ": tensor '" + t.name + "' has no counterpart in an HF llama model");
    }
  }

  // Dequantize in parallel, one tensor per task; each result is stored in `dtype` right away.
  const size_t dsize = dtype_size(dtype);
  std::vector<std::vector<uint8_t>> buffers(infos.size());
  std::vector<gguf::HfTensor> meta(infos.size());
  std::vector<Status> errors(infos.size());
  ThreadPool::global().parallel_for(static_cast<int64_t>(infos.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Result<gguf::HfTensor> r = gguf::convert_llama_tensor(*file, infos[i], config);
      if (!r.is_ok()) {
        errors[i] = r.status();
        continue;
      }
      gguf::HfTensor t = std::move(r).value();
      buffers[i].resize(t.data.size() * dsize);
      convert_from_f32(dtype, t.data.data(), buffers[i].data(), t.data.size());
      t.data = {};
      meta[i] = std::move(t);
    }
  });
  for (const Status& s : errors) ANVIL_RETURN_IF_ERROR(s);

  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.reserve(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    Shape shape;
    for (int64_t d : meta[i].shape) shape.dims[shape.rank++] = d;
    tensors.emplace_back(meta[i].name, Tensor(buffers[i].data(), dtype, shape));
  }

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return unavailable("convert: cannot create " + out_dir + ": " + ec.message());
  const std::string dir = out_dir + "/";
  // config.json goes last: its presence marks a finished conversion (a cache can rely on it).
  ANVIL_RETURN_IF_ERROR(write_safetensors(dir + "model.safetensors", tensors, {{"format", "pt"}}));
  gguf::Json gen = gguf::Json::object();
  if (tok.bos_token_id >= 0) gen["bos_token_id"] = tok.bos_token_id;
  if (tok.eos_token_id >= 0) gen["eos_token_id"] = tok.eos_token_id;
  if (tok.pad_token_id >= 0) gen["pad_token_id"] = tok.pad_token_id;
  ANVIL_RETURN_IF_ERROR(gguf::write_text(dir + "generation_config.json", gen.dump(2)));
  ANVIL_RETURN_IF_ERROR(gguf::write_text(dir + "tokenizer.json", tok.tokenizer_json));
  ANVIL_RETURN_IF_ERROR(gguf::write_text(dir + "tokenizer_config.json", tok.tokenizer_config_json));
  ANVIL_RETURN_IF_ERROR(gguf::write_text(dir + "config.json", gguf::llama_hf_config_json(
                                                                  config, dtype, tok.bos_token_id, tok.eos_token_id,
                                                                  tok.pad_token_id)));
  ANVIL_LOG_INFO("converted %s -> %s (%zu tensors, %s)", gguf_path.c_str(), out_dir.c_str(), tensors.size(),
                 std::string(dtype_name(dtype)).c_str());
  return Status::ok();
}

}  // namespace anvil
