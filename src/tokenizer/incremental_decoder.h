// Streaming detokenizer: feed generated ids one at a time and get back only the newly completed
// text. Output is always valid UTF-8; text is held back while the decoded window ends in U+FFFD
// (an unfinished multi-byte character split over byte tokens), for at most kMaxPendingTokens.
// The concatenation of all outputs plus finish() equals Tokenizer::decode(all ids) whenever that
// decode contains no U+FFFD from incomplete bytes. Never throws; holds a Tokenizer reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace anvil {

class IncrementalDecoder {
 public:
  // A character needs at most 4 bytes, so 4 pending byte-carrying tokens (ids that are neither
  // unknown nor skipped specials) that still end in U+FFFD hold a genuinely invalid sequence (or
  // a literal U+FFFD); it is then released as is.
  static constexpr size_t kMaxPendingTokens = 4;

  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);

  // Appends `id` and returns the text it completed (possibly empty).
  std::string add(int32_t id);
  // Releases any held-back text (call at end of stream).
  std::string finish();

  const std::vector<int32_t>& ids() const { return ids_; }
  // All text returned so far.
  const std::string& text() const { return text_; }

 private:
  std::string emit_from_window(bool force);

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  // ids_[prefix_, read_) were emitted already and give context; ids_[read_, end) are pending.
  size_t prefix_ = 0;
  size_t read_ = 0;
  size_t pending_visible_ = 0;  // byte-carrying ids in ids_[read_, end)
  std::string prefix_text_;  // decode(ids_[prefix_, read_))
  std::string text_;
};

}  // namespace anvil
