// Helpers shared by the engine tests: golden model folders, scratch folders, runner options and a
// step runner that returns the logits of a prefill and a few greedy decode steps on the CPU.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "runtime/kv_cache/block_manager.h"
#include "runtime/model_runner.h"

namespace anvil::test {

inline std::string golden_dir(const std::string& name) { return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name; }

// A fresh, empty folder for the current test.
inline std::string scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "." + info->name();
  for (char& c : name)
    if (c == '/') c = '_';
  const std::filesystem::path p = std::filesystem::path(ANVIL_BINARY_DIR) / "tests" / "build_scratch" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

inline RunnerOptions small_runner() {
  RunnerOptions o;
  o.max_num_tokens = 64;
  o.max_num_seqs = 4;
  o.max_logit_rows = 64;
  o.block_size = 4;
  o.num_kv_blocks = 64;
  return o;
}

// All logits (f32) of: one prefill of `prompt` with logits at every position, then `decode_steps`
// greedy decode steps.
inline std::vector<float> run_logits(ModelRunner& r, const std::vector<int32_t>& prompt, int decode_steps) {
  std::vector<float> all;
  BlockManager alloc(r.kv_cache().num_blocks(), r.options().block_size);
  const int32_t bs = r.options().block_size;
  std::vector<int32_t> tokens = prompt, blocks;
  int32_t cached = 0;
  for (int step = 0; step <= decode_steps; ++step) {
    StepInput s;
    s.seq_starts.push_back(0);
    const int32_t total = static_cast<int32_t>(tokens.size());
    while (static_cast<int32_t>(blocks.size()) * bs < total) blocks.push_back(alloc.allocate());
    for (int32_t p = cached; p < total; ++p) {
      s.logit_rows.push_back(static_cast<int32_t>(s.token_ids.size()));
      s.token_ids.push_back(tokens[p]);
      s.positions.push_back(p);
      s.slot_map.push_back(blocks[p / bs] * bs + p % bs);
    }
    s.seq_starts.push_back(static_cast<int32_t>(s.token_ids.size()));
    s.context_lens.push_back(total);
    s.block_tables.push_back(blocks);
    cached = total;
    Tensor logits;
    Status st = r.forward(s, &logits);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    if (!st.is_ok()) return all;
    std::vector<float> host(static_cast<size_t>(logits.numel()));
    EXPECT_TRUE(r.backend()->copy_d2h(host.data(), logits.data, logits.nbytes()).is_ok());
    const int64_t vocab = logits.dim(1);
    // Greedy on the last row.
    const float* last = host.data() + (logits.dim(0) - 1) * vocab;
    int32_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (last[v] > last[best]) best = static_cast<int32_t>(v);
    tokens.push_back(best);
    all.insert(all.end(), host.begin(), host.end());
  }
  return all;
}

}  // namespace anvil::test
