// Helpers for the model tests: a temporary folder removed on destruction, and writers for text
// files and hand-made (possibly malformed) safetensors files.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace anvil::testing {

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "anvil_model_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    if (info) name += std::string("_") + info->name();
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

// [u64 little-endian header length][header][data], exactly as given.
inline void write_raw_safetensors(const std::string& path, const std::string& header, const std::string& data,
                                  uint64_t header_len_field) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header_len_field >> (8 * i)) & 0xff);
  write_text(path, bytes + header + data);
}
inline void write_raw_safetensors(const std::string& path, const std::string& header, const std::string& data) {
  write_raw_safetensors(path, header, data, header.size());
}

}  // namespace anvil::testing
