// config.json -> ModelSpec: the real configs of Llama 3.2, Qwen2.5, Qwen3 and Mistral (values as
// published on the Hub), and one test per refusal, checking the code and that the message names
// the file and the field or value.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/model_spec.h"
#include "test_files.h"

namespace anvil {
namespace {

using Json = nlohmann::json;
using ::anvil::testing::TempDir;
using ::anvil::testing::write_text;

// meta-llama/Llama-3.2-1B-Instruct
constexpr const char* kLlama32Config = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})";

// Qwen/Qwen2.5-0.5B-Instruct
constexpr const char* kQwen2Config = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936})";

// Qwen/Qwen3-0.6B
constexpr const char* kQwen3Config = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

// mistralai/Mistral-7B-Instruct-v0.3
constexpr const char* kMistralConfig = R"({
  "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.42.0.dev0",
  "use_cache": true, "vocab_size": 32768})";

constexpr const char* kOrigin = "models/x/config.json";

Result<ModelSpec> parse(const Json& j) { return parse_model_config(j.dump(), kOrigin); }

// The Status is an error of `code` whose message names the file and every one of `words`.
void expect_error(const Result<ModelSpec>& r, StatusCode code, std::initializer_list<const char*> words) {
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), code) << r.status().to_string();
  EXPECT_NE(r.status().message().find(kOrigin), std::string::npos) << r.status().message();
  for (const char* w : words) EXPECT_NE(r.status().message().find(w), std::string::npos) << w << " in: " << r.status().message();
}

TEST(ModelConfig, Llama32) {
  Result<ModelSpec> r = parse_model_config(kLlama32Config, kOrigin);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const ModelSpec& s = *r;
  EXPECT_EQ(s.family, ArchFamily::kLlama);
  EXPECT_EQ(s.architecture, "LlamaForCausalLM");
  EXPECT_EQ(s.model_type, "llama");
  EXPECT_EQ(s.vocab_size, 128256);
  EXPECT_EQ(s.hidden_size, 2048);
  EXPECT_EQ(s.intermediate_size, 8192);
  EXPECT_EQ(s.num_layers, 16);
  EXPECT_EQ(s.num_heads, 32);
  EXPECT_EQ(s.num_kv_heads, 8);
  EXPECT_EQ(s.head_dim, 64);
  EXPECT_EQ(s.q_size(), 2048);
  EXPECT_EQ(s.kv_size(), 512);
  EXPECT_EQ(s.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(s.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(s.rope_theta, 500000.0);
  EXPECT_EQ(s.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(s.rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(s.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(s.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(s.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(s.tie_word_embeddings);
  EXPECT_FALSE(s.qkv_bias);
  EXPECT_FALSE(s.o_bias);
  EXPECT_FALSE(s.mlp_bias);
  EXPECT_FALSE(s.qk_norm);
  EXPECT_EQ(s.torch_dtype, "bfloat16");
  EXPECT_EQ(s.bos_token_id, 128000);
  EXPECT_EQ(s.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(s.pad_token_id, -1);
  EXPECT_STREQ(arch_family_name(s.family), "llama");
}

TEST(ModelConfig, LlamaBiasesUntiedAndDefaults) {
  // Llama 2 style: no head_dim, no num_key_value_heads, untied, biases switched on.
  Json j = Json::parse(kLlama32Config);
  j.erase("head_dim");
  j.erase("num_key_value_heads");
  j.erase("rope_scaling");
  j["tie_word_embeddings"] = false;
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  j["eos_token_id"] = 2;
  Result<ModelSpec> r = parse(j);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->num_kv_heads, 32);
  EXPECT_EQ(r->head_dim, 64);  // 2048 / 32
  EXPECT_EQ(r->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_FALSE(r->tie_word_embeddings);
  EXPECT_TRUE(r->qkv_bias);
  EXPECT_TRUE(r->o_bias);
  EXPECT_TRUE(r->mlp_bias);
  EXPECT_EQ(r->eos_token_ids, (std::vector<int64_t>{2}));
}

TEST(ModelConfig, RopeTypeDefaultMeansNone) {
  Json j = Json::parse(kLlama32Config);
  j["rope_scaling"] = Json{{"rope_type", "default"}};
  Result<ModelSpec> r = parse(j);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_DOUBLE_EQ(r->rope_theta, 500000.0);
}

TEST(ModelConfig, Transformers5RopeParameters) {
  Json j = Json::parse(kLlama32Config);
  j["rope_parameters"] = j["rope_scaling"];
  j["rope_parameters"]["rope_theta"] = 250000.0;
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  Result<ModelSpec> r = parse(j);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_DOUBLE_EQ(r->rope_theta, 250000.0);
  EXPECT_EQ(r->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(r->rope_scaling.factor, 32.0);
  EXPECT_EQ(r->torch_dtype, "float16");
}

TEST(ModelConfig, Llama3OriginalContextFallsBackToMaxPositions) {
  Json j = Json::parse(kLlama32Config);
  j["rope_scaling"].erase("original_max_position_embeddings");
  Result<ModelSpec> r = parse(j);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->rope_scaling.original_max_position_embeddings, 131072);
}

TEST(ModelConfig, Qwen2) {
  Result<ModelSpec> r = parse_model_config(kQwen2Config, kOrigin);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->family, ArchFamily::kQwen2);
  EXPECT_EQ(r->hidden_size, 896);
  EXPECT_EQ(r->num_heads, 14);
  EXPECT_EQ(r->num_kv_heads, 2);
  EXPECT_EQ(r->head_dim, 64);
  EXPECT_EQ(r->num_layers, 24);
  EXPECT_EQ(r->intermediate_size, 4864);
  EXPECT_EQ(r->vocab_size, 151936);
  EXPECT_DOUBLE_EQ(r->rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(r->rms_norm_eps, 1e-6);
  EXPECT_TRUE(r->qkv_bias);
  EXPECT_FALSE(r->o_bias);
  EXPECT_FALSE(r->qk_norm);
  EXPECT_TRUE(r->tie_word_embeddings);
  EXPECT_EQ(r->eos_token_ids, (std::vector<int64_t>{151645}));
  EXPECT_STREQ(arch_family_name(r->family), "qwen2");
}

TEST(ModelConfig, Qwen3) {
  Result<ModelSpec> r = parse_model_config(kQwen3Config, kOrigin);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->family, ArchFamily::kQwen3);
  EXPECT_EQ(r->hidden_size, 1024);
  EXPECT_EQ(r->num_heads, 16);
  EXPECT_EQ(r->num_kv_heads, 8);
  EXPECT_EQ(r->head_dim, 128);  // explicit: not hidden_size / num_heads (64)
  EXPECT_EQ(r->q_size(), 2048);
  EXPECT_EQ(r->max_position_embeddings, 40960);
  EXPECT_DOUBLE_EQ(r->rope_theta, 1e6);  // an integer in the JSON
  EXPECT_TRUE(r->qk_norm);
  EXPECT_FALSE(r->qkv_bias);
  EXPECT_FALSE(r->o_bias);
  EXPECT_EQ(r->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_STREQ(arch_family_name(r->family), "qwen3");
}

TEST(ModelConfig, Mistral) {
  Result<ModelSpec> r = parse_model_config(kMistralConfig, kOrigin);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->family, ArchFamily::kMistral);
  EXPECT_EQ(r->vocab_size, 32768);
  EXPECT_EQ(r->num_kv_heads, 8);
  EXPECT_EQ(r->head_dim, 128);
  EXPECT_EQ(r->intermediate_size, 14336);
  EXPECT_FALSE(r->tie_word_embeddings);
  EXPECT_FALSE(r->qkv_bias);
  EXPECT_EQ(r->bos_token_id, 1);
  EXPECT_EQ(r->eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_STREQ(arch_family_name(r->family), "mistral");
}

TEST(ModelConfig, MistralWindowCoveringContextAccepted) {
  Json j = Json::parse(kMistralConfig);
  j["sliding_window"] = 32768;
  EXPECT_TRUE(parse(j).is_ok());
}

TEST(ModelConfig, MistralSlidingWindowRefused) {
  Json j = Json::parse(kMistralConfig);  // as Mistral-7B-v0.1
  j["sliding_window"] = 4096;
  expect_error(parse(j), StatusCode::kUnsupported, {"sliding_window", "4096", "32768"});
}

TEST(ModelConfig, Qwen2SlidingWindowRefused) {
  Json j = Json::parse(kQwen2Config);
  j["use_sliding_window"] = true;
  expect_error(parse(j), StatusCode::kUnsupported, {"use_sliding_window"});
}

TEST(ModelConfig, MissingFieldNamed) {
  for (const char* field : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"}) {
    Json j = Json::parse(kQwen3Config);
    j.erase(field);
    SCOPED_TRACE(field);
    expect_error(parse(j), StatusCode::kNotFound, {field});
  }
}

TEST(ModelConfig, WrongTypeNamed) {
  Json j = Json::parse(kLlama32Config);
  j["num_hidden_layers"] = "16";
  expect_error(parse(j), StatusCode::kInvalidArgument, {"'num_hidden_layers'", "integer", "string"});

  j = Json::parse(kLlama32Config);
  j["tie_word_embeddings"] = 1;
  expect_error(parse(j), StatusCode::kInvalidArgument, {"'tie_word_embeddings'"});

  j = Json::parse(kLlama32Config);
  j["rope_scaling"]["factor"] = "32";
  expect_error(parse(j), StatusCode::kInvalidArgument, {"'rope_scaling.factor'"});

  j = Json::parse(kLlama32Config);
  j["eos_token_id"] = Json::array({128001, "x"});
  expect_error(parse(j), StatusCode::kInvalidArgument, {"'eos_token_id'"});
}

TEST(ModelConfig, BadValuesNamed) {
  Json j = Json::parse(kLlama32Config);
  j["num_key_value_heads"] = 5;  // does not divide 32
  expect_error(parse(j), StatusCode::kInvalidArgument, {"'num_key_value_heads'", "5"});

  j = Json::parse(kLlama32Config);
  j["hidden_size"] = -1;
  expect_error(parse(j), StatusCode::kInvalidArgument, {"'hidden_size'", "-1"});
}

TEST(ModelConfig, UnknownModelTypeRefused) {
  Json j = Json::parse(kLlama32Config);
  j["model_type"] = "gemma2";
  j["architectures"] = Json::array({"Gemma2ForCausalLM"});
  expect_error(parse(j), StatusCode::kUnsupported, {"gemma2", "llama, mistral, qwen2, qwen3"});
}

TEST(ModelConfig, UnknownArchitectureRefused) {
  Json j = Json::parse(kLlama32Config);
  j["architectures"] = Json::array({"LlamaForSequenceClassification"});
  expect_error(parse(j), StatusCode::kUnsupported, {"LlamaForSequenceClassification", "LlamaForCausalLM"});
}

TEST(ModelConfig, BadRopeScalingTypeRefused) {
  Json j = Json::parse(kLlama32Config);
  j["rope_scaling"] = Json{{"type", "yarn"}, {"factor", 4.0}};
  expect_error(parse(j), StatusCode::kUnsupported, {"rope_scaling.type", "yarn"});

  j = Json::parse(kLlama32Config);
  j["rope_scaling"]["rope_type"] = "bogus";
  expect_error(parse(j), StatusCode::kUnsupported, {"rope_scaling.rope_type", "bogus"});
}

TEST(ModelConfig, Llama3RopeMissingParameterNamed) {
  Json j = Json::parse(kLlama32Config);
  j["rope_scaling"].erase("low_freq_factor");
  expect_error(parse(j), StatusCode::kNotFound, {"rope_scaling.low_freq_factor"});
}

TEST(ModelConfig, OtherActivationRefused) {
  Json j = Json::parse(kMistralConfig);
  j["hidden_act"] = "gelu";
  expect_error(parse(j), StatusCode::kUnsupported, {"hidden_act", "gelu"});
}

TEST(ModelConfig, NotJsonRefused) {
  expect_error(parse_model_config("{\"model_type\": \"llama\",", kOrigin), StatusCode::kInvalidArgument,
               {"not valid JSON"});
  expect_error(parse_model_config("[1, 2]", kOrigin), StatusCode::kInvalidArgument, {"object"});
}

TEST(ModelConfig, LoadPrefersGenerationConfigEos) {
  TempDir dir;
  Json j = Json::parse(kLlama32Config);
  j["eos_token_id"] = 128001;
  write_text(dir.file("config.json"), j.dump());
  write_text(dir.file("generation_config.json"),
             R"({"bos_token_id": 128000, "do_sample": true, "eos_token_id": [128001, 128008, 128009],
                 "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0.dev0"})");
  Result<ModelSpec> r = load_model_config(dir.str());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(r->hidden_size, 2048);
}

TEST(ModelConfig, LoadWithoutGenerationConfig) {
  TempDir dir;
  write_text(dir.file("config.json"), kQwen2Config);
  Result<ModelSpec> r = load_model_config(dir.str());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->eos_token_ids, (std::vector<int64_t>{151645}));
}

TEST(ModelConfig, LoadErrorsNameTheFile) {
  TempDir dir;
  Result<ModelSpec> missing = load_model_config(dir.str());
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("config.json"), std::string::npos);

  write_text(dir.file("config.json"), kQwen2Config);
  write_text(dir.file("generation_config.json"), R"({"eos_token_id": "eos"})");
  Result<ModelSpec> bad_gen = load_model_config(dir.str());
  ASSERT_FALSE(bad_gen.is_ok());
  EXPECT_EQ(bad_gen.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_gen.status().message().find("generation_config.json"), std::string::npos);
  EXPECT_NE(bad_gen.status().message().find("'eos_token_id'"), std::string::npos);
}

}  // namespace
}  // namespace anvil
