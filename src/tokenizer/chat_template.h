// Chat templates: renders a conversation into the model's prompt text with the Jinja template from
// tokenizer_config.json, byte-for-byte as transformers' apply_chat_template(tokenize=False) does.
// A template is parsed once, at load; anything outside the supported Jinja subset fails there.
// A ChatTemplate is immutable after parse, cheap to copy, and safe to render from many threads.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace anvil {

namespace jinja {
struct ParsedTemplate;
}

struct ChatTemplateOptions {
  bool add_generation_prompt = false;
  // Unset: the token read from tokenizer_config.json by load_chat_template (if any); a template
  // that reads an unset token sees it undefined, as HF does when the config has none.
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  // Tool schemas (a JSON list), or null for none. Key order is kept: templates print tools with
  // tojson, so the order is part of the prompt.
  nlohmann::ordered_json tools = nullptr;
  // More template variables, e.g. {"enable_thinking": false} for Qwen3 or {"date_string": ...}.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  // transformers 5.x drops message keys whose value is null before rendering (so `content: null`
  // reads as undefined, not None). Off: the template sees the messages exactly as given.
  bool drop_null_message_fields = true;
};

class ChatTemplate {
 public:
  // Parses a Jinja chat template. Fails with the construct and its line/column where the
  // template uses something the subset does not support or is malformed.
  static Result<ChatTemplate> parse(const std::string& source);

  // `messages`: a JSON list of message objects ({"role", "content", ...}). Runtime failures
  // (the template's raise_exception, misuse of an undefined value, a type error) come back as
  // InvalidArgument with the template's message and position.
  Result<std::string> render(const nlohmann::ordered_json& messages, const ChatTemplateOptions& opts) const;
  // Same, for callers holding nlohmann::json (its objects are key-sorted, so tool schemas printed
  // by the template come out in sorted key order).
  Result<std::string> render(const nlohmann::json& messages, const ChatTemplateOptions& opts) const;

  const std::string& source() const { return *source_; }
  // Special tokens read from tokenizer_config.json by load_chat_template.
  const std::optional<std::string>& default_bos_token() const { return default_bos_; }
  const std::optional<std::string>& default_eos_token() const { return default_eos_; }
  void set_default_tokens(std::optional<std::string> bos, std::optional<std::string> eos) {
    default_bos_ = std::move(bos);
    default_eos_ = std::move(eos);
  }

 private:
  ChatTemplate() = default;  // only parse() makes one, so a ChatTemplate always holds a template

  std::shared_ptr<const jinja::ParsedTemplate> parsed_;
  std::shared_ptr<const std::string> source_;
  std::optional<std::string> default_bos_;
  std::optional<std::string> default_eos_;
};

// Reads `chat_template` from a tokenizer_config.json: a string, or a list of {name, template}
// (the one named "default" is taken). Where the config has none, a chat_template.jinja beside it
// is used, as newer HF repositories ship. bos_token/eos_token are read as strings or as
// {"content": ...} objects and become the template's default tokens.
Result<ChatTemplate> load_chat_template(const std::string& tokenizer_config_path);

}  // namespace anvil
