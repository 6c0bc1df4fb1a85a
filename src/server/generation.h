// Generation: the executor requests behind one HTTP request (one per prompt x choice) and the
// queue their Outputs arrive on. Executor callbacks only append to the queue (they run on the
// step loop's thread and must not block); the HTTP thread drains it. The queue is shared with
// the callbacks, so an abandoned Generation is safe: its destructor cancels what still runs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "anvil/executor.h"
#include "server/json_params.h"
#include "server/openai_request.h"
#include "tokenizer/incremental_decoder.h"

namespace anvil::server {

using Clock = std::chrono::steady_clock;

struct OutputEvent {
  size_t seq = 0;  // index into the Generation's sequences (prompt * n + choice)
  Output output;
  Clock::time_point at;
};

class Generation {
 public:
  explicit Generation(Executor* executor) : executor_(executor), queue_(std::make_shared<Queue>()) {}
  ~Generation() { cancel_unfinished(); }
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // Enqueues every sequence of `req`. On a refusal, cancels those already queued and returns the
  // error: 429 when the executor's queue is full, 400 for what it rejects as invalid.
  // With stop strings, the executor matches them, detokenizing with `tokenizer` (non-null then).
  MaybeError start(const GenerateRequest& req, const Tokenizer* tokenizer);
  size_t num_sequences() const { return ids_.size(); }
  // Waits up to `timeout` for Outputs; returns those that arrived (possibly none).
  std::vector<OutputEvent> wait(std::chrono::milliseconds timeout);
  // Cancels one sequence (a stop string ended it) or all that have not finished.
  void cancel(size_t seq);
  void cancel_unfinished();
  void mark_finished(size_t seq) { done_[seq] = true; }

 private:
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<OutputEvent> events;
  };
  Executor* executor_;
  std::shared_ptr<Queue> queue_;
  std::vector<RequestId> ids_;
  std::vector<bool> done_;  // the executor sent this sequence's final Output
};

}  // namespace anvil::server
