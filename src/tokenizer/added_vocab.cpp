// Added-token matching. The scan mirrors HF's aho-corasick (leftmost-longest, non-overlapping;
// a match refused by single_word still consumes its bytes) and its lstrip/rstrip extension.
#include "tokenizer/added_vocab.h"

#include <algorithm>
#include <utf8proc.h>

#include "tokenizer/utf8.h"

namespace anvil::tok {

void TokenTrie::insert(std::string_view s, int32_t token_index) {
  if (s.empty()) return;
  first_[static_cast<unsigned char>(s[0])] = true;
  int32_t node = 0;
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    auto& kids = nodes_[static_cast<size_t>(node)].children;
    auto it = std::lower_bound(kids.begin(), kids.end(), c, [](const auto& p, unsigned char v) { return p.first < v; });
    if (it != kids.end() && it->first == c) {
      node = it->second;
    } else {
      int32_t next = static_cast<int32_t>(nodes_.size());
      kids.insert(it, {c, next});
      nodes_.emplace_back();
      node = next;
    }
  }
  if (nodes_[static_cast<size_t>(node)].token < 0) nodes_[static_cast<size_t>(node)].token = token_index;
}

int32_t TokenTrie::longest_at(std::string_view text, size_t pos, size_t& len) const {
  int32_t node = 0, best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto& kids = nodes_[static_cast<size_t>(node)].children;
    unsigned char c = static_cast<unsigned char>(text[i]);
    auto it = std::lower_bound(kids.begin(), kids.end(), c, [](const auto& p, unsigned char v) { return p.first < v; });
    if (it == kids.end() || it->first != c) break;
    node = it->second;
    if (nodes_[static_cast<size_t>(node)].token >= 0) {
      best = nodes_[static_cast<size_t>(node)].token;
      len = i + 1 - pos;
    }
  }
  return best;
}

void AddedVocab::add(AddedToken token, const std::string& pattern) {
  if (token.content.empty()) return;
  size_t index = tokens_.size();
  by_id_[token.id] = index;
  token.surface = pattern;
  (token.normalized ? trie_normalized_ : trie_raw_).insert(pattern, static_cast<int32_t>(index));
  tokens_.push_back(std::move(token));
}

int32_t AddedVocab::find(std::string_view content) const {
  for (const auto& t : tokens_)
    if (t.content == content) return t.id;
  return -1;
}

namespace {

// Rust regex's Unicode \w: alphabetic, marks, decimal digits, connector punctuation, joiners.
bool is_word_char(char32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') || cp == '_';
  if (cp == 0x200C || cp == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// Start of the code point that ends at text[end) (end > 0).
size_t prev_char_start(std::string_view text, size_t end) {
  size_t s = end - 1;
  while (s > 0 && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
  return s;
}

}  // namespace

void AddedVocab::split(std::string_view text, bool normalized, std::vector<Segment>& out) const {
  const TokenTrie& trie = normalized ? trie_normalized_ : trie_raw_;
  if (trie.empty()) {
    if (!text.empty()) out.push_back({0, text.size(), -1});
    return;
  }
  size_t start_offset = 0;  // end of the last emitted token span
  size_t pos = 0;           // where the next search begins (end of the last trie match)
  while (pos < text.size()) {
    size_t len = 0;
    int32_t index = -1;
    size_t m = pos;
    for (; m < text.size(); ++m) {
      if (!trie.may_start(static_cast<unsigned char>(text[m]))) continue;
      index = trie.longest_at(text, m, len);
      if (index >= 0) break;
    }
    if (index < 0) break;
    const AddedToken& tok = tokens_[static_cast<size_t>(index)];
    size_t start = m, stop = m + len;
    pos = stop;
    if (tok.single_word) {
      bool start_ok = true, stop_ok = true;
      if (start > 0) {
        size_t i = prev_char_start(text, start);
        start_ok = !is_word_char(utf8_next(text, i));
      }
      if (stop < text.size()) {
        size_t i = stop;
        stop_ok = !is_word_char(utf8_next(text, i));
      }
      if (!start_ok || !stop_ok) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t p = prev_char_start(text, s);
        size_t i = p;
        if (!is_unicode_whitespace(utf8_next(text, i))) break;
        s = p;
      }
      start = std::max(s, start_offset);
    }
    if (tok.rstrip) {
      while (stop < text.size()) {
        size_t i = stop;
        if (!is_unicode_whitespace(utf8_next(text, i))) break;
        stop = i;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, tok.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace anvil::tok
