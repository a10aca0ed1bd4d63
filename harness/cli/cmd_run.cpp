// `ddpbench run`: its flags; the suite run itself is orchestrate::run_suite.
#include "cli/commands.h"
#include "orchestrate/orchestrate.h"

namespace ddpbench::cli {

void add_run_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<orchestrate::SuiteRunOptions>();
  auto* sub = app.add_subcommand("run", "Run a suite: workloads x GPU counts x batch settings (no SUITE: the built-in smoke suite)");
  sub->add_option("suite", args->suite_path, "suite file (TOML); without one: smoke-gpu where GPUs are visible, else smoke-cpu");
  sub->add_option("--runs-dir", args->runs_dir, "folder for run folders [runs]");
  sub->add_option("--filter", args->filter, "run only cells whose name contains this");
  sub->add_option("--repeats", args->repeats,
                  "rounds: each runs every cell once, in the same order, so drift hits all cells alike [1]");
  sub->add_flag("--dry-run", args->dry_run, "list the cell ids and the number of rounds, and stop");
  sub->callback([args, &action] { action = [args] { return orchestrate::run_suite(*args).failures == 0 ? 0 : 1; }; });
}

}  // namespace ddpbench::cli
