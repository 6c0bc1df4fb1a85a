// BlockManager unit tests: allocation and reference counts, LRU eviction order of cached blocks,
// prefix matching along hash chains, key collisions on register_block, double-release detection,
// and a randomized operation sequence checked against a simple model after every step.
#include "runtime/kv_cache/block_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace anvil {
namespace {

constexpr int32_t kBs = 4;

// Keys of the leading full blocks of `tokens`, chained as the executor chains them.
std::vector<uint64_t> chain_keys(const std::vector<int32_t>& tokens) {
  std::vector<uint64_t> keys;
  uint64_t parent = 0;
  for (size_t i = 0; i + kBs <= tokens.size(); i += kBs) {
    parent = BlockManager::block_key(parent, tokens.data() + i, kBs);
    keys.push_back(parent);
  }
  return keys;
}

#define EXPECT_CONSISTENT(bm) \
  do { \
    Status st_ = (bm).check_consistency(); \
    EXPECT_TRUE(st_.is_ok()) << st_.to_string(); \
  } while (0)

TEST(BlockManager, AllocateReleaseAndRefCounts) {
  BlockManager bm(5, kBs);
  EXPECT_EQ(bm.num_blocks(), 5);
  EXPECT_EQ(bm.num_available(), 5);
  std::set<int32_t> got;
  for (int i = 0; i < 5; ++i) {
    const int32_t b = bm.allocate();
    ASSERT_GE(b, 0);
    ASSERT_LT(b, 5);
    EXPECT_EQ(bm.ref_count(b), 1);
    EXPECT_TRUE(got.insert(b).second) << "block " << b << " handed out twice";
    EXPECT_EQ(bm.num_available(), 4 - i);
    EXPECT_CONSISTENT(bm);
  }
  EXPECT_EQ(bm.allocate(), -1) << "an exhausted pool returns -1";
  const int32_t b = *got.begin();
  bm.add_ref(b);
  EXPECT_EQ(bm.ref_count(b), 2);
  bm.release(b);
  EXPECT_EQ(bm.ref_count(b), 1);
  EXPECT_EQ(bm.num_available(), 0) << "still referenced once";
  EXPECT_EQ(bm.allocate(), -1);
  bm.release(b);
  EXPECT_EQ(bm.ref_count(b), 0);
  EXPECT_EQ(bm.num_available(), 1);
  EXPECT_CONSISTENT(bm);
  EXPECT_EQ(bm.allocate(), b) << "the only free block is reused";
  for (int32_t x : got) bm.release(x);
  EXPECT_EQ(bm.num_available(), 5);
  EXPECT_CONSISTENT(bm);
}

TEST(BlockManager, DoubleReleaseIsRefusedAndReported) {
  BlockManager bm(3, kBs);
  const int32_t a = bm.allocate();
  bm.release(a);
  EXPECT_CONSISTENT(bm);
  bm.release(a);  // a bug in the caller
  EXPECT_EQ(bm.ref_count(a), 0);
  EXPECT_EQ(bm.num_available(), 3) << "the block must not be on the free list twice";
  // It must never be handed out twice.
  std::set<int32_t> got;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(got.insert(bm.allocate()).second);
  EXPECT_EQ(bm.allocate(), -1);
  Status st = bm.check_consistency();
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("double release"), std::string::npos) << st.message();
}

TEST(BlockManager, FreeBlocksAreUsedBeforeCachedOnesAndLruEvictsOldestFirst) {
  BlockManager bm(4, kBs);
  std::vector<int32_t> tokens(3 * kBs);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(10 + i);
  const auto keys = chain_keys(tokens);
  int32_t b[3];
  for (int i = 0; i < 3; ++i) {
    b[i] = bm.allocate();
    bm.register_block(b[i], keys[i]);
  }
  // Release in the order 1, 0, 2: that is the LRU order (least recent first).
  bm.release(b[1]);
  bm.release(b[0]);
  bm.release(b[2]);
  EXPECT_EQ(bm.num_available(), 4);
  EXPECT_CONSISTENT(bm);
  // The never-cached block goes first; cached blocks survive.
  const int32_t fresh = bm.allocate();
  EXPECT_NE(fresh, b[0]);
  EXPECT_NE(fresh, b[1]);
  EXPECT_NE(fresh, b[2]);
  // Then the least recently released cached block: b[1]. Its key is forgotten, so the chain
  // now matches only block 0.
  EXPECT_EQ(bm.allocate(), b[1]);
  EXPECT_CONSISTENT(bm);
  std::vector<uint64_t> got_keys;
  auto hit = bm.match_prefix(tokens.data(), 3, &got_keys);
  ASSERT_EQ(hit.size(), 1u);
  EXPECT_EQ(hit[0], b[0]);
  EXPECT_EQ(got_keys, std::vector<uint64_t>{keys[0]});
  EXPECT_EQ(bm.ref_count(b[0]), 1) << "a hit takes a reference";
  // b[0] left the LRU when matched; releasing it puts it at the most recent end, so b[2] goes next.
  bm.release(b[0]);
  EXPECT_EQ(bm.allocate(), b[2]);
  EXPECT_EQ(bm.allocate(), b[0]);
  EXPECT_EQ(bm.allocate(), -1);
  EXPECT_CONSISTENT(bm);
}

TEST(BlockManager, MatchPrefixFollowsTheChain) {
  BlockManager bm(8, kBs);
  std::vector<int32_t> tokens(4 * kBs + 2);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(3 * i + 1);
  const auto keys = chain_keys(tokens);
  ASSERT_EQ(keys.size(), 4u);
  std::vector<int32_t> blocks;
  for (int i = 0; i < 4; ++i) {
    blocks.push_back(bm.allocate());
    bm.register_block(blocks.back(), keys[i]);
  }
  for (int32_t x : blocks) bm.release(x);
  // Whole chain.
  std::vector<uint64_t> got_keys;
  auto hit = bm.match_prefix(tokens.data(), 4, &got_keys);
  EXPECT_EQ(hit, blocks);
  EXPECT_EQ(got_keys, keys);
  EXPECT_EQ(bm.num_queries(), 0) << "match_prefix counts nothing; record_lookup does";
  bm.record_lookup(4, 4);
  bm.record_lookup(3, 1);
  EXPECT_EQ(bm.num_queries(), 7);
  EXPECT_EQ(bm.num_hits(), 5);
  for (int32_t x : hit) bm.release(x);
  // Asking for fewer blocks stops there.
  hit = bm.match_prefix(tokens.data(), 2, nullptr);
  EXPECT_EQ(hit, std::vector<int32_t>(blocks.begin(), blocks.begin() + 2));
  for (int32_t x : hit) bm.release(x);
  // A change inside block 2 breaks the chain from block 2 on.
  auto other = tokens;
  other[2 * kBs + 1] += 1;
  hit = bm.match_prefix(other.data(), 4, nullptr);
  EXPECT_EQ(hit, std::vector<int32_t>(blocks.begin(), blocks.begin() + 2));
  for (int32_t x : hit) bm.release(x);
  // Same content as block 1 but after a different block 0: a different key, no hit.
  auto shifted = tokens;
  shifted[0] += 1;
  hit = bm.match_prefix(shifted.data(), 4, nullptr);
  EXPECT_TRUE(hit.empty());
  EXPECT_CONSISTENT(bm);
}

TEST(BlockManager, RegisterBlockCollisionsAndCachingOff) {
  BlockManager bm(4, kBs);
  std::vector<int32_t> tokens = {5, 6, 7, 8};
  const uint64_t key = chain_keys(tokens)[0];
  const int32_t a = bm.allocate(), b = bm.allocate();
  bm.register_block(a, key);
  bm.register_block(b, key);  // same content computed twice: the first owner keeps the key
  bm.register_block(a, key ^ 1);  // a block keeps its first key
  bm.release(a);
  bm.release(b);
  EXPECT_CONSISTENT(bm);
  auto hit = bm.match_prefix(tokens.data(), 1, nullptr);
  ASSERT_EQ(hit.size(), 1u);
  EXPECT_EQ(hit[0], a);
  bm.release(a);
  // b was not keyed, so it went to the free list and is reused before the cached a.
  EXPECT_EQ(bm.allocate(), b);
  EXPECT_CONSISTENT(bm);

  BlockManager off(2, kBs, /*enable_prefix_cache=*/false);
  const int32_t c = off.allocate();
  off.register_block(c, key);
  off.release(c);
  EXPECT_TRUE(off.match_prefix(tokens.data(), 1, nullptr).empty());
  off.record_lookup(1, 0);
  EXPECT_EQ(off.num_queries(), 0) << "no lookups when caching is off";
  EXPECT_EQ(off.num_available(), 2);
  EXPECT_CONSISTENT(off);
}

// Random allocate / add_ref / release / register / match against a model of who holds what.
TEST(BlockManager, RandomOperationsKeepBookkeepingConsistent) {
  std::mt19937 rng(12345);
  constexpr int32_t kBlocks = 16;
  BlockManager bm(kBlocks, kBs);
  std::multiset<int32_t> held;                 // one entry per reference the test holds
  std::vector<std::vector<int32_t>> prompts;
  for (int p = 0; p < 6; ++p) {
    std::vector<int32_t> t(3 * kBs);
    for (auto& x : t) x = static_cast<int32_t>(rng() % 5);  // small alphabet: many equal blocks
    prompts.push_back(t);
  }
  for (int iter = 0; iter < 5000; ++iter) {
    // Releases twice as likely as each way of taking a reference, so the pool keeps cycling.
    int op = static_cast<int>(rng() % 6);
    if (op >= 4) op = 1;
    if (op == 0) {
      const int32_t b = bm.allocate();
      const int32_t in_use = static_cast<int32_t>(std::set<int32_t>(held.begin(), held.end()).size());
      if (in_use == kBlocks) {
        EXPECT_EQ(b, -1);
      } else {
        ASSERT_GE(b, 0);
        EXPECT_EQ(held.count(b), 0u) << "allocate returned a referenced block";
        held.insert(b);
        // Register it under a prompt block's key half of the time.
        if (rng() % 2) {
          const auto& t = prompts[rng() % prompts.size()];
          const auto keys = chain_keys(t);
          const size_t i = rng() % keys.size();
          bm.register_block(b, keys[i]);
        }
      }
    } else if (op == 1 && !held.empty()) {
      auto it = held.begin();
      std::advance(it, rng() % held.size());
      const int32_t b = *it;
      held.erase(it);
      bm.release(b);
    } else if (op == 2 && !held.empty()) {
      auto it = held.begin();
      std::advance(it, rng() % held.size());
      bm.add_ref(*it);
      held.insert(*it);
    } else if (op == 3) {
      const auto& t = prompts[rng() % prompts.size()];
      auto hit = bm.match_prefix(t.data(), 3, nullptr);
      for (int32_t b : hit) held.insert(b);
    }
    for (int32_t b = 0; b < kBlocks; ++b) {
      ASSERT_EQ(bm.ref_count(b), static_cast<int32_t>(held.count(b))) << "block " << b << " at op " << iter;
    }
    const int32_t in_use = static_cast<int32_t>(std::set<int32_t>(held.begin(), held.end()).size());
    ASSERT_EQ(bm.num_available(), kBlocks - in_use);
    if (iter % 16 == 0) {
      Status st = bm.check_consistency();
      ASSERT_TRUE(st.is_ok()) << st.to_string() << " at op " << iter;
    }
  }
  for (int32_t b : held) bm.release(b);
  EXPECT_EQ(bm.num_available(), kBlocks);
  EXPECT_CONSISTENT(bm);
}

}  // namespace
}  // namespace anvil
