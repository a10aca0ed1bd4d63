// `ddpbench check-loss`: its flags and their defaults; the check itself is orchestrate::check_loss.
#include <algorithm>

#include "cli/commands.h"
#include "cli/train_flags.h"
#include "common/strings.h"
#include "orchestrate/orchestrate.h"

namespace ddpbench::cli {

namespace {

struct CheckLossArgs {
  std::unique_ptr<TrainFlags> flags;
  std::string runs_dir = "runs";
  std::string out;
  double tolerance = -1;  // < 0: by precision
};

int check_loss_main(const CheckLossArgs& a) {
  // Defaults that make a wrong rule show: two ranks on the CPU, accumulation, lengths from an eighth
  // of seq_len to all of it, a few steps with no warm-up.
  auto cfg = a.flags->config({{"nproc", "2"}, {"grad_accum", "2"}, {"steps", "3"}, {"warmup", "0"}});
  if (!a.flags->given("lengths")) {
    cfg.lengths = train::Lengths{true, std::max(2, cfg.seq_len / 8), cfg.seq_len};
  }
  train::validate(cfg);
  check_runs_dir("--runs-dir", a.runs_dir);
  if (!a.out.empty()) check_output_file("--out", a.out);
  return orchestrate::check_loss({cfg, a.tolerance, a.runs_dir, a.out, a.flags->memory_check()}) ? 0 : 1;
}

}  // namespace

void add_check_loss_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<CheckLossArgs>();
  auto* sub = app.add_subcommand(
      "check-loss",
      "Check the loss rule on any trainer: W ranks x G micro-batches of uneven lengths against 1 rank with the same "
      "global batch in one micro-batch, same weights and tokens (exit 1 when they disagree)");
  args->flags = std::make_unique<TrainFlags>(*sub);
  sub->add_option("--tolerance", args->tolerance,
                  "largest relative difference of a step's loss or gradient norm that passes [1e-4 on the CPU (fp32), "
                  "5e-3 on GPUs (bf16)]");
  sub->add_option("--runs-dir", args->runs_dir, "folder for run folders [runs]");
  sub->add_option("--out", args->out, "also write the verdict (JSON) to this file");
  sub->callback([args, &action] { action = [args] { return check_loss_main(*args); }; });
}

}  // namespace ddpbench::cli
