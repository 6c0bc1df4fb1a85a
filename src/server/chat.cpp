// Chat messages -> prompt (chat.h). Content parts are flattened to text here, so templates that
// expect string content work for clients that send [{"type": "text", "text": ...}].
#include "server/chat.h"

#include <set>

#include "tokenizer/chat_template.h"

namespace anvil::server {
namespace {

constexpr size_t kMaxMessages = 4096;

MaybeError flatten_content(const RequestJson& content, const std::string& where, RequestJson* out) {
  if (content.is_null() || content.is_string()) {
    *out = content;
    return std::nullopt;
  }
  if (!content.is_array()) {
    return invalid_param("messages", "'" + where + ".content' must be a string or a list of content parts, got " +
                                         json_type_phrase(content));
  }
  std::string text;
  for (size_t k = 0; k < content.size(); ++k) {
    const auto& part = content[k];
    const std::string pwhere = where + ".content[" + std::to_string(k) + "]";
    if (!part.is_object() || !part.contains("type") || !part.at("type").is_string()) {
      return invalid_param("messages", "'" + pwhere + "' must be an object with a string 'type'");
    }
    const std::string type = part.at("type").get<std::string>();
    if (type != "text") {
      return invalid_param("messages", "'" + pwhere + "': content parts of type '" + type +
                                           "' are not supported (text only)");
    }
    if (!part.contains("text") || !part.at("text").is_string()) {
      return invalid_param("messages", "'" + pwhere + ".text' must be a string");
    }
    if (!text.empty()) text += "\n";
    text += part.at("text").get<std::string>();
  }
  *out = text;
  return std::nullopt;
}

MaybeError normalize_messages(const RequestJson& messages, RequestJson* out) {
  static const std::set<std::string> kRoles = {"system", "developer", "user", "assistant", "tool", "function"};
  if (!messages.is_array()) {
    return invalid_param("messages", std::string("'messages' must be a list of messages, got ") +
                                         json_type_phrase(messages));
  }
  if (messages.empty()) return invalid_param("messages", "'messages' must not be empty");
  if (messages.size() > kMaxMessages) {
    return invalid_param("messages", "'messages' may hold at most " + std::to_string(kMaxMessages) + " messages");
  }
  *out = RequestJson::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) {
      return invalid_param("messages", "'" + where + "' must be an object, got " + json_type_phrase(m));
    }
    if (!m.contains("role") || !m.at("role").is_string() || kRoles.count(m.at("role").get<std::string>()) == 0) {
      return invalid_param("messages", "'" + where +
                                           ".role' must be one of system, developer, user, assistant, tool, function");
    }
    RequestJson msg = m;
    if (m.contains("content")) {
      RequestJson content;
      if (auto e = flatten_content(m.at("content"), where, &content)) return e;
      msg["content"] = std::move(content);
    } else if (m.at("role") != "assistant") {
      return invalid_param("messages", "'" + where + ".content' is required");
    }
    out->push_back(std::move(msg));
  }
  return std::nullopt;
}

}  // namespace

MaybeError render_chat_prompt(const RequestJson& body, const ServingModel& model, std::string* prompt) {
  if (!has_field(body, "messages")) return invalid_param("messages", "'messages' is required");
  if (model.chat_template == nullptr) {
    return invalid_param("messages", "this model has no chat template: start the server with --chat-template FILE "
                                     "or use /v1/completions");
  }
  RequestJson messages;
  if (auto e = normalize_messages(body.at("messages"), &messages)) return e;

  ChatTemplateOptions opts;
  opts.add_generation_prompt = true;
  if (auto e = read_bool(body, "add_generation_prompt", &opts.add_generation_prompt)) return e;
  if (has_field(body, "tools")) {
    if (!body.at("tools").is_array()) {
      return invalid_param("tools", std::string("'tools' must be a list, got ") + json_type_phrase(body.at("tools")));
    }
    opts.tools = body.at("tools");
  }
  if (has_field(body, "chat_template_kwargs")) {
    const auto& kw = body.at("chat_template_kwargs");
    if (!kw.is_object()) {
      return invalid_param("chat_template_kwargs",
                           std::string("'chat_template_kwargs' must be an object, got ") + json_type_phrase(kw));
    }
    opts.extra = kw;
  }
  Result<std::string> text = model.chat_template->render(messages, opts);
  if (!text.is_ok()) return invalid_param("messages", "chat template: " + text.status().message());
  *prompt = std::move(text).value();
  return std::nullopt;
}

}  // namespace anvil::server
