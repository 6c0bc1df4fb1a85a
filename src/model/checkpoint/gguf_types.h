// ggml tensor types as GGUF files store them: ids, block geometry, and dequantization to f32.
// Block layouts follow ggml (ggml-common.h) bit for bit; a row of n elements of a block type is
// n / block_size blocks of type_size bytes each, n a multiple of block_size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "core/status.h"

namespace anvil::gguf {

// The ids ggml assigns (stable across versions). Every id GGUF files use today is listed so a
// file's geometry can be validated even where anvil cannot dequantize the type.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct GgmlTypeInfo {
  const char* name;    // "Q4_K"
  int64_t block_size;  // elements per block (1 for plain types)
  int64_t type_size;   // bytes per block
  bool dequantizable;  // anvil can convert it to f32
};

// The type for a raw id from a file; nullopt for ids ggml does not define.
std::optional<GgmlType> ggml_type_from_id(uint32_t id);
const GgmlTypeInfo& ggml_type_info(GgmlType t);
inline const char* ggml_type_name(GgmlType t) { return ggml_type_info(t).name; }

// Bytes of `n` elements; nullopt if n is not a multiple of the block size or the size overflows.
std::optional<uint64_t> ggml_row_bytes(GgmlType t, int64_t n);

// Dequantizes `n` elements (a multiple of the block size) from `src` into `dst`. Fails with
// kUnsupported, naming the type, for types that are not dequantizable.
Status dequantize(GgmlType t, const uint8_t* src, float* dst, int64_t n);

}  // namespace anvil::gguf
