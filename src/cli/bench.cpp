// `anvil bench latency | throughput | serve`: the one benchmark tool (docs/performance.md).
// latency and throughput run in-process through the Executor on a model opened like `anvil run`;
// serve is an HTTP load generator for any OpenAI-compatible server. Each prints a table and,
// with --json FILE, writes the anvil.bench/1 JSON document.
#include <cstdio>
#include <limits>

#include "bench/offline.h"
#include "bench/serve_client.h"
#include "cli/command.h"
#include "cli/model_args.h"

namespace anvil::cli {
namespace {

struct LatencyOptions {
  ModelArgs model;
  bench::LatencyConfig config;
  std::string json;
};

struct ThroughputOptions {
  ModelArgs model;
  bench::ThroughputConfig config;
  bool prefix_cache = true;
  std::string json;
};

struct ServeOptions {
  bench::ServeConfig config;
  std::string json;
};

int fail(const char* mode, const Status& s) {
  std::fprintf(stderr, "anvil bench %s: %s\n", mode, s.to_string().c_str());
  return 1;
}

ExecutorOptions executor_options(const ModelArgs& m, bool prefix_cache = true) {
  ExecutorOptions eo;
  eo.max_num_tokens = m.max_num_tokens;
  eo.max_num_seqs = m.max_num_seqs;
  eo.enable_prefix_cache = prefix_cache;
  return eo;
}

int finish(const char* mode, const bench::BenchOutput& out, const std::string& json_path) {
  out.table.print(stdout);
  if (!json_path.empty()) {
    Status s = bench::write_json(json_path, out.doc);
    if (!s.is_ok()) return fail(mode, s);
  }
  return 0;
}

int run_latency(const LatencyOptions& o) {
  auto opened = open_model(o.model);
  if (!opened.is_ok()) return fail("latency", opened.status());
  OpenModel& m = *opened;
  const bench::LatencyConfig& c = o.config;
  std::printf("anvil bench latency: %s on %s, ISL %d, OSL %d, batch %d, %d warm-up + %d timed iterations\n",
              m.model_dir.c_str(), m.backend->name().c_str(), c.isl, c.osl, c.batch, c.warmup, c.iters);
  std::fflush(stdout);
  auto out = bench::run_latency(m.runner.get(), executor_options(o.model), c, m.model_dir);
  if (!out.is_ok()) return fail("latency", out.status());
  const int rc = finish("latency", *out, o.json);
  if (m.backend->device() == Device::kCuda) {
    std::printf("ceiling: given (--bandwidth %g GB/s, --peak-tflops %g)\n", c.bandwidth_gbps, c.peak_tflops);
  } else {
    std::printf("ceiling: given (--bandwidth %g GB/s, --peak-tflops %g); the floors are for the GPU, this run is on %s\n",
                c.bandwidth_gbps, c.peak_tflops, m.backend->name().c_str());
  }
  return rc;
}

int run_throughput(const ThroughputOptions& o) {
  auto opened = open_model(o.model);
  if (!opened.is_ok()) return fail("throughput", opened.status());
  OpenModel& m = *opened;
  const bench::ThroughputConfig& c = o.config;
  std::printf("anvil bench throughput: %s on %s, %lld requests of ISL %d%s / OSL %d, %s, prefix cache %s\n",
              m.model_dir.c_str(), m.backend->name().c_str(), static_cast<long long>(c.num_requests), c.isl,
              c.shared_prefix > 0 ? (" (+" + std::to_string(c.shared_prefix) + " shared)").c_str() : "", c.osl,
              c.static_batch > 0 ? ("static batches of " + std::to_string(c.static_batch)).c_str()
                                 : ("in-flight, concurrency " + (c.concurrency > 0 ? std::to_string(c.concurrency) : std::string("all"))).c_str(),
              o.prefix_cache ? "on" : "off");
  std::fflush(stdout);
  auto out = bench::run_throughput(m.runner.get(), executor_options(o.model, o.prefix_cache), c, m.model_dir);
  if (!out.is_ok()) return fail("throughput", out.status());
  const int rc = finish("throughput", *out, o.json);
  if (rc == 0 && out->doc["results"]["num_errors"].get<int64_t>() > 0) {
    std::fprintf(stderr, "anvil bench throughput: %lld requests failed, first: %s\n",
                 static_cast<long long>(out->doc["results"]["num_errors"].get<int64_t>()),
                 out->doc["errors"].empty() ? "" : out->doc["errors"][0].get<std::string>().c_str());
    return 1;
  }
  return rc;
}

int run_serve(const ServeOptions& o) {
  const bench::ServeConfig& c = o.config;
  std::printf("anvil bench serve: %s, %lld requests, rate %s req/s, concurrency %s, %s, OSL %d\n", c.url.c_str(),
              static_cast<long long>(c.num_requests), c.rate > 0 ? bench::format("%g", c.rate).c_str() : "inf",
              c.concurrency > 0 ? std::to_string(c.concurrency).c_str() : "unbounded",
              c.dataset.empty() ? ("ISL " + std::to_string(c.isl) + " (token ids)").c_str() : c.dataset.c_str(), c.osl);
  std::fflush(stdout);
  auto out = bench::run_serve(c);
  if (!out.is_ok()) return fail("serve", out.status());
  out->table.print(stdout);
  if (!o.json.empty()) {
    Status s = bench::write_json(o.json, out->doc);
    if (!s.is_ok()) return fail("serve", s);
  }
  const auto& r = out->doc["results"];
  if (r["num_errors"].get<int64_t>() > 0) {
    std::fprintf(stderr, "anvil bench serve: %lld of %lld requests failed, first: %s\n",
                 static_cast<long long>(r["num_errors"].get<int64_t>()), static_cast<long long>(c.num_requests),
                 out->doc["errors"][0].get<std::string>().c_str());
  }
  return r["num_requests_completed"].get<int64_t>() > 0 ? 0 : 1;
}

void add_shape(CLI::App* cmd, int32_t* isl, int32_t* osl) {
  cmd->add_option("--isl", *isl, "Input (prompt) length in tokens")->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--osl", *osl, "Output length in tokens (ignore_eos: always exactly this many)")
      ->check(CLI::Range(1, 1 << 24));
}

void setup(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Measure latency, offline throughput or online serving load");
  bench->require_subcommand(1);

  auto lo = std::make_shared<LatencyOptions>();
  auto* lat = bench->add_subcommand("latency", "Batch-B latency: TTFT, decode step time, and their floors");
  add_model_options(lat, &lo->model);
  add_shape(lat, &lo->config.isl, &lo->config.osl);
  lat->add_option("--batch", lo->config.batch, "Requests run together")->check(CLI::Range(1, 4096));
  lat->add_option("--warmup", lo->config.warmup, "Untimed iterations first")->check(CLI::Range(0, 1000));
  lat->add_option("--iters", lo->config.iters, "Timed iterations (medians are reported)")->check(CLI::Range(1, 100000));
  lat->add_option("--seed", lo->config.seed, "Seed of the synthetic prompts");
  lat->add_option("--bandwidth", lo->config.bandwidth_gbps, "Memory bandwidth ceiling in GB/s (H100 SXM: 3000)")
      ->check(CLI::PositiveNumber);
  lat->add_option("--peak-tflops", lo->config.peak_tflops, "GEMM peak in TFLOP/s for the prefill floor (H100 bf16: 790)")
      ->check(CLI::PositiveNumber);
  lat->add_option("--timeout", lo->config.timeout_s, "Seconds one iteration may take")->check(CLI::PositiveNumber);
  lat->add_option("--json", lo->json, "Write the JSON report here ('-': stdout)");
  lat->callback([lo] { set_exit_code(run_latency(*lo)); });

  auto to = std::make_shared<ThroughputOptions>();
  auto* thr = bench->add_subcommand("throughput", "Offline throughput of N requests through the executor");
  add_model_options(thr, &to->model);
  add_shape(thr, &to->config.isl, &to->config.osl);
  thr->add_option("--num-requests", to->config.num_requests, "Requests in all")->check(CLI::Range(1, 10000000));
  thr->add_option("--concurrency", to->config.concurrency, "Most requests in flight at once (0: all)")
      ->check(CLI::NonNegativeNumber);
  thr->add_option("--seed", to->config.seed, "Seed of the synthetic prompts");
  thr->add_option("--static-batch", to->config.static_batch,
                  "Static batching baseline: run requests in fixed batches of this many, each after the last ended")
      ->check(CLI::NonNegativeNumber);
  thr->add_option("--shared-prefix", to->config.shared_prefix,
                  "Every prompt starts with the same this-many tokens (a shared system prompt) before its ISL own")
      ->check(CLI::Range(0, 1 << 24));
  thr->add_flag("!--no-prefix-cache", to->prefix_cache, "Disable the prefix cache (compare with it on)");
  thr->add_option("--timeout", to->config.timeout_s, "Seconds the whole run may take")->check(CLI::PositiveNumber);
  thr->add_option("--json", to->json, "Write the JSON report here ('-': stdout)");
  thr->callback([to] { set_exit_code(run_throughput(*to)); });

  auto so = std::make_shared<ServeOptions>();
  auto* srv = bench->add_subcommand("serve", "Online load on an OpenAI-compatible server: TTFT, ITL, goodput");
  bench::ServeConfig& sc = so->config;
  srv->add_option("--url", sc.url, "Server address, e.g. http://127.0.0.1:8000");
  srv->add_option("--rate", sc.rate, "Poisson arrival rate in requests/s (0: all at once)")->check(CLI::NonNegativeNumber);
  srv->add_option("--concurrency", sc.concurrency, "Most requests in flight (0: unbounded)")->check(CLI::NonNegativeNumber);
  srv->add_option("--num-requests", sc.num_requests, "Requests in all")->check(CLI::Range(1, 10000000));
  add_shape(srv, &sc.isl, &sc.osl);
  srv->add_option("--vocab-size", sc.vocab_size, "Synthetic prompt ids are drawn from [0, this)")->check(CLI::Range(1, 1 << 30));
  srv->add_option("--dataset", sc.dataset, "JSONL of {\"prompt\": text, \"output_len\": n} used instead of token ids");
  srv->add_option("--model", sc.model, "The 'model' field (default: the first of GET /v1/models)");
  srv->add_option("--api-key", sc.api_key, "Bearer token");
  srv->add_flag("!--no-return-token-ids", sc.return_token_ids,
               "Do not send return_token_ids (for servers that refuse unknown fields)");
  srv->add_option("--slo-ttft-ms", sc.slo_ttft_ms, "Goodput: TTFT bound in ms (0: none)")->check(CLI::NonNegativeNumber);
  srv->add_option("--slo-itl-ms", sc.slo_itl_ms, "Goodput: bound on a request's mean inter-token time in ms (0: none)")
      ->check(CLI::NonNegativeNumber);
  srv->add_option("--seed", sc.seed, "Seed of prompts and arrivals");
  srv->add_option("--request-timeout", sc.request_timeout_s, "Seconds one request may take")->check(CLI::PositiveNumber);
  srv->add_option("--connect-timeout", sc.connect_timeout_s, "Seconds to connect")->check(CLI::PositiveNumber);
  srv->add_option("--max-duration", sc.max_duration_s, "Seconds the whole run may take")->check(CLI::PositiveNumber);
  srv->add_option("--json", so->json, "Write the JSON report here ('-': stdout)");
  srv->callback([so] { set_exit_code(run_serve(*so)); });
}

CommandRegistrar reg("bench", setup);

}  // namespace
}  // namespace anvil::cli
