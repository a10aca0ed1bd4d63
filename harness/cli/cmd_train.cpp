#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/train_flags.h"
#include "common/error.h"
#include "common/strings.h"
#include "ddp/store.h"
#include "orchestrate/orchestrate.h"
#include "profile/activity.h"
#include "train/trainer.h"

namespace ddpbench::cli {

namespace {

struct TrainArgs {
  std::unique_ptr<TrainFlags> flags;
  std::string out;
  std::string runs_dir = "runs";
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr;
  int master_port = 0;
};

launch::Topology topology_of(const TrainArgs& a) {
  std::map<std::string, std::string> env;
  for (const char* name : {"SLURM_NNODES", "SLURM_NODEID", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})
    if (const char* v = std::getenv(name)) env[name] = v;
  launch::Topology t = launch::topology_from_slurm(env, launch::Topology{});
  // Flags given explicitly win over Slurm's variables.
  if (a.nnodes != 1) t.nnodes = a.nnodes;
  if (a.node_rank != 0) t.node_rank = a.node_rank;
  if (!a.master_addr.empty()) t.master_addr = a.master_addr;
  if (a.master_port != 0) t.master_port = a.master_port;
  if (t.nnodes < 1) throw UsageError("--nnodes: must be at least 1");
  if (t.node_rank < 0 || t.node_rank >= t.nnodes)
    throw UsageError("--node-rank: " + std::to_string(t.node_rank) + " is outside 0.." + std::to_string(t.nnodes - 1));
  if (t.master_port < 0 || t.master_port > 65535) throw UsageError("--master-port: not a TCP port");
  return t;
}

int train_main(const TrainArgs& a) {
  check_runs_dir("--runs-dir", a.runs_dir);
  if (!a.out.empty()) check_output_file("--out", a.out);
  const auto cfg = a.flags->config();
  const auto topology = topology_of(a);
  orchestrate::CellRequest req;
  req.run_id = new_run_id();
  req.cell = "train";
  req.dir = a.runs_dir + "/" + req.run_id;
  req.config = cfg;
  req.memory_check = a.flags->memory_check();
  req.topology = topology;
  std::printf("ddpbench train: %s %s, %d rank(s) on %s, micro-batch %d x grad-accum %d x seq %d (%s), %d+%d steps -> %s\n",
              cfg.preset.c_str(), train::to_string(cfg.mode).c_str(), cfg.nproc * topology.nnodes, cfg.device.c_str(),
              cfg.micro_batch, cfg.grad_accum, cfg.seq_len, cfg.lengths.to_string().c_str(), cfg.warmup, cfg.steps,
              req.dir.c_str());
  std::fflush(stdout);
  const auto result = orchestrate::run_cell(req);
  if (!a.out.empty()) write_file_atomic(a.out, result.document.dump(2) + "\n");
  if (result.skipped) {
    std::printf("skipped: %s\nresult: %s\n", result.reason.c_str(), (a.out.empty() ? req.dir + "/result.json" : a.out).c_str());
    return 0;
  }
  const auto& s = result.document["summary"];
  if (result.ok && result.document.contains("profile")) {
    for (const auto& screen : result.profile_screens) std::printf("\n%s", screen.c_str());
    std::printf("\ntraces (Perfetto, Holistic Trace Analysis): %s/\n", orchestrate::trace_dir_of_run(req.dir).c_str());
  }
  if (result.ok) {
    std::printf("done: %s tok/s (%s per rank), step p50 %.1f ms p95 %.1f ms, peak %s, final loss %.4f\n",
                format_si(s["tokens_per_s"].get<double>()).c_str(), format_si(s["tokens_per_s_per_gpu"].get<double>()).c_str(),
                s["step_time_p50_s"].get<double>() * 1e3, s["step_time_p95_s"].get<double>() * 1e3,
                format_bytes(s["peak_allocated_bytes"].get<double>()).c_str(), s["final_loss"].get<double>());
    if (s["mfu"].is_number())
      std::printf("mfu: %.1f%% of the measured bf16 matrix rate %.0f TFLOP/s (datasheet %s)\n", 100.0 * s["mfu"].get<double>(),
                  s["peak_flops"].get<double>() / 1e12,
                  s["datasheet_flops"].get<double>() > 0 ? (std::to_string(static_cast<int>(s["datasheet_flops"].get<double>() / 1e12 + 0.5)) + " TFLOP/s").c_str() : "unknown");
    std::printf("result: %s\n", (a.out.empty() ? req.dir + "/result.json" : a.out).c_str());
    return 0;
  }
  std::fprintf(stderr, "ddpbench train: failed: %s\n", result.reason.c_str());
  std::fprintf(stderr, "logs: %s/logs, result: %s/result.json\n", req.dir.c_str(), req.dir.c_str());
  return 1;
}

struct WorkerArgs {
  std::string config;
  std::string out;
};

int worker_main(const WorkerArgs& a) {
  train::Config cfg;
  try {
    cfg = train::config_from_json(nlohmann::json::parse(read_file(a.config)));
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(a.config + ": " + e.what());
  }
  const auto env = train::RankEnv::from_environment();
  train::Probe probe;
  // The launcher names a rank whose heartbeat stops (stopped, frozen) with the phase it was in.
  const auto heartbeat = launch::HeartbeatWriter::from_environment();
  if (heartbeat) probe.on_phase = [&](const std::string& phase) { heartbeat->phase(phase); };
  // The launcher's process analyses the activity once every rank is done; a rank only writes it.
  probe.on_activity = [&](profile::RankActivity&& activity) {
    write_file_atomic(a.out + "/rank" + std::to_string(env.rank) + ".activity.json", profile::to_json(activity).dump() + "\n");
  };
  // Each sample on disk as soon as it is measured: a rank killed later keeps its completed steps.
  const std::string stream = results::step_stream_path(a.out, env.rank);
  std::filesystem::remove(stream);
  probe.on_step = [&](const results::StepSample& s) { results::append_step_sample(stream, s); };
  const auto report = train::run_rank(cfg, env, probe);
  const std::string text = results::to_json(report).dump(1) + "\n";
  write_file_atomic(a.out + "/rank" + std::to_string(env.rank) + ".json", text);
  // Over several nodes, node 0's document gathers every rank's report from the store its launcher hosts.
  if (env.report_store) {
    try {
      ddp::put_in_store(env.master_addr, env.master_port, ddp::report_key(env.rank), text, std::chrono::seconds(30));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %d: its report stays on this node only: %s\n", env.rank, e.what());
    }
  }
  if (report.status != "ok") {
    std::fprintf(stderr, "rank %d failed in %s: %s\n", env.rank, report.phase.c_str(), report.error.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<TrainArgs>();
  auto* sub = app.add_subcommand("train", "One DDP fine-tuning run of the built-in trainer (launches --nproc ranks)");
  args->flags = std::make_unique<TrainFlags>(*sub);
  sub->add_option("--out", args->out, "also write the result document to this file");
  sub->add_option("--runs-dir", args->runs_dir, "folder for run folders [runs]");
  sub->add_option("--nnodes", args->nnodes, "nodes in the world [1, or Slurm's]");
  sub->add_option("--node-rank", args->node_rank, "this node's rank [0, or Slurm's]");
  sub->add_option("--master-addr", args->master_addr, "rendezvous host [127.0.0.1, or Slurm's first node]");
  sub->add_option("--master-port", args->master_port, "rendezvous port [a free one; required with --nnodes > 1]");
  sub->callback([args, &action] { action = [args] { return train_main(*args); }; });
}

void add_worker_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<WorkerArgs>();
  // Started by the launcher, one per rank; not for users, so it stays out of --help.
  auto* sub = app.add_subcommand("_worker", "");
  sub->group("");
  sub->add_option("--config", args->config)->required();
  sub->add_option("--out", args->out)->required();
  sub->callback([args, &action] { action = [args] { return worker_main(*args); }; });
}

}  // namespace ddpbench::cli
