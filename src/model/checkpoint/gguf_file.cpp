// GGUF parsing and validation. Every read goes through Reader, which checks the bytes left
// before touching them; lengths read from the file are compared with the bytes that remain
// before anything is allocated, so memory use stays proportional to the file size.
#include "model/checkpoint/gguf_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace anvil::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& name) : p_(data), size_(size), name_(name) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  template <typename T>
  Status read(T* out, const std::string& what) {
    if (left() < sizeof(T)) return truncated(what);
    std::memcpy(out, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }

  Status read_bytes(void* out, size_t n, const std::string& what) {
    if (left() < n) return truncated(what);
    if (n) std::memcpy(out, p_ + pos_, n);
    pos_ += n;
    return Status::ok();
  }

  Status read_string(std::string* out, uint64_t max_bytes, const std::string& what) {
    uint64_t len = 0;
    ANVIL_RETURN_IF_ERROR(read(&len, what + " (string length)"));
    if (len > max_bytes) {
      return data_loss(name_ + ": " + what + ": string length " + std::to_string(len) +
                       " exceeds the limit of " + std::to_string(max_bytes) + " bytes");
    }
    if (len > left()) return truncated(what + " (string of " + std::to_string(len) + " bytes)");
    out->assign(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return Status::ok();
  }

  Status truncated(const std::string& what) const {
    return data_loss(name_ + ": file truncated while reading " + what + " at byte " + std::to_string(pos_) +
                     " (file is " + std::to_string(size_) + " bytes)");
  }

 private:
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
};

// The fewest bytes one array element of type `t` can occupy (bounds array lengths).
uint64_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kBool: return 1;
    case ValueType::kU16: case ValueType::kI16: return 2;
    case ValueType::kU32: case ValueType::kI32: case ValueType::kF32: return 4;
    case ValueType::kU64: case ValueType::kI64: case ValueType::kF64: return 8;
    case ValueType::kString: return 8;  // the length
    case ValueType::kArray: return 12;  // element type + count
  }
  return 1;
}

std::optional<ValueType> value_type_from_id(uint32_t id) {
  if (id > static_cast<uint32_t>(ValueType::kF64)) return std::nullopt;
  return static_cast<ValueType>(id);
}

template <typename T>
Status read_int(Reader& r, Value* v, const std::string& what) {
  T x{};
  ANVIL_RETURN_IF_ERROR(r.read(&x, what));
  if constexpr (std::is_signed_v<T>) {
    v->i = static_cast<int64_t>(x);
  } else {
    v->u = static_cast<uint64_t>(x);
  }
  return Status::ok();
}

// Bytes of one scalar element; 0 for strings and arrays.
size_t scalar_bytes(ValueType t) {
  switch (t) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kBool: return 1;
    case ValueType::kU16: case ValueType::kI16: return 2;
    case ValueType::kU32: case ValueType::kI32: case ValueType::kF32: return 4;
    case ValueType::kU64: case ValueType::kI64: case ValueType::kF64: return 8;
    case ValueType::kString: case ValueType::kArray: return 0;
  }
  return 0;
}

Status read_value(Reader& r, ValueType type, Value* v, int depth, const ParseLimits& limits,
                  uint64_t* values_left, const std::string& name, const std::string& what) {
  v->type = type;
  if (type == ValueType::kString || type == ValueType::kArray) {
    if (*values_left == 0) {
      return data_loss(name + ": " + what + ": more than " + std::to_string(limits.max_values) +
                       " strings and arrays in the metadata");
    }
    --*values_left;
  }
  switch (type) {
    case ValueType::kU8: return read_int<uint8_t>(r, v, what);
    case ValueType::kI8: return read_int<int8_t>(r, v, what);
    case ValueType::kU16: return read_int<uint16_t>(r, v, what);
    case ValueType::kI16: return read_int<int16_t>(r, v, what);
    case ValueType::kU32: return read_int<uint32_t>(r, v, what);
    case ValueType::kI32: return read_int<int32_t>(r, v, what);
    case ValueType::kU64: return read_int<uint64_t>(r, v, what);
    case ValueType::kI64: return read_int<int64_t>(r, v, what);
    case ValueType::kF32: {
      float x = 0;
      ANVIL_RETURN_IF_ERROR(r.read(&x, what));
      v->f = x;
      return Status::ok();
    }
    case ValueType::kF64: return r.read(&v->f, what);
    case ValueType::kBool: {
      uint8_t x = 0;
      ANVIL_RETURN_IF_ERROR(r.read(&x, what));
      if (x > 1) return data_loss(name + ": " + what + ": bool value " + std::to_string(x) + " is not 0 or 1");
      v->b = x != 0;
      return Status::ok();
    }
    case ValueType::kString: return r.read_string(&v->str, limits.max_string_bytes, what);
    case ValueType::kArray: {
      if (depth >= limits.max_array_depth) {
        return data_loss(name + ": " + what + ": arrays nested deeper than " +
                         std::to_string(limits.max_array_depth) + " levels");
      }
      uint32_t elem_id = 0;
      uint64_t count = 0;
      ANVIL_RETURN_IF_ERROR(r.read(&elem_id, what + " (array element type)"));
      std::optional<ValueType> elem = value_type_from_id(elem_id);
      if (!elem) {
        return data_loss(name + ": " + what + ": unknown array element type " + std::to_string(elem_id));
      }
      ANVIL_RETURN_IF_ERROR(r.read(&count, what + " (array length)"));
      if (count > r.left() / min_value_bytes(*elem)) {
        return data_loss(name + ": " + what + ": array of " + std::to_string(count) + " " +
                         value_type_name(*elem) + " values cannot fit in the " + std::to_string(r.left()) +
                         " bytes left in the file");
      }
      v->elem_type = *elem;
      v->count = count;
      if (const size_t bytes = scalar_bytes(*elem)) {
        // count * bytes <= r.left() was checked above.
        v->raw.resize(static_cast<size_t>(count) * bytes);
        ANVIL_RETURN_IF_ERROR(r.read_bytes(v->raw.data(), v->raw.size(), what));
        if (*elem == ValueType::kBool) {
          for (uint64_t k = 0; k < count; ++k) {
            if (v->raw[k] > 1) {
              return data_loss(name + ": " + what + "[" + std::to_string(k) + "]: bool value " +
                               std::to_string(v->raw[k]) + " is not 0 or 1");
            }
          }
        }
        return Status::ok();
      }
      if (count > *values_left) {
        return data_loss(name + ": " + what + ": array of " + std::to_string(count) + " elements exceeds the limit of " +
                         std::to_string(limits.max_values) + " strings and arrays in the metadata");
      }
      v->array.resize(static_cast<size_t>(count));
      for (uint64_t k = 0; k < count; ++k) {
        ANVIL_RETURN_IF_ERROR(read_value(r, *elem, &v->array[k], depth + 1, limits, values_left, name,
                                         what + "[" + std::to_string(k) + "]"));
      }
      return Status::ok();
    }
  }
  return data_loss(name + ": " + what + ": unknown value type");
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

}  // namespace

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::kU8: return "uint8";
    case ValueType::kI8: return "int8";
    case ValueType::kU16: return "uint16";
    case ValueType::kI16: return "int16";
    case ValueType::kU32: return "uint32";
    case ValueType::kI32: return "int32";
    case ValueType::kF32: return "float32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kU64: return "uint64";
    case ValueType::kI64: return "int64";
    case ValueType::kF64: return "float64";
  }
  return "unknown";
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kU16: case ValueType::kI16:
    case ValueType::kU32: case ValueType::kI32: case ValueType::kU64: case ValueType::kI64:
      return true;
    case ValueType::kF32: case ValueType::kBool: case ValueType::kString: case ValueType::kArray:
    case ValueType::kF64:
      return false;
  }
  return false;
}

namespace {

bool is_unsigned(ValueType t) {
  return t == ValueType::kU8 || t == ValueType::kU16 || t == ValueType::kU32 || t == ValueType::kU64;
}

// An integer Value as int64; nullopt for non-integers and u64 values above INT64_MAX.
std::optional<int64_t> as_int(const Value& v) {
  if (!v.is_integer()) return std::nullopt;
  if (is_unsigned(v.type)) {
    if (v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(v.u);
  }
  return v.i;
}

std::string type_desc(const Value& v) {
  if (v.type == ValueType::kArray) return std::string("array of ") + value_type_name(v.elem_type);
  return value_type_name(v.type);
}

}  // namespace

Value Value::element(uint64_t k) const {
  if (elem_type == ValueType::kString || elem_type == ValueType::kArray) return array[static_cast<size_t>(k)];
  Value e;
  e.type = elem_type;
  const uint8_t* p = raw.data() + k * scalar_bytes(elem_type);
  auto load = [p](auto zero) {
    decltype(zero) x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  };
  switch (elem_type) {
    case ValueType::kU8: e.u = load(uint8_t{}); break;
    case ValueType::kI8: e.i = load(int8_t{}); break;
    case ValueType::kU16: e.u = load(uint16_t{}); break;
    case ValueType::kI16: e.i = load(int16_t{}); break;
    case ValueType::kU32: e.u = load(uint32_t{}); break;
    case ValueType::kI32: e.i = load(int32_t{}); break;
    case ValueType::kU64: e.u = load(uint64_t{}); break;
    case ValueType::kI64: e.i = load(int64_t{}); break;
    case ValueType::kF32: e.f = load(float{}); break;
    case ValueType::kF64: e.f = load(double{}); break;
    case ValueType::kBool: e.b = p[0] != 0; break;
    case ValueType::kString: case ValueType::kArray: break;
  }
  return e;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path, const ParseLimits& limits) {
  ANVIL_ASSIGN_OR_RETURN(MmapFile file, MmapFile::open(path));
  auto g = std::unique_ptr<GgufFile>(new GgufFile());
  g->file_ = std::move(file);
  g->base_ = g->file_.data();
  g->size_ = g->file_.size();
  g->name_ = path;
  ANVIL_RETURN_IF_ERROR(g->parse_all(limits));
  return g;
}

Result<std::unique_ptr<GgufFile>> GgufFile::parse(const uint8_t* data, size_t size, const std::string& name,
                                                  const ParseLimits& limits) {
  auto g = std::unique_ptr<GgufFile>(new GgufFile());
  g->base_ = data;
  g->size_ = size;
  g->name_ = name;
  ANVIL_RETURN_IF_ERROR(g->parse_all(limits));
  return g;
}

Status GgufFile::parse_all(const ParseLimits& limits) {
  static const uint8_t kEmpty = 0;
  Reader r(base_ ? base_ : &kEmpty, base_ ? size_ : 0, name_);
  uint32_t magic = 0;
  ANVIL_RETURN_IF_ERROR(r.read(&magic, "the magic number"));
  if (magic != kMagic) {
    char got[5] = {};
    std::memcpy(got, &magic, 4);
    for (char& c : got) if (c != 0 && (c < 32 || c > 126)) c = '?';
    return data_loss(name_ + ": not a GGUF file (magic is '" + std::string(got, 4) + "', expected 'GGUF')");
  }
  ANVIL_RETURN_IF_ERROR(r.read(&version_, "the version"));
  if (version_ == 1) {
    return unsupported(name_ + ": GGUF version 1 is obsolete; re-convert the model with a current llama.cpp");
  }
  if (version_ != 2 && version_ != 3) {
    uint32_t swapped = __builtin_bswap32(version_);
    if (swapped == 2 || swapped == 3) {
      return unsupported(name_ + ": big-endian GGUF files are not supported");
    }
    return unsupported(name_ + ": unsupported GGUF version " + std::to_string(version_) + " (anvil reads 2 and 3)");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  ANVIL_RETURN_IF_ERROR(r.read(&n_tensors, "the tensor count"));
  ANVIL_RETURN_IF_ERROR(r.read(&n_kv, "the metadata count"));
  if (n_tensors > limits.max_tensors || n_tensors > r.left() / 24) {
    return data_loss(name_ + ": tensor count " + std::to_string(n_tensors) + " cannot fit in the " +
                     std::to_string(r.left()) + " bytes left (file truncated or corrupt)");
  }
  if (n_kv > limits.max_kv || n_kv > r.left() / 12) {
    return data_loss(name_ + ": metadata count " + std::to_string(n_kv) + " cannot fit in the " +
                     std::to_string(r.left()) + " bytes left (file truncated or corrupt)");
  }

  uint64_t values_left = limits.max_values;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    ANVIL_RETURN_IF_ERROR(r.read_string(&key, limits.max_string_bytes, "metadata key #" + std::to_string(k)));
    const std::string what = "metadata " + quoted(key);
    uint32_t type_id = 0;
    ANVIL_RETURN_IF_ERROR(r.read(&type_id, what + " (value type)"));
    std::optional<ValueType> type = value_type_from_id(type_id);
    if (!type) return data_loss(name_ + ": " + what + ": unknown value type " + std::to_string(type_id));
    Value v;
    ANVIL_RETURN_IF_ERROR(read_value(r, *type, &v, 0, limits, &values_left, name_, what));
    if (kv_.count(key)) return data_loss(name_ + ": duplicate " + what);
    kv_.emplace(std::move(key), std::move(v));
  }

  if (const Value* a = find("general.alignment")) {
    std::optional<int64_t> al = as_int(*a);
    if (!al || *al <= 0 || (*al & (*al - 1)) != 0 || *al > (1 << 20)) {
      return data_loss(name_ + ": metadata 'general.alignment' must be a power of two integer up to 1 MiB");
    }
    alignment_ = static_cast<uint64_t>(*al);
  } else {
    alignment_ = kDefaultAlignment;
  }

  tensors_.resize(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo& t = tensors_[k];
    ANVIL_RETURN_IF_ERROR(r.read_string(&t.name, limits.max_string_bytes, "tensor info #" + std::to_string(k)));
    const std::string what = "tensor " + quoted(t.name);
    uint32_t n_dims = 0;
    ANVIL_RETURN_IF_ERROR(r.read(&n_dims, what + " (rank)"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return data_loss(name_ + ": " + what + " has rank " + std::to_string(n_dims) + " (must be 1 to 4)");
    }
    t.dims.resize(n_dims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      ANVIL_RETURN_IF_ERROR(r.read(&dim, what + " (dims)"));
      if (dim == 0 || dim > (1ull << 40) || numel > (1ull << 50) / dim) {
        return data_loss(name_ + ": " + what + " has invalid dimension " + std::to_string(dim));
      }
      numel *= dim;
      t.dims[d] = static_cast<int64_t>(dim);
    }
    uint32_t type_id = 0;
    ANVIL_RETURN_IF_ERROR(r.read(&type_id, what + " (type)"));
    std::optional<GgmlType> type = ggml_type_from_id(type_id);
    if (!type) {
      return unsupported(name_ + ": " + what + " has unknown ggml type id " + std::to_string(type_id));
    }
    t.type = *type;
    ANVIL_RETURN_IF_ERROR(r.read(&t.offset, what + " (offset)"));
    std::optional<uint64_t> bytes = ggml_row_bytes(t.type, t.dims[0]);
    if (!bytes) {
      return data_loss(name_ + ": " + what + ": first dimension " + std::to_string(t.dims[0]) +
                       " is not a multiple of the " + ggml_type_name(t.type) + " block size " +
                       std::to_string(ggml_type_info(t.type).block_size));
    }
    t.nbytes = *bytes * (numel / static_cast<uint64_t>(t.dims[0]));
    if (t.offset % alignment_ != 0) {
      return data_loss(name_ + ": " + what + ": data offset " + std::to_string(t.offset) +
                       " is not a multiple of the alignment " + std::to_string(alignment_));
    }
    if (tensor_index_.count(t.name)) return data_loss(name_ + ": duplicate " + what);
    tensor_index_[t.name] = static_cast<size_t>(k);
  }

  const uint64_t header_end = r.pos();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_offset_ > size_) {
    return data_loss(name_ + ": file truncated: the tensor data section would start at byte " +
                     std::to_string(data_offset_) + " but the file is " + std::to_string(size_) + " bytes");
  }
  const uint64_t data_size = size_ >= data_offset_ ? size_ - data_offset_ : 0;
  for (const TensorInfo& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      return data_loss(name_ + ": tensor " + quoted(t.name) + ": data [" + std::to_string(t.offset) + ", " +
                       std::to_string(t.offset) + "+" + std::to_string(t.nbytes) +
                       ") runs past the end of the data section (" + std::to_string(data_size) +
                       " bytes; file truncated?)");
    }
  }
  // Overlap check: sort by offset and compare neighbours.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const TensorInfo& a = *by_offset[k - 1];
    const TensorInfo& b = *by_offset[k];
    if (a.offset + a.nbytes > b.offset) {
      return data_loss(name_ + ": tensors " + quoted(a.name) + " and " + quoted(b.name) + " overlap");
    }
  }
  return Status::ok();
}

const Value* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const TensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
Status missing(const std::string& file, const std::string& key) {
  return not_found(file + ": metadata key '" + key + "' is missing");
}
Status wrong_type(const std::string& file, const std::string& key, const Value& v, const char* want) {
  return invalid_argument(file + ": metadata '" + key + "' is " + type_desc(v) + ", expected " + want);
}
}  // namespace

Result<std::string> GgufFile::get_string(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return missing(name_, key);
  if (v->type != ValueType::kString) return wrong_type(name_, key, *v, "string");
  return v->str;
}

Result<int64_t> GgufFile::get_int(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return missing(name_, key);
  std::optional<int64_t> x = as_int(*v);
  if (!x) return wrong_type(name_, key, *v, "an integer");
  return *x;
}

Result<double> GgufFile::get_float(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return missing(name_, key);
  if (v->is_float()) return v->f;
  if (std::optional<int64_t> x = as_int(*v)) return static_cast<double>(*x);
  return wrong_type(name_, key, *v, "a number");
}

Result<bool> GgufFile::get_bool(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return missing(name_, key);
  if (v->type != ValueType::kBool) return wrong_type(name_, key, *v, "bool");
  return v->b;
}

Result<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return missing(name_, key);
  if (v->type != ValueType::kArray || v->elem_type != ValueType::kString) {
    return wrong_type(name_, key, *v, "array of string");
  }
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const Value& e : v->array) out.push_back(e.str);
  return out;
}

Result<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return missing(name_, key);
  if (v->type != ValueType::kArray) return wrong_type(name_, key, *v, "array of integers");
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(v->count));
  for (uint64_t k = 0; k < v->count; ++k) {
    std::optional<int64_t> x = as_int(v->element(k));
    if (!x) return wrong_type(name_, key, *v, "array of integers");
    out.push_back(*x);
  }
  return out;
}

Result<std::vector<double>> GgufFile::get_float_array(const std::string& key) const {
  const Value* v = find(key);
  if (!v) return missing(name_, key);
  if (v->type != ValueType::kArray) return wrong_type(name_, key, *v, "array of numbers");
  std::vector<double> out;
  out.reserve(static_cast<size_t>(v->count));
  for (uint64_t k = 0; k < v->count; ++k) {
    const Value e = v->element(k);
    if (e.is_float()) {
      out.push_back(e.f);
    } else if (std::optional<int64_t> x = as_int(e)) {
      out.push_back(static_cast<double>(*x));
    } else {
      return wrong_type(name_, key, *v, "array of numbers");
    }
  }
  return out;
}

Result<std::vector<float>> GgufFile::dequantize_tensor(const TensorInfo& t) const {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  Status s = dequantize(t.type, tensor_data(t), out.data(), t.numel());
  if (!s.is_ok()) return s.with_context(name_ + ": tensor '" + t.name + "'");
  return out;
}

}  // namespace anvil::gguf
