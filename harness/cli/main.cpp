// ddpbench: benchmarks and diagnostics for data-parallel fine-tuning of LLMs.
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "common/error.h"

int main(int argc, char** argv) {
  using namespace ddpbench;
  CLI::App app{"ddpbench: benchmarks and diagnostics for multi-GPU data-parallel fine-tuning of LLMs"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  cli::Action action;
  cli::add_train_command(app, action);
  cli::add_run_command(app, action);
  cli::add_doctor_command(app, action);
  cli::add_report_command(app, action);
  cli::add_prepare_command(app, action);
  cli::add_profile_command(app, action);
  cli::add_analyze_command(app, action);
  cli::add_check_loss_command(app, action);
  cli::add_gate_command(app, action);
  cli::add_bench_command(app, action);
  cli::add_predict_command(app, action);
  cli::add_worker_command(app, action);

  std::string where = "ddpbench";
  try {
    // CLI11 reports a mistyped subcommand as a missing one; name what was typed instead.
    if (argc > 1 && argv[1][0] != '-') {
      bool known = false;
      for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; })) known |= sub->get_name() == argv[1];
      if (!known) throw UsageError(std::string("unknown subcommand '") + argv[1] + "' (train, run, check-loss, report, gate, bench, predict, doctor, prepare, profile, analyze; see --help)");
    }
    app.parse(argc, argv);
    for (auto* sub : app.get_subcommands()) where += " " + sub->get_name();
    return action ? action() : 0;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, exit 2: a usage error names what is wrong and where, nothing more.
    std::fprintf(stderr, "%s: %s (see --help)\n", where.c_str(), e.what());
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", where.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    std::fprintf(stderr, "%s: error: %s\n", where.c_str(), msg.c_str());
    return 1;
  }
}
