// Scalar conversions between f32 and the narrow float formats, bit-exact with round to nearest
// even. The generic narrowing routine handles any (exponent bits, mantissa bits) format.
#include "core/dtype.h"

#include <cmath>

namespace anvil {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kF8E4M3: return 1;
    case DType::kF8E5M2: return 1;
    case DType::kI8: return 1;
    case DType::kI4: return 0;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
  }
  return 0;
}

size_t dtype_bytes_for(DType t, size_t n) {
  if (t == DType::kI4) return (n + 1) / 2;
  return dtype_size(t) * n;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kF8E4M3: return "f8e4m3";
    case DType::kF8E5M2: return "f8e5m2";
    case DType::kI8: return "i8";
    case DType::kI4: return "i4";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kU8: return "u8";
  }
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view n) {
  if (n == "f32" || n == "fp32" || n == "float32") return DType::kF32;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  if (n == "f16" || n == "fp16" || n == "float16") return DType::kF16;
  if (n == "f8e4m3" || n == "fp8") return DType::kF8E4M3;
  if (n == "f8e5m2") return DType::kF8E5M2;
  if (n == "i8" || n == "int8") return DType::kI8;
  if (n == "i4" || n == "int4") return DType::kI4;
  if (n == "i32" || n == "int32") return DType::kI32;
  if (n == "i64" || n == "int64") return DType::kI64;
  if (n == "u8" || n == "uint8") return DType::kU8;
  return std::nullopt;
}

namespace {

// Narrows f32 to a format with `ebits` exponent and `mbits` mantissa bits (IEEE-like, with
// subnormals). Returns the bits without the sign. `max_finite_bits`: the largest finite encoding;
// `has_inf`: whether the format has inf (else overflow saturates to max finite, satfinite).
uint32_t narrow_float(float f, int ebits, int mbits, bool has_inf, uint32_t max_finite_bits,
                      uint32_t nan_bits, uint32_t* sign_out) {
  uint32_t u = f32_bits(f);
  *sign_out = u >> 31;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return nan_bits;
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t inf_bits = ((1u << ebits) - 1) << mbits;
  if (a == 0x7f800000u) return has_inf ? inf_bits : max_finite_bits;
  if (a == 0) return 0;
  int e = static_cast<int>(a >> 23) - 127;  // unbiased exponent of f (f32 subnormals: e=-127)
  uint32_t mant = a & 0x7fffffu;
  if (e == -127) {
    e = -126;
  } else {
    mant |= 0x800000u;  // implicit bit
  }
  // Target exponent field; subnormal if below 1.
  int te = e + bias;
  int shift;  // how many bits of the 24-bit significand to drop
  if (te >= 1) {
    shift = 23 - mbits;
  } else {
    shift = 23 - mbits + (1 - te);
    te = 0;
  }
  uint32_t result;
  if (shift >= 32) {
    result = 0;
  } else {
    uint32_t kept = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (kept & 1))) kept++;
    // kept includes the implicit bit when te >= 1. Build the encoding so that a mantissa carry
    // naturally increments the exponent.
    if (te >= 1) {
      result = (static_cast<uint32_t>(te) << mbits) + (kept - (1u << mbits));
    } else {
      result = kept;  // subnormal (may round up into the smallest normal, which is correct)
    }
  }
  if (result > max_finite_bits) return has_inf ? inf_bits : max_finite_bits;
  return result;
}

float widen_float(uint32_t bits, int ebits, int mbits, bool nan_check_e4m3) {
  uint32_t sign = bits >> (ebits + mbits);
  uint32_t e = (bits >> mbits) & ((1u << ebits) - 1);
  uint32_t m = bits & ((1u << mbits) - 1);
  const int bias = (1 << (ebits - 1)) - 1;
  float v;
  if (nan_check_e4m3) {
    if (e == 0xf && m == 0x7) return sign ? -NAN : NAN;
  } else if (e == (1u << ebits) - 1) {
    v = m ? NAN : INFINITY;
    return sign ? -v : v;
  }
  if (e == 0) {
    v = std::ldexp(static_cast<float>(m), 1 - bias - mbits);
  } else {
    v = std::ldexp(static_cast<float>(m | (1u << mbits)), static_cast<int>(e) - bias - mbits);
  }
  return sign ? -v : v;
}

}  // namespace

uint16_t f32_to_f16(float f) {
  uint32_t sign;
  uint32_t r = narrow_float(f, 5, 10, true, 0x7bff, 0x7e00, &sign);
  return static_cast<uint16_t>((sign << 15) | r);
}
float f16_to_f32(uint16_t h) { return widen_float(h, 5, 10, false); }

uint8_t f32_to_f8e4m3(float f) {
  uint32_t sign;
  uint32_t r = narrow_float(f, 4, 3, false, 0x7e, 0x7f, &sign);
  return static_cast<uint8_t>((sign << 7) | r);
}
float f8e4m3_to_f32(uint8_t v) { return widen_float(v, 4, 3, true); }

uint8_t f32_to_f8e5m2(float f) {
  uint32_t sign;
  uint32_t r = narrow_float(f, 5, 2, true, 0x7b, 0x7e, &sign);
  return static_cast<uint8_t>((sign << 7) | r);
}
float f8e5m2_to_f32(uint8_t v) { return widen_float(v, 5, 2, false); }

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  switch (t) {
    case DType::kF32: std::memcpy(dst, src, n * 4); return;
    case DType::kBF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::kF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::kF8E4M3: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f8e4m3_to_f32(s[i]);
      return;
    }
    case DType::kF8E5M2: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f8e5m2_to_f32(s[i]);
      return;
    }
    case DType::kI8: {
      auto* s = static_cast<const int8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = s[i];
      return;
    }
    case DType::kI4: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(int4_get(s, i));
      return;
    }
    case DType::kI32: {
      auto* s = static_cast<const int32_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::kI64: {
      auto* s = static_cast<const int64_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::kU8: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = s[i];
      return;
    }
  }
}

void convert_from_f32(DType t, const float* src, void* dst, size_t n) {
  switch (t) {
    case DType::kF32: std::memcpy(dst, src, n * 4); return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::kF8E4M3: {
      auto* d = static_cast<uint8_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f8e4m3(src[i]);
      return;
    }
    case DType::kF8E5M2: {
      auto* d = static_cast<uint8_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f8e5m2(src[i]);
      return;
    }
    case DType::kI8:
    case DType::kI4:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8:
      return;  // integer targets need a scale: see build/quantize
  }
}

}  // namespace anvil
