// BlockManager: hands out KV block ids, counts references, and keeps the prefix cache.
// A full block is keyed by a hash chained over its tokens and its predecessor's key, so equal
// prompt prefixes map to equal keys and share blocks. A cached block whose last reference goes
// away is kept, evictable in LRU order, until its memory is needed; so the cache costs nothing on
// a miss and frees itself under pressure.
//
//   block states:  free  --allocate-->  in use (ref >= 1)  --release to 0-->  free       (unhashed)
//                                              |                         \--> evictable  (hashed)
//                   evictable --match_prefix--> in use;  evictable --allocate (pool empty)--> reused
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace anvil {

class BlockManager {
 public:
  BlockManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_cache = true);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_.size()); }
  int32_t block_size() const { return block_size_; }
  // Blocks that allocate() can return (free or evictable).
  int32_t num_available() const { return static_cast<int32_t>(free_.size() + lru_.size()); }

  // A block with ref count 1, evicting the least recently used cached block if nothing is free;
  // -1 when every block is in use.
  int32_t allocate();
  void add_ref(int32_t block);
  void release(int32_t block);  // of an unreferenced block: refused, reported by check_consistency()
  int32_t ref_count(int32_t block) const { return ref_[block]; }

  // Key of a full block of `block_size` tokens following a block with key `parent` (0 for the first).
  static uint64_t block_key(uint64_t parent, const int32_t* tokens, int32_t block_size);

  // Longest run of cached full blocks matching tokens[0 .. n_blocks * block_size): each returned
  // block gets a reference. `keys_out` receives the chained keys of the matched blocks. Counts
  // nothing: a caller that may give the match back (admission failed) and retry records the
  // lookup once, when it keeps it, with record_lookup().
  std::vector<int32_t> match_prefix(const int32_t* tokens, int32_t n_blocks, std::vector<uint64_t>* keys_out);
  // Adds one kept lookup to the hit statistics (no-op when caching is off).
  void record_lookup(int32_t num_blocks_queried, int32_t num_blocks_hit);
  // Registers a computed full block under `key` (no-op if caching is off or the key is taken).
  void register_block(int32_t block, uint64_t key);

  // Debug check of the bookkeeping, O(num_blocks): every block with ref 0 is in exactly one of the
  // free list (unkeyed) or the LRU (keyed), a referenced block in neither, no duplicates, and the
  // key index and per-block keys agree. Tests call it; so does the executor after every step when
  // ANVIL_CHECK_KV_BLOCKS is set. The error names the first broken block.
  Status check_consistency() const;

  int64_t num_queries() const { return queries_; }
  int64_t num_hits() const { return hits_; }

 private:
  void forget_key(int32_t block);

  int32_t block_size_;
  bool caching_;
  std::vector<int32_t> ref_;
  std::vector<int32_t> free_;  // never-cached free blocks (LIFO)
  std::list<int32_t> lru_;     // evictable cached blocks, least recent first
  std::vector<std::list<int32_t>::iterator> lru_pos_;
  std::vector<bool> in_lru_;
  std::vector<uint64_t> key_of_;
  std::vector<bool> has_key_;
  std::unordered_map<uint64_t, int32_t> by_key_;
  int64_t queries_ = 0;
  int64_t hits_ = 0;
  int64_t num_bad_releases_ = 0;  // releases of unreferenced blocks, refused
};

}  // namespace anvil
