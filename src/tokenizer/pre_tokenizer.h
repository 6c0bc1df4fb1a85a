// Pre-tokenizers of HF tokenizer.json ("pre_tokenizer" field): Split (literal or PCRE2 regex, all
// five behaviors, invert), ByteLevel, Metaspace, Digits and Sequence. They cut a normalized piece
// into the words that BPE sees. `at_origin` marks a piece that starts at byte 0 of the input
// (Metaspace's prepend_scheme "first" only prepends there).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"

namespace anvil::tok {

struct PreToken {
  std::string text;
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their sub-pieces, in order; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<PreToken>& pieces) const = 0;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Builds a pre-tokenizer from JSON; null gives nullptr. Unknown types are refused by name.
Result<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const nlohmann::json& j);

}  // namespace anvil::tok
