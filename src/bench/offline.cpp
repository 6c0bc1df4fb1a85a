// Latency and offline throughput through the in-process Executor. Every request is greedy with
// ignore_eos, so each produces exactly OSL tokens and runs are comparable across engines.
#include "bench/offline.h"

#include <algorithm>
#include <chrono>

#include "bench/ceilings.h"
#include "bench/request_driver.h"
#include "bench/stats.h"
#include "bench/workload.h"
#include "core/dtype.h"

namespace anvil::bench {
namespace {

using Clock = std::chrono::steady_clock;

Request make_request(uint64_t seed, uint64_t index, int32_t isl, int32_t osl, int64_t vocab) {
  Request r;
  r.prompt = synthetic_prompt(seed, index, isl, 0, vocab);
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = osl;
  r.sampling.ignore_eos = true;
  r.streaming = true;
  return r;
}

// Refuses shapes the executor would reject or silently distort (preemption under a KV pool too
// small for the batch).
Status check_fits(const Executor& ex, ModelRunner& runner, int32_t isl, int32_t osl, int64_t batch,
                  const char* batch_flag) {
  if (isl < 1) return invalid_argument("--isl must be at least 1");
  if (osl < 1) return invalid_argument("--osl must be at least 1");
  if (batch < 1) return invalid_argument(std::string(batch_flag) + " must be at least 1");
  if (isl + osl > ex.max_context_len()) {
    return invalid_argument("--isl + --osl = " + std::to_string(isl + osl) + " exceeds the context limit " +
                            std::to_string(ex.max_context_len()) + " (raise --max-seq-len or use shorter requests)");
  }
  const int64_t bs = runner.options().block_size;
  const int64_t blocks_per_seq = (isl + osl + bs - 1) / bs;
  const int64_t total = runner.kv_cache().num_blocks();
  if (blocks_per_seq > total) {
    return invalid_argument("one request of " + std::to_string(isl + osl) + " tokens needs " +
                            std::to_string(blocks_per_seq) + " KV blocks; the pool has " + std::to_string(total));
  }
  return Status::ok();
}

const char* device_name(Device d) {
  switch (d) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "cpu";
}

nlohmann::json header(const char* mode, const ModelRunner& runner, const std::string& model) {
  return {{"schema", kSchema},
          {"mode", mode},
          {"engine", "anvil"},
          {"meta", run_meta()},
          {"model", model},
          {"backend", runner.backend()->name()},
          {"device", device_name(runner.backend()->device())}};
}

// Three decimals in the usual range; significant digits for the tiny floors of small models.
std::string ms(double seconds) {
  const double v = seconds * 1e3;
  return v >= 0.1 || v == 0 ? format("%.3f", v) : format("%.3g", v);
}
std::string rate(double v) { return format("%.1f", v); }
std::string pct(double f) { return format("%.1f%%", f * 100.0); }

}  // namespace

Result<BenchOutput> run_latency(ModelRunner* runner, const ExecutorOptions& options, const LatencyConfig& c,
                                const std::string& model) {
  if (c.iters < 1) return invalid_argument("--iters must be at least 1");
  if (c.warmup < 0) return invalid_argument("--warmup must not be negative");
  if (!(c.bandwidth_gbps > 0)) return invalid_argument("--bandwidth must be positive (GB/s)");
  if (!(c.peak_tflops > 0)) return invalid_argument("--peak-tflops must be positive");
  if (c.batch > options.max_num_seqs) {
    return invalid_argument("--batch " + std::to_string(c.batch) + " exceeds --max-num-seqs " +
                            std::to_string(options.max_num_seqs) + ": the batch would not run as one");
  }
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, Executor::create(runner, options));
  ANVIL_RETURN_IF_ERROR(check_fits(*ex, *runner, c.isl, c.osl, c.batch, "--batch"));
  const int64_t bs = runner->kv_cache().block_size();
  const int64_t need = c.batch * ((c.isl + c.osl + bs - 1) / bs);
  if (need > runner->kv_cache().num_blocks()) {
    return invalid_argument("--batch " + std::to_string(c.batch) + " of " + std::to_string(c.isl + c.osl) +
                            " tokens needs " + std::to_string(need) + " KV blocks; the pool has " +
                            std::to_string(runner->kv_cache().num_blocks()) + " (requests would be preempted)");
  }

  struct Iter {
    double ttft = 0, e2e = 0, step = 0;
    int64_t tokens = 0;
  };
  std::vector<Iter> iters;
  uint64_t index = 0;
  for (int32_t it = 0; it < c.warmup + c.iters; ++it) {
    std::vector<Request> reqs;
    for (int32_t b = 0; b < c.batch; ++b) reqs.push_back(make_request(c.seed, index++, c.isl, c.osl, ex->vocab_size()));
    DriveOptions o;
    o.timeout_s = c.timeout_s;
    DriveResult r = drive_requests(ex.get(), std::move(reqs), o);
    Iter x;
    for (const RequestRecord& rec : r.records) {
      if (!rec.ok()) return internal_error("latency iteration " + std::to_string(it) + ": " + (rec.error.empty() ? "request cancelled" : rec.error));
      if (rec.output_tokens != c.osl) {
        return internal_error("latency iteration " + std::to_string(it) + ": a request produced " +
                              std::to_string(rec.output_tokens) + " tokens, expected --osl " + std::to_string(c.osl));
      }
      x.ttft = std::max(x.ttft, rec.first_token_s);  // from the first enqueue, as e2e
      x.e2e = std::max(x.e2e, rec.finish_s);
      x.tokens += rec.output_tokens;
    }
    x.step = c.osl > 1 ? (x.e2e - x.ttft) / (c.osl - 1) : 0.0;
    if (it >= c.warmup) iters.push_back(x);
  }

  std::vector<double> ttft, e2e, step;
  for (const Iter& x : iters) {
    ttft.push_back(x.ttft);
    e2e.push_back(x.e2e);
    step.push_back(x.step);
  }
  const double ttft_med = median(ttft), e2e_med = median(e2e), step_med = median(step);
  const double prefill_tok_s = ttft_med > 0 ? c.batch * static_cast<double>(c.isl) / ttft_med : 0;
  const double decode_tok_s = step_med > 0 ? c.batch / step_med : 0;
  const double output_tok_s = e2e_med > 0 ? c.batch * static_cast<double>(c.osl) / e2e_med : 0;

  const int64_t kv_dtype_bytes = static_cast<int64_t>(dtype_size(runner->kv_cache().layer(0).dtype));
  const int64_t weight_dtype_bytes = static_cast<int64_t>(dtype_size(runner->backend()->compute_dtype()));
  const ModelCost cost =
      model_cost(runner->spec(), static_cast<int64_t>(runner->weight_bytes()), weight_dtype_bytes, kv_dtype_bytes);
  const double ctx = mean_decode_context(c.isl, c.osl);
  const double step_bytes = decode_step_bytes(cost, c.batch, ctx);
  const double step_floor = step_bytes / (c.bandwidth_gbps * 1e9);
  // PERFORMANCE.md's convention: every unique parameter once (its decode targets use it).
  const double step_floor_all_params =
      (static_cast<double>(cost.total_params * weight_dtype_bytes) + c.batch * ctx * static_cast<double>(cost.kv_bytes_per_token)) /
      (c.bandwidth_gbps * 1e9);
  const PrefillFlops pf = prefill_flops(cost, c.batch, c.isl);
  const double peak = c.peak_tflops * 1e12;
  const double prefill_floor = (pf.gemm + pf.lm_head) / peak;
  const double prefill_floor_attn = pf.total() / peak;
  const double tokens_in = c.batch * static_cast<double>(c.isl);
  const bool on_gpu = runner->backend()->device() == Device::kCuda;

  BenchOutput out;
  out.doc = header("latency", *runner, model);
  out.doc["config"] = {{"isl", c.isl}, {"osl", c.osl}, {"batch", c.batch}, {"warmup", c.warmup}, {"iters", c.iters},
                       {"seed", c.seed}, {"max_num_tokens", options.max_num_tokens},
                       {"max_num_seqs", options.max_num_seqs}};
  out.doc["results"] = {
      {"ttft_ms", summary_json(summarize(ttft), 1e3)},
      {"e2e_ms", summary_json(summarize(e2e), 1e3)},
      {"decode_step_ms", summary_json(summarize(step), 1e3)},
      {"ttft_ms_median", ttft_med * 1e3},
      {"decode_step_ms_median", step_med * 1e3},
      {"e2e_ms_median", e2e_med * 1e3},
      {"prefill_tok_s", prefill_tok_s},
      {"decode_tok_s", decode_tok_s},
      {"output_tok_s", output_tok_s},
      {"num_output_tokens", static_cast<int64_t>(iters.size()) * c.batch * c.osl},
      {"num_errors", 0},
  };
  out.doc["ceiling"] = {
      {"source", "given"},
      {"applies_to", on_gpu ? "this run" : "the GPU (this run is on the CPU backend)"},
      {"bandwidth_gbps", c.bandwidth_gbps},
      {"peak_tflops", c.peak_tflops},
      {"params", {{"linear", cost.linear_params}, {"lm_head", cost.lm_head_params}, {"total", cost.total_params}}},
      {"weight_bytes", cost.weight_bytes},
      {"embedding_bytes", cost.embedding_bytes},
      {"kv_bytes_per_token", cost.kv_bytes_per_token},
      {"mean_decode_context", ctx},
      {"decode_step_bytes", step_bytes},
      {"decode_step_floor_ms", step_floor * 1e3},
      {"decode_tok_s_ceiling", c.batch / step_floor},
      {"decode_fraction_of_floor", step_med > 0 ? step_floor / step_med : 0.0},
      {"decode_tok_s_ceiling_all_params", c.batch / step_floor_all_params},
      {"prefill_flops", {{"gemm", pf.gemm}, {"lm_head", pf.lm_head}, {"attention", pf.attention}}},
      {"prefill_floor_ms", prefill_floor * 1e3},
      {"prefill_tok_s_ceiling", tokens_in / prefill_floor},
      {"prefill_fraction_of_floor", ttft_med > 0 ? prefill_floor / ttft_med : 0.0},
      {"prefill_floor_with_attention_ms", prefill_floor_attn * 1e3},
      {"prefill_tok_s_ceiling_with_attention", tokens_in / prefill_floor_attn},
  };
  nlohmann::json per_iter = nlohmann::json::array();
  for (const Iter& x : iters) {
    per_iter.push_back({{"ttft_ms", x.ttft * 1e3}, {"e2e_ms", x.e2e * 1e3}, {"decode_step_ms", x.step * 1e3},
                        {"output_tokens", x.tokens}});
  }
  out.doc["iterations"] = per_iter;

  out.table = Table({"latency (median of " + std::to_string(c.iters) + ")", "measured", "floor / ceiling", "of floor"});
  out.table.add_row({"TTFT ms", ms(ttft_med), ms(prefill_floor), pct(ttft_med > 0 ? prefill_floor / ttft_med : 0)});
  out.table.add_row({"prefill tok/s", rate(prefill_tok_s), rate(tokens_in / prefill_floor), ""});
  if (c.osl > 1) {  // with one output token there is no decode step to time
    out.table.add_row({"decode step ms", ms(step_med), ms(step_floor), pct(step_med > 0 ? step_floor / step_med : 0)});
    out.table.add_row({"decode tok/s", rate(decode_tok_s), rate(c.batch / step_floor), ""});
  }
  out.table.add_row({"end-to-end ms", ms(e2e_med), "", ""});
  out.table.add_row({"output tok/s", rate(output_tok_s), "", ""});
  return out;
}

Result<BenchOutput> run_throughput(ModelRunner* runner, const ExecutorOptions& options, const ThroughputConfig& c,
                                   const std::string& model) {
  if (c.num_requests < 1) return invalid_argument("--num-requests must be at least 1");
  if (c.concurrency < 0) return invalid_argument("--concurrency must not be negative");
  if (c.static_batch < 0) return invalid_argument("--static-batch must not be negative");
  if (c.shared_prefix < 0) return invalid_argument("--shared-prefix must not be negative");
  if (c.static_batch > 0 && c.concurrency > 0) return invalid_argument("--static-batch and --concurrency exclude each other");
  if (c.static_batch > options.max_num_seqs) {
    return invalid_argument("--static-batch " + std::to_string(c.static_batch) + " exceeds --max-num-seqs " +
                            std::to_string(options.max_num_seqs) + ": a batch would not run as one");
  }
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, Executor::create(runner, options));
  ANVIL_RETURN_IF_ERROR(check_fits(*ex, *runner, c.isl + c.shared_prefix, c.osl, 1, "--num-requests"));
  const ExecutorStats before = ex->stats();
  const int64_t concurrency = c.concurrency > 0 ? std::min(c.concurrency, c.num_requests) : c.num_requests;

  std::vector<Request> reqs;
  reqs.reserve(static_cast<size_t>(c.num_requests));
  // The shared prefix comes from its own index family, so it never equals a request's own part.
  const std::vector<int32_t> prefix =
      synthetic_prompt(c.seed ^ 0x5348415245440000ull, 0, c.shared_prefix, 0, ex->vocab_size());
  for (int64_t i = 0; i < c.num_requests; ++i) {
    Request r = make_request(c.seed, static_cast<uint64_t>(i), c.isl, c.osl, ex->vocab_size());
    r.prompt.insert(r.prompt.begin(), prefix.begin(), prefix.end());
    reqs.push_back(std::move(r));
  }

  Backend* backend = runner->backend();
  const bool on_gpu = backend->device() == Device::kCuda;
  // The executor publishes stats after each step; before its first step they read zero.
  const int32_t num_blocks = runner->kv_cache().num_blocks();
  int32_t min_free_blocks = num_blocks;
  auto sample_blocks = [&] {
    const ExecutorStats s = ex->stats();
    if (s.kv_blocks_total > 0) min_free_blocks = std::min(min_free_blocks, s.kv_blocks_free);
  };
  size_t peak_used_bytes = 0, total_bytes = 0;
  auto sample_memory = [&] {
    auto mi = backend->memory_info();
    if (!mi.is_ok()) return;
    total_bytes = mi->total_bytes;
    peak_used_bytes = std::max(peak_used_bytes, mi->total_bytes - std::min(mi->free_bytes, mi->total_bytes));
  };
  if (on_gpu) sample_memory();
  auto last_mem = Clock::now();
  DriveOptions o;
  o.concurrency = concurrency;
  o.timeout_s = c.timeout_s;
  o.poll = [&] {
    sample_blocks();
    if (on_gpu && Clock::now() - last_mem > std::chrono::milliseconds(20)) {
      sample_memory();
      last_mem = Clock::now();
    }
  };
  DriveResult r;
  if (c.static_batch > 0) {
    // Static batching: one drive per batch, back to back; records keep run-relative times.
    double offset = 0;
    for (size_t b = 0; b < reqs.size(); b += static_cast<size_t>(c.static_batch)) {
      const size_t end = std::min(reqs.size(), b + static_cast<size_t>(c.static_batch));
      std::vector<Request> batch(std::make_move_iterator(reqs.begin() + b), std::make_move_iterator(reqs.begin() + end));
      o.concurrency = 0;
      o.timeout_s = std::max(1.0, c.timeout_s - offset);
      DriveResult part = drive_requests(ex.get(), std::move(batch), o);
      for (RequestRecord& rec : part.records) {
        for (double* t : {&rec.enqueue_s, &rec.first_token_s, &rec.finish_s}) {
          if (*t >= 0) *t += offset;
        }
        r.records.push_back(rec);
      }
      offset += part.duration_s;
      r.timed_out |= part.timed_out;
      if (part.timed_out) break;
    }
    r.duration_s = offset;
  } else {
    r = drive_requests(ex.get(), std::move(reqs), o);
  }
  if (on_gpu) sample_memory();
  sample_blocks();
  const ExecutorStats after = ex->stats();

  int64_t completed = 0, errors = 0, prompt_tokens = 0, output_tokens = 0;
  std::vector<double> ttft, e2e, tpot;
  nlohmann::json error_list = nlohmann::json::array();
  nlohmann::json per_request = nlohmann::json::array();
  for (const RequestRecord& rec : r.records) {
    output_tokens += rec.output_tokens;
    per_request.push_back({{"ok", rec.ok()},
                           {"ttft_ms", rec.first_token_s >= 0 ? (rec.first_token_s - rec.enqueue_s) * 1e3 : -1.0},
                           {"e2e_ms", rec.finish_s >= 0 ? (rec.finish_s - rec.enqueue_s) * 1e3 : -1.0},
                           {"output_tokens", rec.output_tokens}});
    if (!rec.ok()) {
      ++errors;
      if (error_list.size() < 10) error_list.push_back(rec.error.empty() ? "cancelled" : rec.error);
      continue;
    }
    ++completed;
    prompt_tokens += rec.prompt_tokens;
    ttft.push_back(rec.first_token_s - rec.enqueue_s);
    e2e.push_back(rec.finish_s - rec.enqueue_s);
    if (rec.output_tokens > 1) tpot.push_back((rec.finish_s - rec.first_token_s) / (rec.output_tokens - 1));
  }
  const double dur = r.duration_s;
  auto per_s = [&](double v) { return dur > 0 ? v / dur : 0.0; };
  const int64_t bs = runner->kv_cache().block_size();
  const int64_t peak_blocks = num_blocks - min_free_blocks;
  // KV waste: slots in blocks held by sequences but holding no K/V, summed over every step.
  const int64_t alloc_steps = after.kv_slots_allocated_steps - before.kv_slots_allocated_steps;
  const int64_t used_steps = after.kv_slots_used_steps - before.kv_slots_used_steps;
  const double kv_waste = alloc_steps > 0 ? 1.0 - static_cast<double>(used_steps) / static_cast<double>(alloc_steps) : 0.0;
  const int64_t hits = after.num_prefix_cache_hits - before.num_prefix_cache_hits;
  const int64_t queries = after.num_prefix_cache_queries - before.num_prefix_cache_queries;

  BenchOutput out;
  out.doc = header("throughput", *runner, model);
  out.doc["config"] = {{"isl", c.isl}, {"osl", c.osl}, {"num_requests", c.num_requests},
                       {"concurrency", c.static_batch > 0 ? c.static_batch : concurrency}, {"seed", c.seed},
                       {"batching", c.static_batch > 0 ? "static" : "inflight"}, {"static_batch", c.static_batch},
                       {"shared_prefix", c.shared_prefix}, {"prefix_cache", options.enable_prefix_cache},
                       {"max_num_tokens", options.max_num_tokens}, {"max_num_seqs", options.max_num_seqs}};
  out.doc["results"] = {
      {"duration_s", dur},
      {"timed_out", r.timed_out},
      {"num_requests_completed", completed},
      {"num_errors", errors},
      {"num_prompt_tokens", prompt_tokens},
      {"num_output_tokens", output_tokens},
      {"requests_per_s", per_s(static_cast<double>(completed))},
      {"output_tok_s", per_s(static_cast<double>(output_tokens))},
      {"total_tok_s", per_s(static_cast<double>(prompt_tokens + output_tokens))},
      {"ttft_ms", summary_json(summarize(ttft), 1e3)},
      {"tpot_ms", summary_json(summarize(tpot), 1e3)},
      {"e2e_ms", summary_json(summarize(e2e), 1e3)},
      {"kv_block_size", bs},
      {"kv_blocks_total", num_blocks},
      {"kv_capacity_tokens", static_cast<int64_t>(num_blocks) * bs},
      {"peak_kv_blocks_used", peak_blocks},
      {"kv_waste_fraction", kv_waste},
      {"kv_slots_allocated_steps", alloc_steps},
      {"kv_slots_used_steps", used_steps},
      {"prefix_cache_hit_blocks", hits},
      {"prefix_cache_query_blocks", queries},
      {"num_preemptions", after.num_preemptions - before.num_preemptions},
      {"num_steps", after.num_steps - before.num_steps},
      {"peak_device_memory_bytes", on_gpu ? nlohmann::json(peak_used_bytes) : nlohmann::json(nullptr)},
      {"device_memory_total_bytes", on_gpu ? nlohmann::json(total_bytes) : nlohmann::json(nullptr)},
  };
  out.doc["errors"] = error_list;
  out.doc["requests"] = per_request;

  out.table = Table({"throughput", "value"});
  out.table.add_row({"requests done / errors", format("%lld / %lld", static_cast<long long>(completed), static_cast<long long>(errors))});
  out.table.add_row({"duration s", format("%.3f", dur)});
  out.table.add_row({"requests/s", format("%.3f", per_s(static_cast<double>(completed)))});
  out.table.add_row({"output tok/s", rate(per_s(static_cast<double>(output_tokens)))});
  out.table.add_row({"total tok/s", rate(per_s(static_cast<double>(prompt_tokens + output_tokens)))});
  out.table.add_row({"TTFT p50 / p99 ms", ms(percentile(ttft, 50)) + " / " + ms(percentile(ttft, 99))});
  out.table.add_row({"TPOT p50 / p99 ms", ms(percentile(tpot, 50)) + " / " + ms(percentile(tpot, 99))});
  out.table.add_row({"peak KV blocks used", format("%lld of %d", static_cast<long long>(peak_blocks), num_blocks)});
  out.table.add_row({"KV capacity tokens", std::to_string(static_cast<int64_t>(num_blocks) * bs)});
  out.table.add_row({"KV waste (held, unfilled)", pct(kv_waste)});
  out.table.add_row({"batching", c.static_batch > 0 ? "static, batches of " + std::to_string(c.static_batch) : "in-flight"});
  if (c.shared_prefix > 0) {
    out.table.add_row({"shared prefix tokens / cache", std::to_string(c.shared_prefix) + (options.enable_prefix_cache ? " / on" : " / off")});
    out.table.add_row({"prefix cache hit blocks", format("%lld of %lld", static_cast<long long>(hits), static_cast<long long>(queries))});
  }
  out.table.add_row({"preemptions", std::to_string(after.num_preemptions - before.num_preemptions)});
  if (on_gpu) {
    out.table.add_row({"peak device memory GiB", format("%.2f of %.2f", peak_used_bytes / 1073741824.0, total_bytes / 1073741824.0)});
  }
  return out;
}

}  // namespace anvil::bench
