// Checkpoint::open over model folders: one file, an index with shards, several files without an
// index, and the errors: missing shard, index naming an absent tensor, duplicate names, no files.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "model/checkpoint/checkpoint.h"
#include "test_files.h"

namespace anvil {
namespace {

using ::anvil::testing::TempDir;
using ::anvil::testing::write_text;

void expect_error(const Result<Checkpoint>& r, StatusCode code, std::initializer_list<std::string> words) {
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), code) << r.status().to_string();
  for (const std::string& w : words)
    EXPECT_NE(r.status().message().find(w), std::string::npos) << "'" << w << "' missing from: " << r.status().message();
}

// Values of tensor `name` are name.size() + i, so each tensor's content identifies it.
struct Tensors {
  std::vector<std::vector<float>> storage;
  std::vector<std::pair<std::string, Tensor>> list;
  void add(const std::string& name, int64_t rows, int64_t cols) {
    storage.emplace_back(static_cast<size_t>(rows * cols));
    for (size_t i = 0; i < storage.back().size(); ++i) storage.back()[i] = static_cast<float>(name.size() + i);
    list.emplace_back(name, Tensor(storage.back().data(), DType::kF32, Shape{rows, cols}));
  }
};

void write_shard(const std::string& path, const std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>>& spec) {
  Tensors t;
  t.storage.reserve(spec.size());
  for (const auto& [name, shape] : spec) t.add(name, shape.first, shape.second);
  ASSERT_TRUE(write_safetensors(path, t.list).is_ok());
}

void expect_values(const CheckpointTensor& t, const std::string& name, int64_t rows, int64_t cols) {
  ASSERT_EQ(t.view.dtype, DType::kF32);
  ASSERT_EQ(t.view.shape, (Shape{rows, cols}));
  for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(t.view.ptr<float>()[i], static_cast<float>(name.size() + i)) << name;
}

constexpr const char* kIndex = R"({
  "metadata": {"total_size": 208},
  "weight_map": {
    "lm_head.weight": "model-00002-of-00002.safetensors",
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00002-of-00002.safetensors"
  }})";

void write_sharded(const TempDir& dir) {
  write_shard(dir.file("model-00001-of-00002.safetensors"),
              {{"model.embed_tokens.weight", {4, 6}}, {"model.layers.0.self_attn.q_proj.weight", {3, 6}}});
  write_shard(dir.file("model-00002-of-00002.safetensors"), {{"lm_head.weight", {1, 6}}, {"model.norm.weight", {1, 1}}});
  write_text(dir.file("model.safetensors.index.json"), kIndex);
}

TEST(Checkpoint, SingleFile) {
  TempDir dir;
  write_shard(dir.file("model.safetensors"), {{"model.embed_tokens.weight", {5, 3}}, {"model.norm.weight", {1, 3}}});
  Result<Checkpoint> r = Checkpoint::open(dir.str());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->dir(), dir.str());
  EXPECT_EQ(r->names(), (std::vector<std::string>{"model.embed_tokens.weight", "model.norm.weight"}));
  EXPECT_TRUE(r->contains("model.norm.weight"));
  EXPECT_FALSE(r->contains("lm_head.weight"));
  Result<CheckpointTensor> t = r->get("model.embed_tokens.weight");
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t->file, dir.file("model.safetensors"));
  expect_values(*t, "model.embed_tokens.weight", 5, 3);

  Result<CheckpointTensor> missing = r->get("lm_head.weight");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("'lm_head.weight'"), std::string::npos);
  EXPECT_NE(missing.status().message().find(dir.str()), std::string::npos);
}

TEST(Checkpoint, OneSafetensorsFilePath) {
  TempDir dir;
  write_shard(dir.file("x.safetensors"), {{"w", {2, 2}}});
  Result<Checkpoint> r = Checkpoint::open(dir.file("x.safetensors"));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  expect_values(*r->get("w"), "w", 2, 2);
}

TEST(Checkpoint, ShardedWithIndex) {
  TempDir dir;
  write_sharded(dir);
  Result<Checkpoint> r = Checkpoint::open(dir.str());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->names().size(), 4u);
  expect_values(*r->get("model.embed_tokens.weight"), "model.embed_tokens.weight", 4, 6);
  expect_values(*r->get("model.layers.0.self_attn.q_proj.weight"), "model.layers.0.self_attn.q_proj.weight", 3, 6);
  expect_values(*r->get("lm_head.weight"), "lm_head.weight", 1, 6);
  expect_values(*r->get("model.norm.weight"), "model.norm.weight", 1, 1);
  EXPECT_EQ(r->get("lm_head.weight")->file, dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(r->get("model.embed_tokens.weight")->file, dir.file("model-00001-of-00002.safetensors"));
}

TEST(Checkpoint, CheckpointOutlivesItsCopies) {
  // Views stay valid while any copy of the Checkpoint lives (files are shared).
  TempDir dir;
  write_sharded(dir);
  Result<Checkpoint> r = Checkpoint::open(dir.str());
  ASSERT_TRUE(r.is_ok());
  Checkpoint copy = *r;
  r = Result<Checkpoint>(not_found("dropped"));
  expect_values(*copy.get("lm_head.weight"), "lm_head.weight", 1, 6);
}

TEST(Checkpoint, MissingShard) {
  TempDir dir;
  write_sharded(dir);
  std::filesystem::remove(dir.file("model-00002-of-00002.safetensors"));
  expect_error(Checkpoint::open(dir.str()), StatusCode::kNotFound,
               {"model.safetensors.index.json", "model-00002-of-00002.safetensors", "lm_head.weight"});
}

TEST(Checkpoint, IndexNamesMissingTensor) {
  TempDir dir;
  write_sharded(dir);
  write_shard(dir.file("model-00002-of-00002.safetensors"), {{"lm_head.weight", {1, 6}}});  // no model.norm.weight
  expect_error(Checkpoint::open(dir.str()), StatusCode::kNotFound,
               {"model.safetensors.index.json", "'model.norm.weight'", "model-00002-of-00002.safetensors"});
}

TEST(Checkpoint, IndexShardOutsideFolderRefused) {
  TempDir dir;
  write_shard(dir.file("model.safetensors"), {{"w", {1, 1}}});
  write_text(dir.file("model.safetensors.index.json"), R"({"weight_map": {"w": "../model.safetensors"}})");
  expect_error(Checkpoint::open(dir.str()), StatusCode::kInvalidArgument, {"'w'", "../model.safetensors"});
}

TEST(Checkpoint, IndexWithoutWeightMap) {
  TempDir dir;
  write_text(dir.file("model.safetensors.index.json"), R"({"metadata": {}})");
  expect_error(Checkpoint::open(dir.str()), StatusCode::kNotFound, {"model.safetensors.index.json", "weight_map"});
}

TEST(Checkpoint, SeveralFilesWithoutIndex) {
  TempDir dir;
  write_shard(dir.file("a.safetensors"), {{"x", {2, 2}}});
  write_shard(dir.file("b.safetensors"), {{"y", {3, 1}}});
  write_text(dir.file("notes.txt"), "not a tensor file");
  Result<Checkpoint> r = Checkpoint::open(dir.str());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->names(), (std::vector<std::string>{"x", "y"}));
  expect_values(*r->get("y"), "y", 3, 1);
}

TEST(Checkpoint, ModelSafetensorsPreferredOverOtherFiles) {
  // Mistral repos ship consolidated.safetensors (other names) beside the HF files.
  TempDir dir;
  write_shard(dir.file("model.safetensors"), {{"model.norm.weight", {1, 4}}});
  write_shard(dir.file("consolidated.safetensors"), {{"norm.weight", {1, 4}}});
  Result<Checkpoint> r = Checkpoint::open(dir.str());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->names(), (std::vector<std::string>{"model.norm.weight"}));
}

TEST(Checkpoint, DuplicateTensorAcrossFiles) {
  TempDir dir;
  write_shard(dir.file("a.safetensors"), {{"x", {2, 2}}});
  write_shard(dir.file("b.safetensors"), {{"x", {2, 2}}, {"y", {1, 1}}});
  expect_error(Checkpoint::open(dir.str()), StatusCode::kInvalidArgument,
               {"'x'", dir.file("a.safetensors"), dir.file("b.safetensors")});
}

TEST(Checkpoint, EmptyFolder) {
  TempDir dir;
  expect_error(Checkpoint::open(dir.str()), StatusCode::kNotFound, {dir.str(), "model.safetensors"});
}

TEST(Checkpoint, MissingFolder) {
  TempDir dir;
  const std::string path = dir.file("does-not-exist");
  expect_error(Checkpoint::open(path), StatusCode::kNotFound, {path});
}

TEST(Checkpoint, CorruptShardNamesTheShard) {
  TempDir dir;
  write_sharded(dir);
  const std::string shard = dir.file("model-00001-of-00002.safetensors");
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) - 4);
  expect_error(Checkpoint::open(dir.str()), StatusCode::kDataLoss, {shard, "truncated"});
}

}  // namespace
}  // namespace anvil
