// The BPE model of HF tokenizer.json ("model": {"type": "BPE"}): vocab, ranked merges (either
// "a b" strings or [a, b] arrays), byte_fallback, unk/fuse_unk, ignore_merges and
// continuing_subword_prefix / end_of_word_suffix. Merging is a min-heap over a linked list of
// symbols (O(n log n) per word); results for short words are cached. Thread-safe after load.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"
#include "tokenizer/string_map.h"

namespace anvil::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Open-addressing map from a token pair (left id, right id) to its merge rank and result id.
class MergeTable {
 public:
  struct Entry {
    uint64_t key;
    int32_t rank;
    int32_t new_id;
  };
  void reserve(size_t n);
  void insert(int32_t a, int32_t b, int32_t rank, int32_t new_id);
  // Returns nullptr when (a, b) is not a merge.
  const Entry* find(int32_t a, int32_t b) const {
    if (slots_.empty()) return nullptr;
    uint64_t key = pack(a, b);
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t hash(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t size_ = 0;
};

class BpeModel {
 public:
  // `j` is the tokenizer.json "model" object.
  static Result<std::unique_ptr<BpeModel>> from_json(const nlohmann::json& j);

  // Appends the ids of one pre-tokenized word to `out`.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  int32_t token_to_id(std::string_view token) const { return vocab_.find(token); }
  // nullptr for ids outside the model vocab.
  const std::string* id_to_token(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[static_cast<size_t>(id)]) return nullptr;
    return &id_to_token_[static_cast<size_t>(id)];
  }
  // One past the largest id in the vocab.
  int64_t id_limit() const { return static_cast<int64_t>(id_to_token_.size()); }
  size_t cache_size() const;

 private:
  void tokenize_part(std::string_view word, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  static size_t shard_of(std::string_view word);
  void cache_put(std::string_view word, const int32_t* ids, size_t n) const;

  FlatStringMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  MergeTable merges_;
  std::array<int32_t, 256> byte_ids_{};  // id of "<0xXX>" per byte, -1 if absent
  // Id of each code point below kSmallChars as a one-character token (-1 if absent): covers
  // ASCII, the byte-level alphabet and most alphabetic scripts without a hash lookup.
  static constexpr char32_t kSmallChars = 2048;
  std::vector<int32_t> small_char_ids_;
  bool byte_fallback_ = false;
  bool all_bytes_present_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  // True when no merge joins a symbol ending in a non-"▁" character to one starting with "▁"
  // (checked at load; true for SentencePiece-style vocabs). Then a word may be cut before every
  // such "▁" without changing the result, so long Metaspace texts split into cacheable words.
  bool split_at_metaspace_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;

  // Word -> ids cache, sharded to keep lock contention low under concurrent encodes.
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kCacheMaxWordBytes = 256;
  static constexpr size_t kCacheMaxEntriesPerShard = 16384;
  struct CacheShard {
    mutable std::shared_mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  mutable std::array<CacheShard, kCacheShards> cache_;
};

}  // namespace anvil::tok
