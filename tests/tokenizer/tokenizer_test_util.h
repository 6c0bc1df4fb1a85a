// Shared helpers for the tokenizer tests: the committed fixtures are xz-compressed, so each test
// binary decompresses them once into the build folder (atomically, via rename) with the `xz` tool.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tokenizer/tokenizer.h"

namespace anvil::test {

inline const std::vector<std::string>& tokenizer_names() {
  static const std::vector<std::string> names = {"llama2", "llama3", "qwen3", "deepseek_v3", "gemma3"};
  return names;
}

inline std::string source_data_dir() { return std::string(ANVIL_SOURCE_DIR) + "/tests/data/tokenizers"; }

// Decompresses `xz_path` to `out_path` unless an up-to-date copy exists. Returns false on failure.
inline bool xz_decompress(const std::string& xz_path, const std::string& out_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(out_path, ec) && fs::last_write_time(out_path, ec) >= fs::last_write_time(xz_path, ec)) return true;
  fs::create_directories(fs::path(out_path).parent_path(), ec);
  std::string tmp = out_path + ".tmp" + std::to_string(::getpid());
  std::string cmd = "xz -dc '" + xz_path + "' > '" + tmp + "'";
  if (std::system(cmd.c_str()) != 0) return false;
  fs::rename(tmp, out_path, ec);
  return !ec;
}

// A folder in the build tree holding tokenizer.json and tokenizer_config.json for `name`.
inline std::string tokenizer_dir(const std::string& name) {
  namespace fs = std::filesystem;
  std::string dir = std::string(ANVIL_BINARY_DIR) + "/test_data/tokenizers/" + name;
  std::string src = source_data_dir() + "/" + name;
  if (!xz_decompress(src + "/tokenizer.json.xz", dir + "/tokenizer.json")) return {};
  std::error_code ec;
  fs::copy_file(src + "/tokenizer_config.json", dir + "/tokenizer_config.json", fs::copy_options::skip_existing, ec);
  return dir;
}

// Lines of a .jsonl.xz fixture under tests/data/tokenizers/reference/.
inline std::vector<std::string> read_reference_lines(const std::string& file) {
  std::string out = std::string(ANVIL_BINARY_DIR) + "/test_data/tokenizers/reference/" + file;
  std::vector<std::string> lines;
  if (!xz_decompress(source_data_dir() + "/reference/" + file + ".xz", out)) return lines;
  FILE* f = std::fopen(out.c_str(), "rb");
  if (!f) return lines;
  std::string cur;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    for (size_t i = 0; i < n; ++i) {
      if (buf[i] == '\n') {
        lines.push_back(std::move(cur));
        cur.clear();
      } else {
        cur += buf[i];
      }
    }
  }
  if (!cur.empty()) lines.push_back(cur);
  std::fclose(f);
  return lines;
}

// Loads each tokenizer once per test binary.
inline const Tokenizer* shared_tokenizer(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(name);
  if (it != cache.end()) return it->second.get();
  std::string dir = tokenizer_dir(name);
  if (dir.empty()) return nullptr;
  auto r = Tokenizer::load(dir);
  if (!r.is_ok()) {
    ADD_FAILURE() << "loading " << name << ": " << r.status().to_string();
    return nullptr;
  }
  return (cache[name] = std::move(r).value()).get();
}

}  // namespace anvil::test
