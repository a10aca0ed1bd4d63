#include <cstdio>

#include "cli/commands.h"
#include "cli/train_flags.h"
#include "common/error.h"
#include "orchestrate/orchestrate.h"
#include "preflight/preflight.h"
#include "train/batches.h"
#include "train/checkpoint.h"

namespace ddpbench::cli {

namespace {

struct PrepareArgs {
  std::unique_ptr<TrainFlags> flags;
  std::string out;
  int nnodes = 1;
};

int prepare_main(const PrepareArgs& a) {
  auto cfg = a.flags->config();
  if (a.out.empty()) throw UsageError("--out: name the folder to write the checkpoint and token file into");
  // The weights are built on this host: an 8b model in fp32 is 32 GB before anything is written.
  if (a.flags->memory_check()) preflight::check_prepare_memory(cfg, cfg.nproc * a.nnodes, preflight::capacity_here({}));
  const auto files = orchestrate::prepare_equal_work_inputs(cfg, a.out, cfg.nproc * a.nnodes);
  std::printf("checkpoint: %s\ntoken file: %s\n", files.checkpoint.c_str(), files.data_file.c_str());
  std::printf("train on them with: --checkpoint %s --data-file %s\n", files.checkpoint.c_str(), files.data_file.c_str());
  return 0;
}

}  // namespace

void add_prepare_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<PrepareArgs>();
  auto* sub = app.add_subcommand(
      "prepare", "Write the inputs of an equal-work comparison: the initial weights as a Hugging Face checkpoint and the "
                 "token batches as a token file, from the same flags as train");
  args->flags = std::make_unique<TrainFlags>(*sub);
  sub->add_option("--out", args->out, "folder for checkpoint/ and tokens.bin")->required();
  sub->add_option("--nnodes", args->nnodes, "nodes the runs will use (the token file covers the global batch) [1]");
  sub->callback([args, &action] { action = [args] { return prepare_main(*args); }; });
}

}  // namespace ddpbench::cli
