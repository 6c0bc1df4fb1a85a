// The in-process benchmarks: latency (a batch of B synthetic ISL-token prompts, OSL greedy tokens
// each, repeated; TTFT, decode step time and their floors) and offline throughput (N requests,
// at most C in flight, or in static batches; tokens/s, TTFT, KV use and waste). Both build a fresh Executor over the given runner and
// return a JSON document in the anvil.bench/1 schema (docs/performance.md) plus a text table.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "anvil/executor.h"
#include "bench/report.h"
#include "runtime/model_runner.h"

namespace anvil::bench {

struct LatencyConfig {
  int32_t isl = 128;
  int32_t osl = 128;
  int32_t batch = 1;
  int32_t warmup = 2;
  int32_t iters = 5;
  uint64_t seed = 0;
  double bandwidth_gbps = 3000;  // H100 SXM device-to-device copy (PERFORMANCE.md)
  double peak_tflops = 790;      // H100 bf16 dense GEMM at prefill shapes
  double timeout_s = 3600;       // per iteration
};

struct ThroughputConfig {
  int32_t isl = 128;
  int32_t osl = 128;
  int64_t num_requests = 64;
  int64_t concurrency = 0;  // <= 0: all at once
  uint64_t seed = 0;
  double timeout_s = 3600;
  // > 0: static batching, the baseline for in-flight batching: requests run in fixed batches of
  // this many; a batch starts only once every request of the previous one finished.
  int64_t static_batch = 0;
  // > 0: every prompt starts with the same this-many-token prefix (a shared system prompt),
  // followed by its own ISL tokens; run with the prefix cache on and off to see what it saves.
  int32_t shared_prefix = 0;
};

struct BenchOutput {
  nlohmann::json doc;
  Table table{{}};
};

// `model` names the model in the report. Fails before running on a config the model cannot take
// (ISL + OSL beyond the context, zero sizes), naming the option.
Result<BenchOutput> run_latency(ModelRunner* runner, const ExecutorOptions& options, const LatencyConfig& config,
                                const std::string& model);
Result<BenchOutput> run_throughput(ModelRunner* runner, const ExecutorOptions& options,
                                   const ThroughputConfig& config, const std::string& model);

}  // namespace anvil::bench
