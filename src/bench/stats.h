// Order statistics for benchmark samples: percentiles with linear interpolation between closest
// ranks (numpy's default, so figures match tools/plot_bench.py), and a Summary of one metric.
// Empty inputs give a Summary with count 0 and zeros, never NaN, so JSON stays valid.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace anvil::bench {

struct Summary {
  int64_t count = 0;
  double mean = 0, stddev = 0, min = 0, max = 0;
  double p50 = 0, p90 = 0, p99 = 0;
};

// q in [0, 100]. `sorted` ascending; empty gives 0.
double percentile_sorted(const std::vector<double>& sorted, double q);
// Sorts a copy.
double percentile(std::vector<double> values, double q);
double median(std::vector<double> values);
Summary summarize(std::vector<double> values);

// {"count", "mean", "stddev", "min", "max", "p50", "p90", "p99"}; values times `scale` (e.g. 1e3
// to turn seconds into milliseconds).
nlohmann::json summary_json(const Summary& s, double scale = 1.0);

}  // namespace anvil::bench
