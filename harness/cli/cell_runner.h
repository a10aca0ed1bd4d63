// Runs one configuration as a DDP job: writes the config, launches the ranks through the launcher,
// merges the rank reports into a run document. `train` runs one cell, `run` a suite of them.
#pragma once
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "launch/launch.h"
#include "results/fingerprint.h"
#include "train/config.h"

namespace ddpbench::cli {

struct CellRequest {
  std::string run_id;
  std::string cell;      // name inside the run
  // results::cell_id() of the cell; empty: that of workload "<preset>-<mode>" (`train`, `check-loss`).
  std::string cell_id;
  int repeat = 1;        // 1-based, among the run's repeats of this cell
  std::string dir;       // the cell's folder: config.json, logs/, ranks/
  train::Config config;
  launch::Topology topology;  // nproc_per_node is taken from config.nproc
  bool echo_rank0 = true;
  // The environment the cell ran in; collected by run_cell when absent. A suite run collects it
  // once for all of its cells (NVML, driver and git queries are the same for each).
  std::optional<results::Fingerprint> fingerprint;
};

struct CellResult {
  bool ok = false;
  bool skipped = false;  // not run: its trainer's packages are missing (reason says which)
  std::string reason;  // one line when not ok
  nlohmann::json document;
  std::vector<std::string> profile_screens;  // with --profile: one breakdown screen per rank, then the straggler view
};

// A trainer other than the built-in one starts from a checkpoint and a token file; where the
// configuration names none, run_cell makes them here first (prepare_equal_work_inputs).
CellResult run_cell(const CellRequest& request);

struct EqualWorkInputs {
  std::string checkpoint;  // folder
  std::string data_file;
};
// The built-in trainer's initial weights for cfg as a Hugging Face checkpoint, and the synthetic
// batches of the whole run as a token file, under dir.
EqualWorkInputs prepare_equal_work_inputs(const train::Config& cfg, const std::string& dir, int world_size);

// The Python adapter that runs a trainer of harness/hf/ (UsageError when it is missing).
std::string python_trainer_script(const std::string& trainer);
// Why a Python trainer cannot run here (its packages are not installed), or nullopt when it can.
std::optional<std::string> missing_trainer_packages(const std::string& trainer);

// The argv one rank runs for cfg.trainer, after the launcher's environment is set.
std::vector<std::string> rank_command(const train::Config& cfg, const std::string& config_path, const std::string& ranks_dir);

// "20261128-013502-4f2a": sortable, unique enough for one machine.
std::string new_run_id();
// mkdir -p; RunError naming the path.
void make_dirs(const std::string& path);
// The path of this executable, for starting ranks of the same binary.
std::string self_executable();

}  // namespace ddpbench::cli
