// The subcommands of `ddpbench`. Each registers itself on the app and, when chosen, leaves the
// action to run in `action`; main() runs it and maps errors to exit statuses (2: usage, 1: run).
#pragma once
#include <functional>

#include <CLI/CLI.hpp>

namespace ddpbench::cli {

using Action = std::function<int()>;

void add_train_command(CLI::App& app, Action& action);
void add_worker_command(CLI::App& app, Action& action);
void add_run_command(CLI::App& app, Action& action);
void add_doctor_command(CLI::App& app, Action& action);
void add_report_command(CLI::App& app, Action& action);
void add_prepare_command(CLI::App& app, Action& action);
void add_profile_command(CLI::App& app, Action& action);
void add_analyze_command(CLI::App& app, Action& action);
void add_check_loss_command(CLI::App& app, Action& action);
void add_gate_command(CLI::App& app, Action& action);
void add_bench_command(CLI::App& app, Action& action);
void add_predict_command(CLI::App& app, Action& action);

}  // namespace ddpbench::cli
