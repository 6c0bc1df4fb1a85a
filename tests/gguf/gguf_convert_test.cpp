// GGUF -> HF conversion: llama.cpp -> HF tensor names, Q/K un-permutation and tokenizer.json,
// each checked against what HF transformers itself makes from the same GGUF file (fixtures by
// tools/gguf/make_fixtures.py), plus refusals of files the converter cannot handle.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "core/mmap_file.h"
#include "model/checkpoint/checkpoint.h"
#include "model/checkpoint/gguf_convert.h"
#include "model/checkpoint/gguf_tokenizer.h"
#include "model/model_spec.h"
#include "gguf_test_util.h"

namespace anvil::gguf {
namespace {

using testing::Builder;
using testing::fixture;
using Json = nlohmann::json;

std::unique_ptr<GgufFile> open_fixture(const std::string& name) {
  auto r = GgufFile::open(fixture(name));
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? std::move(r).value() : nullptr;
}

std::vector<float> as_f32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype, t.data, out.data(), out.size());
  return out;
}

std::vector<int64_t> shape_of(const Tensor& t) {
  return std::vector<int64_t>(t.shape.dims.begin(), t.shape.dims.begin() + t.shape.rank);
}

TEST(GgufNames, LlamaMapping) {
  EXPECT_EQ(*llama_hf_tensor_name("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(*llama_hf_tensor_name("output.weight"), "lm_head.weight");
  EXPECT_EQ(*llama_hf_tensor_name("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.0.attn_q.weight"), "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.17.attn_k.weight"), "model.layers.17.self_attn.k_proj.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.3.attn_v.weight"), "model.layers.3.self_attn.v_proj.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.3.attn_output.weight"), "model.layers.3.self_attn.o_proj.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.3.attn_norm.weight"), "model.layers.3.input_layernorm.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.3.ffn_norm.weight"), "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.3.ffn_gate.weight"), "model.layers.3.mlp.gate_proj.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.3.ffn_up.weight"), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(*llama_hf_tensor_name("blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight");
  EXPECT_FALSE(llama_hf_tensor_name("blk.3.ffn_gate_exps.weight").has_value());
  EXPECT_FALSE(llama_hf_tensor_name("blk.x.attn_q.weight").has_value());
  EXPECT_FALSE(llama_hf_tensor_name("rope_freqs.weight").has_value());
}

TEST(GgufNames, UnpermuteInvertsLlamaCppPermute) {
  const int64_t heads = 3, head_dim = 8, cols = 5, rows = heads * head_dim;
  std::vector<float> hf(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < hf.size(); ++i) hf[i] = static_cast<float>(i);
  // convert_hf_to_gguf: w.reshape(heads, 2, head_dim/2, cols).swapaxes(1, 2)
  std::vector<float> gguf(hf.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < head_dim / 2; ++i)
        for (int64_t c = 0; c < cols; ++c)
          gguf[((h * head_dim / 2 + i) * 2 + j) * cols + c] = hf[((h * 2 + j) * head_dim / 2 + i) * cols + c];
  std::vector<float> back(hf.size());
  unpermute_qk_rows(gguf.data(), back.data(), heads, head_dim, cols);
  EXPECT_EQ(back, hf);
  EXPECT_NE(gguf, hf);
}

TEST(GgufConvert, TinyLlamaConfigFromMetadata) {
  auto f = open_fixture("tiny_llama_bpe.gguf");
  ASSERT_TRUE(f);
  auto c = read_llama_config(*f);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->hidden_size, 32);
  EXPECT_EQ(c->num_layers, 2);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->intermediate_size, 64);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_EQ(c->vocab_size, 279);
  EXPECT_EQ(c->rms_norm_eps, 1e-5);  // stored as float32, written back as the shortest decimal
  EXPECT_EQ(c->rope_theta, 50000.0);
  EXPECT_FALSE(c->tie_word_embeddings);

  auto spm = open_fixture("tiny_llama_spm.gguf");
  ASSERT_TRUE(spm);
  auto cs = read_llama_config(*spm);
  ASSERT_TRUE(cs.is_ok()) << cs.status().to_string();
  EXPECT_TRUE(cs->tie_word_embeddings);
  EXPECT_EQ(cs->head_dim, 16);  // no rope.dimension_count: hidden / heads
  EXPECT_EQ(cs->rope_theta, 10000.0);
}

// Every tensor, dequantized + renamed + un-permuted, equals transformers' own GGUF import bit for bit.
TEST(GgufConvert, TinyLlamaTensorsMatchTransformers) {
  auto f = open_fixture("tiny_llama_bpe.gguf");
  ASSERT_TRUE(f);
  auto c = read_llama_config(*f);
  ASSERT_TRUE(c.is_ok());
  auto ref = SafetensorsFile::open(fixture("tiny_llama_bpe.hf.safetensors"));
  ASSERT_TRUE(ref.is_ok()) << ref.status().to_string();
  EXPECT_EQ((*ref)->tensors().size(), f->tensors().size());
  int permuted_checked = 0;
  for (const TensorInfo& info : f->tensors()) {
    auto t = convert_llama_tensor(*f, info, *c);
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    auto it = (*ref)->tensors().find(t->name);
    ASSERT_NE(it, (*ref)->tensors().end()) << t->name;
    EXPECT_EQ(t->shape, shape_of(it->second.view)) << t->name;
    std::vector<float> want = as_f32(it->second.view);
    ASSERT_EQ(t->data.size(), want.size());
    EXPECT_EQ(std::memcmp(t->data.data(), want.data(), want.size() * 4), 0) << t->name;
    if (info.name.find("attn_q") != std::string::npos || info.name.find("attn_k") != std::string::npos) {
      // Without un-permutation the rows would differ.
      auto raw = f->dequantize_tensor(info);
      EXPECT_NE(*raw, want) << t->name;
      ++permuted_checked;
    }
  }
  EXPECT_EQ(permuted_checked, 4);
}

void expect_same_tokenizer(const std::string& gguf_name, const std::string& hf_json_name) {
  auto f = open_fixture(gguf_name);
  ASSERT_TRUE(f);
  auto tok = build_hf_tokenizer(*f, 512);
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  Json mine = Json::parse(tok->tokenizer_json);
  auto hf_text = read_file(fixture(hf_json_name));
  ASSERT_TRUE(hf_text.is_ok());
  Json hf = Json::parse(*hf_text);
  for (const char* key : {"added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"}) {
    EXPECT_EQ(mine[key], hf[key]) << gguf_name << ": " << key << "\nmine: " << mine[key].dump().substr(0, 600)
                                  << "\nhf:   " << hf[key].dump().substr(0, 600);
  }
}

TEST(GgufTokenizer, ByteLevelBpeMatchesTransformers) {
  expect_same_tokenizer("tiny_llama_bpe.gguf", "tiny_llama_bpe.hf_tokenizer.json");
  auto f = open_fixture("tiny_llama_bpe.gguf");
  auto tok = build_hf_tokenizer(*f, 512);
  ASSERT_TRUE(tok.is_ok());
  EXPECT_EQ(tok->bos_token_id, 1);
  EXPECT_EQ(tok->eos_token_id, 2);
  EXPECT_EQ(tok->pad_token_id, 0);
  EXPECT_EQ(tok->vocab_size, 279);
  Json cfg = Json::parse(tok->tokenizer_config_json);
  EXPECT_EQ(cfg["bos_token"], "<|im_start|>");
  EXPECT_EQ(cfg["eos_token"], "<|im_end|>");
  EXPECT_EQ(cfg["pad_token"], "<|endoftext|>");
  EXPECT_EQ(cfg["add_bos_token"], true);
  EXPECT_EQ(cfg["model_max_length"], 512);
  EXPECT_NE(cfg["chat_template"].get<std::string>().find("<|im_start|>"), std::string::npos);
}

TEST(GgufTokenizer, SentencePieceMatchesTransformers) {
  // Merges recovered from vocabulary and scores, byte fallback, Metaspace, BOS post-processor.
  expect_same_tokenizer("tiny_llama_spm.gguf", "tiny_llama_spm.hf_tokenizer.json");
}

TEST(GgufTokenizer, MergesFromVocabOrdersByScoreThenLength) {
  std::vector<std::string> tokens = {"a", "b", "c", "ab", "bc", "abc"};
  std::vector<double> scores = {0, 0, 0, -1, -2, -0.5};
  auto m = merges_from_vocab(tokens, &scores);
  // Same score: longer left piece first (transformers sorts (score, len_l, len_r) descending).
  std::vector<std::pair<std::string, std::string>> want = {{"ab", "c"}, {"a", "bc"}, {"a", "b"}, {"b", "c"}};
  EXPECT_EQ(m, want);
  auto by_id = merges_from_vocab(tokens, nullptr);
  want = {{"a", "b"}, {"b", "c"}, {"a", "bc"}, {"ab", "c"}};
  EXPECT_EQ(by_id, want);
}

// A metadata-only GGUF with a byte-level vocabulary: pre-tokenizer `pre`, model `model`.
Builder tokenizer_file(const std::string& model, const std::string& pre) {
  Builder b;
  b.header(0, 4).kv_str("general.architecture", "llama").kv_str("tokenizer.ggml.model", model);
  b.kv_str("tokenizer.ggml.pre", pre).kv_str_array("tokenizer.ggml.tokens", {"a", "b", "ab", "1"});
  return b;
}

Result<HfTokenizer> tokenizer_from(const Builder& b) {
  auto f = GgufFile::parse(b.bytes.data(), b.bytes.size(), "tok.gguf");
  if (!f.is_ok()) return f.status();
  return build_hf_tokenizer(**f, 0);
}

TEST(GgufTokenizer, PreTokenizerByName) {
  auto smollm = tokenizer_from(tokenizer_file("gpt2", "smollm"));
  ASSERT_TRUE(smollm.is_ok()) << smollm.status().to_string();
  Json pre = Json::parse(smollm->tokenizer_json)["pre_tokenizer"];
  ASSERT_EQ(pre["type"], "Sequence");
  EXPECT_EQ(pre["pretokenizers"][0], (Json{{"type", "Digits"}, {"individual_digits", true}}));
  EXPECT_EQ(pre["pretokenizers"][1]["type"], "ByteLevel");
  EXPECT_EQ(pre["pretokenizers"][1]["use_regex"], true);

  auto def = tokenizer_from(tokenizer_file("gpt2", "default"));
  ASSERT_TRUE(def.is_ok());
  Json dpre = Json::parse(def->tokenizer_json)["pre_tokenizer"];
  EXPECT_EQ(dpre["type"], "ByteLevel");
  EXPECT_EQ(dpre["use_regex"], true);

  auto qwen = tokenizer_from(tokenizer_file("gpt2", "qwen2"));
  ASSERT_TRUE(qwen.is_ok());
  Json qpre = Json::parse(qwen->tokenizer_json)["pre_tokenizer"];
  std::string regex = qpre["pretokenizers"][0]["pattern"]["Regex"];
  EXPECT_NE(regex.find("|\\p{N}|"), std::string::npos) << regex;  // qwen2 splits single digits
  auto llama3 = tokenizer_from(tokenizer_file("gpt2", "llama-bpe"));
  ASSERT_TRUE(llama3.is_ok());
  regex = Json::parse(llama3->tokenizer_json)["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"];
  EXPECT_NE(regex.find("\\p{N}{1,3}"), std::string::npos) << regex;

  auto unknown = tokenizer_from(tokenizer_file("gpt2", "mystery-pre"));
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(unknown.status().message().find("'mystery-pre'"), std::string::npos) << unknown.status().message();
  auto bert = tokenizer_from(tokenizer_file("bert", "default"));
  EXPECT_EQ(bert.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(bert.status().message().find("'bert'"), std::string::npos) << bert.status().message();
}

TEST(GgufTokenizer, BadSpecialIdIsNamed) {
  Builder b = tokenizer_file("gpt2", "default");
  b.kv_u32("tokenizer.ggml.eos_token_id", 99);
  b.bytes[16] = 5;  // kv count 4 -> 5
  auto r = tokenizer_from(b);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("tokenizer.ggml.eos_token_id"), std::string::npos) << r.status().message();
}

class ConvertDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("anvil_gguf_" + std::to_string(::getpid()) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(ConvertDir, WritesLoadableHfFolder) {
  ASSERT_TRUE(convert_gguf_to_hf(fixture("tiny_llama_bpe.gguf"), dir_.string(), DType::kF32).is_ok());
  for (const char* name : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir_ / name)) << name;
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().string().find(".partial"), std::string::npos) << entry.path();
  }
  auto spec = load_model_config(dir_.string());
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  EXPECT_EQ(spec->architecture, "LlamaForCausalLM");
  EXPECT_EQ(spec->vocab_size, 279);
  EXPECT_EQ(spec->hidden_size, 32);
  EXPECT_EQ(spec->num_kv_heads, 2);
  EXPECT_EQ(spec->head_dim, 8);
  EXPECT_EQ(spec->rope_theta, 50000.0);
  EXPECT_FALSE(spec->tie_word_embeddings);
  EXPECT_EQ(spec->bos_token_id, 1);
  EXPECT_EQ(spec->eos_token_ids, (std::vector<int64_t>{2}));

  auto ck = Checkpoint::open(dir_.string());
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  auto ref = SafetensorsFile::open(fixture("tiny_llama_bpe.hf.safetensors"));
  ASSERT_TRUE(ref.is_ok());
  EXPECT_EQ(ck->names().size(), (*ref)->tensors().size());
  for (const auto& [name, t] : (*ref)->tensors()) {
    auto got = ck->get(name);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    EXPECT_EQ(got->view.dtype, DType::kF32);
    EXPECT_EQ(as_f32(got->view), as_f32(t.view)) << name;
  }
}

TEST_F(ConvertDir, Bf16RoundsEachWeightToNearestEven) {
  ASSERT_TRUE(convert_gguf_to_hf(fixture("tiny_llama_spm.gguf"), dir_.string(), DType::kBF16).is_ok());
  auto ck = Checkpoint::open(dir_.string());
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  EXPECT_FALSE(ck->contains("lm_head.weight"));  // tied
  auto f = open_fixture("tiny_llama_spm.gguf");
  auto emb = ck->get("model.embed_tokens.weight");
  ASSERT_TRUE(emb.is_ok());
  ASSERT_EQ(emb->view.dtype, DType::kBF16);
  auto src = f->dequantize_tensor(*f->find_tensor("token_embd.weight"));
  const uint16_t* bits = emb->view.ptr<uint16_t>();
  for (size_t i = 0; i < src->size(); ++i) ASSERT_EQ(bits[i], f32_to_bf16((*src)[i])) << i;
  auto cfg = Json::parse(*read_file((dir_ / "config.json").string()));
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
}

TEST_F(ConvertDir, RefusesOtherArchitecturesAndMissingTensors) {
  Builder gpt2;
  gpt2.header(0, 1).kv_str("general.architecture", "gpt2");
  const std::string path = (dir_.string() + ".gguf");
  {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(gpt2.bytes.data()), gpt2.bytes.size());
  }
  Status s = convert_gguf_to_hf(path, dir_.string(), DType::kF32);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("architecture 'gpt2'"), std::string::npos) << s.message();

  Builder split;
  split.header(0, 2).kv_str("general.architecture", "llama").kv_u32("split.count", 3);
  {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(split.bytes.data()), split.bytes.size());
  }
  s = convert_gguf_to_hf(path, dir_.string(), DType::kF32);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("one of 3 split GGUF files"), std::string::npos) << s.message();

  // Valid llama metadata and tokenizer, but only token_embd.weight: the first missing tensor is named.
  Builder llama;
  llama.header(1, 10).kv_str("general.architecture", "llama").kv_u32("llama.context_length", 64);
  llama.kv_u32("llama.embedding_length", 32).kv_u32("llama.block_count", 1).kv_u32("llama.feed_forward_length", 64);
  llama.kv_u32("llama.attention.head_count", 2).kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  llama.kv_str("tokenizer.ggml.model", "gpt2").kv_str("tokenizer.ggml.pre", "default");
  llama.kv_str_array("tokenizer.ggml.tokens", {"a", "b"});
  llama.tensor("token_embd.weight", {32, 2}, 0, 0).pad_to(32).zeros(256);
  {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(llama.bytes.data()), llama.bytes.size());
  }
  s = convert_gguf_to_hf(path, dir_.string(), DType::kF32);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.to_string();
  EXPECT_NE(s.message().find("tensor 'blk.0.attn_k.weight' is missing"), std::string::npos) << s.message();
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace anvil::gguf
