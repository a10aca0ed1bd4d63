// Runs one configuration as a DDP job: writes the config, launches the ranks through the launcher,
// merges the rank reports into a run document. `train` runs one cell, `run` a suite of them.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "launch/launch.h"
#include "train/config.h"

namespace ddpbench::cli {

struct CellRequest {
  std::string run_id;
  std::string cell;      // name inside the run
  std::string dir;       // the cell's folder: config.json, logs/, ranks/
  train::Config config;
  launch::Topology topology;  // nproc_per_node is taken from config.nproc
  bool echo_rank0 = true;
};

struct CellResult {
  bool ok = false;
  std::string reason;  // one line when not ok
  nlohmann::json document;
};

CellResult run_cell(const CellRequest& request);

// "20261128-013502-4f2a": sortable, unique enough for one machine.
std::string new_run_id();
// mkdir -p; RunError naming the path.
void make_dirs(const std::string& path);
// The path of this executable, for starting ranks of the same binary.
std::string self_executable();

}  // namespace ddpbench::cli
