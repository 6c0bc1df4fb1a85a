// Helpers for the GGUF tests: fixture paths, whole-file reads, and a tiny GGUF byte builder for
// hand-made (and deliberately broken) files.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace anvil::gguf::testing {

inline std::string fixture(const std::string& name) {
  return std::string(ANVIL_SOURCE_DIR) + "/tests/data/gguf/" + name;
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Appends little-endian GGUF pieces to a byte vector.
class Builder {
 public:
  std::vector<uint8_t> bytes;

  template <typename T>
  Builder& pod(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    for (uint8_t x : b) bytes.push_back(x);
    return *this;
  }
  Builder& u32(uint32_t v) { return pod(v); }
  Builder& u64(uint64_t v) { return pod(v); }
  Builder& str(const std::string& s) {
    u64(s.size());
    for (char c : s) bytes.push_back(static_cast<uint8_t>(c));
    return *this;
  }
  Builder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return u32(0x46554747u).u32(version).u64(n_tensors).u64(n_kv);  // magic 'GGUF'
  }
  Builder& kv_u32(const std::string& key, uint32_t v) { return str(key).u32(4).u32(v); }
  Builder& kv_str(const std::string& key, const std::string& v) { return str(key).u32(8).str(v); }
  Builder& kv_f32(const std::string& key, float v) { return str(key).u32(6).pod(v); }
  Builder& kv_str_array(const std::string& key, const std::vector<std::string>& v) {
    str(key).u32(9).u32(8).u64(v.size());
    for (const std::string& s : v) str(s);
    return *this;
  }
  // A tensor info: name, dims (ggml order), ggml type id, offset.
  Builder& tensor(const std::string& name, const std::vector<uint64_t>& dims, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
  Builder& pad_to(size_t alignment) {
    while (bytes.size() % alignment) bytes.push_back(0);
    return *this;
  }
  Builder& zeros(size_t n) {
    bytes.resize(bytes.size() + n, 0);
    return *this;
  }
};

}  // namespace anvil::gguf::testing
