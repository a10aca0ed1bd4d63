// Order statistics over per-step samples. Percentiles interpolate linearly between closest ranks,
// as numpy.percentile does by default, so figures match what users compute from the CSV.
#pragma once
#include <span>
#include <vector>

namespace ddpbench::results {

double percentile(std::span<const double> samples, double p);  // p in [0, 100]; NaN when empty
double median(std::span<const double> samples);
double mean(std::span<const double> samples);
double stddev(std::span<const double> samples);  // sample standard deviation (n - 1)

// The spread of a handful of repeats: (max - min) / |median|. 0 for fewer than two samples or a
// zero median (nothing to scale by).
double relative_range(std::span<const double> samples);

// Wilcoxon rank-sum (Mann-Whitney U) test, one-sided: the probability, were a and b drawn from one
// distribution, of a rank sum of b at least as large as the one observed (small: b tends to be
// larger than a). Ties get mid-ranks, and the p-value is exact even then: the permutation
// distribution of the mid-rank sum, counted by dynamic programming (O(n^3 |b|) for n samples in
// all; repeats are few). 1 when either side is empty.
double rank_sum_p_greater(std::span<const double> a, std::span<const double> b);

}  // namespace ddpbench::results
