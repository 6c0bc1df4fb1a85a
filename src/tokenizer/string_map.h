// FlatStringMap: an immutable-after-build string -> int32 map for vocab lookups on the encode hot
// path. Keys live in one arena; slots are 16-byte open-addressing entries (linear probing, load
// <= 0.5) holding a hash tag, so a miss rarely touches key bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::tok {

class FlatStringMap {
 public:
  // Inserts key -> value; an existing key keeps its first value.
  void insert(std::string_view key, int32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    place(key, value, hash_of(key));
  }
  // -1 when absent.
  int32_t find(std::string_view key) const {
    if (slots_.empty()) return -1;
    const uint64_t h = hash_of(key);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.len == kEmptyLen) return -1;
      if (s.tag == tag && s.len == key.size() && std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
        return s.value;
    }
  }
  size_t size() const { return size_; }

  template <typename F>
  void for_each(F&& f) const {
    for (const Slot& s : slots_)
      if (s.len != kEmptyLen) f(std::string_view(arena_.data() + s.offset, s.len), s.value);
  }

 private:
  struct Slot {
    uint32_t tag;
    uint32_t offset;
    uint32_t len;
    int32_t value;
  };
  static constexpr uint32_t kEmptyLen = 0xFFFFFFFFu;
  static uint64_t hash_of(std::string_view s) {
    uint64_t h = std::hash<std::string_view>{}(s);
    return h ^ (h >> 29) * 0xBF58476D1CE4E5B9ull;
  }
  void place(std::string_view key, int32_t value, uint64_t h) {
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.len == kEmptyLen) {
        s = Slot{tag, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), value};
        arena_.append(key);
        ++size_;
        return;
      }
      if (s.tag == tag && s.len == key.size() && std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0) return;
    }
  }
  void grow() {
    std::vector<Slot> old(std::max<size_t>(16, slots_.size() * 2), Slot{0, 0, kEmptyLen, 0});
    old.swap(slots_);
    mask_ = slots_.size() - 1;
    std::string old_arena;
    old_arena.swap(arena_);
    size_ = 0;
    for (const Slot& s : old)
      if (s.len != kEmptyLen) {
        std::string_view k(old_arena.data() + s.offset, s.len);
        place(k, s.value, hash_of(k));
      }
  }

  std::vector<Slot> slots_;
  std::string arena_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace anvil::tok
