// ggml type table and reference dequantizers. Each dequantizer evaluates the same float32
// expressions, in the same order, as ggml's dequantize_row_* (and the gguf Python package's numpy
// port), so results match them exactly; this file must not be built with FMA contraction.
#include "model/checkpoint/gguf_types.h"

#include <cstring>
#include <limits>

#include "core/dtype.h"

// GCC contracts nothing in ISO C++ mode (-std=c++20); clang fuses a*b+c within an expression by
// default, which on FMA targets would change the last bit of `q * d + m`.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace anvil::gguf {
namespace {

constexpr int64_t kQK = 32;    // elements per block of the 32-wide types
constexpr int64_t kQK_K = 256; // elements per super-block of the k-quants

const GgmlTypeInfo kF32Info{"F32", 1, 4, true};
const GgmlTypeInfo kF16Info{"F16", 1, 2, true};
const GgmlTypeInfo kQ4_0Info{"Q4_0", kQK, 2 + 16, true};
const GgmlTypeInfo kQ4_1Info{"Q4_1", kQK, 2 + 2 + 16, true};
const GgmlTypeInfo kQ5_0Info{"Q5_0", kQK, 2 + 4 + 16, true};
const GgmlTypeInfo kQ5_1Info{"Q5_1", kQK, 2 + 2 + 4 + 16, true};
const GgmlTypeInfo kQ8_0Info{"Q8_0", kQK, 2 + 32, true};
const GgmlTypeInfo kQ8_1Info{"Q8_1", kQK, 4 + 4 + 32, false};
const GgmlTypeInfo kQ2_KInfo{"Q2_K", kQK_K, 84, false};
const GgmlTypeInfo kQ3_KInfo{"Q3_K", kQK_K, 110, false};
const GgmlTypeInfo kQ4_KInfo{"Q4_K", kQK_K, 2 + 2 + 12 + 128, true};
const GgmlTypeInfo kQ5_KInfo{"Q5_K", kQK_K, 2 + 2 + 12 + 32 + 128, true};
const GgmlTypeInfo kQ6_KInfo{"Q6_K", kQK_K, 128 + 64 + 16 + 2, true};
const GgmlTypeInfo kQ8_KInfo{"Q8_K", kQK_K, 292, false};
const GgmlTypeInfo kIQ2_XXSInfo{"IQ2_XXS", kQK_K, 66, false};
const GgmlTypeInfo kIQ2_XSInfo{"IQ2_XS", kQK_K, 74, false};
const GgmlTypeInfo kIQ3_XXSInfo{"IQ3_XXS", kQK_K, 98, false};
const GgmlTypeInfo kIQ1_SInfo{"IQ1_S", kQK_K, 50, false};
const GgmlTypeInfo kIQ4_NLInfo{"IQ4_NL", kQK, 18, false};
const GgmlTypeInfo kIQ3_SInfo{"IQ3_S", kQK_K, 110, false};
const GgmlTypeInfo kIQ2_SInfo{"IQ2_S", kQK_K, 82, false};
const GgmlTypeInfo kIQ4_XSInfo{"IQ4_XS", kQK_K, 136, false};
const GgmlTypeInfo kI8Info{"I8", 1, 1, false};
const GgmlTypeInfo kI16Info{"I16", 1, 2, false};
const GgmlTypeInfo kI32Info{"I32", 1, 4, false};
const GgmlTypeInfo kI64Info{"I64", 1, 8, false};
const GgmlTypeInfo kF64Info{"F64", 1, 8, true};
const GgmlTypeInfo kIQ1_MInfo{"IQ1_M", kQK_K, 56, false};
const GgmlTypeInfo kBF16Info{"BF16", 1, 2, true};
const GgmlTypeInfo kTQ1_0Info{"TQ1_0", kQK_K, 54, false};
const GgmlTypeInfo kTQ2_0Info{"TQ2_0", kQK_K, 66, false};
const GgmlTypeInfo kMXFP4Info{"MXFP4", kQK, 17, false};

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q4_0: [d: f16][qs: 16 bytes]; element j is low nibble of qs[j], element j+16 the high one.
void dequant_q4_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += kQ4_0Info.type_size, y += kQK) {
    const float d = load_f16(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
      y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
  }
}

// Q4_1: [d: f16][m: f16][qs: 16 bytes]; y = q * d + m.
void dequant_q4_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += kQ4_1Info.type_size, y += kQK) {
    const float d = load_f16(b);
    const float m = load_f16(b + 2);
    const uint8_t* qs = b + 4;
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
      y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
    }
  }
}

// Q5_0: [d: f16][qh: u32 LE, bit j = 5th bit of element j][qs: 16 bytes]; y = (q - 16) * d.
void dequant_q5_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += kQ5_0Info.type_size, y += kQK) {
    const float d = load_f16(b);
    const uint32_t qh = static_cast<uint32_t>(b[2]) | (static_cast<uint32_t>(b[3]) << 8) |
                        (static_cast<uint32_t>(b[4]) << 16) | (static_cast<uint32_t>(b[5]) << 24);
    const uint8_t* qs = b + 6;
    for (int j = 0; j < 16; ++j) {
      const int h0 = static_cast<int>((qh >> j) << 4) & 0x10;
      const int h1 = static_cast<int>(qh >> (j + 12)) & 0x10;
      y[j] = static_cast<float>(((qs[j] & 0x0f) | h0) - 16) * d;
      y[j + 16] = static_cast<float>(((qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

// Q5_1: [d: f16][m: f16][qh: u32 LE][qs: 16 bytes]; y = q * d + m.
void dequant_q5_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += kQ5_1Info.type_size, y += kQK) {
    const float d = load_f16(b);
    const float m = load_f16(b + 2);
    const uint32_t qh = static_cast<uint32_t>(b[4]) | (static_cast<uint32_t>(b[5]) << 8) |
                        (static_cast<uint32_t>(b[6]) << 16) | (static_cast<uint32_t>(b[7]) << 24);
    const uint8_t* qs = b + 8;
    for (int j = 0; j < 16; ++j) {
      const int h0 = static_cast<int>((qh >> j) << 4) & 0x10;
      const int h1 = static_cast<int>(qh >> (j + 12)) & 0x10;
      y[j] = static_cast<float>((qs[j] & 0x0f) | h0) * d + m;
      y[j + 16] = static_cast<float>((qs[j] >> 4) | h1) * d + m;
    }
  }
}

// Q8_0: [d: f16][qs: 32 x int8]; y = q * d.
void dequant_q8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += kQ8_0Info.type_size, y += kQK) {
    const float d = load_f16(b);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
  }
}

// The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of Q4_K / Q5_K:
// bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7, bytes 4-7 the same
// for mins, bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high nibble).
void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K: [d: f16][dmin: f16][scales: 12][qs: 128]; 8 sub-blocks of 32, y = d*sc * q - dmin*m.
void dequant_q4_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += kQ4_KInfo.type_size) {
    const float d = load_f16(b);
    const float dmin = load_f16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    for (int j = 0, is = 0; j < kQK_K; j += 64, is += 2, q += 32) {
      uint8_t sc, m;
      scale_min_k4(is, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      scale_min_k4(is + 1, scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

// Q5_K: [d: f16][dmin: f16][scales: 12][qh: 32][qs: 128]; as Q4_K with a 5th bit from qh.
void dequant_q5_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += kQ5_KInfo.type_size) {
    const float d = load_f16(b);
    const float dmin = load_f16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < kQK_K; j += 64, is += 2, ql += 32) {
      uint8_t sc, m;
      scale_min_k4(is, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      scale_min_k4(is + 1, scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>((ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

// Q6_K: [ql: 128][qh: 64][scales: 16 x int8][d: f16]; 16 sub-blocks of 16, y = d*sc * (q - 32).
void dequant_q6_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += kQ6_KInfo.type_size) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = load_f16(b + 208);
    for (int n = 0; n < kQK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace

std::optional<GgmlType> ggml_type_from_id(uint32_t id) {
  switch (id) {
    case 0: case 1: case 2: case 3: case 6: case 7: case 8: case 9: case 10: case 11: case 12:
    case 13: case 14: case 15: case 16: case 17: case 18: case 19: case 20: case 21: case 22:
    case 23: case 24: case 25: case 26: case 27: case 28: case 29: case 30: case 34: case 35:
    case 39:
      return static_cast<GgmlType>(id);
    default:
      return std::nullopt;
  }
}

const GgmlTypeInfo& ggml_type_info(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return kF32Info;
    case GgmlType::kF16: return kF16Info;
    case GgmlType::kQ4_0: return kQ4_0Info;
    case GgmlType::kQ4_1: return kQ4_1Info;
    case GgmlType::kQ5_0: return kQ5_0Info;
    case GgmlType::kQ5_1: return kQ5_1Info;
    case GgmlType::kQ8_0: return kQ8_0Info;
    case GgmlType::kQ8_1: return kQ8_1Info;
    case GgmlType::kQ2_K: return kQ2_KInfo;
    case GgmlType::kQ3_K: return kQ3_KInfo;
    case GgmlType::kQ4_K: return kQ4_KInfo;
    case GgmlType::kQ5_K: return kQ5_KInfo;
    case GgmlType::kQ6_K: return kQ6_KInfo;
    case GgmlType::kQ8_K: return kQ8_KInfo;
    case GgmlType::kIQ2_XXS: return kIQ2_XXSInfo;
    case GgmlType::kIQ2_XS: return kIQ2_XSInfo;
    case GgmlType::kIQ3_XXS: return kIQ3_XXSInfo;
    case GgmlType::kIQ1_S: return kIQ1_SInfo;
    case GgmlType::kIQ4_NL: return kIQ4_NLInfo;
    case GgmlType::kIQ3_S: return kIQ3_SInfo;
    case GgmlType::kIQ2_S: return kIQ2_SInfo;
    case GgmlType::kIQ4_XS: return kIQ4_XSInfo;
    case GgmlType::kI8: return kI8Info;
    case GgmlType::kI16: return kI16Info;
    case GgmlType::kI32: return kI32Info;
    case GgmlType::kI64: return kI64Info;
    case GgmlType::kF64: return kF64Info;
    case GgmlType::kIQ1_M: return kIQ1_MInfo;
    case GgmlType::kBF16: return kBF16Info;
    case GgmlType::kTQ1_0: return kTQ1_0Info;
    case GgmlType::kTQ2_0: return kTQ2_0Info;
    case GgmlType::kMXFP4: return kMXFP4Info;
  }
  return kF32Info;  // unreachable: every enumerator is handled above
}

std::optional<uint64_t> ggml_row_bytes(GgmlType t, int64_t n) {
  const GgmlTypeInfo& info = ggml_type_info(t);
  if (n < 0 || n % info.block_size != 0) return std::nullopt;
  const uint64_t blocks = static_cast<uint64_t>(n / info.block_size);
  const uint64_t size = static_cast<uint64_t>(info.type_size);
  if (blocks > std::numeric_limits<uint64_t>::max() / size) return std::nullopt;
  return blocks * size;
}

Status dequantize(GgmlType t, const uint8_t* src, float* dst, int64_t n) {
  const GgmlTypeInfo& info = ggml_type_info(t);
  if (n < 0 || n % info.block_size != 0) {
    return invalid_argument("dequantize " + std::string(info.name) + ": " + std::to_string(n) +
                            " elements is not a multiple of the block size " +
                            std::to_string(info.block_size));
  }
  const int64_t nb = n / info.block_size;
  switch (t) {
    case GgmlType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return Status::ok();
    case GgmlType::kF16: convert_to_f32(DType::kF16, src, dst, static_cast<size_t>(n)); return Status::ok();
    case GgmlType::kBF16: convert_to_f32(DType::kBF16, src, dst, static_cast<size_t>(n)); return Status::ok();
    case GgmlType::kF64:
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return Status::ok();
    case GgmlType::kQ4_0: dequant_q4_0(src, dst, nb); return Status::ok();
    case GgmlType::kQ4_1: dequant_q4_1(src, dst, nb); return Status::ok();
    case GgmlType::kQ5_0: dequant_q5_0(src, dst, nb); return Status::ok();
    case GgmlType::kQ5_1: dequant_q5_1(src, dst, nb); return Status::ok();
    case GgmlType::kQ8_0: dequant_q8_0(src, dst, nb); return Status::ok();
    case GgmlType::kQ4_K: dequant_q4_k(src, dst, nb); return Status::ok();
    case GgmlType::kQ5_K: dequant_q5_k(src, dst, nb); return Status::ok();
    case GgmlType::kQ6_K: dequant_q6_k(src, dst, nb); return Status::ok();
    case GgmlType::kQ8_1: case GgmlType::kQ2_K: case GgmlType::kQ3_K: case GgmlType::kQ8_K:
    case GgmlType::kIQ2_XXS: case GgmlType::kIQ2_XS: case GgmlType::kIQ3_XXS: case GgmlType::kIQ1_S:
    case GgmlType::kIQ4_NL: case GgmlType::kIQ3_S: case GgmlType::kIQ2_S: case GgmlType::kIQ4_XS:
    case GgmlType::kI8: case GgmlType::kI16: case GgmlType::kI32: case GgmlType::kI64:
    case GgmlType::kIQ1_M: case GgmlType::kTQ1_0: case GgmlType::kTQ2_0: case GgmlType::kMXFP4:
      break;
  }
  return unsupported(std::string("ggml type ") + info.name +
                     " cannot be dequantized by anvil (supported: F32, F16, BF16, F64, Q4_0, Q4_1, "
                     "Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)");
}

}  // namespace anvil::gguf
