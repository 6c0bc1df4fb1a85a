// Added tokens (tokenizer.json "added_tokens"): found in the text before normalization (those with
// normalized=false) or after it (normalized=true), leftmost-longest, with HF's lstrip, rstrip and
// single_word rules. Matched spans become one id each and skip the model entirely.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace anvil::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  // What id_to_token and decode give: the content, normalized for normalized tokens (HF does so).
  std::string surface;
};

// A span of the input: an added token (id >= 0) or text for the model (id == -1).
struct Segment {
  size_t begin;
  size_t end;
  int32_t id;
};

// Byte trie over token contents, with a first-byte filter for fast scanning.
class TokenTrie {
 public:
  void insert(std::string_view s, int32_t token_index);
  bool empty() const { return nodes_.size() <= 1; }
  // Longest token starting at text[pos]: returns its index and sets len, or -1.
  int32_t longest_at(std::string_view text, size_t pos, size_t& len) const;
  bool may_start(unsigned char c) const { return first_[c]; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;
  };
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_{};
};

class AddedVocab {
 public:
  // `pattern` is what the text must contain: the content itself, or for normalized tokens the
  // content passed through the tokenizer's normalizer (as HF builds its normalized trie).
  void add(AddedToken token, const std::string& pattern);
  // Splits `text` on tokens of one trie (normalized or not), appending segments to `out`.
  void split(std::string_view text, bool normalized, std::vector<Segment>& out) const;

  const AddedToken* by_id(int32_t id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &tokens_[it->second];
  }
  int32_t find(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  TokenTrie trie_raw_, trie_normalized_;
};

}  // namespace anvil::tok
