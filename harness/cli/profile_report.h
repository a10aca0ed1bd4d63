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

// Reads <dir>/rank<k>.activity.json for each k in ranks, writes <trace_dir>/rank<k>.trace.json (creating
// trace_dir). trace_dir holds nothing else, so that it is the folder to give Holistic Trace Analysis,
// which reads every .json it finds.
ProfileReport analyze_activity(const std::string& dir, const std::vector<int>& ranks, const profile::AnalysisOptions& options,
                               const std::string& trace_dir);

// Where traces go: a run folder's traces/ (`train --profile`, `profile`).
inline std::string trace_dir_of_run(const std::string& run_dir) { return run_dir + "/traces"; }

}  // namespace ddpbench::cli
