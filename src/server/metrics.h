// Server metrics in the Prometheus text exposition format (version 0.0.4). Latencies are
// histograms with fixed bucket bounds; counters only grow. Executor gauges (running, waiting,
// KV usage, prefix-cache hits) are read from ExecutorStats at scrape time. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "anvil/executor.h"

namespace anvil::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // upper bounds, ascending; +Inf is implied
  void observe(double v);
  // Appends "# HELP", "# TYPE" and the _bucket/_sum/_count lines.
  void render(const std::string& name, const std::string& help, std::string* out) const;
  uint64_t count() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  // One finished sequence (one choice). reason: stop | length | abort | error.
  void record_finished(const std::string& reason, int32_t prompt_tokens, int32_t generation_tokens);
  void observe_ttft(double s) { ttft_.observe(s); }
  void observe_inter_token(double s) { itl_.observe(s); }
  void observe_e2e(double s) { e2e_.observe(s); }
  void observe_queue(double s) { queue_.observe(s); }
  // One HTTP response by status code.
  void record_http(int status);

  // The whole exposition. `stats` is null while the model loads.
  std::string render(const ExecutorStats* stats) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> finished_;
  std::map<int, uint64_t> http_;
  uint64_t prompt_tokens_ = 0;
  uint64_t generation_tokens_ = 0;
  Histogram ttft_;
  Histogram itl_;
  Histogram e2e_;
  Histogram queue_;
};

}  // namespace anvil::server
