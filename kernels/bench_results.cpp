#include "kernels/bench_results.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "collectives/collectives.h"
#include "common/error.h"
#include "common/strings.h"
#include "results/results.h"
#include "results/stats.h"

namespace ddpbench::kernels {

namespace {

// run_name drops Google Benchmark's /iterations:, /repeats: and /manual_time suffixes.
std::vector<std::string> name_parts(const nlohmann::json& e) {
  return split(e.value("run_name", e.at("name").get<std::string>()), '/');
}

bool is_iteration(const nlohmann::json& e) {
  return e.value("run_type", "iteration") == "iteration" && !e.value("error_occurred", false);
}

double counter(const nlohmann::json& e, const char* key, double fallback) {
  return e.contains(key) && e[key].is_number() ? e[key].get<double>() : fallback;
}

int impl_order(const std::string& impl) { return impl == "baseline" ? 0 : impl == "fused" ? 1 : impl == "liger" ? 2 : 3; }

}  // namespace

const ImplRow* KernelSeries::find(const std::string& impl) const {
  for (const auto& r : rows)
    if (r.impl == impl) return &r;
  return nullptr;
}

std::map<double, double> copy_rates(const nlohmann::json& gbench) {
  std::map<double, std::vector<double>> samples;
  for (const auto& e : gbench.at("benchmarks")) {
    if (!is_iteration(e)) continue;
    const auto parts = name_parts(e);
    if (parts.size() < 2 || parts[0] != "copy") continue;
    if (const auto bytes = parse_int(parts[1])) samples[2.0 * static_cast<double>(*bytes)].push_back(counter(e, "bytes_per_second", 0));
  }
  std::map<double, double> rates;
  for (auto& [traffic, r] : samples) rates[traffic] = results::median(r);
  return rates;
}

double best_copy_rate(const std::map<double, double>& rates) {
  double best = 0;
  for (const auto& [traffic, rate] : rates) best = std::max(best, rate);
  return best;
}

double copy_rate_near(const std::map<double, double>& rates, double bytes) {
  double best = 0, best_distance = 0;
  for (const auto& [traffic, rate] : rates) {
    const double distance = std::abs(std::log(traffic / bytes));
    if (best == 0 || distance < best_distance) best = rate, best_distance = distance;
  }
  return best;
}

bool timed_l2_cold(const nlohmann::json& gbench) {
  if (!gbench.contains("benchmarks") || !gbench["benchmarks"].is_array())
    throw RunError("benchmark output has no 'benchmarks' list");
  std::string first_name;
  bool first = false;
  for (const auto& e : gbench["benchmarks"]) {
    if (!is_iteration(e)) continue;
    const bool cold = counter(e, "l2_flush", 0) != 0;
    const std::string name = e.value("run_name", e.value("name", std::string("?")));
    if (first_name.empty()) {
      first_name = name, first = cold;
    } else if (cold != first) {
      auto how = [](bool c) { return std::string(c ? "L2-cold (l2_flush 1)" : "L2-warm (l2_flush 0 or absent)"); };
      throw RunError("entries timed differently: " + first_name + " " + how(first) + ", " + name + " " + how(cold) +
                     "; rows and copy rates compare only when timed alike");
    }
  }
  return first;
}

std::vector<KernelSeries> kernel_series(const nlohmann::json& gbench) {
  if (!gbench.contains("benchmarks") || !gbench["benchmarks"].is_array())
    throw RunError("benchmark output has no 'benchmarks' list");
  struct Samples {
    std::vector<double> times, rates, tflops, peaks;
    double model_bytes = 0;
    double check = -1;
  };
  std::map<std::tuple<std::string, std::string, std::string>, std::map<std::string, Samples>> grouped;
  for (const auto& e : gbench["benchmarks"]) {
    if (!is_iteration(e)) continue;
    const auto parts = name_parts(e);
    if (parts.size() < 4 || parts[0] == "copy") continue;
    auto& s = grouped[{parts[0], parts[1], parts[2]}][parts[3]];
    const double t = collectives::gbench_seconds(e);
    s.times.push_back(t);
    s.rates.push_back(counter(e, "bytes_per_second", 0));
    s.tflops.push_back(counter(e, "tflops", 0));
    s.peaks.push_back(counter(e, "peak_extra_bytes", 0));
    s.model_bytes = counter(e, "model_bytes", s.model_bytes);
    s.check = std::max(s.check, counter(e, "check_rel_error", -1));
  }
  std::vector<KernelSeries> out;
  for (auto& [key, impls] : grouped) {
    KernelSeries s{std::get<0>(key), std::get<1>(key), std::get<2>(key), {}};
    for (auto& [impl, samples] : impls) {
      ImplRow r;
      r.impl = impl;
      r.repetitions = static_cast<int>(samples.times.size());
      r.time_s = results::median(samples.times);
      r.time_min_s = *std::min_element(samples.times.begin(), samples.times.end());
      r.time_max_s = *std::max_element(samples.times.begin(), samples.times.end());
      r.model_bytes = samples.model_bytes;
      r.bytes_per_s = results::median(samples.rates);
      r.tflops = results::median(samples.tflops);
      r.peak_extra_bytes = *std::max_element(samples.peaks.begin(), samples.peaks.end());
      r.check_rel_error = samples.check;
      s.rows.push_back(r);
    }
    std::sort(s.rows.begin(), s.rows.end(), [](const ImplRow& a, const ImplRow& b) { return impl_order(a.impl) < impl_order(b.impl); });
    out.push_back(std::move(s));
  }
  return out;
}

std::string kernel_file_name(const KernelSeries& s) { return s.op + "-" + s.preset + "-" + s.pass + ".json"; }

nlohmann::json kernel_document(const KernelSeries& s, const std::map<double, double>& copy_rates_by_traffic,
                               const KernelRunInfo& info) {
  double model_bytes = 0;
  for (const auto& r : s.rows) model_bytes = std::max(model_bytes, r.model_bytes);
  const double copy_bytes_per_s = model_bytes > 0 ? copy_rate_near(copy_rates_by_traffic, model_bytes) : 0.0;
  const nlohmann::json config = {{"op", s.op},           {"preset", s.preset},         {"pass", s.pass},
                                 {"dtype", "bf16"},      {"tokens", info.tokens},      {"seq_len", info.seq_len},
                                 {"repetitions", info.repetitions}, {"iterations", info.iterations}, {"batch", info.batch},
                                 {"l2_flush", info.l2_flush},
                                 {"device", "cuda"},     {"nproc", 1}};
  const std::string cell = "kernels/" + s.op + "/" + s.preset + "/" + s.pass;
  auto doc = results::benchmark_document_head("kernels", cell, config, info.run_id, info.fingerprint, info.hardware_key);
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : s.rows) {
    nlohmann::json row = {{"impl", r.impl},
                          {"repetitions", r.repetitions},
                          {"time_s", r.time_s},
                          {"time_min_s", r.time_min_s},
                          {"time_max_s", r.time_max_s},
                          {"GBps", r.bytes_per_s / 1e9},
                          {"tflops", r.tflops},
                          {"peak_extra_bytes", r.peak_extra_bytes}};
    if (copy_bytes_per_s > 0) row["pct_copy"] = 100.0 * r.bytes_per_s / copy_bytes_per_s;
    if (r.check_rel_error >= 0) row["check_rel_error"] = r.check_rel_error;
    rows.push_back(row);
  }
  doc["rows"] = rows;
  doc["steps"] = nlohmann::json::array();
  doc["ranks"] = nlohmann::json::array({{{"rank", 0}, {"device", "cuda:0"}}});
  nlohmann::json summary = {{"copy_GBps", copy_bytes_per_s / 1e9}, {"copy_best_GBps", best_copy_rate(copy_rates_by_traffic) / 1e9},
                            {"model_bytes", model_bytes}};
  const auto* fused = s.find("fused");
  const auto* baseline = s.find("baseline");
  const auto* liger = s.find("liger");
  for (const auto* r : {baseline, fused, liger})
    if (r) {
      summary[r->impl + "_time_s"] = r->time_s;
      summary[r->impl + "_GBps"] = r->bytes_per_s / 1e9;
      summary[r->impl + "_peak_extra_bytes"] = r->peak_extra_bytes;
      if (copy_bytes_per_s > 0) summary[r->impl + "_pct_copy"] = 100.0 * r->bytes_per_s / copy_bytes_per_s;
    }
  if (fused && baseline && fused->time_s > 0) summary["speedup_vs_baseline"] = baseline->time_s / fused->time_s;
  if (fused && liger && fused->time_s > 0) summary["speedup_vs_liger"] = liger->time_s / fused->time_s;
  doc["summary"] = summary;
  if (fused && fused->check_rel_error > info.tolerance) {
    doc["status"] = {{"state", "failed"}, {"phase", "check"}, {"rank", 0},
                     {"reason", "fused differs from the reference: relative error " + std::to_string(fused->check_rel_error) +
                                    " > " + std::to_string(info.tolerance)}};
  } else {
    doc["status"] = {{"state", "ok"}};
  }
  return doc;
}

}  // namespace ddpbench::kernels
