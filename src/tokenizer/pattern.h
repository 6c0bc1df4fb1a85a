// The "pattern" field of HF Split/Replace components: {"String": literal} or {"Regex": pcre}.
// Matches are non-overlapping, left to right, as byte ranges into valid UTF-8 text.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"
#include "tokenizer/regex.h"

namespace anvil::tok {

class Pattern {
 public:
  static Result<std::unique_ptr<Pattern>> literal(std::string s);
  static Result<std::unique_ptr<Pattern>> regex(const std::string& re);

  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
  std::string replace_all(std::string_view text, std::string_view content) const;

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

Result<std::unique_ptr<Pattern>> make_pattern(const nlohmann::json& j);

}  // namespace anvil::tok
