// `ddpbench report`: the scaling and comparison report. The report itself is Python (reports/,
// matplotlib); this subcommand checks the arguments, so that a wrong path is one line and exit 2
// here as everywhere, and then becomes that program (exec), whose exit status is the command's.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cli/commands.h"
#include "common/error.h"
#include "common/strings.h"

#ifndef DDPBENCH_SOURCE_DIR
#define DDPBENCH_SOURCE_DIR "."
#endif

namespace ddpbench::cli {

namespace {

// The trainer names the report knows (reports/ddpbench_report/compare.py TRAINERS).
constexpr std::array<const char*, 6> kTrainers{"builtin", "builtin-fused", "hf", "liger", "unsloth", "hf-loop"};

struct ReportArgs {
  std::vector<std::string> runs;
  std::vector<std::string> baselines;
  std::string candidate;
  std::string out;
  bool no_tensorboard = false;
};

bool is_trainer(const std::string& name) {
  return std::any_of(kTrainers.begin(), kTrainers.end(), [&](const char* t) { return name == t; });
}

std::string trainer_list() {
  std::string s;
  for (const char* t : kTrainers) s += (s.empty() ? "" : ", ") + std::string(t);
  return s;
}

int report_main(const ReportArgs& a) {
  for (const auto& run : a.runs)
    if (!std::filesystem::exists(run)) throw UsageError(run + ": no such run folder or result document");
  for (const auto& b : a.baselines)
    if (!std::filesystem::exists(b) && !is_trainer(b))
      throw UsageError("--baseline " + b + ": neither an existing run folder or document nor a trainer (" + trainer_list() + ")");
  if (!a.candidate.empty() && !is_trainer(a.candidate))
    throw UsageError("--candidate " + a.candidate + ": not a trainer (" + trainer_list() + ")");
  const std::string script = getenv_or("DDPBENCH_REPORT_SCRIPT", std::string(DDPBENCH_SOURCE_DIR) + "/reports/report.py");
  if (!std::filesystem::exists(script))
    throw RunError("the report generator " + script + " is missing (set DDPBENCH_REPORT_SCRIPT)");
  const std::string python = getenv_or("DDPBENCH_PYTHON", "python3");

  std::vector<std::string> args{python, script};
  args.insert(args.end(), a.runs.begin(), a.runs.end());
  for (const auto& b : a.baselines) args.insert(args.end(), {"--baseline", b});
  if (!a.candidate.empty()) args.insert(args.end(), {"--candidate", a.candidate});
  if (!a.out.empty()) args.insert(args.end(), {"--out", a.out});
  if (a.no_tensorboard) args.emplace_back("--no-tensorboard");
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  ::execvp(argv[0], argv.data());
  throw RunError("cannot start " + python + " for " + script + ": " + std::strerror(errno) + " (set DDPBENCH_PYTHON)");
}

}  // namespace

void add_report_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<ReportArgs>();
  auto* sub = app.add_subcommand(
      "report", "Scaling and comparison report from result documents: report.md, report.html, PNG plots, TensorBoard scalars");
  sub->add_option("runs", args->runs,
                  "run folders (runs/<id>), folders of result documents, or documents; several: repeats of each other")
      ->required();
  sub->add_option("--baseline", args->baselines,
                  "a trainer of the same run (" + trainer_list() +
                      "; default hf where present) or a stored run whose cells of the same cell_id are the baseline "
                      "(repeat the option for several runs: repeats)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--candidate", args->candidate,
                  "the trainer compared first within one run [builtin-fused where present, else builtin]");
  sub->add_option("--out", args->out, "output folder [<first RUN>/report]");
  sub->add_flag("--no-tensorboard", args->no_tensorboard, "do not write TensorBoard event files");
  sub->callback([args, &action] { action = [args] { return report_main(*args); }; });
}

}  // namespace ddpbench::cli
