#include "results/cells.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "results/stats.h"

namespace ddpbench::results {

std::uint64_t fnv1a64(std::string_view text) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ull;
  return h;
}

std::string short_hash(std::string_view text) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, fnv1a64(text));
  return std::string(buf, 8);
}

nlohmann::json work_config(const nlohmann::json& config) {
  nlohmann::json out = config;
  for (const char* field : {"timeout_s", "profile", "debug_step_delay_ms", "checkpoint", "data_file", "bind_cpus"})
    out.erase(field);
  return out;
}

namespace {

std::string field(const nlohmann::json& config, const char* name) {
  if (!config.is_object() || !config.contains(name)) return "?";
  const auto& v = config[name];
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// The trainer label of a configuration document (older documents have no impl: baseline).
std::string trainer_field(const nlohmann::json& config) {
  const std::string impl = config.contains("impl") && config["impl"].is_string() ? config["impl"].get<std::string>() : "baseline";
  return trainer_label(field(config, "trainer"), impl);
}

}  // namespace

std::string trainer_label(const std::string& trainer, const std::string& impl) {
  return trainer == "builtin" && impl != "baseline" ? trainer + "-" + impl : trainer;
}

std::string cell_id(const std::string& workload, const nlohmann::json& config) {
  return workload + "/" + trainer_field(config) + "/n" + field(config, "nproc") + "/b" + field(config, "micro_batch") +
         "/g" + field(config, "grad_accum") + "/s" + field(config, "seq_len") + "#" +
         short_hash(workload + "\n" + work_config(config).dump());
}

std::string scaling_group(const std::string& workload, const nlohmann::json& config) {
  // Strong scaling holds the global batch, so grad_accum changes with the rank count.
  const bool strong = config.contains("global_batch") && config["global_batch"].is_number() && config["global_batch"].get<int>() > 0;
  return workload + "/" + trainer_field(config) + "/b" + field(config, "micro_batch") +
         (strong ? "/G" + field(config, "global_batch") : "/g" + field(config, "grad_accum")) + "/s" +
         field(config, "seq_len");
}

std::string cell_file_name(const std::string& cell_id, int repeat) {
  std::string name = cell_id;
  for (auto& c : name) {
    if (c == '/') c = '_';
    if (c == '#') c = '-';
  }
  return name + "-r" + std::to_string(repeat) + ".json";
}

Spread spread_of(std::span<const double> samples) {
  Spread s;
  s.n = static_cast<int>(samples.size());
  if (samples.empty()) {
    s.median = s.min = s.max = std::numeric_limits<double>::quiet_NaN();
    return s;
  }
  const auto [lo, hi] = std::minmax_element(samples.begin(), samples.end());
  s.median = median(samples);
  s.min = *lo;
  s.max = *hi;
  return s;
}

std::vector<ScalingPoint> scaling_efficiencies(const std::vector<CellFigures>& cells) {
  std::map<std::string, const CellFigures*> baseline;  // group -> its first 1-rank cell with ok repeats
  for (const auto& c : cells)
    if (c.nproc == 1 && !c.tokens_per_s.empty()) baseline.emplace(c.group, &c);
  std::vector<ScalingPoint> out;
  for (const auto& c : cells) {
    auto base = baseline.find(c.group);
    if (c.tokens_per_s.empty() || base == baseline.end()) continue;
    const double base_tps = median(base->second->tokens_per_s);
    if (!(base_tps > 0)) continue;
    out.push_back({c.group, c.cell_id, c.nproc, median(c.tokens_per_s) / (c.nproc * base_tps), base->second->cell_id});
  }
  return out;
}

nlohmann::json to_json(const ScalingPoint& p) {
  return {{"group", p.group},
          {"cell_id", p.cell_id},
          {"nproc", p.nproc},
          {"efficiency", p.efficiency},
          {"baseline_cell_id", p.baseline_cell_id}};
}

std::vector<double> measured_losses(const nlohmann::json& run_document) {
  std::vector<double> out;
  if (!run_document.contains("steps")) return out;
  for (const auto& s : run_document["steps"])
    if (!s.value("warmup", false)) out.push_back(s.at("loss").get<double>());
  return out;
}

std::optional<double> max_loss_difference(std::span<const double> a, std::span<const double> b) {
  if (a.empty() || a.size() != b.size()) return std::nullopt;
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::optional<double> mean_loss_difference(std::span<const double> a, std::span<const double> b) {
  if (a.empty() || a.size() != b.size()) return std::nullopt;
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += a[i] - b[i];
  return sum / static_cast<double>(a.size());
}

namespace {

using CurveStatistic = std::optional<double> (*)(std::span<const double>, std::span<const double>);

// `statistic` of every pair of a repeat of `a` and one of `b` that cover the same steps and, with
// `and_within_a`, of every two repeats of `a` too (the pairs of an A/A floor).
std::vector<double> over_pairs(const LossCurves& a, const LossCurves& b, bool and_within_a, CurveStatistic statistic) {
  std::vector<double> out;
  const auto take = [&](const std::vector<double>& x, const std::vector<double>& y) {
    if (auto v = statistic(x, y)) out.push_back(*v);
  };
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (const auto& y : b) take(a[i], y);
    if (and_within_a)
      for (std::size_t j = i + 1; j < a.size(); ++j) take(a[i], a[j]);
  }
  return out;
}

std::optional<double> largest_magnitude(const std::vector<double>& v) {
  if (v.empty()) return std::nullopt;
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

std::optional<double> median_of(const std::vector<double>& v) {
  if (v.empty()) return std::nullopt;
  return median(v);
}

}  // namespace

std::optional<double> aa_floor(const LossCurves& cell, const LossCurves& twin) {
  return largest_magnitude(over_pairs(cell, twin, true, max_loss_difference));
}

std::optional<double> aa_bias(const LossCurves& cell, const LossCurves& twin) {
  return largest_magnitude(over_pairs(cell, twin, true, mean_loss_difference));
}

std::optional<double> loss_curve_distance(const LossCurves& a, const LossCurves& b) {
  return median_of(over_pairs(a, b, false, max_loss_difference));
}

std::optional<double> loss_curve_bias(const LossCurves& a, const LossCurves& b) {
  return median_of(over_pairs(a, b, false, mean_loss_difference));
}

}  // namespace ddpbench::results
