#include "orchestrate/orchestrate.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>

#include "common/error.h"
#include "common/strings.h"
#include "ddp/store.h"
#include "device/device.h"
#include "preflight/preflight.h"

#ifndef DDPBENCH_SOURCE_DIR
#define DDPBENCH_SOURCE_DIR "."
#endif
#ifndef DDPBENCH_INJECTION_LIBRARY
#define DDPBENCH_INJECTION_LIBRARY ""
#endif
#include "results/cells.h"
#include "results/fingerprint.h"
#include "results/results.h"
#include "train/batches.h"
#include "train/checkpoint.h"

namespace ddpbench::orchestrate {

EqualWorkInputs prepare_equal_work_inputs(const train::Config& cfg, const std::string& dir, int world_size) {
  make_dirs(dir);
  EqualWorkInputs in{dir + "/checkpoint", dir + "/tokens.bin"};
  train::write_initial_checkpoint(cfg, in.checkpoint);
  train::dump_synthetic_data(cfg, train::preset_shape(cfg.preset).vocab, world_size, in.data_file);
  return in;
}

EqualWorkInputsByWorld prepare_equal_work_inputs(const train::Config& cfg, const std::string& dir,
                                                 const std::set<int>& world_sizes) {
  make_dirs(dir);
  EqualWorkInputsByWorld in{dir + "/checkpoint", {}};
  train::write_initial_checkpoint(cfg, in.checkpoint);
  for (const int world : world_sizes) {
    in.data_file[world] = dir + "/tokens-n" + std::to_string(world) + ".bin";
    train::dump_synthetic_data(cfg, train::preset_shape(cfg.preset).vocab, world, in.data_file[world]);
  }
  return in;
}

std::string injection_library() {
  const std::string path = getenv_or("DDPBENCH_INJECTION", DDPBENCH_INJECTION_LIBRARY);
  if (path.empty() || !std::filesystem::exists(path))
    throw UsageError("the CUPTI injection library not found" + (path.empty() ? std::string() : " at " + path) +
                     " (set DDPBENCH_INJECTION; ddpbench needs a CUDA toolkit with CUPTI at build time)");
  return path;
}

std::string python_trainer_script(const std::string& trainer) {
  const std::string dir = getenv_or("DDPBENCH_HF_DIR", std::string(DDPBENCH_SOURCE_DIR) + "/harness/hf");
  const std::string script = dir + (trainer == "hf-loop" ? "/hf_loop.py" : "/peer_trainers.py");
  if (!std::filesystem::exists(script))
    throw UsageError("--trainer " + trainer + ": its adapter " + script + " is missing (set DDPBENCH_HF_DIR)");
  return script;
}

std::vector<std::string> rank_command(const train::Config& cfg, const std::string& config_path, const std::string& ranks_dir) {
  if (train::is_python_trainer(cfg.trainer))
    return {getenv_or("DDPBENCH_PYTHON", "python3"), python_trainer_script(cfg.trainer), "--config", config_path, "--out", ranks_dir};
  return {self_executable(), "_worker", "--config", config_path, "--out", ranks_dir};
}

std::optional<std::string> missing_trainer_packages(const std::string& trainer) {
  if (!train::is_python_trainer(trainer) || trainer == "hf-loop") return std::nullopt;
  const std::string command = shell_quote(getenv_or("DDPBENCH_PYTHON", "python3")) + " " +
                              shell_quote(python_trainer_script(trainer)) + " --check-packages " + shell_quote(trainer);
  auto r = run_shell_capture(command + " 2>&1");
  if (r.exit_status == 0) return std::nullopt;
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == ' ')) r.out.pop_back();
  // Exit 3 is the adapter's "not installed"; anything else (no python3, say) is said as it came.
  if (r.exit_status == 3) return r.out;
  return "trainer " + trainer + ": cannot check its packages (" + command + " exited " + std::to_string(r.exit_status) +
         (r.out.empty() ? "" : ": " + r.out) + ")";
}

namespace {

// Node 0 of a run over several nodes: the other nodes' ranks' reports from the store, added to
// `reports` (and written beside the local ones). Returns why the document holds fewer than every
// rank, or "" when it holds them all.
std::string gather_remote_reports(ddp::HostedStore* store, const launch::Topology& topology, int world, bool local_ok,
                                  const std::string& ranks_dir, std::vector<results::RankReport>& reports) {
  if (topology.nnodes == 1) return "";
  if (!store)
    return topology.node_rank == 0
               ? "this trainer's ranks on the other nodes report there only"
               : "node " + std::to_string(topology.node_rank) + " of " + std::to_string(topology.nnodes) +
                     ": this node's ranks only; node 0's document holds every rank";
  std::set<int> have;
  for (const auto& r : reports) have.insert(r.rank);
  // The other nodes' ranks leave their reports as soon as training ends there, moments after ours;
  // when ours failed, theirs likely did too, and waiting long would only delay the verdict.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(local_ok ? 60 : 2);
  std::vector<int> missing;
  for (int k = 0; k < world; ++k) {
    if (have.count(k)) continue;
    const auto left = std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                 deadline - std::chrono::steady_clock::now()));
    const auto text = store->get(ddp::report_key(k), left);
    if (!text) {
      missing.push_back(k);
      continue;
    }
    try {
      reports.push_back(results::rank_report_from_json(nlohmann::json::parse(*text)));
    } catch (const std::exception& e) {
      throw RunError("rank " + std::to_string(k) + "'s report from the rendezvous store: " + e.what());
    }
    write_file_atomic(ranks_dir + "/rank" + std::to_string(k) + ".json", *text);
  }
  std::sort(reports.begin(), reports.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
  if (missing.empty()) return "";
  std::string list;
  for (int k : missing) list += (list.empty() ? "" : ",") + std::to_string(k);
  return "rank(s) " + list + " left no report in the rendezvous store";
}

// The identity and environment every document of the cell carries, skipped or run.
results::RunContext context_of(const CellRequest& req, const train::Config& config, const results::Fingerprint& fp) {
  results::RunContext ctx;
  ctx.run_id = req.run_id;
  ctx.cell = req.cell;
  ctx.cell_id = req.cell_id.empty() ? results::cell_id(req.config.preset + "-" + train::to_string(req.config.mode),
                                                        train::to_json(req.config))
                                    : req.cell_id;
  ctx.repeat = req.repeat;
  ctx.config = train::to_json(config);
  ctx.fingerprint = results::to_json(fp);
  ctx.hardware_key = results::hardware_key(fp);
  return ctx;
}

}  // namespace

void check_cell(const train::Config& cfg, const results::Fingerprint& fp, bool memory_check) {
  if (cfg.shard_optimizer && cfg.trainer != "builtin")
    throw UsageError("--shard-optimizer: only the built-in trainer shards its optimizer state (trainer '" + cfg.trainer + "')");
  preflight::check_inputs(cfg);
  if (memory_check) preflight::check_memory(cfg, preflight::capacity_here(fp.gpus));
}

CellResult run_cell(const CellRequest& req) {
  const auto fp = req.fingerprint ? *req.fingerprint : results::collect_fingerprint(device::runtime_info());
  check_cell(req.config, fp, req.memory_check);
  make_dirs(req.dir);
  if (auto missing = missing_trainer_packages(req.config.trainer)) {
    // A trainer whose packages are not importable is a skipped cell, not a failed one.
    auto ctx = context_of(req, req.config, fp);
    ctx.skipped_reason = *missing;
    CellResult result;
    result.skipped = true;
    result.reason = *missing;
    result.document = results::make_run_document(ctx, {});
    write_file_atomic(req.dir + "/result.json", result.document.dump(2) + "\n");
    return result;
  }
  const std::string ranks_dir = req.dir + "/ranks";
  make_dirs(ranks_dir);
  train::Config config = req.config;
  if (train::is_python_trainer(config.trainer) && (config.checkpoint.empty() || config.data_file.empty())) {
    const auto in = prepare_equal_work_inputs(config, req.dir + "/inputs", config.nproc * req.topology.nnodes);
    if (config.checkpoint.empty()) config.checkpoint = in.checkpoint;
    if (config.data_file.empty()) config.data_file = in.data_file;
  }
  const std::string config_path = req.dir + "/config.json";
  write_file_atomic(config_path, train::to_json(config).dump(2) + "\n");

  launch::Spec spec;
  spec.topology = req.topology;
  spec.topology.nproc_per_node = config.nproc;
  spec.argv = rank_command(config, config_path, ranks_dir);
  for (const auto& e : config.env) {  // the cell's own first: what ddpbench sets below must hold
    const auto eq = e.find('=');
    spec.extra_env[e.substr(0, eq)] = e.substr(eq + 1);
  }
  // Python holds its output back otherwise, and the live log and the heartbeat need it.
  spec.extra_env["PYTHONUNBUFFERED"] = "1";
  spec.log_dir = req.dir + "/logs";
  spec.timeout = std::chrono::seconds(config.timeout_s);
  spec.echo_rank0 = req.echo_rank0;
  spec.bind_cpus = config.bind_cpus;
  if (config.profile && train::is_python_trainer(config.trainer)) {
    // A Python trainer is profiled from outside, as `ddpbench profile` does: the CUPTI collector as
    // CUDA's (and NVTX's) injection library, leaving rank<k>.activity.json beside the reports.
    const std::string injection = injection_library();
    spec.extra_env["CUDA_INJECTION64_PATH"] = injection;
    spec.extra_env["NVTX_INJECTION64_PATH"] = injection;
    spec.extra_env["DDPBENCH_PROFILE_DIR"] = ranks_dir;
  }
  // Over several nodes, node 0 hosts the rendezvous store for the whole cell and every rank of the
  // built-in trainer leaves its report in it, so that node 0's document holds every rank. A Python
  // trainer's torch.distributed hosts its own store in its rank 0: its nodes' documents stay partial.
  const int world = config.nproc * req.topology.nnodes;
  const bool gather = req.topology.nnodes > 1 && !train::is_python_trainer(config.trainer);
  std::unique_ptr<ddp::HostedStore> store;
  if (gather) {
    spec.extra_env[ddp::kReportStoreVariable] = "1";
    if (req.topology.node_rank == 0 && req.topology.master_port > 0)
      store = std::make_unique<ddp::HostedStore>(req.topology.master_port, std::chrono::seconds(config.timeout_s));
  }
  const auto outcome = launch::run(spec);

  std::vector<results::RankReport> reports;
  bool failed_rank_silent = false;
  for (const auto& r : outcome.ranks) {
    const std::string path = ranks_dir + "/rank" + std::to_string(r.global_rank) + ".json";
    if (!std::filesystem::exists(path)) {
      // Ended without its report (killed, crashed, stalled, torn down): the steps it streamed as
      // it measured them are still its measurements.
      results::RankReport partial;
      partial.rank = r.global_rank;
      partial.local_rank = r.local_rank;
      partial.world_size = spec.topology.world_size();
      partial.status = "failed";
      partial.phase = r.global_rank == outcome.failed_rank ? outcome.failed_phase : "unknown";
      partial.error = "ended without a report (see " + r.log_path + ")";
      partial.steps = results::read_step_stream(results::step_stream_path(ranks_dir, r.global_rank));
      failed_rank_silent |= r.global_rank == outcome.failed_rank;
      reports.push_back(std::move(partial));
      continue;
    }
    try {
      reports.push_back(results::rank_report_from_json(nlohmann::json::parse(read_file(path))));
    } catch (const std::exception& e) {
      throw RunError("reading " + path + ": " + e.what());
    }
  }

  const std::size_t local_reports = reports.size();
  auto ctx = context_of(req, config, fp);
  ctx.partial_reason = gather_remote_reports(store.get(), req.topology, world, outcome.ok, ranks_dir, reports);
  ctx.flops_per_token = train::model_flops_per_token(config);
  ctx.peak_flops = results::measured_peak_flops(reports);
  if (config.device == "cuda" && !fp.gpus.empty()) ctx.datasheet_flops = results::datasheet_bf16_flops(fp.gpus.front().name);
  if (!outcome.ok) {
    ctx.launcher_status = "failed";
    ctx.launcher_reason = outcome.reason;
    ctx.failed_rank = outcome.failed_rank.value_or(-1);
    ctx.failed_rank_silent = failed_rank_silent;
    if (!outcome.failed_phase.empty()) ctx.failed_phase = outcome.failed_phase;
  }
  CellResult result;
  result.interrupted_by = outcome.interrupted_by;
  result.document = results::make_run_document(ctx, reports);
  if (config.profile) {
    std::vector<int> ranks;
    for (const auto& r : outcome.ranks) ranks.push_back(r.global_rank);
    profile::AnalysisOptions options;
    options.warmup = config.warmup;
    auto prof = analyze_activity(ranks_dir, ranks, options, trace_dir_of_run(req.dir));
    result.document["profile"] = std::move(prof.json);
    result.profile_screens = std::move(prof.rendered);
  }
  result.ok = outcome.ok && result.document["status"]["state"] == "ok" &&
              local_reports == outcome.ranks.size();
  if (!result.ok) {
    const auto& st = result.document["status"];
    result.reason = st.contains("reason") && !st["reason"].get<std::string>().empty()
                        ? "rank " + st["rank"].dump() + " failed in " + st["phase"].get<std::string>() + ": " +
                              st["reason"].get<std::string>()
                        : outcome.reason;
    if (result.reason.empty()) result.reason = "a rank wrote no report (see " + spec.log_dir + ")";
    if (!outcome.failed_log_tail.empty()) result.document["status"]["log_tail"] = outcome.failed_log_tail;
  }
  write_file_atomic(req.dir + "/result.json", result.document.dump(2) + "\n");
  return result;
}

}  // namespace ddpbench::orchestrate
