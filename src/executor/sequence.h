// Sequence: the executor's state for one request. tokens = prompt + generated; the first
// num_computed of them have K/V in the cache (blocks). A preempted sequence drops its blocks and
// recomputes all its tokens as a prompt when resumed.
#pragma once

#include <chrono>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "anvil/request.h"

namespace anvil {

struct Sequence {
  RequestId id = 0;
  Request request;
  OutputCallback callback;
  uint64_t seed = 0;
  uint64_t arrival = 0;  // FCFS order
  int64_t arrival_step = 0;  // executor step count when it arrived (priority aging)
  std::chrono::steady_clock::time_point enqueued_at;
  double queue_seconds = -1.0;  // set when first scheduled
  bool queue_reported = false;  // the first Output carried queue_seconds

  std::vector<int32_t> tokens;
  int32_t num_prompt = 0;
  int32_t num_computed = 0;
  int32_t num_cached_prompt = 0;  // prompt tokens served by the prefix cache at admission
  std::vector<int32_t> blocks;
  std::vector<uint64_t> block_keys;  // chained keys of the leading full blocks registered so far
  std::unordered_map<int32_t, int32_t> output_counts;  // generated token -> occurrences

  Output pending;  // accumulated output (non-streaming) or this step's new tokens (streaming)
  bool cancelled = false;

  int32_t num_generated() const { return static_cast<int32_t>(tokens.size()) - num_prompt; }
};

}  // namespace anvil
