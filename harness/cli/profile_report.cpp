#include "cli/profile_report.h"

#include <filesystem>

#include "common/error.h"
#include "common/strings.h"
#include "profile/chrome_trace.h"

namespace ddpbench::cli {

ProfileReport analyze_activity(const std::string& dir, const std::vector<int>& ranks, const profile::AnalysisOptions& options) {
  ProfileReport report;
  report.json = {{"ranks", nlohmann::json::array()}, {"traces", nlohmann::json::array()}, {"missing", nlohmann::json::array()}};
  std::vector<profile::RankBreakdown> breakdowns;
  for (int k : ranks) {
    const std::string path = dir + "/rank" + std::to_string(k) + ".activity.json";
    if (!std::filesystem::exists(path)) {
      report.json["missing"].push_back(k);
      continue;
    }
    profile::RankActivity activity;
    try {
      activity = profile::activity_from_json(nlohmann::json::parse(read_file(path)));
    } catch (...) {
      rethrow_with_context("reading " + path);
    }
    const std::string trace = dir + "/rank" + std::to_string(k) + ".trace.json";
    profile::write_chrome_trace(activity, trace);
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

}  // namespace ddpbench::cli
