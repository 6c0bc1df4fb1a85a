// Synthetic prompts, arrival processes and dataset prompts for `anvil bench`.
#include "bench/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/random.h"

namespace anvil::bench {
namespace {

// Distinct Philox streams per purpose, so prompts and arrivals never share draws.
constexpr uint64_t kPromptStream = 0x70726f6d70740000ull;
constexpr uint64_t kArrivalStream = 0x6172726976616c00ull;
constexpr uint64_t kShuffleStream = 0x73687566666c6500ull;

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a ^ (b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2));
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

uint64_t draw64(uint64_t key, uint64_t counter) {
  return (static_cast<uint64_t>(philox_u32(key, 2 * counter)) << 32) | philox_u32(key, 2 * counter + 1);
}

}  // namespace

std::vector<int32_t> synthetic_prompt(uint64_t seed, uint64_t index, int32_t isl, int64_t lo, int64_t hi) {
  std::vector<int32_t> ids(static_cast<size_t>(std::max(isl, 0)));
  const uint64_t range = hi > lo ? static_cast<uint64_t>(hi - lo) : 1;
  const uint64_t key = mix(mix(seed, kPromptStream), index);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(lo + static_cast<int64_t>(draw64(key, i) % range));
  return ids;
}

std::vector<double> arrival_times(int64_t n, double rate, uint64_t seed) {
  std::vector<double> t(static_cast<size_t>(std::max<int64_t>(n, 0)), 0.0);
  if (!(rate > 0) || std::isinf(rate)) return t;
  const uint64_t key = mix(seed, kArrivalStream);
  double now = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    t[i] = now;
    // u in (0, 1]: never log(0).
    const double u = (static_cast<double>(draw64(key, i) >> 11) + 1.0) / 9007199254740992.0;
    now += -std::log(u) / rate;
  }
  return t;
}

Result<std::vector<DatasetPrompt>> load_dataset_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found("dataset '" + path + "' cannot be opened");
  std::vector<DatasetPrompt> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + " line " + std::to_string(line_no);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return invalid_argument(where + ": not a JSON object");
    auto p = j.find("prompt");
    if (p == j.end() || !p->is_string() || p->get_ref<const std::string&>().empty()) {
      return invalid_argument(where + ": needs a non-empty string field \"prompt\"");
    }
    DatasetPrompt d;
    d.text = p->get<std::string>();
    for (const char* key : {"output_len", "max_tokens"}) {
      auto o = j.find(key);
      if (o == j.end()) continue;
      if (!o->is_number_integer() || o->get<int64_t>() < 1 || o->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return invalid_argument(where + ": \"" + key + "\" must be a positive integer");
      }
      d.output_len = static_cast<int32_t>(o->get<int64_t>());
      break;
    }
    out.push_back(std::move(d));
  }
  if (out.empty()) return invalid_argument("dataset '" + path + "' holds no prompts");
  return out;
}

std::vector<DatasetPrompt> sample_dataset(const std::vector<DatasetPrompt>& all, int64_t n, uint64_t seed) {
  std::vector<size_t> order(all.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const uint64_t key = mix(seed, kShuffleStream);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[draw64(key, i) % i]);  // Fisher-Yates
  std::vector<DatasetPrompt> out;
  if (all.empty()) return out;
  for (int64_t i = 0; i < n; ++i) out.push_back(all[order[static_cast<size_t>(i) % order.size()]]);
  return out;
}

}  // namespace anvil::bench
