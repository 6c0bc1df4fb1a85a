// RequestDriver: runs a list of requests through an in-process Executor with at most
// `concurrency` in flight, timing each from the moment it is enqueued (first token, finish) on
// one steady clock whose origin is the start of run(). The caller's thread enqueues and waits;
// callbacks only record. A deadline bounds every run: past it, what is left is cancelled.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "anvil/executor.h"

namespace anvil::bench {

struct RequestRecord {
  double enqueue_s = -1;      // seconds from run() start; -1: never enqueued
  double first_token_s = -1;  // -1: no token arrived
  double finish_s = -1;       // -1: no final Output arrived
  int32_t prompt_tokens = 0;
  int32_t output_tokens = 0;  // tokens received in Outputs
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;          // enqueue refusal or kError message
  bool ok() const { return finish_s >= 0 && error.empty() && finish_reason != FinishReason::kCancelled; }
};

struct DriveOptions {
  int64_t concurrency = 0;      // <= 0: all at once
  double timeout_s = 3600;      // whole run
  double poll_interval_s = 0.001;
  std::function<void()> poll;   // called on the caller's thread about every poll_interval_s
};

struct DriveResult {
  std::vector<RequestRecord> records;  // one per request, in input order
  double duration_s = 0;               // first enqueue to last final Output
  bool timed_out = false;
};

// Never hangs: returns by `timeout_s` plus a bounded grace period for cancelled requests.
DriveResult drive_requests(Executor* executor, std::vector<Request> requests, const DriveOptions& options);

}  // namespace anvil::bench
