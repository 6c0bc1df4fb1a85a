// Literal and regex patterns for Split and Replace. An empty literal matches nothing.
#include "tokenizer/pattern.h"

#include <nlohmann/json.hpp>

namespace anvil::tok {

Result<std::unique_ptr<Pattern>> Pattern::literal(std::string s) {
  auto p = std::make_unique<Pattern>();
  p->literal_ = std::move(s);
  return p;
}

Result<std::unique_ptr<Pattern>> Pattern::regex(const std::string& re) {
  auto p = std::make_unique<Pattern>();
  ANVIL_ASSIGN_OR_RETURN(p->regex_, Regex::compile(re));
  return p;
}

void Pattern::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  if (regex_) {
    regex_->find_all(text, out);
    return;
  }
  out.clear();
  if (literal_.empty()) return;
  size_t pos = 0;
  while ((pos = text.find(literal_, pos)) != std::string_view::npos) {
    out.emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
}

std::string Pattern::replace_all(std::string_view text, std::string_view content) const {
  std::vector<std::pair<size_t, size_t>> m;
  find_all(text, m);
  if (m.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + m.size() * content.size());
  size_t prev = 0;
  for (auto [b, e] : m) {
    out.append(text.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

Result<std::unique_ptr<Pattern>> make_pattern(const nlohmann::json& j) {
  if (j.is_object() && j.contains("String") && j["String"].is_string())
    return Pattern::literal(j["String"].get<std::string>());
  if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) return Pattern::regex(j["Regex"].get<std::string>());
  return invalid_argument("pattern: expected {\"String\": ...} or {\"Regex\": ...}");
}

}  // namespace anvil::tok
