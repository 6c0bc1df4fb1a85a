// Engine cache: key = XXH64 over a canonical text of everything that changes the engine's bytes.
#include "build/engine_cache.h"

#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "build/engine_builder.h"
#include "build/engine_json.h"
#include "core/logging.h"

namespace anvil {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_model_file(const std::string& name) {
  return name == "config.json" || name == "generation_config.json" || ends_with(name, ".safetensors") ||
         ends_with(name, ".safetensors.index.json");
}

std::string file_stamp(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return p.filename().string() + " missing\n";
  return p.filename().string() + " " + std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec) + "\n";
}

}  // namespace

std::string default_engine_cache_dir() {
  if (const char* c = std::getenv("ANVIL_CACHE"); c && *c) return std::string(c) + "/engines";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/anvil/engines";
  return "/tmp/anvil-cache/engines";
}

std::string engine_device_desc(const Backend& backend) {
  if (backend.device() == Device::kCpu) return "cpu";
  const std::string name = backend.name();
  const size_t open = name.find('(');
  const size_t close = name.rfind(')');
  return open != std::string::npos && close != std::string::npos && close > open ? name.substr(open + 1, close - open - 1) : name;
}

Result<std::string> engine_cache_key(const std::string& model_dir, const EngineBuildOptions& options,
                                     const std::string& device_desc) {
  std::error_code ec;
  std::vector<std::string> stamps;
  if (fs::is_regular_file(model_dir, ec)) {
    stamps.push_back(file_stamp(model_dir));
  } else {
    if (!fs::is_directory(model_dir, ec)) return not_found("model folder '" + model_dir + "' does not exist");
    for (const fs::directory_entry& e : fs::directory_iterator(model_dir, ec)) {
      if (e.is_regular_file(ec) && is_model_file(e.path().filename().string())) stamps.push_back(file_stamp(e.path()));
    }
    if (ec) return invalid_argument("cannot list model folder '" + model_dir + "': " + ec.message());
  }
  if (stamps.empty()) return not_found("model folder '" + model_dir + "' has no config.json or .safetensors files");
  std::sort(stamps.begin(), stamps.end());
  // The calibration text shapes a calibrated engine's bytes as much as the weights do.
  if (!options.calib_file.empty()) stamps.push_back("calib " + file_stamp(options.calib_file));
  std::string text = "anvil " ANVIL_VERSION " format " + std::to_string(kEngineFormatVersion) + "\n";
  text += "device " + device_desc + "\n";
  text += "options " + build_options_to_json(options).dump() + "\n";
  for (const std::string& s : stamps) text += s;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, static_cast<uint64_t>(XXH64(text.data(), text.size(), 0)));
  return std::string(buf);
}

Result<CachedEngine> get_or_build_engine(const std::string& cache_root, const std::string& model_dir,
                                         const EngineBuildOptions& options, Backend* device, const CalibrationData* calib) {
  const std::string desc = device ? engine_device_desc(*device) : std::string(backend_kind_name(options.backend));
  ANVIL_ASSIGN_OR_RETURN(std::string key, engine_cache_key(model_dir, options, desc));
  std::string stem = fs::path(model_dir).lexically_normal().filename().string();
  if (stem.empty()) stem = fs::path(model_dir).lexically_normal().parent_path().filename().string();
  for (char& c : stem)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  CachedEngine out;
  out.path = (fs::path(cache_root) / (stem + "-" + key + ".anvil")).string();
  std::error_code ec;
  if (fs::exists(out.path, ec)) {
    Result<EngineFile> f = EngineFile::open(out.path);
    if (f.is_ok()) {
      ANVIL_LOG_INFO("using cached engine %s", out.path.c_str());
      return out;
    }
    ANVIL_LOG_WARN("cached engine unusable (%s); rebuilding", f.status().to_string().c_str());
  }
  fs::create_directories(cache_root, ec);
  if (ec) return invalid_argument("cannot create engine cache folder " + cache_root + ": " + ec.message() + " (set ANVIL_CACHE)");
  ANVIL_LOG_INFO("building engine for %s into %s", model_dir.c_str(), out.path.c_str());
  Result<BuildReport> r = build_engine(model_dir, options, out.path, device, calib);
  if (!r.is_ok()) return r.status();
  out.built = true;
  return out;
}

}  // namespace anvil
