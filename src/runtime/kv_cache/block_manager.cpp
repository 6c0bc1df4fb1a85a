// BlockManager: free list + LRU of evictable cached blocks + key index.
#include "runtime/kv_cache/block_manager.h"

#include <xxhash.h>

#include <cassert>

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
  assert(ref_[block] > 0);
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
    ++queries_;
    const uint64_t key = block_key(parent, tokens + static_cast<size_t>(i) * block_size_, block_size_);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) break;
    ++hits_;
    add_ref(it->second);
    blocks.push_back(it->second);
    if (keys_out) keys_out->push_back(key);
    parent = key;
  }
  return blocks;
}

void BlockManager::register_block(int32_t block, uint64_t key) {
  if (!caching_ || has_key_[block] || by_key_.count(key)) return;
  by_key_[key] = block;
  key_of_[block] = key;
  has_key_[block] = true;
}

}  // namespace anvil
