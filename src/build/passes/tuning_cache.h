// The on-disk GEMM tuning cache (~/.cache/anvil/tuning.json or $ANVIL_CACHE/tuning.json): the
// autotuning outcome per (GPU name + CUDA version) and GEMM shape bucket, so a second build for
// the same GPU skips the timing. Written whole to a temp file and renamed; a missing or
// unreadable cache is treated as empty (it is only a cache).
//   { "NVIDIA H100 80GB HBM3, sm_90 | cuda 12040": { "m16_n1024_k512_bf16_bias0": {...}, ... } }
#pragma once

#include <map>
#include <optional>
#include <string>

#include "build/engine_file.h"

namespace anvil {

class TuningCache {
 public:
  // Loads `path`; a missing or malformed file gives an empty cache bound to `path`.
  static TuningCache load(const std::string& path);
  std::optional<GemmTuning> find(const std::string& device_key, const GemmTuning& shape) const;
  void put(const std::string& device_key, const GemmTuning& result);
  Status save() const;
  size_t size() const;

 private:
  static std::string shape_key(const GemmTuning& t);
  std::string path_;
  std::map<std::string, std::map<std::string, GemmTuning>> entries_;
};

// $ANVIL_CACHE/tuning.json, else ~/.cache/anvil/tuning.json.
std::string default_tuning_cache_path();

}  // namespace anvil
