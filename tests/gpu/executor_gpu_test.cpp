// The executor on the CUDA backend (skipped without a GPU): in-flight batching with CUDA-graph
// decode steps, chunked prefill and preemption, on the golden models in fp16. Checks: every
// request finishes with its token count, the pool is whole afterwards, a seeded request draws the
// same random stream alone and in a crowd, and greedy decoding of prompt 0 follows HF's tokens at every step whose
// top-2 margin is wide enough for fp16 to be decisive, until a near-tie legitimately diverges.
#include <gtest/gtest.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "anvil/executor.h"
#include "backend/backend.h"
#include "model/checkpoint/checkpoint.h"
#include "runtime/model_loader.h"

namespace anvil {
namespace {

std::string model_dir(const std::string& name) { return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name; }

struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  bool done = false;
  Output last;
  OutputCallback callback() {
    return [this](const Output& o) {
      std::lock_guard<std::mutex> lk(mu);
      tokens.insert(tokens.end(), o.tokens.begin(), o.tokens.end());
      if (o.finished) {
        done = true;
        last = o;
        cv.notify_all();
      }
    };
  }
  void wait() {
    std::unique_lock<std::mutex> lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(60), [&] { return done; }));
  }
};

struct GpuFixture {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<Executor> executor;
  explicit GpuFixture(const std::string& model, int32_t kv_blocks = 64, int32_t step_tokens = 64) {
    BackendOptions bo;
    bo.kind = BackendKind::kCuda;
    bo.compute_dtype = DType::kF16;
    backend = std::move(create_backend(bo)).value();
    RunnerOptions o;
    o.max_num_tokens = 128;
    o.max_num_seqs = 32;
    o.block_size = 16;
    o.num_kv_blocks = kv_blocks;
    auto r = load_model(model_dir(model), backend.get(), o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    runner = std::move(r).value();
    ExecutorOptions eo;
    eo.max_num_tokens = step_tokens;
    eo.max_num_seqs = 32;
    executor = std::move(Executor::create(runner.get(), eo)).value();
  }
};

Request greedy(std::vector<int32_t> prompt, int32_t n) {
  Request r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = n;
  r.sampling.ignore_eos = true;
  return r;
}

TEST(ExecutorGpu, GreedyFollowsHfWhileMarginsAreWide) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  for (const char* model : {"llama3_gqa", "mistral", "qwen2", "qwen3"}) {
    GpuFixture f(model);
    std::ifstream in(model_dir(model) + "/golden.json");
    auto meta = nlohmann::json::parse(in);
    auto golden = std::move(SafetensorsFile::open(model_dir(model) + "/golden.safetensors")).value();
    const Tensor& gl = golden->tensors().at("prompt0.greedy_logits").view;
    const int64_t vocab = gl.dim(1);
    std::vector<float> logits(static_cast<size_t>(gl.numel()));
    convert_to_f32(gl.dtype, gl.data, logits.data(), logits.size());
    Collector c;
    ASSERT_TRUE(f.executor->enqueue(greedy(meta["prompts"][0].get<std::vector<int32_t>>(), 32), c.callback()).is_ok());
    c.wait();
    auto want = meta["greedy"][0].get<std::vector<int32_t>>();
    ASSERT_EQ(c.tokens.size(), 32u);
    int decisive = 0;
    for (size_t k = 0; k < want.size(); ++k) {
      const float* w = logits.data() + k * vocab;
      std::vector<float> s(w, w + vocab);
      std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<float>());
      const float range = s[0] - *std::min_element(w, w + vocab);
      if (s[0] - s[1] < 0.05f * range) {
        if (c.tokens[k] != want[k]) break;  // a near-tie: fp16 may pick the other token; from here the paths differ
        continue;
      }
      EXPECT_EQ(c.tokens[k], want[k]) << model << " step " << k;
      if (c.tokens[k] != want[k]) break;
      ++decisive;
    }
    std::printf("  %s: greedy equal to HF for the first %d decisive steps\n", model, decisive);
    EXPECT_GT(decisive, 0) << model;
  }
}

TEST(ExecutorGpu, BatchingPreemptionAndSeededSampling) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  // 12 blocks of 16 tokens for 24 requests of up to 3 + 40 tokens: forces preemption.
  GpuFixture f("qwen3", 12, 16);
  std::vector<Collector> c(24);
  for (size_t i = 0; i < c.size(); ++i) {
    Request r = greedy({1, static_cast<int32_t>(i + 3), static_cast<int32_t>(3 * i + 7)}, 20 + static_cast<int32_t>(i));
    if (i % 2) {
      r.sampling.temperature = 0.9f;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = 100 + i;
    }
    ASSERT_TRUE(f.executor->enqueue(r, c[i].callback()).is_ok());
  }
  for (size_t i = 0; i < c.size(); ++i) {
    c[i].wait();
    EXPECT_EQ(c[i].tokens.size(), 20u + i);
  }
  EXPECT_GT(f.executor->stats().num_preemptions, 0);
  EXPECT_EQ(f.executor->stats().kv_blocks_free, f.executor->stats().kv_blocks_total);
  // The seeded request 5 alone draws from the same random stream as inside the crowd. On the GPU
  // the logits are not bitwise batch-invariant (a batch of 1 takes the skinny GEMM, a crowd
  // cuBLASLt; a preempted request is recomputed by the prefill kernel), so a near-tie may flip and
  // the two runs part there: require a common prefix, not equality. Exact batch independence is
  // tested on the CPU backend (tests/executor) and for the sampler itself in tests/cuda.
  GpuFixture g("qwen3");
  Request r = greedy({1, 8, 22}, 25);
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.95f;
  r.sampling.seed = 105;
  Collector alone;
  ASSERT_TRUE(g.executor->enqueue(r, alone.callback()).is_ok());
  alone.wait();
  size_t common = 0;
  while (common < alone.tokens.size() && alone.tokens[common] == c[5].tokens[common]) ++common;
  std::printf("  seeded request: alone and in the crowd agree on %zu of 25 tokens\n", common);
  EXPECT_GE(common, 5u);
}

}  // namespace
}  // namespace anvil
