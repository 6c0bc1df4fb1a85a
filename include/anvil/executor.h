// Executor: in-flight batching over a paged KV cache. Requests join and leave at every step;
// running decodes go first, prompts are prefilled in chunks within the step's token budget,
// equal prompt prefixes share KV blocks (prefix cache), and under memory pressure the
// lowest-priority, latest request is preempted and recomputed later. Thread-safe: enqueue,
// cancel and shutdown may be called from any thread; outputs arrive on the executor's thread.
#pragma once

#include <memory>
#include <string>

#include "anvil/request.h"
#include "anvil/status.h"

namespace anvil {

class ModelRunner;

struct ExecutorOptions {
  int32_t max_num_tokens = 2048;  // token budget per step
  int32_t max_num_seqs = 64;      // sequences running at once
  bool enable_prefix_cache = true;
  int32_t max_queue = 4096;       // waiting requests beyond this are refused (kUnavailable)
  uint64_t seed = 0;              // base of per-request seeds when a request gives none
  // Priority aging: a request's effective priority rises by one for every this many steps since
  // it arrived, so a steady stream of higher-priority work cannot starve it. 0 = strict priority.
  int32_t priority_aging_steps = 256;
};

struct ExecutorStats {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_free = 0;
  int64_t num_prefix_cache_queries = 0;  // prompt blocks looked up
  int64_t num_prefix_cache_hits = 0;     // prompt blocks found
  int64_t num_steps = 0;
  int64_t num_preemptions = 0;
  int64_t num_prompt_tokens = 0;
  int64_t num_generated_tokens = 0;
  int64_t num_kv_block_copies = 0;       // copy-on-write of shared partial blocks
  // KV use after the last step: slots (tokens) in the blocks that sequences hold, and the slots
  // holding K/V; shared blocks count once. Sums over all steps give the run's mean waste:
  // 1 - kv_slots_used_steps / kv_slots_allocated_steps.
  int64_t kv_slots_allocated = 0;
  int64_t kv_slots_used = 0;
  int64_t kv_slots_allocated_steps = 0;
  int64_t kv_slots_used_steps = 0;
  double last_step_ms = 0;
  double seconds_since_last_step = 0;  // while work is pending: a stuck loop shows here
};

class Executor {
 public:
  // The runner must outlive the executor. Starts the step-loop thread.
  static Result<std::unique_ptr<Executor>> create(ModelRunner* runner, const ExecutorOptions& options);
  virtual ~Executor() = default;

  // Validates and queues a request. The callback receives every Output for it, the last one with
  // finished == true: exactly one final Output per sequence index 0..n-1 of an accepted request,
  // whatever happens (n = sampling.n; for beam search the n best hypotheses).
  virtual Result<RequestId> enqueue(Request request, OutputCallback callback) = 0;
  // Cancels a queued or running request (all its sequences): each final Output has FinishReason::kCancelled and its
  // KV blocks are freed. Unknown or finished ids are ignored.
  virtual void cancel(RequestId id) = 0;
  // Stops the loop. drain: finish every accepted request first; else cancel them all.
  virtual void shutdown(bool drain) = 0;
  virtual ExecutorStats stats() const = 0;
  virtual int32_t max_context_len() const = 0;
  virtual int64_t vocab_size() const = 0;
};

}  // namespace anvil
