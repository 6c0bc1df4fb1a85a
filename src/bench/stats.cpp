// Percentiles by linear interpolation between closest ranks: rank = q/100 * (n - 1).
#include "bench/stats.h"

#include <algorithm>
#include <cmath>

namespace anvil::bench {

double percentile_sorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  q = std::clamp(q, 0.0, 100.0);
  const double rank = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

double percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  return percentile_sorted(values, q);
}

double median(std::vector<double> values) { return percentile(std::move(values), 50.0); }

Summary summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = static_cast<int64_t>(values.size());
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(values.size());
  double sq = 0;
  for (double v : values) sq += (v - s.mean) * (v - s.mean);
  s.stddev = values.size() > 1 ? std::sqrt(sq / static_cast<double>(values.size() - 1)) : 0.0;
  s.min = values.front();
  s.max = values.back();
  s.p50 = percentile_sorted(values, 50);
  s.p90 = percentile_sorted(values, 90);
  s.p99 = percentile_sorted(values, 99);
  return s;
}

nlohmann::json summary_json(const Summary& s, double scale) {
  return {{"count", s.count}, {"mean", s.mean * scale}, {"stddev", s.stddev * scale}, {"min", s.min * scale},
          {"max", s.max * scale}, {"p50", s.p50 * scale}, {"p90", s.p90 * scale}, {"p99", s.p99 * scale}};
}

}  // namespace anvil::bench
