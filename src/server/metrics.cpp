// Prometheus text rendering of the server's counters and histograms (metrics.h). Names follow
// Prometheus conventions: base units (seconds), _total for counters, anvil_ prefix.
#include "server/metrics.h"

#include <cmath>
#include <cstdio>

namespace anvil::server {
namespace {

std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

void header(const std::string& name, const char* type, const std::string& help, std::string* out) {
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void scalar(const std::string& name, const char* type, const std::string& help, double v, std::string* out) {
  header(name, type, help, out);
  *out += name + " " + num(v) + "\n";
}

const std::vector<double> kLatencyBounds = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                            0.75,  1.0,    2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
const std::vector<double> kItlBounds = {0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
                                        0.05,   0.075, 0.1,    0.15,  0.2,    0.3,  0.4,   0.5,  0.75,  1.0,  2.5};

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t b = 0;
  while (b < bounds_.size() && v > bounds_[b]) ++b;
  ++counts_[b];
  sum_ += v;
  ++count_;
}

uint64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

void Histogram::render(const std::string& name, const std::string& help, std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  header(name, "histogram", help, out);
  uint64_t cumulative = 0;
  for (size_t b = 0; b <= bounds_.size(); ++b) {
    cumulative += counts_[b];
    std::string le = b < bounds_.size() ? num(bounds_[b]) : "+Inf";
    *out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  *out += name + "_sum " + num(sum_) + "\n";
  *out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics() : ttft_(kLatencyBounds), itl_(kItlBounds), e2e_(kLatencyBounds), queue_(kLatencyBounds) {
  for (const char* r : {"stop", "length", "abort", "error"}) finished_[r] = 0;
}

void Metrics::record_finished(const std::string& reason, int32_t prompt_tokens, int32_t generation_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  ++finished_[reason];
  prompt_tokens_ += static_cast<uint64_t>(std::max(prompt_tokens, 0));
  generation_tokens_ += static_cast<uint64_t>(std::max(generation_tokens, 0));
}

void Metrics::record_http(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++http_[status];
}

std::string Metrics::render(const ExecutorStats* stats) const {
  std::string out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    header("anvil_requests_finished_total", "counter",
           "Finished sequences (one per choice) by finish reason.", &out);
    for (const auto& [reason, n] : finished_) {
      out += "anvil_requests_finished_total{finish_reason=\"" + reason + "\"} " + std::to_string(n) + "\n";
    }
    header("anvil_http_responses_total", "counter", "HTTP responses by status code.", &out);
    for (const auto& [status, n] : http_) {
      out += "anvil_http_responses_total{code=\"" + std::to_string(status) + "\"} " + std::to_string(n) + "\n";
    }
    scalar("anvil_prompt_tokens_total", "counter", "Prompt tokens of finished sequences.",
           static_cast<double>(prompt_tokens_), &out);
    scalar("anvil_generation_tokens_total", "counter", "Tokens generated for finished sequences.",
           static_cast<double>(generation_tokens_), &out);
  }
  ttft_.render("anvil_time_to_first_token_seconds", "Time from arrival to the first generated token.", &out);
  itl_.render("anvil_inter_token_latency_seconds", "Time between consecutive generated tokens of a sequence.", &out);
  e2e_.render("anvil_e2e_request_latency_seconds", "Time from arrival to the last token of a sequence.", &out);
  queue_.render("anvil_request_queue_time_seconds", "Time a sequence waited in the executor's queue before it first ran.", &out);
  if (stats != nullptr) {
    scalar("anvil_num_requests_running", "gauge", "Sequences in the running batch.", stats->num_running, &out);
    scalar("anvil_num_requests_waiting", "gauge", "Sequences waiting to be scheduled.", stats->num_waiting, &out);
    double usage = stats->kv_blocks_total > 0
                       ? 1.0 - static_cast<double>(stats->kv_blocks_free) / static_cast<double>(stats->kv_blocks_total)
                       : 0.0;
    scalar("anvil_kv_cache_usage_ratio", "gauge", "Fraction of KV cache blocks in use (1 = full).", usage, &out);
    scalar("anvil_kv_cache_blocks_total", "gauge", "KV cache blocks in the pool.", stats->kv_blocks_total, &out);
    scalar("anvil_prefix_cache_queries_total", "counter", "Prompt blocks looked up in the prefix cache.",
           static_cast<double>(stats->num_prefix_cache_queries), &out);
    scalar("anvil_prefix_cache_hits_total", "counter", "Prompt blocks found in the prefix cache.",
           static_cast<double>(stats->num_prefix_cache_hits), &out);
    double rate = stats->num_prefix_cache_queries > 0 ? static_cast<double>(stats->num_prefix_cache_hits) /
                                                            static_cast<double>(stats->num_prefix_cache_queries)
                                                      : 0.0;
    scalar("anvil_prefix_cache_hit_rate", "gauge", "Prefix cache hits / queries since start.", rate, &out);
    scalar("anvil_num_preemptions_total", "counter", "Sequences preempted for KV memory.",
           static_cast<double>(stats->num_preemptions), &out);
    scalar("anvil_steps_total", "counter", "Executor steps run.", static_cast<double>(stats->num_steps), &out);
    scalar("anvil_executor_prompt_tokens_total", "counter", "Prompt tokens computed by the executor (with recomputation).",
           static_cast<double>(stats->num_prompt_tokens), &out);
    scalar("anvil_executor_generation_tokens_total", "counter", "Tokens sampled by the executor.",
           static_cast<double>(stats->num_generated_tokens), &out);
    scalar("anvil_last_step_seconds", "gauge", "Duration of the latest executor step.", stats->last_step_ms / 1000.0,
           &out);
  }
  return out;
}

}  // namespace anvil::server
