#include "results/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace ddpbench::results {

double percentile(std::span<const double> samples, double p) {
  if (samples.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> sorted(samples.begin(), samples.end());
  std::sort(sorted.begin(), sorted.end());
  const double pos = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

double median(std::span<const double> samples) { return percentile(samples, 50.0); }

double mean(std::span<const double> samples) {
  if (samples.empty()) return std::numeric_limits<double>::quiet_NaN();
  return std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
}

double stddev(std::span<const double> samples) {
  if (samples.size() < 2) return 0.0;
  const double m = mean(samples);
  double acc = 0;
  for (double x : samples) acc += (x - m) * (x - m);
  return std::sqrt(acc / static_cast<double>(samples.size() - 1));
}

double relative_range(std::span<const double> samples) {
  if (samples.size() < 2) return 0.0;
  const auto [lo, hi] = std::minmax_element(samples.begin(), samples.end());
  const double mid = std::fabs(median(samples));
  return mid > 0 ? (*hi - *lo) / mid : 0.0;
}

double rank_sum_p_greater(std::span<const double> a, std::span<const double> b) {
  if (a.empty() || b.empty()) return 1.0;
  // Pool the samples, sort, and give each tie group its mid-rank, doubled so that it is a whole number.
  struct Item {
    double value;
    bool from_b;
  };
  std::vector<Item> pooled;
  for (double x : a) pooled.push_back({x, false});
  for (double x : b) pooled.push_back({x, true});
  std::sort(pooled.begin(), pooled.end(), [](const Item& x, const Item& y) { return x.value < y.value; });
  const std::size_t n = pooled.size(), k = b.size();
  std::vector<long> rank2(n);  // 2 x mid-rank, 1-based ranks
  long observed2 = 0;
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i;
    while (j + 1 < n && pooled[j + 1].value == pooled[i].value) ++j;
    for (std::size_t m = i; m <= j; ++m) {
      rank2[m] = static_cast<long>(i + j + 2);
      if (pooled[m].from_b) observed2 += rank2[m];
    }
    i = j + 1;
  }
  // ways[j][s]: subsets of j of the pooled samples whose doubled ranks sum to s. Every subset of size
  // k is equally likely under the hypothesis; the p-value is the share whose sum reaches the observed.
  const long max_sum = static_cast<long>(n * (n + 1));
  std::vector<std::vector<double>> ways(k + 1, std::vector<double>(static_cast<std::size_t>(max_sum) + 1, 0.0));
  ways[0][0] = 1;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = std::min(k, i + 1); j >= 1; --j)
      for (long s = max_sum; s >= rank2[i]; --s) ways[j][static_cast<std::size_t>(s)] += ways[j - 1][static_cast<std::size_t>(s - rank2[i])];
  double at_least = 0, total = 0;
  for (long s = 0; s <= max_sum; ++s) {
    total += ways[k][static_cast<std::size_t>(s)];
    if (s >= observed2) at_least += ways[k][static_cast<std::size_t>(s)];
  }
  return at_least / total;
}

}  // namespace ddpbench::results
