// The built-in DDP trainer, one rank of it. Free of LibTorch headers so that the CLI and the tests
// drive it without compiling ATen.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "profile/activity.h"
#include "results/results.h"
#include "train/config.h"

namespace ddpbench::train {

// Where this process sits, as the launcher (or torchrun) describes it in the environment.
struct RankEnv {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // DDPBENCH_REPORT_STORE=1: node 0's launcher hosts the rendezvous store, and the rank leaves its
  // report there as well (a run over several nodes, ddp/store.h).
  bool report_store = false;
  static RankEnv from_environment();  // UsageError when a variable is missing or malformed
};

// Hooks for tests and diagnostics; a default Probe costs nothing.
struct Probe {
  // Called on every rank after the gradients of an optimizer step are averaged, before clipping
  // and the optimizer: the trainable gradients flattened in parameter order, in fp64. Not with
  // shard_optimizer, where no rank holds the whole averaged gradient.
  std::function<void(int step, const std::vector<double>& grads)> on_grads;
  // Called on every rank once training is done: the trainable parameters flattened in parameter
  // order, in fp64.
  std::function<void(const std::vector<double>& weights)> on_weights;
  bool live_log = true;  // rank 0 prints one line per step
  // With cfg.profile: the GPU activity this rank recorded, handed over once training is done.
  std::function<void(profile::RankActivity&&)> on_activity;
  // Called from the training thread whenever the phase changes (setup, rendezvous, step N,
  // shutdown, done): what the launcher's heartbeat reports for a rank that stalls.
  std::function<void(const std::string& phase)> on_phase;
  // Called on every rank as soon as a step's sample is measured, before the next step starts: the
  // worker streams it to disk, so that a rank killed later keeps its completed steps.
  std::function<void(const results::StepSample&)> on_step;
};

// Runs warmup + steps optimizer steps and returns this rank's measurements. A failure does not
// throw: the report says status "failed", the phase (setup, checkpoint, data, rendezvous, step N),
// the error and when it happened. The process group is shut down on every path.
results::RankReport run_rank(const Config& cfg, const RankEnv& env, const Probe& probe = {});

}  // namespace ddpbench::train
