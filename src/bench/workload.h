// What a benchmark sends: synthetic prompts of exactly ISL token ids, Poisson arrival times, and
// text prompts read from a JSONL dataset. Everything is a pure function of its seed (Philox,
// core/random.h), so two runs with the same seed send the same work.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "anvil/status.h"

namespace anvil::bench {

// Prompt `index` of a seeded family: `isl` ids uniform in [lo, hi). Different indexes give
// different prompts, so the prefix cache never hits across requests or iterations.
std::vector<int32_t> synthetic_prompt(uint64_t seed, uint64_t index, int32_t isl, int64_t lo, int64_t hi);

// Send offsets in seconds from the start for `n` requests. rate > 0: a Poisson process (gaps
// exponential with mean 1/rate); rate <= 0 or infinite: all at time 0.
std::vector<double> arrival_times(int64_t n, double rate, uint64_t seed);

struct DatasetPrompt {
  std::string text;
  int32_t output_len = 0;  // 0: use the benchmark's --osl
};

// JSONL, one object a line: {"prompt": "..."} with an optional "output_len" (or "max_tokens")
// integer. Blank lines are skipped; any other malformed line is an error naming its number.
Result<std::vector<DatasetPrompt>> load_dataset_jsonl(const std::string& path);

// `n` prompts taken from `all` in a seeded shuffled order, cycling when n > all.size().
std::vector<DatasetPrompt> sample_dataset(const std::vector<DatasetPrompt>& all, int64_t n, uint64_t seed);

}  // namespace anvil::bench
