// TuningCache: a two-level JSON map, device key -> shape key -> tuning record.
#include "build/passes/tuning_cache.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/mmap_file.h"

namespace anvil {

std::string default_tuning_cache_path() {
  if (const char* c = std::getenv("ANVIL_CACHE"); c && *c) return std::string(c) + "/tuning.json";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/anvil/tuning.json";
  return "/tmp/anvil-cache/tuning.json";
}

std::string TuningCache::shape_key(const GemmTuning& t) {
  return "m" + std::to_string(t.m_bucket) + "_n" + std::to_string(t.n) + "_k" + std::to_string(t.k) + "_" + t.out_dtype +
         "_bias" + (t.has_bias ? "1" : "0");
}

TuningCache TuningCache::load(const std::string& path) {
  TuningCache c;
  c.path_ = path;
  Result<std::string> text = read_file(path);
  if (!text.is_ok()) return c;
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return c;
  for (auto dev = j.begin(); dev != j.end(); ++dev) {
    if (!dev.value().is_object()) continue;
    for (auto e = dev.value().begin(); e != dev.value().end(); ++e) {
      const nlohmann::json& v = e.value();
      GemmTuning t;
      try {
        t.m_bucket = v.at("m_bucket").get<int64_t>();
        t.n = v.at("n").get<int64_t>();
        t.k = v.at("k").get<int64_t>();
        t.out_dtype = v.at("out_dtype").get<std::string>();
        t.has_bias = v.at("has_bias").get<bool>();
        t.candidates = v.at("candidates").get<int>();
        t.best_us = v.at("best_us").get<double>();
        t.heuristic_us = v.at("heuristic_us").get<double>();
        t.algo = v.value("algo", std::string());
        t.cublaslt_version = v.value("cublaslt_version", int64_t{0});
      } catch (const nlohmann::json::exception&) {
        continue;  // a stale or foreign entry: ignore it, it will be re-timed
      }
      if (shape_key(t) == e.key()) c.entries_[dev.key()][e.key()] = t;
    }
  }
  return c;
}

std::optional<GemmTuning> TuningCache::find(const std::string& device_key, const GemmTuning& shape) const {
  auto d = entries_.find(device_key);
  if (d == entries_.end()) return std::nullopt;
  auto e = d->second.find(shape_key(shape));
  if (e == d->second.end()) return std::nullopt;
  return e->second;
}

void TuningCache::put(const std::string& device_key, const GemmTuning& t) { entries_[device_key][shape_key(t)] = t; }

size_t TuningCache::size() const {
  size_t n = 0;
  for (const auto& [dev, m] : entries_) n += m.size();
  return n;
}

Status TuningCache::save() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [dev, m] : entries_) {
    for (const auto& [key, t] : m) {
      j[dev][key] = {{"m_bucket", t.m_bucket}, {"n", t.n}, {"k", t.k}, {"out_dtype", t.out_dtype}, {"has_bias", t.has_bias},
                     {"candidates", t.candidates}, {"best_us", t.best_us}, {"heuristic_us", t.heuristic_us},
                     {"algo", t.algo}, {"cublaslt_version", t.cublaslt_version}};
    }
  }
  std::error_code ec;
  const std::filesystem::path p(path_);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(1) << "\n";
    if (!out) return internal_error("cannot write tuning cache " + tmp);
  }
  std::filesystem::rename(tmp, path_, ec);
  if (ec) return internal_error("cannot move " + tmp + " to " + path_ + ": " + ec.message());
  return Status::ok();
}

}  // namespace anvil
