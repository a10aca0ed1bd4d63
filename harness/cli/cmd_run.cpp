// `ddpbench run`: its flags; the suite run itself is orchestrate::run_suite.
#include "cli/commands.h"
#include "common/strings.h"
#include "orchestrate/orchestrate.h"
#include "preflight/preflight.h"

namespace ddpbench::cli {

void add_run_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<orchestrate::SuiteRunOptions>();
  auto* sub = app.add_subcommand("run", "Run a suite: workloads x GPU counts x batch settings (no SUITE: the built-in smoke suite)");
  sub->add_option("suite", args->suite_path, "suite file (TOML); without one: smoke-gpu where GPUs are visible, else smoke-cpu");
  sub->add_option("--runs-dir", args->runs_dir, "folder for run folders [runs]");
  sub->add_option("--filter", args->filters, "run only cells whose name contains this (repeat: any of them)")
      ->allow_extra_args(false);
  sub->add_option("--repeats", args->repeats,
                  "rounds: each runs every cell once, in the same order, so drift hits all cells alike [1]");
  sub->add_flag("--dry-run", args->dry_run, "check every cell's inputs, list the cell ids and the number of rounds, and stop");
  sub->add_option("--resume", args->resume,
                  "finish an interrupted run folder: run only its cell repeats that are not ok (no SUITE, --filter or --repeats)");
  sub->add_flag_callback(
      preflight::kNoMemoryCheckFlag, [args] { args->memory_check = false; },
      "run cells whose memory estimate exceeds the GPU's or the host's memory");
  sub->callback([args, &action] {
    action = [args] {
      check_runs_dir("--runs-dir", args->runs_dir);
      const auto outcome = orchestrate::run_suite(*args);
      // Interrupted: the shell's status for a process ended by that signal (130 after Ctrl-C).
      if (outcome.interrupted_by != 0) return 128 + outcome.interrupted_by;
      return outcome.failures == 0 ? 0 : 1;
    };
  });
}

}  // namespace ddpbench::cli
