// GgufFile: a parsed, validated GGUF file (versions 2 and 3, little-endian), mmap'd. open()
// checks everything a reader later relies on: every metadata value lies inside the file, array
// and string lengths are bounded by the bytes left, tensor data is aligned, in range, sized to
// its type's block geometry and non-overlapping. After open() succeeds, tensor_data() is safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/mmap_file.h"
#include "core/status.h"
#include "model/checkpoint/gguf_types.h"

namespace anvil::gguf {

// GGUF metadata value types (gguf.md).
enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
const char* value_type_name(ValueType t);

// One metadata value. Scalars keep their exact value in the field that fits their type (all
// integers in `i` or `u` by signedness, floats in `f`). Arrays of strings or arrays hold their
// elements in `array`; arrays of numbers and bools keep their packed little-endian bytes in `raw`
// (one byte of memory per byte of file, however hostile the file) and decode on element().
struct Value {
  ValueType type = ValueType::kU8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;
  bool b = false;
  std::string str;
  ValueType elem_type = ValueType::kU8;  // arrays only
  std::vector<Value> array;               // arrays of strings / arrays
  std::vector<uint8_t> raw;               // arrays of scalars: count * element size bytes
  uint64_t count = 0;                     // arrays: number of elements

  // Element `k` (< count) of an array, decoded.
  Value element(uint64_t k) const;

  bool is_integer() const;
  bool is_float() const { return type == ValueType::kF32 || type == ValueType::kF64; }
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // as stored: dims[0] is the fastest-varying (ggml ne[0])
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;        // relative to the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
  // Row-major shape as PyTorch / safetensors see it: dims reversed.
  std::vector<int64_t> torch_shape() const { return {dims.rbegin(), dims.rend()}; }
};

// Hard limits that keep a hostile file from exhausting memory or stack.
struct ParseLimits {
  uint64_t max_string_bytes = 64ull << 20;  // one metadata string or tensor name
  int max_array_depth = 4;                  // arrays of arrays of ...
  uint64_t max_values = 8u << 20;           // strings and arrays in all metadata, together
  uint64_t max_tensors = 1u << 20;
  uint64_t max_kv = 1u << 20;
};

class GgufFile {
 public:
  static Result<std::unique_ptr<GgufFile>> open(const std::string& path, const ParseLimits& limits = {});
  // Parses an in-memory image (tests, fuzzing). `name` stands for the path in errors; the bytes
  // must outlive the returned object.
  static Result<std::unique_ptr<GgufFile>> parse(const uint8_t* data, size_t size, const std::string& name,
                                                 const ParseLimits& limits = {});

  const std::string& path() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  const std::map<std::string, Value>& metadata() const { return kv_; }
  const Value* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters: not_found naming the key if absent, invalid_argument naming key and actual
  // type if the type does not fit (any integer type converts to an integer when in range).
  Result<std::string> get_string(const std::string& key) const;
  Result<int64_t> get_int(const std::string& key) const;
  Result<double> get_float(const std::string& key) const;  // accepts integers too
  Result<bool> get_bool(const std::string& key) const;
  Result<std::vector<std::string>> get_string_array(const std::string& key) const;
  Result<std::vector<int64_t>> get_int_array(const std::string& key) const;
  Result<std::vector<double>> get_float_array(const std::string& key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(const std::string& name) const;
  // The tensor's bytes (validated by open()).
  const uint8_t* tensor_data(const TensorInfo& t) const { return base_ + data_offset_ + t.offset; }
  // Dequantizes a whole tensor to f32, in the stored (ggml) element order.
  Result<std::vector<float>> dequantize_tensor(const TensorInfo& t) const;

 private:
  MmapFile file_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, Value> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;

  Status parse_all(const ParseLimits& limits);
};

}  // namespace anvil::gguf
