// Element types and exact scalar conversions. Narrowing conversions round to nearest even;
// NaN stays NaN; fp8 e4m3 (no inf) saturates to +-448 as the OCP "satfinite" mode does, and
// e5m2 overflows to inf. int4 is two's-complement, two values per byte, low nibble first.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace anvil {

enum class DType : uint8_t {
  kF32,
  kBF16,
  kF16,
  kF8E4M3,
  kF8E5M2,
  kI8,
  kI4,   // packed, 2 per byte
  kI32,
  kI64,
  kU8,
};

// Bytes per element; 0 for sub-byte types (use dtype_bytes_for).
size_t dtype_size(DType t);
// Bytes needed for `n` elements, rounding sub-byte types up.
size_t dtype_bytes_for(DType t, size_t n);
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);  // "bf16", "f32", ...

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// bf16 <-> f32
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

// f16 <-> f32
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

// fp8 <-> f32
uint8_t f32_to_f8e4m3(float f);
float f8e4m3_to_f32(uint8_t v);
uint8_t f32_to_f8e5m2(float f);
float f8e5m2_to_f32(uint8_t v);

// int4 packing: value in [-8, 7].
inline int int4_get(const uint8_t* packed, size_t i) {
  int nib = (packed[i / 2] >> ((i & 1) * 4)) & 0xf;
  return nib >= 8 ? nib - 16 : nib;
}
inline void int4_set(uint8_t* packed, size_t i, int v) {
  uint8_t nib = static_cast<uint8_t>(v & 0xf);
  int shift = (i & 1) * 4;
  packed[i / 2] = static_cast<uint8_t>((packed[i / 2] & ~(0xf << shift)) | (nib << shift));
}

// Converts `n` elements of type `src_t` to f32. Supports every float type and int8/int32.
void convert_to_f32(DType src_t, const void* src, float* dst, size_t n);
// Converts `n` f32 elements to `dst_t` (float types only).
void convert_from_f32(DType dst_t, const float* src, void* dst, size_t n);

}  // namespace anvil
