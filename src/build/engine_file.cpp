// Engine file writing and validated opening. The header's checksums are fixed-width hex, so the
// header is laid out once with zeros, the blobs streamed after it, and the header rewritten in
// place with the real checksums: one weight in memory at a time, whatever the model's size.
#include "build/engine_file.h"

#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <sys/mman.h>
#include <unistd.h>

#include "build/engine_json.h"
#include "core/thread_pool.h"

namespace anvil {

namespace {

uint64_t align_up(uint64_t v) { return (v + kEngineAlignment - 1) / kEngineAlignment * kEngineAlignment; }

void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get_u32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t get_u64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

const char* kRebuild = "; rebuild it with anvil build";

class File {
 public:
  explicit File(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "wb")) {}
  ~File() { if (f_) std::fclose(f_); }
  bool ok() const { return f_ != nullptr; }
  Status write_at(uint64_t offset, const void* data, size_t bytes) {
    if (std::fseek(f_, static_cast<long>(offset), SEEK_SET) != 0 || std::fwrite(data, 1, bytes, f_) != bytes) {
      return internal_error("cannot write " + path_ + ": " + std::strerror(errno) + " (disk full?)");
    }
    return Status::ok();
  }
  Status close() {
    if (!f_) return Status::ok();
    int rc = std::fclose(f_);
    f_ = nullptr;
    if (rc != 0) return internal_error("cannot write " + path_ + ": " + std::strerror(errno) + " (disk full?)");
    return Status::ok();
  }

 private:
  std::string path_;
  std::FILE* f_;
};

}  // namespace

uint64_t engine_checksum(const void* data, size_t bytes) { return XXH64(data, bytes, 0); }

Status write_engine_file(const std::string& path, EngineHeader header,
                         const std::function<Status(size_t, std::vector<uint8_t>*)>& produce) {
  uint64_t offset = 0;
  for (EngineWeight& w : header.weights) {
    w.offset = offset;
    w.checksum = 0;
    offset = align_up(offset + w.bytes);
  }
  const uint64_t data_bytes = offset;
  const uint64_t header_bytes = engine_header_to_json(header).dump().size();
  const uint64_t data_offset = align_up(kEnginePreambleBytes + header_bytes);

  const std::string partial = path + ".partial." + std::to_string(::getpid());
  std::error_code ec;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  File f(partial);
  if (!f.ok()) return invalid_argument("cannot create engine file " + partial + ": " + std::strerror(errno));
  auto fail = [&](Status s) {
    (void)f.close();
    std::filesystem::remove(partial, ec);
    return s;
  };

  std::vector<uint8_t> blob;
  for (size_t i = 0; i < header.weights.size(); ++i) {
    EngineWeight& w = header.weights[i];
    blob.clear();
    Status s = produce(i, &blob);
    if (!s.is_ok()) return fail(s);
    if (blob.size() != w.bytes) {
      return fail(internal_error("weight " + w.name + " produced " + std::to_string(blob.size()) + " bytes, expected " +
                                 std::to_string(w.bytes)));
    }
    w.checksum = engine_checksum(blob.data(), blob.size());
    s = f.write_at(data_offset + w.offset, blob.data(), blob.size());
    if (!s.is_ok()) return fail(s);
  }
  // Extend the file to its full size (the last blob's padding).
  const uint64_t file_bytes = data_offset + data_bytes;
  if (data_bytes > 0) {
    const uint64_t last_end = header.weights.empty() ? 0 : header.weights.back().offset + header.weights.back().bytes;
    if (last_end < data_bytes) {
      const uint8_t zero = 0;
      Status s = f.write_at(file_bytes - 1, &zero, 1);
      if (!s.is_ok()) return fail(s);
    }
  }

  const std::string json_text = engine_header_to_json(header).dump();
  if (json_text.size() != header_bytes) return fail(internal_error("engine header changed size while checksums were filled in"));
  uint8_t pre[kEnginePreambleBytes] = {};
  std::memcpy(pre, kEngineMagic, 8);
  put_u32(pre + 8, kEngineFormatVersion);
  put_u64(pre + 16, header_bytes);
  put_u64(pre + 24, engine_checksum(json_text.data(), json_text.size()));
  put_u64(pre + 32, data_offset);
  put_u64(pre + 40, file_bytes);
  std::vector<uint8_t> head(data_offset, 0);
  std::memcpy(head.data(), pre, sizeof pre);
  std::memcpy(head.data() + kEnginePreambleBytes, json_text.data(), json_text.size());
  Status s = f.write_at(0, head.data(), head.size());
  if (!s.is_ok()) return fail(s);
  s = f.close();
  if (!s.is_ok()) return fail(s);
  std::filesystem::rename(partial, path, ec);
  if (ec) return fail(internal_error("cannot move " + partial + " to " + path + ": " + ec.message()));
  return Status::ok();
}

Result<EngineFile> EngineFile::open(const std::string& path) {
  EngineFile e;
  ANVIL_ASSIGN_OR_RETURN(e.file_, MmapFile::open(path));
  const uint8_t* p = e.file_.data();
  const uint64_t size = e.file_.size();
  if (size < kEnginePreambleBytes || std::memcmp(p, kEngineMagic, 8) != 0) {
    return invalid_argument(path + " is not an anvil engine (no ANVILENG magic); make one with anvil build");
  }
  const uint32_t version = get_u32(p + 8);
  if (version != kEngineFormatVersion) {
    return unsupported(path + " has engine format version " + std::to_string(version) + "; this anvil (" ANVIL_VERSION
                       ") reads version " + std::to_string(kEngineFormatVersion) + kRebuild);
  }
  const uint64_t header_bytes = get_u64(p + 16);
  const uint64_t header_sum = get_u64(p + 24);
  e.data_offset_ = get_u64(p + 32);
  const uint64_t file_bytes = get_u64(p + 40);
  if (size < file_bytes) {
    return data_loss(path + " is truncated: " + std::to_string(size) + " bytes, the header says " + std::to_string(file_bytes) +
                     " (an interrupted copy or build?)" + kRebuild);
  }
  if (size > file_bytes || header_bytes > size || kEnginePreambleBytes + header_bytes > e.data_offset_ ||
      e.data_offset_ > file_bytes || e.data_offset_ % kEngineAlignment != 0) {
    return data_loss(path + " has an inconsistent preamble (header " + std::to_string(header_bytes) + " bytes, data at " +
                     std::to_string(e.data_offset_) + ", file " + std::to_string(size) + " bytes)" + kRebuild);
  }
  const char* json_text = reinterpret_cast<const char*>(p + kEnginePreambleBytes);
  if (engine_checksum(json_text, header_bytes) != header_sum) {
    return data_loss(path + ": the header checksum does not match (the file is corrupt)" + kRebuild);
  }
  nlohmann::json j = nlohmann::json::parse(json_text, json_text + header_bytes, nullptr, false);
  if (j.is_discarded()) return data_loss(path + ": the header is not valid JSON" + kRebuild);
  ANVIL_ASSIGN_OR_RETURN(e.header_, engine_header_from_json(j, path));
  const uint64_t data_bytes = file_bytes - e.data_offset_;
  for (const EngineWeight& w : e.header_.weights) {
    if (w.offset % kEngineAlignment != 0 || w.offset > data_bytes || w.bytes > data_bytes - w.offset) {
      return data_loss(path + ": weight " + w.name + " lies outside the file or is misaligned" + kRebuild);
    }
    if (w.bytes != dtype_bytes_for(w.dtype, static_cast<size_t>(w.shape.numel()))) {
      return data_loss(path + ": weight " + w.name + " has " + std::to_string(w.bytes) + " bytes, which does not match " +
                       std::string(dtype_name(w.dtype)) + " " + w.shape.to_string() + kRebuild);
    }
  }
  return e;
}

Status EngineFile::verify_weight(size_t i) const {
  const EngineWeight& w = header_.weights[i];
  if (engine_checksum(weight_data(i), w.bytes) != w.checksum) {
    return data_loss(path() + ": weight " + w.name + " fails its checksum (the file is corrupt)" + kRebuild);
  }
  return Status::ok();
}

Status EngineFile::verify_all_weights() const {
  const size_t n = header_.weights.size();
  std::vector<Status> results(n);
  ThreadPool::global().parallel_for(static_cast<int64_t>(n), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) results[static_cast<size_t>(i)] = verify_weight(static_cast<size_t>(i));
  });
  for (const Status& s : results) ANVIL_RETURN_IF_ERROR(s);
  return Status::ok();
}

void EngineFile::prefault_weights() const {
#ifdef MADV_POPULATE_READ
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = data_offset_ / page * page;
  if (file_.size() > begin) {
    (void)::madvise(const_cast<uint8_t*>(file_.data()) + begin, file_.size() - begin, MADV_POPULATE_READ);
  }
#endif
}

uint64_t EngineFile::weight_bytes() const {
  uint64_t total = 0;
  for (const EngineWeight& w : header_.weights) total += w.bytes;
  return total;
}

}  // namespace anvil
