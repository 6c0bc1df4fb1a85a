// Test harness for executor scheduling tests on the tiny golden models (CPU backend): a runner +
// executor with small, explicit limits, and a Recorder that logs every Output with the step it came
// from. The step index is read from stats().num_steps inside the callback (callbacks run on the
// loop thread during step k, before the step counter moves to k + 1), so tests observe scheduling
// from outside the executor, without a hook.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "anvil/executor.h"
#include "backend/cpu/cpu_backend.h"
#include "runtime/model_loader.h"

namespace anvil::testing_harness {

inline std::string model_dir(const std::string& name) {
  return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name;
}

struct HarnessOptions {
  std::string model = "llama3_gqa";
  int32_t kv_blocks = 64;
  int32_t block_size = 4;
  int32_t budget = 64;        // tokens per step
  int32_t max_num_seqs = 8;
  bool prefix_cache = true;
  uint64_t seed = 0;
  int32_t priority_aging_steps = 256;
};

// One model + executor. The runner allows 64 tokens and 8 sequences per step.
struct Harness {
  CpuBackend backend;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<Executor> executor;
  explicit Harness(const HarnessOptions& h) {
    RunnerOptions o;
    o.max_num_tokens = 64;
    o.max_num_seqs = 8;
    o.block_size = h.block_size;
    o.num_kv_blocks = h.kv_blocks;
    auto r = load_model(model_dir(h.model), &backend, o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (!r.is_ok()) return;
    runner = std::move(r).value();
    ExecutorOptions eo;
    eo.max_num_tokens = h.budget;
    eo.max_num_seqs = h.max_num_seqs;
    eo.enable_prefix_cache = h.prefix_cache;
    eo.seed = h.seed;
    eo.priority_aging_steps = h.priority_aging_steps;
    auto e = Executor::create(runner.get(), eo);
    EXPECT_TRUE(e.is_ok()) << e.status().to_string();
    if (e.is_ok()) executor = std::move(e).value();
  }
  ~Harness() {
    if (executor) executor->shutdown(false);
  }
};

// What one request did, step by step.
struct Trace {
  std::vector<int64_t> token_steps;  // the step each generated token came from
  std::vector<int32_t> tokens;
  int num_outputs = 0;
  int num_final = 0;
  int num_outputs_after_final = 0;  // must stay 0
  Output last;
  int64_t first_step() const { return token_steps.empty() ? -1 : token_steps.front(); }
  int64_t last_step() const { return token_steps.empty() ? -1 : token_steps.back(); }
  // Steps where the request had started but produced no token (it was preempted or starved).
  int64_t num_gaps() const {
    int64_t g = 0;
    for (size_t i = 1; i < token_steps.size(); ++i) g += token_steps[i] - token_steps[i - 1] - 1;
    return g;
  }
  // First step after which no token came for a while (-1 if none).
  int64_t first_gap_step() const {
    for (size_t i = 1; i < token_steps.size(); ++i)
      if (token_steps[i] != token_steps[i - 1] + 1) return token_steps[i - 1] + 1;
    return -1;
  }
};

class Recorder {
 public:
  explicit Recorder(Executor* ex) : ex_(ex) {}
  // Stops the executor first, so that no callback runs into a destroyed recorder when a test
  // bails out with requests still pending.
  ~Recorder() { ex_->shutdown(false); }

  // A callback that logs outputs and then runs `then` (on the loop thread) with the output.
  OutputCallback callback(std::function<void(const Output&)> then = {}) {
    return [this, then](const Output& o) {
      const int64_t step = ex_->stats().num_steps;
      {
        std::lock_guard<std::mutex> lk(mu_);
        Trace& t = traces_[o.id];
        ++t.num_outputs;
        if (t.num_final > 0) ++t.num_outputs_after_final;
        for (int32_t tok : o.tokens) {
          t.tokens.push_back(tok);
          t.token_steps.push_back(step);
        }
        if (o.finished) {
          ++t.num_final;
          t.last = o;
          ++num_finished_;
        }
      }
      if (then) then(o);
      cv_.notify_all();
    };
  }

  // Enqueues `requests` so that they all reach the scheduler in the same step: a one-token
  // starter request enqueues them from its final callback, on the loop thread; they join at the
  // next step (step 1 if the executor was idle). Returns their ids in order.
  // thens[i], if given, runs after each Output of requests[i] (on the loop thread).
  std::vector<RequestId> enqueue_together(std::vector<Request> requests,
                                          std::vector<std::function<void(const Output&)>> thens = {}) {
    thens.resize(requests.size());
    auto ids = std::make_shared<std::vector<RequestId>>();
    auto ready = std::make_shared<bool>(false);
    Request starter;
    starter.prompt = {1};
    starter.sampling.temperature = 0.0f;
    starter.sampling.max_tokens = 1;
    starter.sampling.ignore_eos = true;
    auto reqs = std::make_shared<std::vector<Request>>(std::move(requests));
    auto st = ex_->enqueue(std::move(starter), [this, ids, ready, reqs, thens](const Output& o) {
      if (!o.finished) return;
      for (size_t i = 0; i < reqs->size(); ++i) {
        auto id = ex_->enqueue((*reqs)[i], callback(thens[i]));
        EXPECT_TRUE(id.is_ok()) << id.status().to_string();
        ids->push_back(id.is_ok() ? *id : 0);
      }
      std::lock_guard<std::mutex> lk(mu_);
      *ready = true;
      cv_.notify_all();
    });
    EXPECT_TRUE(st.is_ok()) << st.status().to_string();
    std::unique_lock<std::mutex> lk(mu_);
    EXPECT_TRUE(cv_.wait_for(lk, std::chrono::seconds(30), [&] { return *ready; }));
    return *ids;
  }

  // Waits until `n` requests (starters excluded) have finished.
  bool wait_finished(int n, int seconds = 60) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, std::chrono::seconds(seconds), [&] { return num_finished_ >= n; });
  }

  Trace trace(RequestId id) {
    std::lock_guard<std::mutex> lk(mu_);
    return traces_[id];
  }

 private:
  Executor* ex_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<RequestId, Trace> traces_;
  int num_finished_ = 0;
};

inline Request greedy(std::vector<int32_t> prompt, int32_t max_tokens, int32_t priority = 0) {
  Request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = true;
  r.priority = priority;
  return r;
}

// A prompt of n tokens starting at `first`, distinct from other bases' prompts (no shared blocks).
inline std::vector<int32_t> ramp(int32_t first, int32_t n) {
  std::vector<int32_t> p(n);
  for (int32_t i = 0; i < n; ++i) p[i] = (first + 7 * i) % 380 + 3;
  return p;
}

// Runs `r` alone on a fresh executor (prefix cache off, roomy pool) and returns its tokens.
inline std::vector<int32_t> run_alone(const std::string& model, const Request& r, int32_t block_size = 4) {
  HarnessOptions h;
  h.model = model;
  h.block_size = block_size;
  h.kv_blocks = 256 / block_size;
  h.prefix_cache = false;
  Harness x(h);
  if (!x.executor) return {};
  Recorder rec(x.executor.get());
  auto id = x.executor->enqueue(r, rec.callback());
  EXPECT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_TRUE(rec.wait_finished(1));
  return rec.trace(*id).tokens;
}

}  // namespace anvil::testing_harness
