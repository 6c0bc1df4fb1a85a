// rope_inv_freq against HF transformers: the expected float32 bit patterns below were printed by
// tests/model/gen_rope_reference.py (transformers 5.24.0, torch 2.15.0 on CPU), which builds each
// model's RotaryEmbedding from the same config fields and dumps its inv_freq.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <set>

#include "model/model_spec.h"

namespace anvil {
namespace {

constexpr uint32_t kLlama32_1B[32] = {
    0x3f800000u, 0x3f29e1c6u, 0x3ee177bcu, 0x3e959ee3u, 0x3e4693b0u, 0x3e03c6a0u,
    0x3daee4adu, 0x3d681e67u, 0x3d1a08c8u, 0x3ccc6f49u, 0x3c87a9c3u, 0x3c340d6du,
    0x3beef74fu, 0x3b9e9402u, 0x3b527720u, 0x3aa9279bu, 0x39e13620u, 0x38cb98f7u,
    0x37a3418du, 0x3758ac81u, 0x370fc8f8u, 0x36bed4f4u, 0x367d45c3u, 0x3628126bu,
    0x35df10c4u, 0x359406cbu, 0x35447610u, 0x35025f34u, 0x34ad07a7u, 0x3465a54du,
    0x341864a7u, 0x33ca41b0u,
};
constexpr uint32_t kLlama31_8B[64] = {
    0x3f800000u, 0x3f508ac1u, 0x3f29e1c6u, 0x3f0a6384u, 0x3ee177bcu, 0x3eb7ab7du,
    0x3e959ee3u, 0x3e73c461u, 0x3e4693b0u, 0x3e21c3a0u, 0x3e03c6a0u, 0x3dd6b19cu,
    0x3daee4adu, 0x3d8e7898u, 0x3d681e67u, 0x3d3d1684u, 0x3d1a08c8u, 0x3cfaf53fu,
    0x3ccc6f49u, 0x3ca68939u, 0x3c87a9c3u, 0x3c5d06ecu, 0x3c340d6du, 0x3c12ac7fu,
    0x3beef74fu, 0x3bc2aa76u, 0x3b9e9402u, 0x3b812e35u, 0x3b527720u, 0x3b0dfd06u,
    0x3ab3d11du, 0x3a60979eu, 0x3a0995d2u, 0x39a3f108u, 0x393b2dd2u, 0x38c86886u,
    0x38a3418du, 0x3884fdbfu, 0x3858ac81u, 0x38308199u, 0x380fc8f8u, 0x37ea426fu,
    0x37bed4f4u, 0x379b7475u, 0x377d45c3u, 0x374e51f5u, 0x3728126bu, 0x3708ea0fu,
    0x36df10c4u, 0x36b5b687u, 0x369406cbu, 0x36712b80u, 0x36447610u, 0x36200a69u,
    0x36025f34u, 0x35d46808u, 0x35ad07a7u, 0x358cf400u, 0x3565a54du, 0x353b12c7u,
    0x351864a7u, 0x34f848c2u, 0x34ca41b0u, 0x34a4c2ffu,
};
constexpr uint32_t kLlama2Linear4[64] = {
    0x3e800000u, 0x3e5dafd7u, 0x3e3ff911u, 0x3e263de0u, 0x3e0ff59au, 0x3df953cfu,
    0x3dd7e89bu, 0x3dbaf81bu, 0x3da1e89bu, 0x3d8c3504u, 0x3d72d423u, 0x3d5247edu,
    0x3d361887u, 0x3d1db040u, 0x3d088d77u, 0x3cec7fd6u, 0x3ccccccdu, 0x3cb15978u,
    0x3c99940du, 0x3c84fe4du, 0x3c6655c2u, 0x3c47763fu, 0x3c2cba15u, 0x3c159348u,
    0x3c0186e3u, 0x3be054d2u, 0x3bc2434fu, 0x3ba8398bu, 0x3b91ad39u, 0x3b7c4d33u,
    0x3b5a7bf2u, 0x3b3d3311u, 0x3b23d70au, 0x3b0de12du, 0x3af5b9b0u, 0x3ad4ca15u,
    0x3ab8449cu, 0x3a9f91ccu, 0x3a8a2e77u, 0x3a6f520eu, 0x3a4f3e38u, 0x3a33770fu,
    0x3a1b690du, 0x3a06946fu, 0x39e91528u, 0x39c9d75cu, 0x39aec98eu, 0x39975c0eu,
    0x3983126fu, 0x396301e2u, 0x3944948cu, 0x392a3b44u, 0x39136a16u, 0x38ff4facu,
    0x38dd1725u, 0x38bf74d7u, 0x38a5cb60u, 0x388f9272u, 0x3878a815u, 0x385753e4u,
    0x383a7753u, 0x38217916u, 0x380bd472u, 0x37f22ce2u,
};
constexpr uint32_t kQwen2_7B[64] = {
    0x3f800000u, 0x3f4e4badu, 0x3f263de0u, 0x3f05f6efu, 0x3ed7e89bu, 0x3eadfcffu,
    0x3e8c3504u, 0x3e61f835u, 0x3e361887u, 0x3e12bd91u, 0x3dec7fd6u, 0x3dbe94c6u,
    0x3d99940du, 0x3d778513u, 0x3d47763fu, 0x3d20bc1du, 0x3d0186e3u, 0x3cd0c1a8u,
    0x3ca8398bu, 0x3c879008u, 0x3c5a7bf2u, 0x3c301052u, 0x3c0de12du, 0x3be4aa46u,
    0x3bb8449cu, 0x3b947daeu, 0x3b6f520eu, 0x3b40dac5u, 0x3b1b690du, 0x3afa78f0u,
    0x3ac9d75cu, 0x3aa2a6f7u, 0x3a83126fu, 0x3a533f28u, 0x3a2a3b44u, 0x3a092e02u,
    0x39dd1725u, 0x39b229fbu, 0x398f9272u, 0x39676492u, 0x393a7753u, 0x39164324u,
    0x38f22ce2u, 0x38c327b5u, 0x389d43a4u, 0x387d75d4u, 0x384c3fbeu, 0x382497abu,
    0x3804a2b2u, 0x37d5c441u, 0x37ac431du, 0x378ad0edu, 0x375fba4fu, 0x37344a0eu,
    0x371148e3u, 0x36ea2732u, 0x36bcb0c1u, 0x36980e02u, 0x36751070u, 0x36457babu,
    0x361f23e4u, 0x36003decu, 0x35ceaf79u, 0x35a68e4cu,
};
constexpr uint32_t kMistral7B[64] = {
    0x3f800000u, 0x3f5dafd7u, 0x3f3ff911u, 0x3f263de0u, 0x3f0ff59au, 0x3ef953cfu,
    0x3ed7e89bu, 0x3ebaf81bu, 0x3ea1e89bu, 0x3e8c3504u, 0x3e72d423u, 0x3e5247edu,
    0x3e361887u, 0x3e1db040u, 0x3e088d77u, 0x3dec7fd6u, 0x3dcccccdu, 0x3db15978u,
    0x3d99940du, 0x3d84fe4du, 0x3d6655c2u, 0x3d47763fu, 0x3d2cba15u, 0x3d159348u,
    0x3d0186e3u, 0x3ce054d2u, 0x3cc2434fu, 0x3ca8398bu, 0x3c91ad39u, 0x3c7c4d33u,
    0x3c5a7bf2u, 0x3c3d3311u, 0x3c23d70au, 0x3c0de12du, 0x3bf5b9b0u, 0x3bd4ca15u,
    0x3bb8449cu, 0x3b9f91ccu, 0x3b8a2e77u, 0x3b6f520eu, 0x3b4f3e38u, 0x3b33770fu,
    0x3b1b690du, 0x3b06946fu, 0x3ae91528u, 0x3ac9d75cu, 0x3aaec98eu, 0x3a975c0eu,
    0x3a83126fu, 0x3a6301e2u, 0x3a44948cu, 0x3a2a3b44u, 0x3a136a16u, 0x39ff4facu,
    0x39dd1725u, 0x39bf74d7u, 0x39a5cb60u, 0x398f9272u, 0x3978a815u, 0x395753e4u,
    0x393a7753u, 0x39217916u, 0x390bd472u, 0x38f22ce2u,
};

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

ModelSpec parse_or_die(const std::string& json) {
  Result<ModelSpec> spec = parse_model_config(json, "rope_test/config.json");
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
  return spec.is_ok() ? spec.value() : ModelSpec{};
}

// Bit-exact, except at `one_ulp_off`: entries where torch's vectorized powf (accurate to 1 ulp,
// not correctly rounded) rounds base**exponent the other way; there anvil is the correctly
// rounded one and must be exactly one ulp away.
void expect_matches(const std::vector<float>& got, const uint32_t* want, size_t n, std::set<size_t> one_ulp_off = {}) {
  ASSERT_EQ(got.size(), n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t diff = static_cast<int64_t>(bits_of(got[i])) - static_cast<int64_t>(want[i]);
    if (one_ulp_off.count(i)) {
      EXPECT_EQ(std::abs(diff), 1) << "index " << i;
    } else {
      EXPECT_EQ(diff, 0) << "index " << i << ": got " << got[i] << " (0x" << std::hex << bits_of(got[i]) << ")";
    }
  }
}

TEST(RopeInvFreq, Llama32Llama3Scaling) {
  ModelSpec spec = parse_or_die(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
  expect_matches(rope_inv_freq(spec), kLlama32_1B, std::size(kLlama32_1B));
}

TEST(RopeInvFreq, Llama31Llama3Scaling) {
  ModelSpec spec = parse_or_die(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
  expect_matches(rope_inv_freq(spec), kLlama31_8B, std::size(kLlama31_8B));
}

TEST(RopeInvFreq, Llama3ScalingFromTransformers5RopeParameters) {
  // transformers 5 writes the same parameters under rope_parameters, rope_theta included.
  ModelSpec spec = parse_or_die(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
    "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                        "original_max_position_embeddings": 8192, "rope_type": "llama3",
                        "rope_theta": 500000.0}})");
  EXPECT_EQ(spec.rope_theta, 500000.0);
  expect_matches(rope_inv_freq(spec), kLlama31_8B, std::size(kLlama31_8B));
}

TEST(RopeInvFreq, Llama2LinearScaling) {
  ModelSpec spec = parse_or_die(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "max_position_embeddings": 16384, "rope_theta": 10000.0,
    "rope_scaling": {"type": "linear", "factor": 4.0}})");
  ASSERT_EQ(spec.rope_scaling.type, RopeScalingType::kLinear);
  expect_matches(rope_inv_freq(spec), kLlama2Linear4, std::size(kLlama2Linear4));
}

TEST(RopeInvFreq, Qwen2Default) {
  ModelSpec spec = parse_or_die(R"({
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 152064,
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
    "rope_theta": 1000000.0, "rope_scaling": null})");
  // Index 37: 1e6 ** (74/128) = 2942.727176...; torch's powf gives 0x4537eba2 (2942.72705),
  // the correctly rounded float is 0x4537eba3 (2942.72729), so 1/x differs by one ulp.
  expect_matches(rope_inv_freq(spec), kQwen2_7B, std::size(kQwen2_7B), {37});
}

TEST(RopeInvFreq, MistralDefault) {
  ModelSpec spec = parse_or_die(R"({
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
    "rope_theta": 10000.0, "sliding_window": null})");
  expect_matches(rope_inv_freq(spec), kMistral7B, std::size(kMistral7B));
}

}  // namespace
}  // namespace anvil
