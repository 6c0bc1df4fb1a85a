// `anvil bench latency` and `throughput` on a golden model through the real Executor (CPU
// backend): the JSON reports add up (every request counted once, OSL tokens each, percentiles
// ordered), the floors come from the model's real shape, and impossible configs are refused.
#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "bench/offline.h"
#include "runtime/model_loader.h"

namespace anvil::bench {
namespace {

using json = nlohmann::json;

struct Model {
  CpuBackend backend;
  std::unique_ptr<ModelRunner> runner;
  explicit Model(const std::string& name, int32_t kv_blocks = 0) {
    RunnerOptions o;
    o.max_num_tokens = 256;
    o.max_num_seqs = 16;
    o.block_size = 16;
    o.num_kv_blocks = kv_blocks;
    o.max_kv_bytes = 64 << 20;
    auto r = load_model(std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name, &backend, o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (r.is_ok()) runner = std::move(r).value();
  }
};

ExecutorOptions executor_options() {
  ExecutorOptions eo;
  eo.max_num_tokens = 256;
  eo.max_num_seqs = 16;
  return eo;
}

void expect_ordered(const json& s, const std::string& what) {
  EXPECT_LE(s["min"].get<double>(), s["p50"].get<double>()) << what;
  EXPECT_LE(s["p50"].get<double>(), s["p90"].get<double>()) << what;
  EXPECT_LE(s["p90"].get<double>(), s["p99"].get<double>()) << what;
  EXPECT_LE(s["p99"].get<double>(), s["max"].get<double>()) << what;
}

TEST(BenchLatency, ReportAddsUpOnGoldenModel) {
  Model m("llama3_gqa");
  ASSERT_TRUE(m.runner);
  LatencyConfig c;
  c.isl = 40;
  c.osl = 12;
  c.batch = 3;
  c.warmup = 1;
  c.iters = 4;
  auto out = run_latency(m.runner.get(), executor_options(), c, "llama3_gqa");
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& d = out->doc;
  EXPECT_EQ(d["schema"], "anvil.bench/1");
  EXPECT_EQ(d["mode"], "latency");
  EXPECT_EQ(d["device"], "cpu");
  ASSERT_EQ(d["iterations"].size(), 4u);
  for (const json& it : d["iterations"]) {
    EXPECT_EQ(it["output_tokens"], 3 * 12);
    EXPECT_GT(it["ttft_ms"].get<double>(), 0.0);
    EXPECT_GT(it["e2e_ms"].get<double>(), it["ttft_ms"].get<double>());
    EXPECT_NEAR(it["decode_step_ms"].get<double>(),
                (it["e2e_ms"].get<double>() - it["ttft_ms"].get<double>()) / 11.0, 1e-9);
  }
  const json& r = d["results"];
  EXPECT_EQ(r["num_output_tokens"], 4 * 3 * 12);
  EXPECT_EQ(r["ttft_ms"]["count"], 4);
  expect_ordered(r["ttft_ms"], "ttft");
  expect_ordered(r["decode_step_ms"], "decode step");
  EXPECT_DOUBLE_EQ(r["ttft_ms_median"].get<double>(), r["ttft_ms"]["p50"].get<double>());
  EXPECT_NEAR(r["decode_tok_s"].get<double>(), 3.0 / (r["decode_step_ms_median"].get<double>() / 1e3), 1e-6);
  EXPECT_NEAR(r["prefill_tok_s"].get<double>(), 3.0 * 40 / (r["ttft_ms_median"].get<double>() / 1e3), 1e-6);

  // Floors from the real shape: the KV bytes per token as the runtime sizes its blocks (f32 on
  // the CPU), the loaded weights less the f32 embedding table.
  const json& f = d["ceiling"];
  const ModelSpec& spec = m.runner->spec();
  EXPECT_EQ(f["source"], "given");
  EXPECT_EQ(f["kv_bytes_per_token"].get<int64_t>(),
            static_cast<int64_t>(KvCache::bytes_per_block(spec, 16, DType::kF32) / 16));
  EXPECT_EQ(f["weight_bytes"].get<int64_t>(), static_cast<int64_t>(m.runner->weight_bytes()));
  EXPECT_EQ(f["embedding_bytes"].get<int64_t>(), spec.vocab_size * spec.hidden_size * 4);
  EXPECT_DOUBLE_EQ(f["mean_decode_context"].get<double>(), 46.0);
  const double bytes = f["weight_bytes"].get<double>() - f["embedding_bytes"].get<double>() +
                       3 * 46.0 * f["kv_bytes_per_token"].get<double>();
  EXPECT_DOUBLE_EQ(f["decode_step_bytes"].get<double>(), bytes);
  EXPECT_NEAR(f["decode_step_floor_ms"].get<double>(), bytes / 3000e9 * 1e3, 1e-12);
  EXPECT_NEAR(f["decode_fraction_of_floor"].get<double>(),
              f["decode_step_floor_ms"].get<double>() / r["decode_step_ms_median"].get<double>(), 1e-9);
  EXPECT_GT(f["prefill_flops"]["gemm"].get<double>(), 0.0);
  EXPECT_NE(out->table.render().find("decode step ms"), std::string::npos);
}

TEST(BenchLatency, RefusesWhatTheModelCannotRun) {
  Model m("llama3_gqa");
  ASSERT_TRUE(m.runner);
  LatencyConfig c;
  c.isl = 100;
  c.osl = 100;  // the golden model's context is 128
  auto r = run_latency(m.runner.get(), executor_options(), c, "x");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("--max-seq-len"), std::string::npos) << r.status().message();
  c.isl = 8;
  c.osl = 8;
  c.batch = 17;
  r = run_latency(m.runner.get(), executor_options(), c, "x");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("--max-num-seqs"), std::string::npos) << r.status().message();
  Model small("llama3_gqa", /*kv_blocks=*/8);
  ASSERT_TRUE(small.runner);
  c.batch = 5;
  c.isl = 20;
  c.osl = 12;  // 2 blocks each, 10 in all > 8
  r = run_latency(small.runner.get(), executor_options(), c, "x");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("preempted"), std::string::npos) << r.status().message();
}

TEST(BenchThroughput, EveryRequestCountedOnce) {
  Model m("qwen2");
  ASSERT_TRUE(m.runner);
  ThroughputConfig c;
  c.isl = 24;
  c.osl = 9;
  c.num_requests = 23;
  c.concurrency = 5;
  auto out = run_throughput(m.runner.get(), executor_options(), c, "qwen2");
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& r = out->doc["results"];
  EXPECT_EQ(out->doc["mode"], "throughput");
  EXPECT_EQ(out->doc["config"]["concurrency"], 5);
  EXPECT_EQ(r["num_requests_completed"], 23);
  EXPECT_EQ(r["num_errors"], 0);
  EXPECT_EQ(r["num_output_tokens"], 23 * 9);
  EXPECT_EQ(r["num_prompt_tokens"], 23 * 24);
  EXPECT_EQ(r["ttft_ms"]["count"], 23);
  EXPECT_EQ(r["e2e_ms"]["count"], 23);
  expect_ordered(r["ttft_ms"], "ttft");
  expect_ordered(r["e2e_ms"], "e2e");
  expect_ordered(r["tpot_ms"], "tpot");
  const double dur = r["duration_s"].get<double>();
  ASSERT_GT(dur, 0.0);
  EXPECT_NEAR(r["output_tok_s"].get<double>(), 23 * 9 / dur, 1e-6);
  EXPECT_NEAR(r["total_tok_s"].get<double>(), 23 * 33 / dur, 1e-6);
  EXPECT_NEAR(r["requests_per_s"].get<double>(), 23 / dur, 1e-9);
  // At most 5 requests of 33 tokens (3 blocks of 16 each) hold blocks at once; at least one does.
  const int64_t peak = r["peak_kv_blocks_used"].get<int64_t>();
  EXPECT_GE(peak, 2);
  EXPECT_LE(peak, 5 * 3);
  EXPECT_EQ(r["kv_capacity_tokens"].get<int64_t>(), r["kv_blocks_total"].get<int64_t>() * 16);
  EXPECT_EQ(r["kv_blocks_total"].get<int64_t>(), m.runner->kv_cache().num_blocks());
  EXPECT_TRUE(r["peak_device_memory_bytes"].is_null());  // CPU backend
}

TEST(BenchThroughput, AllAtOnceUnderPreemption) {
  // 12 blocks of 16 tokens cannot hold 8 requests of 40 tokens at once: the executor preempts and
  // recomputes, and still every request returns exactly OSL tokens.
  Model m("llama3_gqa", /*kv_blocks=*/12);
  ASSERT_TRUE(m.runner);
  ThroughputConfig c;
  c.isl = 20;
  c.osl = 20;
  c.num_requests = 8;
  auto out = run_throughput(m.runner.get(), executor_options(), c, "llama3_gqa");
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& r = out->doc["results"];
  EXPECT_EQ(out->doc["config"]["concurrency"], 8);
  EXPECT_EQ(r["num_requests_completed"], 8);
  EXPECT_EQ(r["num_output_tokens"], 8 * 20);
  EXPECT_LE(r["peak_kv_blocks_used"].get<int64_t>(), 12);
  EXPECT_GT(r["num_preemptions"].get<int64_t>(), 0);
}

TEST(BenchThroughput, StaticBatchesRunOneAfterAnother) {
  // 10 requests in static batches of 4: batches {0-3}, {4-7}, {8-9}; no request of a batch is
  // enqueued before every request of the batch before it finished.
  Model m("qwen2");
  ASSERT_TRUE(m.runner);
  ThroughputConfig c;
  c.isl = 12;
  c.osl = 6;
  c.num_requests = 10;
  c.static_batch = 4;
  auto out = run_throughput(m.runner.get(), executor_options(), c, "qwen2");
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& r = out->doc["results"];
  EXPECT_EQ(out->doc["config"]["batching"], "static");
  EXPECT_EQ(r["num_requests_completed"], 10);
  EXPECT_EQ(r["num_output_tokens"], 10 * 6);
  const json& reqs = out->doc["requests"];
  ASSERT_EQ(reqs.size(), 10u);
  // e2e is measured from each request's enqueue; its end lies before the next batch's TTFT start,
  // which the per-batch durations add up to.
  double sum_e2e_max = 0;
  for (int b = 0; b < 3; ++b) {
    double mx = 0;
    for (int i = 4 * b; i < std::min(10, 4 * b + 4); ++i) mx = std::max(mx, reqs[i]["e2e_ms"].get<double>());
    sum_e2e_max += mx;
  }
  EXPECT_LE(sum_e2e_max / 1e3, r["duration_s"].get<double>() + 1e-6);
  EXPECT_GE(r["kv_waste_fraction"].get<double>(), 0.0);
  EXPECT_LT(r["kv_waste_fraction"].get<double>(), 1.0);
  // Refused: a batch larger than the executor runs at once; static with a concurrency window.
  c.static_batch = 17;
  EXPECT_FALSE(run_throughput(m.runner.get(), executor_options(), c, "qwen2").is_ok());
  c.static_batch = 4;
  c.concurrency = 2;
  EXPECT_FALSE(run_throughput(m.runner.get(), executor_options(), c, "qwen2").is_ok());
}

TEST(BenchThroughput, SharedPrefixHitsTheCacheOnlyWhenOn) {
  Model m("llama3_gqa");
  ASSERT_TRUE(m.runner);
  ThroughputConfig c;
  c.isl = 8;
  c.osl = 4;
  c.num_requests = 6;
  c.concurrency = 1;  // one after another: each finds the prefix registered by the one before
  c.shared_prefix = 64;  // 4 blocks of 16
  ExecutorOptions on = executor_options(), off = executor_options();
  off.enable_prefix_cache = false;
  auto a = run_throughput(m.runner.get(), on, c, "llama3_gqa");
  auto b = run_throughput(m.runner.get(), off, c, "llama3_gqa");
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(a->doc["results"]["num_prompt_tokens"], 6 * (64 + 8));
  EXPECT_EQ(a->doc["results"]["prefix_cache_hit_blocks"], 5 * 4);
  EXPECT_EQ(b->doc["results"]["prefix_cache_hit_blocks"], 0);
  EXPECT_EQ(a->doc["config"]["prefix_cache"], true);
  EXPECT_EQ(b->doc["config"]["prefix_cache"], false);
}

TEST(BenchThroughput, KvWasteIsTheUnfilledPartOfHeldBlocks) {
  // One request at a time, ISL 16 + OSL 8 with blocks of 16: each step holds one or two blocks
  // with num_computed tokens in them, so the waste is exactly computable from the steps:
  // prompt step 16/16, then decode steps computing 17..22 tokens in 2 blocks (32 slots); KV is
  // measured after each step, and after the step computing token 23 the request is over.
  Model m("qwen2");
  ASSERT_TRUE(m.runner);
  ThroughputConfig c;
  c.isl = 16;
  c.osl = 8;
  c.num_requests = 1;
  auto out = run_throughput(m.runner.get(), executor_options(), c, "qwen2");
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& r = out->doc["results"];
  int64_t alloc = 16, used = 16;
  for (int t = 17; t <= 22; ++t) {
    alloc += 32;
    used += t;
  }
  EXPECT_EQ(r["kv_slots_allocated_steps"], alloc);
  EXPECT_EQ(r["kv_slots_used_steps"], used);
  EXPECT_NEAR(r["kv_waste_fraction"].get<double>(), 1.0 - static_cast<double>(used) / alloc, 1e-12);
}

}  // namespace
}  // namespace anvil::bench
