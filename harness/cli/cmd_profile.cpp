#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <regex>

#include "cli/commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "launch/launch.h"
#include "orchestrate/orchestrate.h"

#ifndef DDPBENCH_INJECTION_LIBRARY
#define DDPBENCH_INJECTION_LIBRARY ""
#endif

namespace ddpbench::cli {

namespace {

// The options of the analysis, shared by `profile` and `analyze`.
profile::AnalysisOptions default_analysis() {
  profile::AnalysisOptions o;
  o.warmup = 1;
  return o;
}

void add_analysis_options(CLI::App* sub, profile::AnalysisOptions& o) {
  sub->add_option("--step-marker", o.step_marker, "NVTX range that marks a step (re:REGEX for a pattern) [step]");
  sub->add_option("--warmup", o.warmup, "leading steps left out of the summary [1]");
  sub->add_option_function<double>(
         "--gap-us", [&o](double us) { o.gap_threshold_ns = static_cast<std::uint64_t>(us * 1000.0); },
         "idle stretches longer than this are host-bound gaps, shorter ones launch gaps, in microseconds [50]")
      ->check(CLI::Range(0.0, 1e7));
}

struct ProfileArgs {
  int nproc = 1;
  profile::AnalysisOptions analysis = default_analysis();
  std::string runs_dir = "runs";
  int timeout_s = 1800;
  bool bind_cpus = false;
  std::vector<std::string> command;
};

std::string existing(const std::string& what, const std::string& env_name, const std::string& built_in) {
  const std::string path = getenv_or(env_name.c_str(), built_in);
  if (path.empty() || !std::filesystem::exists(path))
    throw UsageError(what + " not found" + (path.empty() ? "" : " at " + path) + " (set " + env_name +
                     "; ddpbench needs a CUDA toolkit with CUPTI at build time)");
  return path;
}

int profile_main(const ProfileArgs& a) {
  if (a.command.empty()) throw UsageError("name the command to profile after --, e.g. ddpbench profile -- python3 train.py");
  if (a.nproc < 1) throw UsageError("--nproc: must be at least 1");
  check_runs_dir("--runs-dir", a.runs_dir);
  const std::string injection = existing("the CUPTI injection library", "DDPBENCH_INJECTION", DDPBENCH_INJECTION_LIBRARY);
  const std::string dir = a.runs_dir + "/" + new_run_id() + "-profile";
  const std::string activity_dir = dir + "/activity";
  make_dirs(activity_dir);

  launch::Spec spec;
  spec.topology.nproc_per_node = a.nproc;
  spec.argv = a.command;
  spec.log_dir = dir + "/logs";
  spec.timeout = std::chrono::seconds(a.timeout_s);
  spec.bind_cpus = a.bind_cpus;
  spec.extra_env["CUDA_INJECTION64_PATH"] = injection;
  // CUPTI sees NVTX ranges (the step marker of another trainer) only as NVTX's injection; the
  // collector library forwards that hook to the libcupti it records with (see injection.cpp).
  spec.extra_env["NVTX_INJECTION64_PATH"] = injection;
  spec.extra_env["DDPBENCH_PROFILE_DIR"] = activity_dir;
  spec.extra_env["PYTHONUNBUFFERED"] = "1";
  std::printf("ddpbench profile: %d rank(s) of `%s` under CUPTI -> %s\n", a.nproc, a.command.front().c_str(), dir.c_str());
  std::fflush(stdout);
  const auto outcome = launch::run(spec);

  std::vector<int> ranks;
  for (const auto& r : outcome.ranks) ranks.push_back(r.global_rank);
  const auto report = orchestrate::analyze_activity(activity_dir, ranks, a.analysis, orchestrate::trace_dir_of_run(dir));
  write_file_atomic(dir + "/profile.json", report.json.dump(2) + "\n");
  for (const auto& screen : report.rendered) std::printf("\n%s", screen.c_str());
  std::printf("\nprofile: %s/profile.json\ntraces (Perfetto, Holistic Trace Analysis): %s/\n", dir.c_str(),
              orchestrate::trace_dir_of_run(dir).c_str());
  if (!report.json["missing"].empty())
    std::fprintf(stderr, "ddpbench profile: no activity from rank(s) %s (did they use the GPU and exit normally?)\n",
                 report.json["missing"].dump().c_str());
  if (!outcome.ok) {
    std::fprintf(stderr, "ddpbench profile: %s\n", outcome.reason.c_str());
    return 1;
  }
  return report.json["missing"].empty() ? 0 : 1;
}

}  // namespace

void add_profile_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<ProfileArgs>();
  auto* sub = app.add_subcommand("profile", "Profile any trainer (e.g. a Python one) under the launcher and the CUPTI injection collector");
  sub->add_option("--nproc", args->nproc, "ranks to start [1]");
  add_analysis_options(sub, args->analysis);
  sub->add_option("--runs-dir", args->runs_dir, "folder for run folders [runs]");
  sub->add_option("--timeout", args->timeout_s, "seconds before every rank is torn down [1800]");
  sub->add_flag("--bind-cpus", args->bind_cpus, "bind each local rank to its own contiguous share of the CPUs");
  sub->add_option("command", args->command, "the command each rank runs, after --")->required();
  sub->callback([args, &action] { action = [args] { return profile_main(*args); }; });
}

namespace {

struct AnalyzeArgs {
  std::string dir;
  std::string out;
  std::string traces;
  profile::AnalysisOptions analysis = default_analysis();
};

int analyze_main(const AnalyzeArgs& a) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(a.dir)) throw UsageError(a.dir + ": no such folder");
  std::vector<int> ranks;
  const std::regex activity_file(R"(rank(\d+)\.activity\.json)");
  for (const auto& entry : fs::directory_iterator(a.dir)) {
    const std::string name = entry.path().filename().string();
    std::smatch m;
    if (std::regex_match(name, m, activity_file)) ranks.push_back(std::stoi(m[1].str()));
  }
  if (ranks.empty())
    throw UsageError(a.dir + ": holds no rank<k>.activity.json (what `ddpbench profile` and `train --profile` leave in their run folders)");
  std::sort(ranks.begin(), ranks.end());
  // Beside the activity folder, where `train --profile` and `profile` put them: <run>/ranks or
  // <run>/activity -> <run>/traces.
  const std::string traces =
      a.traces.empty() ? orchestrate::trace_dir_of_run(fs::canonical(a.dir).parent_path().string()) : a.traces;
  const auto report = orchestrate::analyze_activity(a.dir, ranks, a.analysis, traces);
  const std::string out = a.out.empty() ? a.dir + "/profile.json" : a.out;
  write_file_atomic(out, report.json.dump(2) + "\n");
  for (const auto& screen : report.rendered) std::printf("\n%s", screen.c_str());
  std::printf("\nprofile: %s\ntraces (Perfetto, Holistic Trace Analysis): %s/\n", out.c_str(), traces.c_str());
  return 0;
}

}  // namespace

void add_analyze_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<AnalyzeArgs>();
  auto* sub = app.add_subcommand("analyze", "Analyze recorded activity again (rank<k>.activity.json of a profile or train --profile run), e.g. with other step or gap settings");
  sub->add_option("dir", args->dir, "the folder holding rank<k>.activity.json")->required();
  sub->add_option("--out", args->out, "where the profile JSON goes [DIR/profile.json]");
  sub->add_option("--traces", args->traces,
                  "folder for the Chrome traces rank<k>.trace.json, holding nothing else [traces/ beside DIR]");
  add_analysis_options(sub, args->analysis);
  sub->callback([args, &action] { action = [args] { return analyze_main(*args); }; });
}

}  // namespace ddpbench::cli
