// A compiled PCRE2 regex (UTF + UCP, JIT where available) for pre-tokenizer and normalizer
// patterns. Immutable after compile; find_all is thread-safe (match data is per call/thread).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace anvil::tok {

class Regex {
 public:
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Compiles `pattern` (Oniguruma/HF syntax; the constructs HF tokenizers use are PCRE2-compatible).
  static Result<std::unique_ptr<Regex>> compile(const std::string& pattern);

  // Byte ranges [begin, end) of successive non-overlapping matches in `text` (valid UTF-8).
  // Empty matches are skipped by advancing one character, as Oniguruma's find_iter does.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code*
  bool jit_ = false;
  std::string pattern_;
};

// Rewrites an HF (Oniguruma) pattern for PCRE2: Oniguruma's Unicode \s also matches U+0085,
// which PCRE2's UCP \s does not.
std::string translate_onig_pattern(const std::string& pattern);

}  // namespace anvil::tok
