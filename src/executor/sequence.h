// The executor's state for one request (RequestState) and for each of its sequences (Sequence).
// A request starts as one root sequence holding the prompt; n > 1 samples fork from it in the
// step that samples their first token, beams fork and die at every beam step. Siblings share
// KV blocks by reference count (a shared partial block is copied on its first write). Sequence
// tokens = prompt + generated; the first num_computed of them have K/V in the cache (blocks).
// A preempted sequence drops its blocks and recomputes its tokens as a prompt when resumed; a
// preempted beam group restarts its search from the prompt (beams emit nothing until the end).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "anvil/request.h"
#include "executor/beam_search.h"
#include "executor/stop_matcher.h"

namespace anvil {

struct Sequence;

struct RequestState {
  RequestId id = 0;
  Request request;
  OutputCallback callback;
  uint64_t seed = 0;
  uint64_t arrival = 0;      // FCFS order
  int64_t arrival_step = 0;  // executor step count when it arrived (priority aging)
  std::chrono::steady_clock::time_point enqueued_at;
  double queue_seconds = -1.0;  // set when first scheduled
  bool forked = false;          // n > 1: the siblings exist; beams: the first beam step ran
  int32_t num_finished = 0;     // sequence indices whose final Output went out
  std::vector<std::unique_ptr<Sequence>> seqs;  // live sequences (the root first until it ends)
  std::unique_ptr<BeamSearch> beam;             // beam search requests only

  bool is_beam() const { return request.sampling.beam_width > 0; }
  // Sequences the request will run at once: what admission reserves for an unforked root.
  int32_t width() const { return is_beam() ? request.sampling.beam_width : request.sampling.n; }
};

struct Sequence {
  RequestState* req = nullptr;
  int32_t index = 0;            // output index (n > 1 samples); beams: position in the beam list
  bool queue_reported = false;  // the first Output carried queue_seconds

  std::vector<int32_t> tokens;
  int32_t num_prompt = 0;
  int32_t num_computed = 0;
  int32_t num_cached_prompt = 0;  // prompt tokens served by the prefix cache at admission
  std::vector<int32_t> blocks;
  std::vector<uint64_t> block_keys;  // chained keys of the leading full blocks registered so far
  std::unordered_map<int32_t, int32_t> output_counts;  // generated token -> occurrences
  double cumulative_logprob = 0;                       // beams
  std::unique_ptr<StopStringChecker> stop;             // requests with stop strings

  Output pending;  // accumulated output (non-streaming, beams) or this step's new tokens (streaming)

  int32_t num_generated() const { return static_cast<int32_t>(tokens.size()) - num_prompt; }
  // The root of a request that forks (n > 1, or beam search) before it has.
  bool will_fork() const { return !req->forked && (req->is_beam() || req->request.sampling.n > 1); }
  // Seats (max_num_seqs) this sequence stands for: an unforked root reserves its siblings'.
  int32_t seats() const { return req->forked ? 1 : req->width(); }
};

}  // namespace anvil
