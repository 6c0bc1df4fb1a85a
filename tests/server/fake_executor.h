// FakeExecutor: a test-only Executor whose pace and failures the test controls, for the HTTP
// behaviours a real model cannot make deterministic: a full queue (429), a stalled step loop
// (/health 503), a client hanging up mid-stream (cancel). Token k of a request is
// (last prompt id + k + 1) % vocab; it finishes with kLength after max_tokens tokens.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "anvil/executor.h"

namespace anvil::server::test {

class FakeExecutor final : public Executor {
 public:
  FakeExecutor(int32_t max_queue, std::chrono::milliseconds interval) : max_queue_(max_queue), interval_(interval) {
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeExecutor() override { shutdown(false); }

  Result<RequestId> enqueue(Request request, OutputCallback callback) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return unavailable("executor is shut down");
    if (static_cast<int32_t>(active_.size()) >= max_queue_) return unavailable("queue full");
    if (request.sampling.max_tokens < 1) return invalid_argument("max_tokens: must be >= 1");
    RequestId id = ++next_id_;
    active_[id] = Active{std::move(request), std::move(callback), 0};
    seeds_.push_back(active_[id].request.sampling.seed);
    return id;
  }
  void cancel(RequestId id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (active_.count(id)) cancel_requests_.insert(id);
  }
  void shutdown(bool) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      stopped_ = true;
      for (auto& [id, a] : active_) cancel_requests_.insert(id);
    }
    if (thread_.joinable()) thread_.join();
  }
  ExecutorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    ExecutorStats s;
    s.num_running = static_cast<int32_t>(active_.size());
    s.kv_blocks_total = 100;
    s.kv_blocks_free = 100 - static_cast<int32_t>(active_.size());
    s.seconds_since_last_step = stalled_seconds_;
    return s;
  }
  int32_t max_context_len() const override { return 128; }
  int64_t vocab_size() const override { return 384; }

  // Pretend the loop is stuck: no tokens, and stats report `seconds` since the last step.
  void stall(double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    stalled_seconds_ = seconds;
  }
  std::set<RequestId> cancelled() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  std::vector<std::optional<uint64_t>> seeds() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seeds_;
  }
  size_t num_active() const {
    std::lock_guard<std::mutex> lock(mu_);
    return active_.size();
  }

 private:
  struct Active {
    Request request;
    OutputCallback callback;
    int32_t produced = 0;
  };

  void loop() {
    for (;;) {
      std::vector<std::pair<OutputCallback, Output>> due;
      bool done = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto it = active_.begin(); it != active_.end();) {
          Output o;
          o.id = it->first;
          o.num_prompt_tokens = static_cast<int32_t>(it->second.request.prompt.size());
          if (cancel_requests_.count(it->first)) {
            o.finished = true;
            o.finish_reason = FinishReason::kCancelled;
            cancelled_.insert(it->first);
          } else if (stalled_seconds_ > 0) {
            ++it;
            continue;
          } else {
            Active& a = it->second;
            o.tokens = {static_cast<int32_t>((a.request.prompt.back() + a.produced + 1) % 384)};
            ++a.produced;
            if (a.request.sampling.logprobs >= 0) o.logprobs = {-0.5f};
            if (a.produced >= a.request.sampling.max_tokens) {
              o.finished = true;
              o.finish_reason = FinishReason::kLength;
            }
          }
          o.num_generated_tokens = it->second.produced;
          due.emplace_back(it->second.callback, o);
          if (o.finished) {
            cancel_requests_.erase(it->first);
            it = active_.erase(it);
          } else {
            ++it;
          }
        }
        done = stopped_ && active_.empty();
      }
      for (auto& [cb, o] : due) cb(o);
      if (done) return;
      std::this_thread::sleep_for(interval_);
    }
  }

  const int32_t max_queue_;
  const std::chrono::milliseconds interval_;
  mutable std::mutex mu_;
  std::map<RequestId, Active> active_;
  std::set<RequestId> cancel_requests_;
  std::set<RequestId> cancelled_;
  std::vector<std::optional<uint64_t>> seeds_;
  RequestId next_id_ = 0;
  double stalled_seconds_ = 0;
  bool stopped_ = false;
  std::thread thread_;
};

}  // namespace anvil::server::test
