// `anvil bench serve`: an online load generator for any OpenAI-compatible server. Requests arrive
// as a seeded Poisson process at `rate` (or all at once), at most `concurrency` in flight, each a
// streaming POST /v1/completions with max_tokens OSL and ignore_eos; the client times TTFT, the
// gaps between streamed chunks (ITL) and end-to-end latency, and counts goodput under an SLO.
// Every request has a deadline and the run has one, so it returns even if the server never answers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "anvil/status.h"
#include "bench/report.h"

namespace anvil::bench {

struct ServeConfig {
  std::string url = "http://127.0.0.1:8000";  // scheme://host:port[/prefix]
  double rate = 0;              // requests/s; <= 0 or inf: all at once
  int64_t concurrency = 0;      // <= 0: unbounded
  int64_t num_requests = 100;
  int32_t isl = 128;            // synthetic prompts: token ids (exact length)
  int32_t osl = 128;
  int64_t vocab_size = 1000;    // synthetic ids drawn from [0, vocab_size)
  std::string dataset;          // JSONL of text prompts (workload.h); replaces synthetic ids
  std::string model;            // "model" field; empty: the first id of GET /v1/models, else omitted
  std::string api_key;
  bool return_token_ids = true;  // ask for token ids per chunk (vLLM, anvil) to count tokens exactly
  double slo_ttft_ms = 0;       // 0: no TTFT bound
  double slo_itl_ms = 0;        // 0: no bound on a request's mean inter-token time (TPOT)
  uint64_t seed = 0;
  double request_timeout_s = 300;
  double connect_timeout_s = 10;
  double max_duration_s = 3600;  // no request is sent after this; in-flight ones end by it
};

struct ParsedUrl {
  std::string scheme_host_port;  // "http://host:port"
  std::string base_path;         // "" or "/prefix" (no trailing slash)
};
Result<ParsedUrl> parse_url(const std::string& url);

// One streamed request as the client saw it.
struct StreamRecord {
  double send_s = -1;        // from the start of the run
  double ttft_s = -1;        // first chunk with content, from send
  double e2e_s = -1;         // end of stream, from send
  std::vector<double> itl_s; // gaps between consecutive content chunks
  int64_t prompt_tokens = 0;  // usage.prompt_tokens, else the synthetic ISL
  int64_t output_tokens = 0;  // usage.completion_tokens, else tokens counted in chunks
  std::string error;         // empty: success
  bool sent = false;
  bool ok() const { return sent && error.empty(); }
};

struct ServeOutput {
  nlohmann::json doc;
  Table table{{}};
  std::vector<StreamRecord> records;
};

Result<ServeOutput> run_serve(const ServeConfig& config);

}  // namespace anvil::bench
