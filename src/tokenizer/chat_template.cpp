// ChatTemplate: prepares the variables exactly as transformers' render_jinja_template does
// (message normalization, reasoning-field aliasing, special tokens, tools, documents=None) and
// renders the parsed template with the jinja/ interpreter.
#include "tokenizer/chat_template.h"

#include <filesystem>

#include "core/mmap_file.h"
#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/parser.h"

namespace anvil {

namespace {

using OJson = nlohmann::ordered_json;

// Field names a message's reasoning may come under; HF copies the first non-null one to
// "thinking" (first key) and "reasoning_content".
constexpr const char* kReasoningFields[] = {"reasoning_content", "thinking", "reasoning"};

Result<OJson> prepare_messages(const OJson& messages, bool drop_null_fields) {
  if (!messages.is_array()) return invalid_argument("chat template: messages must be a JSON list of objects");
  if (messages.empty()) return invalid_argument("chat template: cannot render an empty conversation");
  OJson out = OJson::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const OJson& m = messages[i];
    if (!m.is_object()) {
      return invalid_argument("chat template: message " + std::to_string(i) + " is a JSON " + m.type_name() +
                              ", expected an object");
    }
    OJson msg = OJson::object();
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (drop_null_fields && it->is_null()) continue;
      msg[it.key()] = *it;
    }
    const OJson* reasoning = nullptr;
    for (const char* field : kReasoningFields) {
      auto it = msg.find(field);
      if (it != msg.end() && !it->is_null()) {
        reasoning = &*it;
        break;
      }
    }
    if (reasoning) {
      const OJson r = *reasoning;
      OJson aliased = OJson::object();
      aliased["thinking"] = r;
      for (auto it = msg.begin(); it != msg.end(); ++it) aliased[it.key()] = *it;
      aliased["reasoning_content"] = r;
      msg = std::move(aliased);
    }
    out.push_back(std::move(msg));
  }
  return out;
}

std::optional<std::string> token_text(const nlohmann::json& field) {
  if (field.is_string()) return field.get<std::string>();
  if (field.is_object()) {
    auto it = field.find("content");
    if (it != field.end() && it->is_string()) return it->get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(const std::string& source) {
  ANVIL_ASSIGN_OR_RETURN(jinja::ParsedTemplate parsed, jinja::parse_template(source));
  ChatTemplate t;
  t.parsed_ = std::make_shared<const jinja::ParsedTemplate>(std::move(parsed));
  t.source_ = std::make_shared<const std::string>(source);
  return t;
}

Result<std::string> ChatTemplate::render(const nlohmann::json& messages, const ChatTemplateOptions& opts) const {
  return render(OJson(messages), opts);
}

Result<std::string> ChatTemplate::render(const OJson& messages, const ChatTemplateOptions& opts) const {
  ANVIL_ASSIGN_OR_RETURN(OJson prepared, prepare_messages(messages, opts.drop_null_message_fields));
  if (!opts.tools.is_null() && !opts.tools.is_array()) {
    return invalid_argument("chat template: tools must be a JSON list of tool schemas or null");
  }
  if (!opts.extra.is_object()) return invalid_argument("chat template: extra variables must be a JSON object");
  std::vector<std::pair<std::string, jinja::Value>> vars;
  vars.emplace_back("messages", jinja::from_json(prepared));
  vars.emplace_back("tools", jinja::from_json(opts.tools));
  vars.emplace_back("documents", jinja::Value::none());
  vars.emplace_back("add_generation_prompt", jinja::Value::boolean(opts.add_generation_prompt));
  const std::optional<std::string>& bos = opts.bos_token ? opts.bos_token : default_bos_;
  const std::optional<std::string>& eos = opts.eos_token ? opts.eos_token : default_eos_;
  if (bos) vars.emplace_back("bos_token", jinja::Value::string(*bos));
  if (eos) vars.emplace_back("eos_token", jinja::Value::string(*eos));
  for (auto it = opts.extra.begin(); it != opts.extra.end(); ++it) {
    const std::string& key = it.key();
    if (key == "messages" || key == "tools" || key == "documents" || key == "add_generation_prompt") {
      return invalid_argument("chat template: extra variable '" + key + "' clashes with a variable set by anvil");
    }
    bool replaced = false;
    for (auto& [k, v] : vars) {
      if (k == key) {
        v = jinja::from_json(*it);
        replaced = true;
      }
    }
    if (!replaced) vars.emplace_back(key, jinja::from_json(*it));
  }
  return jinja::render_template(parsed_->body, std::move(vars));
}

Result<ChatTemplate> load_chat_template(const std::string& tokenizer_config_path) {
  ANVIL_ASSIGN_OR_RETURN(std::string text, read_file(tokenizer_config_path));
  nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return invalid_argument(tokenizer_config_path + ": not a JSON object");
  }
  std::string source;
  std::string origin = tokenizer_config_path;
  auto field = config.find("chat_template");
  if (field != config.end() && field->is_string()) {
    source = field->get<std::string>();
  } else if (field != config.end() && field->is_array()) {
    std::string names;
    bool found = false;
    for (const auto& entry : *field) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string()) continue;
      const std::string name = entry["name"].get<std::string>();
      names += (names.empty() ? "" : ", ") + name;
      if (name == "default" && entry.contains("template") && entry["template"].is_string()) {
        source = entry["template"].get<std::string>();
        found = true;
      }
    }
    if (!found) {
      return not_found(tokenizer_config_path + ": chat_template list has no template named \"default\" (has: " +
                       names + ")");
    }
  } else if (field != config.end() && !field->is_null()) {
    return invalid_argument(tokenizer_config_path + ": chat_template must be a string or a list of {name, template}");
  } else {
    const std::filesystem::path jinja_path =
        std::filesystem::path(tokenizer_config_path).parent_path() / "chat_template.jinja";
    std::error_code ec;
    if (!std::filesystem::exists(jinja_path, ec)) {
      return not_found(tokenizer_config_path + ": no chat_template field and no chat_template.jinja beside it");
    }
    origin = jinja_path.string();
    ANVIL_ASSIGN_OR_RETURN(source, read_file(origin));
  }
  Result<ChatTemplate> parsed = ChatTemplate::parse(source);
  if (!parsed.is_ok()) return parsed.status().with_context(origin);
  ChatTemplate t = std::move(parsed).value();
  std::optional<std::string> bos;
  std::optional<std::string> eos;
  if (auto it = config.find("bos_token"); it != config.end()) bos = token_text(*it);
  if (auto it = config.find("eos_token"); it != config.end()) eos = token_text(*it);
  t.set_default_tokens(std::move(bos), std::move(eos));
  return t;
}

}  // namespace anvil
