#include "orchestrate/orchestrate.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <utility>

#include "common/error.h"
#include "common/strings.h"
#include "profile/chrome_trace.h"

namespace ddpbench::orchestrate {

ProfileReport analyze_activity(const std::string& dir, const std::vector<int>& ranks, const profile::AnalysisOptions& options,
                               const std::string& trace_dir) {
  ProfileReport report;
  make_dirs(trace_dir);
  report.json = {{"ranks", nlohmann::json::array()}, {"traces", nlohmann::json::array()}, {"missing", nlohmann::json::array()}};
  // All ranks first: their traces share one base time (see TraceOptions::base_ns).
  std::vector<std::pair<int, profile::RankActivity>> activities;  // by the rank of the file's name
  std::optional<std::uint64_t> base;
  for (int k : ranks) {
    const std::string path = dir + "/rank" + std::to_string(k) + ".activity.json";
    if (!std::filesystem::exists(path)) {
      report.json["missing"].push_back(k);
      continue;
    }
    try {
      activities.emplace_back(k, profile::activity_from_json(nlohmann::json::parse(read_file(path))));
    } catch (const nlohmann::json::exception& e) {
      // A file that is not the JSON it should be (truncated, edited) is bad input: exit status 2.
      throw UsageError("reading " + path + ": " + e.what());
    } catch (...) {
      rethrow_with_context("reading " + path);
    }
    if (auto t = profile::earliest_record(activities.back().second)) base = base ? std::min(*base, *t) : *t;
  }
  std::vector<profile::RankBreakdown> breakdowns;
  for (const auto& [k, activity] : activities) {
    const std::string trace = trace_dir + "/rank" + std::to_string(k) + ".trace.json";
    profile::write_chrome_trace(activity, trace, {options.step_marker, base});
    report.json["traces"].push_back(trace);
    breakdowns.push_back(profile::analyze(activity, options));
    report.json["ranks"].push_back(profile::to_json(breakdowns.back()));
    report.rendered.push_back(profile::render_breakdown(breakdowns.back()));
  }
  if (!breakdowns.empty()) {
    report.json["stragglers"] = profile::straggler_view(breakdowns);
    if (auto screen = profile::render_straggler_view(report.json["stragglers"]); !screen.empty())
      report.rendered.push_back(std::move(screen));
  }
  return report;
}

}  // namespace ddpbench::orchestrate
