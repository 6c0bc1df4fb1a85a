// Dead-tensor elimination on a graph with dead ops, JSON round trip of a graph, and the engine
// cache: reuse on a second open, a rebuild when options, model files or the cached file change.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "build/engine_cache.h"
#include "build/engine_json.h"
#include "build/passes/dead_code.h"
#include "build/passes/tuning_cache.h"
#include "build_test_util.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using test::golden_dir;

// ids -> embed -> norm -> [linear a -> out] + [linear b -> act_mul]  (b and act_mul are dead)
Graph graph_with_dead_branch() {
  Graph g;
  const int ids = g.input("token_ids", {}, RowScale::kTokens, true);
  g.input("logit_rows", {}, RowScale::kLogitRows, true);
  const int table = g.weight("embed.weight", {10, 4});
  const int h = g.activation("h", {4});
  g.add_node({OpKind::kEmbedding, "embed", {ids, table}, {h}, {}});
  const int nw = g.weight("norm.weight", {4});
  const int n = g.activation("n", {4});
  OpAttrs eps;
  eps.eps = 1e-5f;
  g.add_node({OpKind::kRmsNorm, "norm", {h, -1, nw}, {n}, eps});
  const int wb = g.weight("b.weight", {8, 4});
  const int b = g.activation("b", {8});
  g.add_node({OpKind::kLinear, "b", {n, wb, -1}, {b}, {}});
  const int act = g.activation("act", {4});
  g.add_node({OpKind::kActMul, "act", {b}, {act}, {}});
  const int wa = g.weight("a.weight", {10, 4});
  GraphTensor out;
  out.name = "logits";
  out.shape = {10};
  out.force_f32 = true;
  const int o = g.add_tensor(out);
  g.add_node({OpKind::kLinear, "a", {n, wa, -1}, {o}, {}});
  g.mark_output(o);
  return g;
}

TEST(DeadCode, RemovesOpsAndWeightsThatDoNotReachTheOutput) {
  Graph g = graph_with_dead_branch();
  DeadCodeReport r;
  Graph out = eliminate_dead_code(g, &r);
  EXPECT_EQ(r.ops_removed, 2);
  EXPECT_EQ(r.tensors_removed, 3);  // b.weight, b, act
  EXPECT_EQ(r.weights_removed, std::vector<std::string>{"b.weight"});
  EXPECT_EQ(out.to_string(),
            "embedding embed(token_ids, embed.weight) -> h\n"
            "rms_norm norm(h, -, norm.weight) -> n\n"
            "linear a(n, a.weight, -) -> logits\n");
  EXPECT_EQ(out.find("logit_rows"), 1);  // inputs stay, ids renumbered densely in order
  EXPECT_EQ(out.tensor(out.outputs()[0]).name, "logits");
  EXPECT_TRUE(out.tensor(out.outputs()[0]).force_f32);
  EXPECT_EQ(out.find("b.weight"), -1);
}

TEST(DeadCode, KeepsKvCacheWritesAndLlamaGraphsWhole) {
  Graph g = graph_with_dead_branch();
  // A rope/KV write whose q output nobody reads still writes the cache: it stays.
  const int qkv = g.find("b");
  const int inv = g.weight("rope.inv_freq", {2});
  const int q = g.activation("q", {4});
  g.add_node({OpKind::kRopeKvWrite, "rope", {qkv, -1, -1, inv}, {q}, {}});
  DeadCodeReport r;
  Graph out = eliminate_dead_code(g, &r);
  EXPECT_EQ(r.ops_removed, 1);  // only act_mul
  EXPECT_NE(out.find("b.weight"), -1);
  EXPECT_NE(out.to_string().find("rope_kv_write rope(b, -, -, rope.inv_freq) -> q"), std::string::npos);

  auto spec = load_model_config(golden_dir("qwen3"));
  ASSERT_TRUE(spec.is_ok());
  auto def = define_model(*spec);
  ASSERT_TRUE(def.is_ok());
  Graph same = eliminate_dead_code(def->graph, &r);
  EXPECT_EQ(r.ops_removed, 0);
  EXPECT_EQ(r.tensors_removed, 0);
  EXPECT_EQ(same.to_string(), def->graph.to_string());
}

TEST(EngineJson, GraphRoundTripsExactly) {
  Graph g = graph_with_dead_branch();
  auto back = graph_from_json(graph_to_json(g), "test");
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(graph_to_json(*back).dump(), graph_to_json(g).dump());
  EXPECT_EQ(f32_bits(back->nodes()[1].attrs.eps), f32_bits(1e-5f));
  // A node pointing past the tensor list is refused, not trusted.
  nlohmann::json j = graph_to_json(g);
  j["nodes"][0]["inputs"][1] = 99;
  auto bad = graph_from_json(j, "x.anvil");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("op embed refers to a tensor id out of range"), std::string::npos)
      << bad.status().message();
  j = graph_to_json(g);
  j["nodes"][2]["inputs"] = {3};  // a linear with one input
  bad = graph_from_json(j, "x.anvil");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("op b has 1 inputs; linear takes 3"), std::string::npos) << bad.status().message();
}

// A copy of a golden model whose files the test may touch.
std::string copy_model(const std::string& name, const std::string& to) {
  fs::create_directories(to);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors"}) {
    fs::copy_file(golden_dir(name) + "/" + f, to + "/" + f, fs::copy_options::overwrite_existing);
  }
  return to;
}

TEST(EngineCache, ReusesThenRebuildsWhenOptionsOrFilesChange) {
  const std::string root = test::scratch_dir();
  const std::string model = copy_model("mistral", root + "/mistral");
  const std::string cache = root + "/engines";
  CpuBackend backend;
  EngineBuildOptions o;
  o.max_batch = 2;
  o.max_num_tokens = 32;

  auto first = get_or_build_engine(cache, model, o, &backend);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_TRUE(first->built);
  EXPECT_EQ(fs::path(first->path).parent_path(), fs::path(cache));
  const auto stamp = fs::last_write_time(first->path);

  auto again = get_or_build_engine(cache, model, o, &backend);
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(again->built);
  EXPECT_EQ(again->path, first->path);
  EXPECT_EQ(fs::last_write_time(again->path), stamp);

  EngineBuildOptions bigger = o;
  bigger.max_batch = 3;
  auto other = get_or_build_engine(cache, model, bigger, &backend);
  ASSERT_TRUE(other.is_ok());
  EXPECT_TRUE(other->built);
  EXPECT_NE(other->path, first->path);
  auto file = EngineFile::open(other->path);
  ASSERT_TRUE(file.is_ok());
  EXPECT_EQ(file->header().options.max_batch, 3);

  // A model file changing (new mtime) gives a new key.
  auto key_before = engine_cache_key(model, o, "cpu");
  fs::last_write_time(model + "/config.json", fs::last_write_time(model + "/config.json") + std::chrono::seconds(5));
  auto key_after = engine_cache_key(model, o, "cpu");
  ASSERT_TRUE(key_before.is_ok() && key_after.is_ok());
  EXPECT_NE(*key_before, *key_after);
  EXPECT_NE(*engine_cache_key(model, o, "NVIDIA H100 80GB HBM3, sm_90"), *key_after);
  auto rebuilt = get_or_build_engine(cache, model, o, &backend);
  ASSERT_TRUE(rebuilt.is_ok());
  EXPECT_TRUE(rebuilt->built);
  EXPECT_NE(rebuilt->path, first->path);

  // A damaged cached engine is rebuilt rather than trusted.
  { std::ofstream(rebuilt->path, std::ios::binary | std::ios::trunc) << "garbage"; }
  auto repaired = get_or_build_engine(cache, model, o, &backend);
  ASSERT_TRUE(repaired.is_ok());
  EXPECT_TRUE(repaired->built);
  EXPECT_TRUE(EngineFile::open(repaired->path).is_ok());
  // No partial files are left behind.
  for (const auto& e : fs::directory_iterator(cache)) EXPECT_EQ(e.path().extension(), ".anvil") << e.path();
}

TEST(TuningCache, SavesFindsAndSurvivesGarbage) {
  const std::string path = test::scratch_dir() + "/sub/tuning.json";
  const std::string h100 = "NVIDIA H100 80GB HBM3, sm_90 | cuda 12040";
  GemmTuning t;
  t.m_bucket = 16;
  t.n = 3072;
  t.k = 1024;
  t.out_dtype = "bf16";
  t.candidates = 8;
  t.best_us = 11.5;
  t.heuristic_us = 14.25;
  {
    TuningCache c = TuningCache::load(path);  // absent: empty
    EXPECT_EQ(c.size(), 0u);
    c.put(h100, t);
    ASSERT_TRUE(c.save().is_ok());
  }
  TuningCache c = TuningCache::load(path);
  EXPECT_EQ(c.size(), 1u);
  auto hit = c.find(h100, t);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->best_us, 11.5);
  EXPECT_EQ(hit->heuristic_us, 14.25);
  EXPECT_EQ(hit->candidates, 8);
  GemmTuning other = t;
  other.has_bias = true;
  EXPECT_FALSE(c.find(h100, other).has_value());                            // another shape
  EXPECT_FALSE(c.find("NVIDIA A100, sm_80 | cuda 12040", t).has_value());  // another GPU
  { std::ofstream(path, std::ios::trunc) << "{ not json"; }
  EXPECT_EQ(TuningCache::load(path).size(), 0u);
}

TEST(EngineCache, MissingModelIsAClearError) {
  auto k = engine_cache_key("/nonexistent/model", EngineBuildOptions(), "cpu");
  ASSERT_FALSE(k.is_ok());
  EXPECT_NE(k.status().message().find("'/nonexistent/model' does not exist"), std::string::npos);
}

}  // namespace
}  // namespace anvil
