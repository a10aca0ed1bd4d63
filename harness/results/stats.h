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

}  // namespace ddpbench::results
