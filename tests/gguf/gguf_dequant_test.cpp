// Dequantization of every supported ggml type against the gguf Python package's numpy reference
// (tests/data/gguf/quant_<TYPE>.{gguf,f32}, made by tools/gguf/make_fixtures.py): bit-exact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model/checkpoint/gguf_file.h"
#include "gguf_test_util.h"

namespace anvil::gguf {
namespace {

using testing::fixture;
using testing::read_bytes;

class DequantTest : public ::testing::TestWithParam<std::pair<const char*, GgmlType>> {};

TEST_P(DequantTest, MatchesNumpyReferenceBitForBit) {
  const auto [name, type] = GetParam();
  auto file = GgufFile::open(fixture(std::string("quant_") + name + ".gguf"));
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  const TensorInfo* t = (*file)->find_tensor("t");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->type, type);
  EXPECT_EQ(t->dims, (std::vector<int64_t>{256, 3}));
  EXPECT_EQ(t->torch_shape(), (std::vector<int64_t>{3, 256}));
  EXPECT_EQ(t->nbytes, *ggml_row_bytes(type, 256) * 3);

  auto got = (*file)->dequantize_tensor(*t);
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  std::vector<uint8_t> raw = read_bytes(fixture(std::string("quant_") + name + ".f32"));
  ASSERT_EQ(raw.size(), 3u * 256u * 4u);
  std::vector<float> want(raw.size() / 4);
  std::memcpy(want.data(), raw.data(), raw.size());
  ASSERT_EQ(got->size(), want.size());
  size_t mismatches = 0, nonzero = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &(*got)[i], 4);
    std::memcpy(&b, &want[i], 4);
    if (a != b && mismatches++ < 5) ADD_FAILURE() << name << " element " << i << ": got " << (*got)[i] << " want " << want[i];
    if (want[i] != 0.0f) ++nonzero;
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GT(nonzero, want.size() / 2);  // the fixture is not trivially zero
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DequantTest,
                         ::testing::Values(std::make_pair("F32", GgmlType::kF32), std::make_pair("F16", GgmlType::kF16),
                                           std::make_pair("BF16", GgmlType::kBF16), std::make_pair("Q8_0", GgmlType::kQ8_0),
                                           std::make_pair("Q4_0", GgmlType::kQ4_0), std::make_pair("Q4_1", GgmlType::kQ4_1),
                                           std::make_pair("Q5_0", GgmlType::kQ5_0), std::make_pair("Q5_1", GgmlType::kQ5_1),
                                           std::make_pair("Q4_K", GgmlType::kQ4_K), std::make_pair("Q5_K", GgmlType::kQ5_K),
                                           std::make_pair("Q6_K", GgmlType::kQ6_K)),
                         [](const auto& info) { return std::string(info.param.first); });

TEST(Dequant, HandComputedQ8_0AndQ4_1Blocks) {
  // Q8_0: d = 0.5 (f16 0x3800), q = -3, 0, 127, ...
  std::vector<uint8_t> q8(34, 0);
  q8[0] = 0x00; q8[1] = 0x38;
  q8[2] = static_cast<uint8_t>(-3); q8[4] = 127; q8[5] = static_cast<uint8_t>(-128);
  float y[32];
  ASSERT_TRUE(dequantize(GgmlType::kQ8_0, q8.data(), y, 32).is_ok());
  EXPECT_EQ(y[0], -1.5f); EXPECT_EQ(y[1], 0.0f); EXPECT_EQ(y[2], 63.5f); EXPECT_EQ(y[3], -64.0f);
  // Q4_1: d = 2 (0x4000), m = -1 (0xBC00); qs[0] = 0x3A -> y[0] = 10*2-1 = 19, y[16] = 3*2-1 = 5.
  std::vector<uint8_t> q41(20, 0);
  q41[1] = 0x40; q41[3] = 0xBC; q41[4] = 0x3A;
  ASSERT_TRUE(dequantize(GgmlType::kQ4_1, q41.data(), y, 32).is_ok());
  EXPECT_EQ(y[0], 19.0f); EXPECT_EQ(y[16], 5.0f); EXPECT_EQ(y[1], -1.0f);
}

TEST(Dequant, RejectsPartialBlocksAndUnsupportedTypes) {
  std::vector<uint8_t> buf(256, 0);
  float y[64];
  Status s = dequantize(GgmlType::kQ4_0, buf.data(), y, 31);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Q4_0"), std::string::npos) << s.message();
  s = dequantize(GgmlType::kQ2_K, buf.data(), y, 0);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("Q2_K"), std::string::npos) << s.message();
}

TEST(Dequant, TypeTableMatchesGgml) {
  EXPECT_EQ(*ggml_row_bytes(GgmlType::kQ4_K, 512), 288u);
  EXPECT_EQ(*ggml_row_bytes(GgmlType::kQ6_K, 256), 210u);
  EXPECT_EQ(*ggml_row_bytes(GgmlType::kQ5_1, 64), 48u);
  EXPECT_EQ(*ggml_row_bytes(GgmlType::kBF16, 3), 6u);
  EXPECT_FALSE(ggml_row_bytes(GgmlType::kQ8_0, 33).has_value());
  EXPECT_FALSE(ggml_type_from_id(4).has_value());  // removed Q4_2
  EXPECT_FALSE(ggml_type_from_id(1000).has_value());
  EXPECT_STREQ(ggml_type_name(*ggml_type_from_id(13)), "Q5_K");
}

}  // namespace
}  // namespace anvil::gguf
