// Incremental decoding by window differences: decode(ids[prefix, end)) minus the already emitted
// decode(ids[prefix, read)). Decoding a window that starts one emitted chunk back keeps
// position-dependent decoder rules (Metaspace/Strip leading space) identical in both decodes.
#include "tokenizer/incremental_decoder.h"

#include <span>

#include "tokenizer/utf8.h"

namespace anvil {

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

namespace {
bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}
}  // namespace

std::string IncrementalDecoder::emit_from_window(bool force) {
  if (read_ >= ids_.size()) return {};
  std::span<const int32_t> window(ids_.data() + prefix_, ids_.size() - prefix_);
  std::string full = tokenizer_.decode(window, skip_special_);
  if (!force && ends_with_replacement(full) && pending_visible_ < kMaxPendingTokens) return {};
  pending_visible_ = 0;
  std::string out;
  if (full.size() >= prefix_text_.size() && full.compare(0, prefix_text_.size(), prefix_text_) == 0) {
    out = full.substr(prefix_text_.size());
  } else {
    // The decoder rewrote earlier text (not prefix-stable); emit from the longest common
    // prefix, cut back to a character boundary so the output stays valid UTF-8.
    size_t k = 0;
    while (k < full.size() && k < prefix_text_.size() && full[k] == prefix_text_[k]) ++k;
    while (k > 0 && k < full.size() && (static_cast<unsigned char>(full[k]) & 0xC0) == 0x80) --k;
    out = full.substr(k);
  }
  // Keep the window short: the next window starts at the tokens just emitted, unless they
  // decode to nothing (e.g. skipped special tokens); a window must open on visible text so that
  // leading-space rules (Strip, Metaspace) treat its first token as they did before.
  std::span<const int32_t> tail(ids_.data() + read_, ids_.size() - read_);
  std::string tail_text = tokenizer_.decode(tail, skip_special_);
  if (!tail_text.empty()) {
    prefix_ = read_;
    prefix_text_ = std::move(tail_text);
  } else {
    prefix_text_ = std::move(full);
  }
  read_ = ids_.size();
  text_ += out;
  return out;
}

std::string IncrementalDecoder::add(int32_t id) {
  ids_.push_back(id);
  const bool skipped = skip_special_ && tokenizer_.is_special(id);
  if (!skipped && !tokenizer_.id_to_token(id).empty()) ++pending_visible_;
  return emit_from_window(false);
}

std::string IncrementalDecoder::finish() { return emit_from_window(true); }

}  // namespace anvil
