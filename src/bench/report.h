// How `anvil bench` reports: a plain aligned text table for people and one JSON document per
// run for tools (tools/plot_bench.py, tools/bench/run_gpu.sh). Every JSON document carries
// "schema": "anvil.bench/1", "mode", "engine" and a "meta" block (date, version, commit).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "anvil/status.h"

namespace anvil::bench {

inline constexpr const char* kSchema = "anvil.bench/1";

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Left-aligns the first column, right-aligns the rest; missing cells print empty.
  std::string render() const;
  void print(FILE* f) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// printf-style into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// {"date": UTC ISO 8601, "anvil_version", "commit": $ANVIL_COMMIT or "", "host"}.
nlohmann::json run_meta();

// Writes `doc` (indented) to `path`; "-" writes to stdout. Errors name the path.
Status write_json(const std::string& path, const nlohmann::json& doc);

}  // namespace anvil::bench
