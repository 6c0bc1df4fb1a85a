// Round trip on the golden models: build -> load gives bit-for-bit the logits of loading the HF
// folder directly (CPU backend), the header carries the model spec and graph exactly, and the
// weights in the file are the packed, converted tensors with valid checksums.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "build/engine_builder.h"
#include "build/engine_json.h"
#include "build/engine_loader.h"
#include "build_test_util.h"
#include "model/checkpoint/checkpoint.h"
#include "runtime/model_loader.h"

namespace anvil {
namespace {

using test::golden_dir;

const char* kModels[] = {"llama3_gqa", "llama2_mha", "mistral", "qwen2", "qwen3"};

EngineBuildOptions cpu_options() {
  EngineBuildOptions o;
  o.backend = BackendKind::kCpu;
  o.dtype = DType::kF32;
  o.max_batch = 4;
  o.max_num_tokens = 64;
  o.kv_block_size = 4;
  return o;
}

class EngineRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(EngineRoundTrip, LogitsBitIdenticalToHfFolder) {
  const std::string dir = golden_dir(GetParam());
  const std::string engine = test::scratch_dir() + "/model.anvil";
  auto built = build_engine(dir, cpu_options(), engine);
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  EXPECT_EQ(built->ops_removed, 0);  // every op of a llama-family graph feeds the logits
  EXPECT_GT(built->num_packed_weights, 0);
  EXPECT_LT(built->activation_peak_bytes, built->activation_unplanned_bytes);

  CpuBackend direct_backend, engine_backend;
  auto direct = load_model(dir, &direct_backend, test::small_runner());
  ASSERT_TRUE(direct.is_ok()) << direct.status().to_string();
  auto loaded = load_engine(engine, &engine_backend, test::small_runner());
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
  EXPECT_EQ((*loaded)->weight_bytes(), (*direct)->weight_bytes());
  EXPECT_EQ((*loaded)->definition().graph.to_string(), (*direct)->definition().graph.to_string());

  // The golden prompt made for this model's vocabulary.
  std::ifstream in(dir + "/golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  const std::vector<int32_t> prompt = golden["prompts"].back().get<std::vector<int32_t>>();
  ASSERT_GT(prompt.size(), 8u);
  std::vector<float> want = test::run_logits(**direct, prompt, 4);
  std::vector<float> got = test::run_logits(**loaded, prompt, 4);
  ASSERT_EQ(got.size(), want.size());
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << GetParam();
}

TEST_P(EngineRoundTrip, HeaderCarriesSpecGraphAndPackedWeights) {
  const std::string dir = golden_dir(GetParam());
  const std::string engine = test::scratch_dir() + "/model.anvil";
  ASSERT_TRUE(build_engine(dir, cpu_options(), engine).is_ok());
  auto file = EngineFile::open(engine);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  const EngineHeader& h = file->header();

  auto spec = load_model_config(dir);
  ASSERT_TRUE(spec.is_ok());
  EXPECT_EQ(model_spec_to_json(h.spec).dump(), model_spec_to_json(*spec).dump());
  EXPECT_EQ(h.spec.rms_norm_eps, spec->rms_norm_eps);
  EXPECT_EQ(h.spec.eos_token_ids, spec->eos_token_ids);
  EXPECT_EQ(h.options.max_seq_len, spec->max_position_embeddings);  // 0 resolved to the model's limit
  EXPECT_EQ(h.anvil_version, ANVIL_VERSION);
  EXPECT_EQ(h.options.backend, BackendKind::kCpu);
  EXPECT_TRUE(h.gpu_arch.empty());

  auto def = define_model(*spec);
  ASSERT_TRUE(def.is_ok());
  EXPECT_EQ(h.graph.to_string(), def->graph.to_string());
  ASSERT_EQ(h.graph.nodes().size(), def->graph.nodes().size());
  for (size_t i = 0; i < h.graph.nodes().size(); ++i) {
    const OpAttrs& a = h.graph.nodes()[i].attrs;
    const OpAttrs& b = def->graph.nodes()[i].attrs;
    EXPECT_EQ(f32_bits(a.eps), f32_bits(b.eps));
    EXPECT_EQ(f32_bits(a.scale), f32_bits(b.scale));
    EXPECT_EQ(a.layer, b.layer);
  }
  MemoryPlan plan = plan_memory(def->graph, 64, 4, 4);
  EXPECT_EQ(h.plan.arena_bytes, plan.arena_bytes);
  EXPECT_EQ(h.plan.offsets, plan.offsets);

  // The packed QKV of layer 0 is q | k | v of the checkpoint, rows concatenated, in f32.
  auto ckpt = Checkpoint::open(dir);
  ASSERT_TRUE(ckpt.is_ok());
  size_t qkv = h.weights.size();
  for (size_t i = 0; i < h.weights.size(); ++i) {
    EXPECT_EQ(h.weights[i].offset % kEngineAlignment, 0u);
    EXPECT_TRUE(file->verify_weight(i).is_ok());
    if (h.weights[i].name == "layers.0.attn.qkv.weight") qkv = i;
  }
  ASSERT_LT(qkv, h.weights.size());
  const EngineWeight& w = h.weights[qkv];
  ASSERT_EQ(w.packed_from.size(), 3u);
  const float* data = reinterpret_cast<const float*>(file->weight_data(qkv));
  int64_t row = 0;
  for (const std::string& hf : w.packed_from) {
    auto t = ckpt->get(hf);
    ASSERT_TRUE(t.is_ok());
    std::vector<float> src(static_cast<size_t>(t->view.numel()));
    convert_to_f32(t->view.dtype, t->view.data, src.data(), src.size());
    EXPECT_EQ(std::memcmp(data + row * w.shape[1], src.data(), src.size() * 4), 0) << hf;
    row += t->view.dim(0);
  }
  EXPECT_EQ(row, w.shape[0]);
}

INSTANTIATE_TEST_SUITE_P(Golden, EngineRoundTrip, ::testing::ValuesIn(kModels));

TEST(EngineBuild, UnusedWeightIsDroppedAndLogitsUnchanged) {
  const std::string dir = golden_dir("llama3_gqa");
  auto spec = load_model_config(dir);
  ASSERT_TRUE(spec.is_ok());
  auto def = define_model(*spec);
  ASSERT_TRUE(def.is_ok());
  // A weight in the table that the graph never reads (as a model with an unused tensor has).
  WeightSource extra{"extra.unused", {spec->hidden_size}, {"model.norm.weight"}};
  def->weights.push_back(extra);
  auto ckpt = Checkpoint::open(dir);
  ASSERT_TRUE(ckpt.is_ok());
  const std::string engine = test::scratch_dir() + "/model.anvil";
  auto built = build_engine_from_definition(*def, *ckpt, cpu_options(), engine);
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  EXPECT_EQ(built->weights_removed, std::vector<std::string>{"extra.unused"});
  auto file = EngineFile::open(engine);
  ASSERT_TRUE(file.is_ok());
  for (const EngineWeight& w : file->header().weights) EXPECT_NE(w.name, "extra.unused");
  EXPECT_EQ(file->header().dce_weights_removed, std::vector<std::string>{"extra.unused"});

  CpuBackend a, b;
  auto direct = load_model(dir, &a, test::small_runner());
  auto loaded = load_engine(engine, &b, test::small_runner());
  ASSERT_TRUE(direct.is_ok() && loaded.is_ok());
  auto want = test::run_logits(**direct, {1, 347, 27, 168}, 2);
  auto got = test::run_logits(**loaded, {1, 347, 27, 168}, 2);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0);
}

TEST(EngineBuild, RunnerSizesComeFromTheEngine) {
  const std::string engine = test::scratch_dir() + "/model.anvil";
  EngineBuildOptions o = cpu_options();
  o.max_batch = 3;
  o.max_num_tokens = 40;
  o.max_seq_len = 96;
  o.kv_block_size = 8;
  ASSERT_TRUE(build_engine(golden_dir("qwen3"), o, engine).is_ok());
  CpuBackend backend;
  auto r = load_engine(engine, &backend, test::small_runner());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ((*r)->options().max_num_seqs, 3);
  EXPECT_EQ((*r)->options().max_num_tokens, 40);
  EXPECT_EQ((*r)->options().max_seq_len, 96);
  EXPECT_EQ((*r)->options().block_size, 8);
}

}  // namespace
}  // namespace anvil
