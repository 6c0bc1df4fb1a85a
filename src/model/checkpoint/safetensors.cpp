// The safetensors format, read (mmap'd, every header field validated before any view is made) and
// written. Layout: [u64 little-endian header length N][N bytes of JSON header][data section]; each
// header entry {dtype, shape, data_offsets: [begin, end)} is relative to the data section, and the
// tensors tile the data section exactly: no overlap, no gap, no trailing bytes (as the reference
// implementation requires).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "model/checkpoint/checkpoint.h"

namespace anvil {
namespace {

using Json = nlohmann::json;

// The reference implementation's limit; a larger length means a corrupt file, not a big header.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypeNames[] = {
    {"F32", DType::kF32},         {"F16", DType::kF16}, {"BF16", DType::kBF16}, {"I8", DType::kI8},
    {"U8", DType::kU8},           {"I32", DType::kI32}, {"I64", DType::kI64},   {"F8_E4M3", DType::kF8E4M3},
    {"F8_E5M2", DType::kF8E5M2},
};
// Valid safetensors dtypes that anvil has no DType for.
constexpr const char* kUnmappedDTypes[] = {"F64", "I16", "U16", "U32", "U64", "BOOL", "F8_E8M0",
                                           "F4",  "F6_E2M3", "F6_E3M2", "C64"};

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  for (const DTypeName& d : kDTypeNames)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

// nullptr for kI4, which safetensors cannot store.
const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kF8E5M2: return "F8_E5M2";
    case DType::kI8: return "I8";
    case DType::kI4: return nullptr;
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kU8: return "U8";
  }
  return nullptr;
}

std::string brief(const Json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// A non-negative JSON integer, else nullopt.
std::optional<uint64_t> as_uint(const Json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin;
  uint64_t end;
};

// Validates one header entry (everything but its place among the others).
Result<Entry> parse_entry(const std::string& path, const std::string& name, const Json& v, uint64_t data_len) {
  const std::string where = path + ": tensor '" + name + "'";
  if (!v.is_object()) return data_loss(where + ": header entry must be an object, got " + brief(v));
  auto dtype_it = v.find("dtype");
  auto shape_it = v.find("shape");
  auto offsets_it = v.find("data_offsets");
  if (dtype_it == v.end() || shape_it == v.end() || offsets_it == v.end())
    return data_loss(where + ": header entry needs 'dtype', 'shape' and 'data_offsets', got " + brief(v));

  if (!dtype_it->is_string()) return data_loss(where + ": 'dtype' must be a string, got " + brief(*dtype_it));
  const std::string dtype_name = dtype_it->get<std::string>();
  std::optional<DType> dtype = dtype_from_safetensors(dtype_name);
  if (!dtype) {
    for (const char* known : kUnmappedDTypes)
      if (dtype_name == known) return unsupported(where + ": dtype " + dtype_name + " is not supported");
    return data_loss(where + ": unknown dtype '" + dtype_name + "'");
  }

  Entry e{name, *dtype, Shape{}, 0, 0};
  if (!shape_it->is_array()) return data_loss(where + ": 'shape' must be a list, got " + brief(*shape_it));
  if (shape_it->size() > static_cast<size_t>(Shape::kMaxDims))
    return unsupported(where + ": rank " + std::to_string(shape_it->size()) + " is above anvil's limit of " +
                       std::to_string(Shape::kMaxDims));
  uint64_t numel = 1;
  for (const Json& d : *shape_it) {
    std::optional<uint64_t> dim = as_uint(d);
    if (!dim || *dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return data_loss(where + ": 'shape' must hold non-negative integers, got " + brief(*shape_it));
    if (__builtin_mul_overflow(numel, *dim, &numel) || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return data_loss(where + ": shape " + brief(*shape_it) + " has too many elements");
    e.shape.dims[e.shape.rank++] = static_cast<int64_t>(*dim);
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(*dtype)), &nbytes))
    return data_loss(where + ": shape " + brief(*shape_it) + " has too many bytes");

  if (!offsets_it->is_array() || offsets_it->size() != 2 || !as_uint((*offsets_it)[0]) || !as_uint((*offsets_it)[1]))
    return data_loss(where + ": 'data_offsets' must be [begin, end] with non-negative integers, got " +
                     brief(*offsets_it));
  e.begin = *as_uint((*offsets_it)[0]);
  e.end = *as_uint((*offsets_it)[1]);
  const std::string offsets = "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.end < e.begin) return data_loss(where + ": " + offsets + " end before they begin");
  if (e.end > data_len)
    return data_loss(where + ": " + offsets + " run past the end of the data section (" + std::to_string(data_len) +
                     " bytes); the file is truncated or the header is corrupt");
  if (e.end - e.begin != nbytes)
    return data_loss(where + ": " + offsets + " span " + std::to_string(e.end - e.begin) + " bytes but " + dtype_name +
                     " shape " + e.shape.to_string() + " needs " + std::to_string(nbytes));
  return e;
}

// The entries must tile [0, data_len) exactly.
Status check_layout(const std::string& path, std::vector<Entry>& entries, uint64_t data_len) {
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t covered = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < covered)
      return data_loss(path + ": tensor '" + e.name + "' (bytes " + std::to_string(e.begin) + ".." +
                       std::to_string(e.end) + ") overlaps tensor '" + prev->name + "' (bytes " +
                       std::to_string(prev->begin) + ".." + std::to_string(prev->end) + ")");
    if (e.begin > covered)
      return data_loss(path + ": data bytes " + std::to_string(covered) + ".." + std::to_string(e.begin) +
                       " belong to no tensor (a gap before tensor '" + e.name + "')");
    covered = e.end;
    prev = &e;
  }
  if (covered != data_len)
    return data_loss(path + ": the data section has " + std::to_string(data_len - covered) +
                     " bytes after the last tensor" + (prev ? " ('" + prev->name + "')" : std::string()) +
                     " that belong to no tensor");
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  {
    ANVIL_ASSIGN_OR_RETURN(MmapFile mapped, MmapFile::open(path));
    file->file_ = std::move(mapped);
  }
  const uint8_t* bytes = file->file_.data();
  const uint64_t size = file->file_.size();
  if (size < 8)
    return data_loss(path + ": file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
  if (header_len > size - 8)
    return data_loss(path + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
                     std::to_string(size) + " bytes); not a safetensors file or truncated");
  if (header_len > kMaxHeaderBytes)
    return data_loss(path + ": header length " + std::to_string(header_len) + " is implausibly large (limit " +
                     std::to_string(kMaxHeaderBytes) + ")");
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  Json header;
  try {
    header = Json::parse(header_begin, header_begin + header_len);
  } catch (const Json::exception& e) {
    return data_loss(path + ": header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) return data_loss(path + ": header must be a JSON object, got " + header.type_name());

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_len = size - data_start;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return data_loss(path + ": __metadata__ must be an object, got " + brief(value));
      for (const auto& [key, meta] : value.items()) {
        if (!meta.is_string())
          return data_loss(path + ": __metadata__ entry '" + key + "' must be a string, got " + brief(meta));
        file->metadata_[key] = meta.get<std::string>();
      }
      continue;
    }
    ANVIL_ASSIGN_OR_RETURN(Entry e, parse_entry(path, name, value, data_len));
    entries.push_back(std::move(e));
  }
  ANVIL_RETURN_IF_ERROR(check_layout(path, entries, data_len));

  uint8_t* data = const_cast<uint8_t*>(bytes) + data_start;  // views are read-only by contract
  for (const Entry& e : entries) {
    CheckpointTensor t;
    t.name = e.name;
    t.file = path;
    t.view = Tensor(data + e.begin, e.dtype, e.shape, Device::kCpu);
    file->tensors_.emplace(e.name, std::move(t));
  }
  return file;
}

Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  // Data order: element size descending, then name (as the reference writer does), so every
  // tensor starts at a multiple of its element size within the 8-byte-aligned data section.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const size_t sa = dtype_size(tensors[a].second.dtype), sb = dtype_size(tensors[b].second.dtype);
    return sa != sb ? sa > sb : tensors[a].first < tensors[b].first;
  });

  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    const std::string where = path + ": tensor '" + name + "'";
    if (name.empty() || name == "__metadata__") return invalid_argument(where + ": reserved or empty name");
    if (header.contains(name)) return invalid_argument(where + ": name given twice");
    const char* st_dtype = safetensors_dtype_name(t.dtype);
    if (!st_dtype)
      return unsupported(where + ": dtype " + std::string(dtype_name(t.dtype)) +
                         " cannot be stored in safetensors");
    if (t.device != Device::kCpu) return invalid_argument(where + ": tensor is not on the CPU");
    Json shape = Json::array();
    for (int d = 0; d < t.shape.rank; ++d) {
      if (t.shape[d] < 0) return invalid_argument(where + ": negative dimension in shape " + t.shape.to_string());
      shape.push_back(t.shape[d]);
    }
    const uint64_t nbytes = t.nbytes();
    if (nbytes > 0 && !t.defined()) return invalid_argument(where + ": tensor has no data");
    header[name] = Json{{"dtype", st_dtype}, {"shape", std::move(shape)}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - (8 + header_text.size()) % 8) % 8, ' ');  // data section 8-byte aligned

  // Write beside the target and rename, so a failed write never leaves a half file under `path`.
  const std::string tmp_path = path + ".partial";
  std::FILE* out = std::fopen(tmp_path.c_str(), "wb");
  if (!out) return invalid_argument(path + ": cannot create '" + tmp_path + "': " + std::strerror(errno));
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(header_text.size()) >> (8 * i));
  bool ok = std::fwrite(len_bytes, 1, 8, out) == 8 &&
            std::fwrite(header_text.data(), 1, header_text.size(), out) == header_text.size();
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    const size_t nbytes = t.nbytes();
    if (ok && nbytes > 0) ok = std::fwrite(t.data, 1, nbytes, out) == nbytes;
  }
  ok = (std::fclose(out) == 0) && ok;
  std::error_code ec;
  if (ok) std::filesystem::rename(tmp_path, path, ec);
  if (!ok || ec) {
    std::filesystem::remove(tmp_path, ec);
    return internal_error(path + ": write failed (disk full or not writable?)");
  }
  return Status::ok();
}

}  // namespace anvil
