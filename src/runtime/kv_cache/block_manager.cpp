// BlockManager: free list + LRU of evictable cached blocks + key index.
#include "runtime/kv_cache/block_manager.h"

#include <xxhash.h>

#include <string>

namespace anvil {

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_cache)
    : block_size_(block_size),
      caching_(enable_prefix_cache),
      ref_(num_blocks, 0),
      lru_pos_(num_blocks),
      in_lru_(num_blocks, false),
      key_of_(num_blocks, 0),
      has_key_(num_blocks, false) {
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

uint64_t BlockManager::block_key(uint64_t parent, const int32_t* tokens, int32_t block_size) {
  return XXH3_64bits_withSeed(tokens, static_cast<size_t>(block_size) * sizeof(int32_t), parent);
}

void BlockManager::forget_key(int32_t block) {
  if (!has_key_[block]) return;
  auto it = by_key_.find(key_of_[block]);
  if (it != by_key_.end() && it->second == block) by_key_.erase(it);
  has_key_[block] = false;
}

int32_t BlockManager::allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    b = lru_.front();
    lru_.pop_front();
    in_lru_[b] = false;
    forget_key(b);
  } else {
    return -1;
  }
  ref_[b] = 1;
  return b;
}

void BlockManager::add_ref(int32_t block) {
  if (in_lru_[block]) {
    lru_.erase(lru_pos_[block]);
    in_lru_[block] = false;
  }
  ++ref_[block];
}

void BlockManager::release(int32_t block) {
  // A release of an unreferenced block is a caller bug. Applying it would put the block on the
  // free list twice and hand it to two sequences at once (silently mixing their K/V), so it is
  // refused and counted; check_consistency() reports it.
  if (ref_[block] <= 0) {
    ++num_bad_releases_;
    return;
  }
  if (--ref_[block] > 0) return;
  if (has_key_[block]) {
    lru_pos_[block] = lru_.insert(lru_.end(), block);
    in_lru_[block] = true;
  } else {
    free_.push_back(block);
  }
}

std::vector<int32_t> BlockManager::match_prefix(const int32_t* tokens, int32_t n_blocks, std::vector<uint64_t>* keys_out) {
  std::vector<int32_t> blocks;
  if (!caching_) return blocks;
  uint64_t parent = 0;
  for (int32_t i = 0; i < n_blocks; ++i) {
    const uint64_t key = block_key(parent, tokens + static_cast<size_t>(i) * block_size_, block_size_);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) break;
    add_ref(it->second);
    blocks.push_back(it->second);
    if (keys_out) keys_out->push_back(key);
    parent = key;
  }
  return blocks;
}

void BlockManager::record_lookup(int32_t num_blocks_queried, int32_t num_blocks_hit) {
  if (!caching_) return;
  queries_ += num_blocks_queried;
  hits_ += num_blocks_hit;
}

void BlockManager::register_block(int32_t block, uint64_t key) {
  if (!caching_ || has_key_[block] || by_key_.count(key)) return;
  by_key_[key] = block;
  key_of_[block] = key;
  has_key_[block] = true;
}

Status BlockManager::check_consistency() const {
  const int32_t n = num_blocks();
  auto bad = [](int32_t b, const std::string& what) {
    return internal_error("block manager: block " + std::to_string(b) + " " + what);
  };
  if (num_bad_releases_ > 0) {
    return internal_error("block manager: " + std::to_string(num_bad_releases_) +
                          " release(s) of a block with no reference (double release)");
  }
  std::vector<uint8_t> in_free(n, 0), seen_lru(n, 0);
  for (int32_t b : free_) {
    if (b < 0 || b >= n) return bad(b, "in the free list is out of range");
    if (in_free[b]++) return bad(b, "is in the free list twice (double release)");
  }
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    const int32_t b = *it;
    if (b < 0 || b >= n) return bad(b, "in the LRU is out of range");
    if (seen_lru[b]++) return bad(b, "is in the LRU twice (double release)");
    if (!in_lru_[b]) return bad(b, "is in the LRU but not flagged so");
    if (lru_pos_[b] != it) return bad(b, "has a stale LRU position");
  }
  for (int32_t b = 0; b < n; ++b) {
    if (ref_[b] < 0) return bad(b, "has a negative reference count " + std::to_string(ref_[b]) + " (double release)");
    if (static_cast<bool>(seen_lru[b]) != static_cast<bool>(in_lru_[b])) return bad(b, "has an LRU flag that disagrees with the list");
    if (ref_[b] > 0 && (in_free[b] || seen_lru[b])) {
      return bad(b, "is referenced (" + std::to_string(ref_[b]) + ") but also free or evictable");
    }
    if (ref_[b] == 0 && !in_free[b] && !seen_lru[b]) return bad(b, "has no reference but is neither free nor evictable (leak)");
    if (in_free[b] && has_key_[b]) return bad(b, "is on the free list but still keyed in the prefix cache");
    if (seen_lru[b] && !has_key_[b]) return bad(b, "is evictable but has no prefix-cache key");
    if (has_key_[b]) {
      if (!caching_) return bad(b, "is keyed although prefix caching is off");
      auto it = by_key_.find(key_of_[b]);
      if (it == by_key_.end() || it->second != b) return bad(b, "is keyed but the key index does not point back to it");
    }
  }
  for (const auto& [key, b] : by_key_) {
    if (b < 0 || b >= n || !has_key_[b] || key_of_[b] != key) return bad(b, "is in the key index under a key it does not hold");
  }
  return Status::ok();
}

}  // namespace anvil
