// The engine round trip on the CUDA backend (skipped without a GPU): `anvil build` for CUDA
// (fp16, with GEMM autotuning on the device) then load_engine, against loading the HF folder
// directly on the same GPU. The engine's weights are the same bytes, but autotuning may pin other
// cuBLASLt algorithms (another summation order), so logits must agree to fp16 rounding (relative
// norm error < 2e-3) rather than bit for bit, with equal argmax at every position.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "build/engine_builder.h"
#include "build/engine_loader.h"
#include "build/passes/gemm_autotune.h"
#ifdef ANVIL_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "runtime/model_loader.h"

namespace anvil {
namespace {

std::string model_dir(const std::string& name) { return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name; }

std::vector<float> prefill_logits(ModelRunner& runner, Backend& backend, const std::vector<int32_t>& ids) {
  const int32_t bs = runner.options().block_size;
  StepInput s;
  s.token_ids = ids;
  s.seq_starts = {0, static_cast<int32_t>(ids.size())};
  s.context_lens = {static_cast<int32_t>(ids.size())};
  std::vector<int32_t> table;
  for (int32_t b = 0; b * bs < static_cast<int32_t>(ids.size()); ++b) table.push_back(b);
  s.block_tables = {table};
  for (int32_t p = 0; p < static_cast<int32_t>(ids.size()); ++p) {
    s.positions.push_back(p);
    s.slot_map.push_back(p);
    s.logit_rows.push_back(p);
  }
  Tensor logits;
  Status st = runner.forward(s, &logits);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  std::vector<float> host(static_cast<size_t>(logits.numel()));
  EXPECT_TRUE(backend.copy_d2h(host.data(), logits.data, logits.nbytes()).is_ok());
  return host;
}

class EngineGpu : public ::testing::TestWithParam<const char*> {};

TEST_P(EngineGpu, BuildLoadMatchesDirectLoad) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  BackendOptions bo;
  bo.kind = BackendKind::kCuda;
  bo.compute_dtype = DType::kF16;
  auto backend = std::move(create_backend(bo)).value();
  const std::string dir = model_dir(GetParam());
  const std::string path = std::filesystem::temp_directory_path().string() + "/anvil_gpu_" + GetParam() + ".anvil";
  EngineBuildOptions eo;
  eo.backend = BackendKind::kCuda;
  eo.dtype = DType::kF16;
  eo.max_batch = 4;
  eo.max_num_tokens = 128;
  eo.kv_block_size = 16;
  auto built = build_engine(dir, eo, path, backend.get());
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  RunnerOptions ro;
  ro.max_num_tokens = 128;
  ro.max_num_seqs = 4;
  ro.max_logit_rows = 128;
  ro.block_size = 16;
  ro.num_kv_blocks = 32;
  auto loaded = load_engine(path, backend.get(), ro);
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
  auto direct = load_model(dir, backend.get(), ro);
  ASSERT_TRUE(direct.is_ok()) << direct.status().to_string();
  EXPECT_EQ((*loaded)->weight_bytes(), (*direct)->weight_bytes());

  std::ifstream in(dir + "/golden.json");
  auto prompt = nlohmann::json::parse(in)["prompts"].back().get<std::vector<int32_t>>();
  auto a = prefill_logits(**loaded, *backend, prompt);
  auto b = prefill_logits(**direct, *backend, prompt);
  ASSERT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(std::isfinite(a[i]));
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  const double err = std::sqrt(num / den);
  EXPECT_LT(err, 2e-3);
  const int64_t vocab = (*direct)->spec().vocab_size;
  for (size_t t = 0; t < prompt.size(); ++t) {
    const float* ra = a.data() + t * vocab;
    const float* rb = b.data() + t * vocab;
    EXPECT_EQ(std::max_element(ra, ra + vocab) - ra, std::max_element(rb, rb + vocab) - rb) << "position " << t;
  }
  std::printf("  %s: engine vs direct load on the GPU, logits rel err %.2e\n", GetParam(), err);
  std::filesystem::remove(path);
}

#ifdef ANVIL_HAVE_CUDA
// The autotuned cuBLASLt algorithms travel in the engine: every entry carries its algorithm and
// the cuBLASLt version, and a fresh backend pins each of them without timing.
TEST(EngineGpuTuning, StoredAlgorithmsPinWithoutTiming) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  BackendOptions bo;
  bo.kind = BackendKind::kCuda;
  bo.compute_dtype = DType::kBF16;
  auto builder_backend = std::move(create_backend(bo)).value();
  const std::string path = std::filesystem::temp_directory_path().string() + "/anvil_gpu_tuning.anvil";
  EngineBuildOptions eo;
  eo.backend = BackendKind::kCuda;
  eo.dtype = DType::kBF16;
  eo.max_batch = 8;
  eo.max_num_tokens = 256;
  auto built = build_engine(model_dir("llama3_gqa"), eo, path, builder_backend.get());
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  builder_backend.reset();
  auto file = EngineFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  const EngineHeader& h = file->header();
  ASSERT_EQ(h.gemm_tuning_status, "tuned");
  ASSERT_FALSE(h.gemm_tuning.empty());
  auto fresh = std::move(create_backend(bo)).value();
  auto* cuda = dynamic_cast<CudaBackend*>(fresh.get());
  ASSERT_NE(cuda, nullptr);
  int pinned = 0;
  for (const GemmTuning& t : h.gemm_tuning) {
    ASSERT_EQ(t.algo.size(), 128u) << "M=" << t.m_bucket << " N=" << t.n << " K=" << t.k;
    EXPECT_EQ(t.cublaslt_version, cuda::cublaslt_version());
    cuda::LinearAlgoBytes algo{};
    for (size_t i = 0; i < 8; ++i) algo[i] = std::stoull(t.algo.substr(i * 16, 16), nullptr, 16);
    Status st = cuda->pin_linear_algorithm(t.m_bucket, t.n, t.k, *dtype_from_name(t.out_dtype), t.has_bias, algo);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    pinned += st.is_ok();
  }
  // The loader's path: pinned from the engine, nothing re-timed (fast).
  const auto t0 = std::chrono::steady_clock::now();
  int retimed = -1;
  auto applied = apply_gemm_tuning(h, fresh.get(), &retimed);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(applied.is_ok()) << applied.status().to_string();
  std::printf("  %d stored GEMM algorithms pinned; apply_gemm_tuning: %d winners, %d re-timed, %.1f ms\n", pinned, *applied,
              retimed, ms);
  EXPECT_EQ(retimed, 0);
  std::filesystem::remove(path);
}
#endif

INSTANTIATE_TEST_SUITE_P(Models, EngineGpu, ::testing::Values("llama3_gqa", "qwen2", "qwen3"));

}  // namespace
}  // namespace anvil
