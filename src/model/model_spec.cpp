// Reads a Hugging Face config.json (+ generation_config.json) into a ModelSpec. Every field is
// type-checked; whatever anvil cannot run exactly as transformers would (sliding windows, other
// activations, other rope types) is refused with an error naming the file, the field and its value.
#include "model/model_spec.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/mmap_file.h"

namespace anvil {
namespace {

using Json = nlohmann::json;

// Sizes are indexed with int32 in kernels; anything larger is a corrupt config.
constexpr int64_t kMaxSize = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxHeadDim = 1024;
// rope parameters become float32 (as in transformers); beyond this they would overflow.
constexpr double kMaxRopeValue = std::numeric_limits<float>::max();

struct FamilyInfo {
  ArchFamily family;
  const char* model_type;
  const char* architecture;
  int64_t default_max_position_embeddings;  // transformers' config default
};

constexpr FamilyInfo kFamilies[] = {
    {ArchFamily::kLlama, "llama", "LlamaForCausalLM", 2048},
    {ArchFamily::kMistral, "mistral", "MistralForCausalLM", 4096 * 32},
    {ArchFamily::kQwen2, "qwen2", "Qwen2ForCausalLM", 32768},
    {ArchFamily::kQwen3, "qwen3", "Qwen3ForCausalLM", 32768},
};

std::string supported_model_types() {
  std::string s;
  for (const FamilyInfo& f : kFamilies) s += std::string(s.empty() ? "" : ", ") + f.model_type;
  return s;
}

// A short rendering of a JSON value for error messages.
std::string brief(const Json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Typed access to one JSON object's fields. A field that is absent or null counts as "not set",
// as in transformers. `prefix` is the dotted path of the object ("rope_scaling.").
class Fields {
 public:
  Fields(const Json& obj, std::string origin, std::string prefix)
      : obj_(obj), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

  const Json* find(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::string field(const char* key) const { return "'" + prefix_ + key + "'"; }
  Status wrong_type(const char* key, const char* expected, const Json& v) const {
    return invalid_argument(origin_ + ": field " + field(key) + " must be " + expected + ", got " +
                            v.type_name() + " " + brief(v));
  }
  Status missing(const char* key) const {
    return not_found(origin_ + ": required field " + field(key) + " is missing");
  }
  Status bad_value(const char* key, const std::string& why) const {
    return invalid_argument(origin_ + ": field " + field(key) + " " + why);
  }

  Result<std::optional<int64_t>> get_int(const char* key) const {
    const Json* v = find(key);
    if (!v) return std::optional<int64_t>();
    if (!v->is_number_integer()) return wrong_type(key, "an integer", *v);
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return bad_value(key, "is too large: " + brief(*v));
    return std::optional<int64_t>(v->get<int64_t>());
  }
  // A required integer > 0.
  Result<int64_t> require_positive_int(const char* key) const {
    ANVIL_ASSIGN_OR_RETURN(std::optional<int64_t> v, get_int(key));
    if (!v) return missing(key);
    if (*v <= 0) return bad_value(key, "must be positive, got " + std::to_string(*v));
    if (*v > kMaxSize) return bad_value(key, "is implausibly large: " + std::to_string(*v));
    return *v;
  }
  Result<std::optional<double>> get_number(const char* key) const {
    const Json* v = find(key);
    if (!v) return std::optional<double>();
    if (!v->is_number()) return wrong_type(key, "a number", *v);
    return std::optional<double>(v->get<double>());
  }
  Result<double> require_number(const char* key) const {
    ANVIL_ASSIGN_OR_RETURN(std::optional<double> v, get_number(key));
    if (!v) return missing(key);
    return *v;
  }
  Result<bool> get_bool_or(const char* key, bool fallback) const {
    const Json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) return wrong_type(key, "true or false", *v);
    return v->get<bool>();
  }
  Result<std::optional<std::string>> get_string(const char* key) const {
    const Json* v = find(key);
    if (!v) return std::optional<std::string>();
    if (!v->is_string()) return wrong_type(key, "a string", *v);
    return std::optional<std::string>(v->get<std::string>());
  }
  // A token id field: an integer, a list of integers, or null (-> empty).
  Result<std::vector<int64_t>> get_token_ids(const char* key) const {
    const Json* v = find(key);
    std::vector<int64_t> ids;
    if (!v) return ids;
    auto one = [&](const Json& e) -> Status {
      if (!e.is_number_integer() || e.get<int64_t>() < 0)
        return wrong_type(key, "a non-negative integer or a list of them", *v);
      ids.push_back(e.get<int64_t>());
      return Status::ok();
    };
    if (v->is_array()) {
      for (const Json& e : *v) ANVIL_RETURN_IF_ERROR(one(e));
    } else {
      ANVIL_RETURN_IF_ERROR(one(*v));
    }
    return ids;
  }

 private:
  const Json& obj_;
  std::string origin_;
  std::string prefix_;
};

Result<Json> parse_json_object(const std::string& text, const std::string& origin) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    return invalid_argument(origin + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) return invalid_argument(origin + ": expected a JSON object, got " + j.type_name());
  return j;
}

// Reads rope_theta and the scaling dict. transformers 5 keeps them in `rope_parameters`; older
// configs use `rope_scaling` + top-level `rope_theta`. As transformers does: a non-empty
// rope_scaling wins over rope_parameters, and rope_parameters' rope_theta wins over the top level.
Status parse_rope(const Json& j, const std::string& origin, ModelSpec& spec) {
  Fields top(j, origin, "");
  const char* dict_name = "rope_scaling";
  const Json* dict = top.find("rope_scaling");
  if (dict && dict->is_object() && dict->empty()) dict = nullptr;
  if (!dict) {
    dict_name = "rope_parameters";
    dict = top.find("rope_parameters");
  }
  ANVIL_ASSIGN_OR_RETURN(std::optional<double> theta, top.get_number("rope_theta"));
  if (theta) spec.rope_theta = *theta;
  ANVIL_ASSIGN_OR_RETURN(std::optional<double> partial, top.get_number("partial_rotary_factor"));
  if (!dict) {
    if (!(spec.rope_theta > 0.0 && spec.rope_theta <= kMaxRopeValue))
      return invalid_argument(origin + ": rope_theta must be positive and fit a float32, got " +
                              std::to_string(spec.rope_theta));
    if (partial && *partial != 1.0)
      return unsupported(origin + ": partial_rotary_factor " + std::to_string(*partial) + " is not supported");
    return Status::ok();
  }
  if (!dict->is_object()) return top.wrong_type(dict_name, "an object or null", *dict);
  Fields f(*dict, origin, std::string(dict_name) + ".");
  for (const auto& [key, value] : dict->items()) {
    if (value.is_object())
      return unsupported(origin + ": per-layer-type rope parameters ('" + std::string(dict_name) + "." + key +
                         "') are not supported");
  }
  ANVIL_ASSIGN_OR_RETURN(std::optional<double> dict_theta, f.get_number("rope_theta"));
  if (dict_theta) spec.rope_theta = *dict_theta;
  if (!(spec.rope_theta > 0.0 && spec.rope_theta <= kMaxRopeValue))
    return invalid_argument(origin + ": rope_theta must be positive and fit a float32, got " +
                            std::to_string(spec.rope_theta));
  ANVIL_ASSIGN_OR_RETURN(std::optional<double> dict_partial, f.get_number("partial_rotary_factor"));
  if (dict_partial) partial = dict_partial;
  if (partial && *partial != 1.0)
    return unsupported(origin + ": partial_rotary_factor " + std::to_string(*partial) + " is not supported");

  const char* type_key = f.find("rope_type") ? "rope_type" : "type";
  ANVIL_ASSIGN_OR_RETURN(std::optional<std::string> type, f.get_string(type_key));
  RopeScaling& rs = spec.rope_scaling;
  if (!type || *type == "default") {
    rs = RopeScaling{};
    return Status::ok();
  }
  if (*type == "linear") {
    rs.type = RopeScalingType::kLinear;
    ANVIL_ASSIGN_OR_RETURN(rs.factor, f.require_number("factor"));
    if (!(rs.factor > 0.0 && rs.factor <= kMaxRopeValue))
      return f.bad_value("factor", "must be positive, got " + brief((*dict)["factor"]));
    return Status::ok();
  }
  if (*type == "llama3") {
    rs.type = RopeScalingType::kLlama3;
    ANVIL_ASSIGN_OR_RETURN(rs.factor, f.require_number("factor"));
    ANVIL_ASSIGN_OR_RETURN(rs.low_freq_factor, f.require_number("low_freq_factor"));
    ANVIL_ASSIGN_OR_RETURN(rs.high_freq_factor, f.require_number("high_freq_factor"));
    // transformers: a top-level original_max_position_embeddings overrides the dict's; the
    // dict's falls back to max_position_embeddings.
    ANVIL_ASSIGN_OR_RETURN(std::optional<int64_t> orig_top, top.get_int("original_max_position_embeddings"));
    ANVIL_ASSIGN_OR_RETURN(std::optional<int64_t> orig, f.get_int("original_max_position_embeddings"));
    rs.original_max_position_embeddings = orig_top ? *orig_top : orig ? *orig : spec.max_position_embeddings;
    if (!(rs.factor > 0.0 && rs.factor <= kMaxRopeValue))
      return f.bad_value("factor", "must be positive, got " + brief((*dict)["factor"]));
    if (!(rs.low_freq_factor > 0.0 && rs.low_freq_factor < rs.high_freq_factor && rs.high_freq_factor <= kMaxRopeValue))
      return f.bad_value("low_freq_factor", "must be positive and below high_freq_factor (" +
                                                std::to_string(rs.low_freq_factor) + " vs " +
                                                std::to_string(rs.high_freq_factor) + ")");
    if (rs.original_max_position_embeddings <= 0 || rs.original_max_position_embeddings > kMaxSize)
      return f.bad_value("original_max_position_embeddings", "must be positive");
    return Status::ok();
  }
  return unsupported(origin + ": field '" + std::string(dict_name) + "." + type_key + "' value '" + *type +
                     "' is not supported (supported: default, linear, llama3)");
}

// Sliding-window attention is not implemented yet: refuse configs that use it.
Status check_sliding_window(const Fields& f, const std::string& origin, const ModelSpec& spec) {
  switch (spec.family) {
    case ArchFamily::kLlama:
      return Status::ok();
    case ArchFamily::kMistral: {
      ANVIL_ASSIGN_OR_RETURN(std::optional<int64_t> window, f.get_int("sliding_window"));
      if (window && *window < spec.max_position_embeddings)
        return unsupported(origin + ": sliding_window " + std::to_string(*window) +
                           " is smaller than max_position_embeddings " +
                           std::to_string(spec.max_position_embeddings) +
                           "; sliding-window attention is not supported yet");
      return Status::ok();
    }
    case ArchFamily::kQwen2:
    case ArchFamily::kQwen3: {
      ANVIL_ASSIGN_OR_RETURN(bool use_window, f.get_bool_or("use_sliding_window", false));
      if (use_window)
        return unsupported(origin + ": use_sliding_window true is not supported yet (sliding-window attention)");
      return Status::ok();
    }
  }
  return internal_error("unknown ArchFamily");
}

}  // namespace

const char* arch_family_name(ArchFamily f) {
  switch (f) {
    case ArchFamily::kLlama: return "llama";
    case ArchFamily::kMistral: return "mistral";
    case ArchFamily::kQwen2: return "qwen2";
    case ArchFamily::kQwen3: return "qwen3";
  }
  return "unknown";
}

Result<ModelSpec> parse_model_config(const std::string& json_text, const std::string& origin) {
  ANVIL_ASSIGN_OR_RETURN(Json j, parse_json_object(json_text, origin));
  Fields f(j, origin, "");
  ModelSpec spec;

  ANVIL_ASSIGN_OR_RETURN(std::optional<std::string> model_type, f.get_string("model_type"));
  if (!model_type)
    return not_found(origin + ": required field 'model_type' is missing (supported: " + supported_model_types() + ")");
  const FamilyInfo* family = nullptr;
  for (const FamilyInfo& fi : kFamilies)
    if (*model_type == fi.model_type) family = &fi;
  if (!family)
    return unsupported(origin + ": model_type '" + *model_type + "' is not supported (supported: " +
                       supported_model_types() + ")");
  spec.family = family->family;
  spec.model_type = *model_type;
  spec.architecture = family->architecture;

  if (const Json* archs = f.find("architectures")) {
    if (!archs->is_array()) return f.wrong_type("architectures", "a list of strings", *archs);
    bool found = archs->empty();
    for (const Json& a : *archs) {
      if (!a.is_string()) return f.wrong_type("architectures", "a list of strings", *archs);
      if (a.get<std::string>() == family->architecture) found = true;
    }
    if (!found)
      return unsupported(origin + ": architectures " + brief(*archs) + " is not supported for model_type '" +
                         *model_type + "' (anvil runs " + family->architecture + ")");
  }

  ANVIL_ASSIGN_OR_RETURN(spec.vocab_size, f.require_positive_int("vocab_size"));
  ANVIL_ASSIGN_OR_RETURN(spec.hidden_size, f.require_positive_int("hidden_size"));
  ANVIL_ASSIGN_OR_RETURN(spec.num_layers, f.require_positive_int("num_hidden_layers"));
  ANVIL_ASSIGN_OR_RETURN(spec.num_heads, f.require_positive_int("num_attention_heads"));
  ANVIL_ASSIGN_OR_RETURN(spec.intermediate_size, f.require_positive_int("intermediate_size"));

  ANVIL_ASSIGN_OR_RETURN(std::optional<int64_t> kv_heads, f.get_int("num_key_value_heads"));
  spec.num_kv_heads = kv_heads ? *kv_heads : spec.num_heads;
  if (spec.num_kv_heads <= 0 || spec.num_heads % spec.num_kv_heads != 0)
    return f.bad_value("num_key_value_heads", "must be positive and divide num_attention_heads (" +
                                                  std::to_string(spec.num_heads) + "), got " +
                                                  std::to_string(spec.num_kv_heads));
  ANVIL_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, f.get_int("head_dim"));
  if (head_dim) {
    spec.head_dim = *head_dim;
  } else {
    if (spec.hidden_size % spec.num_heads != 0)
      return f.bad_value("hidden_size", std::to_string(spec.hidden_size) + " is not a multiple of num_attention_heads " +
                                            std::to_string(spec.num_heads) + " and no head_dim is given");
    spec.head_dim = spec.hidden_size / spec.num_heads;
  }
  if (spec.head_dim <= 0 || spec.head_dim % 2 != 0 || spec.head_dim > kMaxHeadDim)
    return f.bad_value("head_dim", "must be even and in [2, " + std::to_string(kMaxHeadDim) + "], got " +
                                       std::to_string(spec.head_dim));

  ANVIL_ASSIGN_OR_RETURN(std::optional<int64_t> max_pos, f.get_int("max_position_embeddings"));
  spec.max_position_embeddings = max_pos ? *max_pos : family->default_max_position_embeddings;
  if (spec.max_position_embeddings <= 0 || spec.max_position_embeddings > kMaxSize)
    return f.bad_value("max_position_embeddings", "must be positive, got " + std::to_string(spec.max_position_embeddings));

  ANVIL_ASSIGN_OR_RETURN(std::optional<double> eps, f.get_number("rms_norm_eps"));
  if (eps) spec.rms_norm_eps = *eps;
  if (!(spec.rms_norm_eps > 0.0)) return f.bad_value("rms_norm_eps", "must be positive");

  ANVIL_RETURN_IF_ERROR(parse_rope(j, origin, spec));

  ANVIL_ASSIGN_OR_RETURN(std::optional<std::string> act, f.get_string("hidden_act"));
  if (act) spec.hidden_act = *act;
  if (spec.hidden_act != "silu")
    return unsupported(origin + ": hidden_act '" + spec.hidden_act + "' is not supported (supported: silu)");

  ANVIL_ASSIGN_OR_RETURN(spec.tie_word_embeddings, f.get_bool_or("tie_word_embeddings", false));
  ANVIL_ASSIGN_OR_RETURN(bool attention_bias, f.get_bool_or("attention_bias", false));
  ANVIL_ASSIGN_OR_RETURN(bool mlp_bias, f.get_bool_or("mlp_bias", false));
  switch (spec.family) {
    case ArchFamily::kLlama:
      spec.qkv_bias = spec.o_bias = attention_bias;
      spec.mlp_bias = mlp_bias;
      break;
    case ArchFamily::kMistral:  // transformers' Mistral has no biases, whatever the config says
      break;
    case ArchFamily::kQwen2:  // q/k/v always carry a bias, o_proj never
      spec.qkv_bias = true;
      break;
    case ArchFamily::kQwen3:
      spec.qkv_bias = spec.o_bias = attention_bias;
      spec.qk_norm = true;
      break;
  }
  ANVIL_RETURN_IF_ERROR(check_sliding_window(f, origin, spec));

  // transformers 5 writes "dtype", older versions "torch_dtype".
  ANVIL_ASSIGN_OR_RETURN(std::optional<std::string> dtype, f.get_string("dtype"));
  if (!dtype) {
    ANVIL_ASSIGN_OR_RETURN(dtype, f.get_string("torch_dtype"));
  }
  if (dtype) spec.torch_dtype = *dtype;

  ANVIL_ASSIGN_OR_RETURN(std::vector<int64_t> bos, f.get_token_ids("bos_token_id"));
  if (bos.size() > 1) return f.bad_value("bos_token_id", "must be a single id");
  spec.bos_token_id = bos.empty() ? -1 : bos[0];
  ANVIL_ASSIGN_OR_RETURN(spec.eos_token_ids, f.get_token_ids("eos_token_id"));
  ANVIL_ASSIGN_OR_RETURN(std::vector<int64_t> pad, f.get_token_ids("pad_token_id"));
  if (pad.size() > 1) return f.bad_value("pad_token_id", "must be a single id");
  spec.pad_token_id = pad.empty() ? -1 : pad[0];
  return spec;
}

Result<ModelSpec> load_model_config(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  std::error_code ec;
  if (!fs::is_regular_file(config_path, ec))
    return not_found("no config.json in '" + model_dir + "' (expected " + config_path + ")");
  ANVIL_ASSIGN_OR_RETURN(std::string text, read_file(config_path));
  ANVIL_ASSIGN_OR_RETURN(ModelSpec spec, parse_model_config(text, config_path));

  const std::string gen_path = (fs::path(model_dir) / "generation_config.json").string();
  if (fs::is_regular_file(gen_path, ec)) {
    ANVIL_ASSIGN_OR_RETURN(std::string gen_text, read_file(gen_path));
    ANVIL_ASSIGN_OR_RETURN(Json gen, parse_json_object(gen_text, gen_path));
    Fields g(gen, gen_path, "");
    // generation_config.json is what transformers' generate() stops on, so its eos wins.
    ANVIL_ASSIGN_OR_RETURN(std::vector<int64_t> eos, g.get_token_ids("eos_token_id"));
    if (!eos.empty()) spec.eos_token_ids = std::move(eos);
    ANVIL_ASSIGN_OR_RETURN(std::vector<int64_t> bos, g.get_token_ids("bos_token_id"));
    if (spec.bos_token_id < 0 && bos.size() == 1) spec.bos_token_id = bos[0];
    ANVIL_ASSIGN_OR_RETURN(std::vector<int64_t> pad, g.get_token_ids("pad_token_id"));
    if (spec.pad_token_id < 0 && pad.size() == 1) spec.pad_token_id = pad[0];
  }
  return spec;
}

}  // namespace anvil
