// Parsing and validation of /v1/completions and /v1/chat/completions bodies (openai_request.h).
// Ranges follow OpenAI where it defines them and vLLM for its extensions (top_k, min_p,
// repetition_penalty, min_tokens, ignore_eos, stop_token_ids, skip_special_tokens).
#include "server/openai_request.h"

#include <algorithm>
#include <limits>

#include "server/chat.h"

namespace anvil::server {
namespace {

constexpr int64_t kMaxTokensCap = 1 << 24;

MaybeError read_token_ids(const RequestJson& arr, const char* param, int64_t vocab, std::vector<int32_t>* out) {
  out->clear();
  out->reserve(arr.size());
  for (const auto& v : arr) {
    auto id = v.is_number() ? json_as_int(v) : std::nullopt;
    if (!id) {
      return invalid_param(param, std::string("'") + param + "' must hold integer token ids, got " + json_type_phrase(v));
    }
    if (*id < 0 || *id >= vocab) {
      return invalid_param(param, std::string("'") + param + "': token id " + std::to_string(*id) +
                                      " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
    out->push_back(static_cast<int32_t>(*id));
  }
  return std::nullopt;
}

MaybeError text_prompt(const std::string& text, const ServingModel& model, bool add_special, PromptInput* out) {
  if (model.tokenizer == nullptr) {
    return invalid_param("prompt", "this model has no tokenizer: pass 'prompt' as a list of token ids");
  }
  out->text = text;
  out->ids = model.tokenizer->encode(text, add_special);
  if (out->ids.empty()) return invalid_param("prompt", "'prompt' is empty after tokenization");
  return std::nullopt;
}

MaybeError ids_prompt(const RequestJson& arr, const ServingModel& model, PromptInput* out) {
  if (arr.empty()) return invalid_param("prompt", "'prompt' must not be empty");
  if (auto e = read_token_ids(arr, "prompt", model.executor->vocab_size(), &out->ids)) return e;
  if (model.tokenizer != nullptr) out->text = model.tokenizer->decode(out->ids);
  return std::nullopt;
}

MaybeError read_stop(const RequestJson& body, const ServingModel& model, const ServerOptions& o,
                     std::vector<std::string>* out) {
  if (!has_field(body, "stop")) return std::nullopt;
  const auto& v = body.at("stop");
  if (v.is_string()) {
    out->push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (static_cast<int64_t>(v.size()) > o.max_stop) {
      return invalid_param("stop", "'stop' may hold at most " + std::to_string(o.max_stop) + " strings, got " +
                                       std::to_string(v.size()));
    }
    for (const auto& s : v) {
      if (!s.is_string()) return invalid_param("stop", std::string("'stop' must hold strings, got ") + json_type_phrase(s));
      out->push_back(s.get<std::string>());
    }
  } else {
    return invalid_param("stop", std::string("'stop' must be a string or a list of strings, got ") + json_type_phrase(v));
  }
  bool any = false;
  for (const auto& s : *out) {
    if (static_cast<int64_t>(s.size()) > o.max_stop_len) {
      return invalid_param("stop", "each stop string may be at most " + std::to_string(o.max_stop_len) + " bytes");
    }
    any = any || !s.empty();
  }
  if (any && model.tokenizer == nullptr) {
    return invalid_param("stop", "this model has no tokenizer, so stop strings cannot be matched: use 'stop_token_ids'");
  }
  return std::nullopt;
}

MaybeError read_sampling(const RequestJson& body, const ServingModel& model, const ServerOptions& o,
                         GenerateRequest* r) {
  SamplingParams& p = r->sampling;
  double d = 0;
  d = p.temperature;
  if (auto e = read_float(body, "temperature", 0.0, 2.0, &d)) return e;
  p.temperature = static_cast<float>(d);
  d = p.top_p;
  if (auto e = read_float(body, "top_p", 0.0, 1.0, &d)) return e;
  if (!(d > 0.0)) return invalid_param("top_p", "'top_p' must be in (0, 1], got 0");
  p.top_p = static_cast<float>(d);
  int64_t i = 0;
  if (auto e = read_int(body, "top_k", -1, std::numeric_limits<int32_t>::max(), &i)) return e;
  p.top_k = static_cast<int32_t>(i < 0 ? 0 : i);
  d = p.min_p;
  if (auto e = read_float(body, "min_p", 0.0, 1.0, &d)) return e;
  p.min_p = static_cast<float>(d);
  d = p.presence_penalty;
  if (auto e = read_float(body, "presence_penalty", -2.0, 2.0, &d)) return e;
  p.presence_penalty = static_cast<float>(d);
  d = p.frequency_penalty;
  if (auto e = read_float(body, "frequency_penalty", -2.0, 2.0, &d)) return e;
  p.frequency_penalty = static_cast<float>(d);
  d = p.repetition_penalty;
  if (auto e = read_float(body, "repetition_penalty", 0.0, 10.0, &d)) return e;
  if (!(d > 0.0)) return invalid_param("repetition_penalty", "'repetition_penalty' must be in (0, 10], got 0");
  p.repetition_penalty = static_cast<float>(d);
  if (has_field(body, "seed")) {
    int64_t seed = 0;
    if (auto e = read_int(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), &seed)) {
      return e;
    }
    p.seed = static_cast<uint64_t>(seed);
  }
  if (auto e = read_bool(body, "ignore_eos", &p.ignore_eos)) return e;
  if (has_field(body, "stop_token_ids")) {
    const auto& v = body.at("stop_token_ids");
    if (!v.is_array()) {
      return invalid_param("stop_token_ids", std::string("'stop_token_ids' must be a list of token ids, got ") +
                                                 json_type_phrase(v));
    }
    if (static_cast<int64_t>(v.size()) > o.max_stop_token_ids) {
      return invalid_param("stop_token_ids", "'stop_token_ids' may hold at most " +
                                                 std::to_string(o.max_stop_token_ids) + " ids");
    }
    if (auto e = read_token_ids(v, "stop_token_ids", model.executor->vocab_size(), &p.stop_token_ids)) return e;
  }
  return std::nullopt;
}

MaybeError refuse_unsupported(const RequestJson& body, ApiKind kind) {
  if (has_field(body, "logit_bias") && !(body.at("logit_bias").is_object() && body.at("logit_bias").empty())) {
    return invalid_param("logit_bias", "'logit_bias' is not supported");
  }
  if (kind == ApiKind::kCompletion && has_field(body, "suffix") &&
      !(body.at("suffix").is_string() && body.at("suffix").get<std::string>().empty())) {
    return invalid_param("suffix", "'suffix' is not supported");
  }
  if (kind == ApiKind::kChat && has_field(body, "response_format")) {
    const auto& f = body.at("response_format");
    if (!f.is_object() || !f.contains("type") || f.at("type") != "text") {
      return invalid_param("response_format", "only 'response_format' {\"type\": \"text\"} is supported");
    }
  }
  return std::nullopt;
}

}  // namespace

MaybeError check_model_field(const RequestJson& body, const ServingModel& model) {
  if (!has_field(body, "model")) return std::nullopt;
  const auto& m = body.at("model");
  if (!m.is_string()) return invalid_param("model", std::string("'model' must be a string, got ") + json_type_phrase(m));
  if (m.get<std::string>() != model.name) {
    return ApiError{404, "The model '" + m.get<std::string>() + "' does not exist; this server serves '" + model.name + "'",
                    "model", "model_not_found", "invalid_request_error"};
  }
  return std::nullopt;
}

MaybeError parse_prompts(const RequestJson& prompt, const ServingModel& model, const ServerOptions& o,
                         bool add_special_tokens, std::vector<PromptInput>* out) {
  out->clear();
  if (prompt.is_string()) {
    out->emplace_back();
    return text_prompt(prompt.get<std::string>(), model, add_special_tokens, &out->back());
  }
  if (!prompt.is_array()) {
    return invalid_param("prompt", std::string("'prompt' must be a string, a list of strings, a list of token ids or a "
                                               "list of lists of token ids, got ") + json_type_phrase(prompt));
  }
  if (prompt.empty()) return invalid_param("prompt", "'prompt' must not be empty");
  const auto& first = prompt.front();
  if (first.is_number()) {
    out->emplace_back();
    return ids_prompt(prompt, model, &out->back());
  }
  if (static_cast<int64_t>(prompt.size()) > o.max_prompts) {
    return invalid_param("prompt", "'prompt' may hold at most " + std::to_string(o.max_prompts) + " prompts, got " +
                                       std::to_string(prompt.size()));
  }
  for (const auto& item : prompt) {
    out->emplace_back();
    if (item.is_string() && first.is_string()) {
      if (auto e = text_prompt(item.get<std::string>(), model, add_special_tokens, &out->back())) return e;
    } else if (item.is_array() && first.is_array()) {
      if (auto e = ids_prompt(item, model, &out->back())) return e;
    } else {
      return invalid_param("prompt", "'prompt' must not mix strings, token ids and lists of token ids");
    }
  }
  return std::nullopt;
}

MaybeError parse_generate_request(const RequestJson& body, ApiKind kind, const ServingModel& model,
                                  const ServerOptions& o, GenerateRequest* r) {
  r->kind = kind;
  if (auto e = check_model_field(body, model)) return e;
  if (auto e = refuse_unsupported(body, kind)) return e;

  // Prompt(s).
  if (kind == ApiKind::kCompletion) {
    if (!has_field(body, "prompt")) return invalid_param("prompt", "'prompt' is required");
    bool add_special = true;
    if (auto e = read_bool(body, "add_special_tokens", &add_special)) return e;
    if (auto e = parse_prompts(body.at("prompt"), model, o, add_special, &r->prompts)) return e;
  } else {
    if (model.tokenizer == nullptr) {
      return invalid_param("messages", "this model has no tokenizer, so chat is unavailable: use /v1/completions "
                                       "with token ids");
    }
    std::string text;
    if (auto e = render_chat_prompt(body, model, &text)) return e;
    bool add_special = false;  // the template writes BOS itself
    if (auto e = read_bool(body, "add_special_tokens", &add_special)) return e;
    PromptInput p;
    p.text = text;
    p.ids = model.tokenizer->encode(text, add_special);
    if (p.ids.empty()) return invalid_param("messages", "the rendered chat prompt is empty");
    r->prompts.push_back(std::move(p));
  }

  // Choices.
  int64_t i = 1;
  if (auto e = read_int(body, "n", 1, o.max_n, &i)) return e;
  r->n = static_cast<int32_t>(i);
  if (has_field(body, "best_of")) {
    int64_t best_of = r->n;
    if (auto e = read_int(body, "best_of", 1, o.max_n, &best_of)) return e;
    if (best_of != r->n) return invalid_param("best_of", "'best_of' different from 'n' is not supported");
  }
  if (static_cast<int64_t>(r->prompts.size()) * r->n > o.max_sequences) {
    return invalid_param("n", "prompts x n may be at most " + std::to_string(o.max_sequences));
  }

  if (auto e = read_sampling(body, model, o, r)) return e;
  if (auto e = read_stop(body, model, o, &r->stop)) return e;

  // Streaming.
  if (auto e = read_bool(body, "stream", &r->stream)) return e;
  if (has_field(body, "stream_options")) {
    const auto& so = body.at("stream_options");
    if (!so.is_object()) {
      return invalid_param("stream_options", std::string("'stream_options' must be an object, got ") + json_type_phrase(so));
    }
    if (!r->stream) return invalid_param("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (has_field(so, "include_usage")) {
      if (!so.at("include_usage").is_boolean()) {
        return invalid_param("stream_options", "'stream_options.include_usage' must be a boolean");
      }
      r->include_usage = so.at("include_usage").get<bool>();
    }
  }

  // Logprobs.
  if (kind == ApiKind::kCompletion) {
    i = -1;
    if (auto e = read_int(body, "logprobs", 0, 20, &i)) return e;
    r->logprobs = static_cast<int32_t>(i);
    if (auto e = read_bool(body, "echo", &r->echo)) return e;
    if (r->echo && r->logprobs >= 0) {
      return invalid_param("echo", "'echo' together with 'logprobs' is not supported (prompt logprobs are not computed)");
    }
  } else {
    bool want = false;
    if (auto e = read_bool(body, "logprobs", &want)) return e;
    int64_t top = 0;
    if (auto e = read_int(body, "top_logprobs", 0, 20, &top)) return e;
    if (has_field(body, "top_logprobs") && !want) {
      return invalid_param("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
    }
    r->logprobs = want ? static_cast<int32_t>(top) : -1;
  }
  r->sampling.logprobs = r->logprobs;

  if (auto e = read_bool(body, "return_token_ids", &r->return_token_ids)) return e;
  if (auto e = read_bool(body, "skip_special_tokens", &r->skip_special_tokens)) return e;
  if (has_field(body, "user") && !body.at("user").is_string()) {
    return invalid_param("user", std::string("'user' must be a string, got ") + json_type_phrase(body.at("user")));
  }

  // Lengths: the prompt must leave room in the context, and the prompt plus max_tokens must fit.
  const int64_t max_len = model.executor->max_context_len();
  size_t longest = 0;
  for (const auto& p : r->prompts) longest = std::max(longest, p.ids.size());
  const char* prompt_param = kind == ApiKind::kChat ? "messages" : "prompt";
  if (static_cast<int64_t>(longest) >= max_len) {
    return ApiError{400, "This model's maximum context length is " + std::to_string(max_len) +
                             " tokens. However, your prompt has " + std::to_string(longest) +
                             " tokens, which leaves no room for a completion.",
                    prompt_param, "context_length_exceeded", "invalid_request_error"};
  }
  const char* max_param = "max_tokens";
  // Defaults: chat fills the context; completions take OpenAI's 16, fewer if the context is short.
  const int64_t room = max_len - static_cast<int64_t>(longest);
  int64_t max_tokens = kind == ApiKind::kChat ? room : std::min<int64_t>(16, room);
  if (kind == ApiKind::kChat && has_field(body, "max_completion_tokens")) {
    max_param = "max_completion_tokens";
    if (auto e = read_int(body, max_param, 1, kMaxTokensCap, &max_tokens)) return e;
  } else if (auto e = read_int(body, "max_tokens", 1, kMaxTokensCap, &max_tokens)) {
    return e;
  }
  if (static_cast<int64_t>(longest) + max_tokens > max_len) {
    return ApiError{400, "This model's maximum context length is " + std::to_string(max_len) +
                             " tokens. However, you requested " + std::to_string(longest + max_tokens) + " tokens (" +
                             std::to_string(longest) + " in the prompt, " + std::to_string(max_tokens) +
                             " for the completion). Please reduce the prompt or '" + max_param + "'.",
                    max_param, "context_length_exceeded", "invalid_request_error"};
  }
  r->sampling.max_tokens = static_cast<int32_t>(max_tokens);
  i = 0;
  if (auto e = read_int(body, "min_tokens", 0, max_tokens, &i)) return e;
  r->sampling.min_tokens = static_cast<int32_t>(i);
  return std::nullopt;
}

}  // namespace anvil::server
