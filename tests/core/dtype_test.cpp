// dtype conversions against known bit patterns (round to nearest even, NaN, inf, subnormals).
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>

namespace anvil {
namespace {

TEST(DType, Bf16KnownBits) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f808000)), 0x3f80);
  // 1.0078125 + half ulp: ties to even rounds up to 0x3f82.
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f818000)), 0x3f82);
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f808001)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x7f7fffff)), 0x7f80);  // max float rounds to inf
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
}

TEST(DType, F16KnownBits) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even -> 0
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 ulp rounds up
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00);
  EXPECT_EQ(f32_to_f16(-INFINITY), 0xfc00);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  // 1 + 2^-11 halfway between 1 and 1+2^-10: even -> 1.0
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}

TEST(DType, F8E4M3KnownBits) {
  EXPECT_EQ(f32_to_f8e4m3(1.0f), 0x38);
  EXPECT_EQ(f32_to_f8e4m3(448.0f), 0x7e);
  EXPECT_EQ(f32_to_f8e4m3(1000.0f), 0x7e);  // saturates
  EXPECT_EQ(f32_to_f8e4m3(-1000.0f), 0xfe);
  EXPECT_EQ(f32_to_f8e4m3(INFINITY), 0x7e);
  EXPECT_EQ(f32_to_f8e4m3(NAN) & 0x7f, 0x7f);
  EXPECT_EQ(f32_to_f8e4m3(std::ldexp(1.0f, -9)), 0x01);  // smallest subnormal
  EXPECT_EQ(f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(f8e4m3_to_f32(0x7e), 448.0f);
  EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0x7f)));
  EXPECT_EQ(f8e4m3_to_f32(0xb8), -1.0f);
  // 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39): ties to even.
  EXPECT_EQ(f32_to_f8e4m3(1.0625f), 0x38);
  EXPECT_EQ(f32_to_f8e4m3(1.1875f), 0x3a);
  // Every encoding round-trips.
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;
    EXPECT_EQ(f32_to_f8e4m3(f8e4m3_to_f32(static_cast<uint8_t>(b))), b) << b;
  }
}

TEST(DType, F8E5M2KnownBits) {
  EXPECT_EQ(f32_to_f8e5m2(1.0f), 0x3c);
  EXPECT_EQ(f32_to_f8e5m2(57344.0f), 0x7b);
  EXPECT_EQ(f32_to_f8e5m2(1e6f), 0x7c);  // overflow to inf
  EXPECT_EQ(f8e5m2_to_f32(0x7c), INFINITY);
  EXPECT_TRUE(std::isnan(f8e5m2_to_f32(0x7e)));
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) > 0x7c) continue;
    EXPECT_EQ(f32_to_f8e5m2(f8e5m2_to_f32(static_cast<uint8_t>(b))), b) << b;
  }
}

TEST(DType, F16RoundTripAllFinite) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    uint16_t h = static_cast<uint16_t>(b);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads
    EXPECT_EQ(f32_to_f16(f16_to_f32(h)), h) << b;
  }
}

TEST(DType, Int4Packing) {
  uint8_t buf[2] = {0, 0};
  int4_set(buf, 0, -8);
  int4_set(buf, 1, 7);
  int4_set(buf, 2, -1);
  int4_set(buf, 3, 3);
  EXPECT_EQ(buf[0], 0x78);
  EXPECT_EQ(buf[1], 0x3f);
  EXPECT_EQ(int4_get(buf, 0), -8);
  EXPECT_EQ(int4_get(buf, 1), 7);
  EXPECT_EQ(int4_get(buf, 2), -1);
  EXPECT_EQ(int4_get(buf, 3), 3);
  EXPECT_EQ(dtype_bytes_for(DType::kI4, 5), 3u);
}

TEST(DType, Names) {
  EXPECT_EQ(dtype_from_name("bfloat16"), DType::kBF16);
  EXPECT_EQ(dtype_name(DType::kF8E4M3), "f8e4m3");
  EXPECT_FALSE(dtype_from_name("complex64").has_value());
}

}  // namespace
}  // namespace anvil
