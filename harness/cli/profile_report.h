// Turns the activity files that profiled ranks leave behind into the run's profile section: one
// breakdown per rank, the straggler view across ranks, and a Chrome trace per rank.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "profile/analysis.h"

namespace ddpbench::cli {

struct ProfileReport {
  nlohmann::json json;               // {"ranks": [...], "stragglers": {...}, "traces": [...], "missing": [...]}
  std::vector<std::string> rendered;  // one screen per rank that had activity, then the straggler view (2+ ranks)
};

// Reads <dir>/rank<k>.activity.json for each k in ranks, writes <dir>/rank<k>.trace.json.
ProfileReport analyze_activity(const std::string& dir, const std::vector<int>& ranks, const profile::AnalysisOptions& options);

}  // namespace ddpbench::cli
