// Orchestration: what runs a benchmark cell, a suite of cells or the loss-rule check, between the
// command line (cli/, which only parses flags and dispatches here) and the parts that do the work
// (launch/, train/, results/, profile/). A cell is one configuration run as a DDP job: its config
// written, its ranks launched through the launcher, their reports merged into one run document.
#pragma once
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launch/launch.h"
#include "profile/analysis.h"
#include "results/fingerprint.h"
#include "train/config.h"

namespace ddpbench::orchestrate {

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
  // Hold preflight's memory estimate against the machine (off: --no-memory-check).
  bool memory_check = true;
};

struct CellResult {
  bool ok = false;
  bool skipped = false;  // not run: its trainer's packages are missing (reason says which)
  std::string reason;  // one line when not ok
  nlohmann::json document;
  std::vector<std::string> profile_screens;  // with --profile: one breakdown screen per rank, then the straggler view
  int interrupted_by = 0;  // the signal that stopped the launcher (launch::Outcome), 0 if none
};

// Every check made before a cell's ranks start (UsageError naming the flag): settings the trainer
// cannot honour, the checkpoint and token file it names (preflight::check_inputs) and, with
// memory_check, its memory estimate against the machine that fp describes. run_cell makes them;
// a suite run makes them for all of its cells before the first runs.
void check_cell(const train::Config& cfg, const results::Fingerprint& fp, bool memory_check);

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
// The same for cells that differ in rank count: one checkpoint, and a token file per world size
// (tokens-n<W>.bin), each holding its world's rows of every step, which are the rows the built-in
// trainer's own generator gives that world. A world so reads the same tokens whichever other worlds
// share the run (read as a prefix of the widest world's file, a step's rows came from other steps).
struct EqualWorkInputsByWorld {
  std::string checkpoint;
  std::map<int, std::string> data_file;  // world size -> token file
};
EqualWorkInputsByWorld prepare_equal_work_inputs(const train::Config& cfg, const std::string& dir,
                                                 const std::set<int>& world_sizes);

// The CUPTI collector as an injection library (CUDA_INJECTION64_PATH), for profiling trainers other
// than the built-in one: $DDPBENCH_INJECTION or the one built beside ddpbench; UsageError when absent.
std::string injection_library();

// The Python adapter that runs a trainer of harness/hf/ (UsageError when it is missing).
std::string python_trainer_script(const std::string& trainer);
// Why a Python trainer cannot run here (its packages are not installed), or nullopt when it can.
std::optional<std::string> missing_trainer_packages(const std::string& trainer);

// The argv one rank runs for cfg.trainer, after the launcher's environment is set.
std::vector<std::string> rank_command(const train::Config& cfg, const std::string& config_path, const std::string& ranks_dir);

// A suite run (`ddpbench run`): every cell of the suite (those whose name contains one of filters), in
// `repeats` interleaved rounds, under runs_dir/<run id>/ with run.json, results.csv and one document per
// cell and repeat; progress and the summary table go to standard output. No suite_path: the built-in
// smoke suite (smoke-gpu where GPUs are visible, else smoke-cpu). dry_run: only list the cells.
struct SuiteRunOptions {
  std::string suite_path;
  std::string runs_dir = "runs";
  std::vector<std::string> filters;  // a cell runs when its name contains any of them
  int repeats = 1;
  bool dry_run = false;
  // A run folder to finish (an interrupted run): its saved suite, filter and repeats are used, and
  // only the cell repeats that are not ok run; the documents of those that are stay as they are.
  std::string resume;
  bool memory_check = true;  // CellRequest::memory_check, for every cell
};
// Ctrl-C, SIGTERM and SIGHUP stop the whole suite: the cell running then is ended and recorded as
// interrupted, no later cell starts, and run.json says state "interrupted" (else "done").
struct SuiteRunOutcome {
  std::string run_dir;
  int failures = 0;        // cell repeats that failed (skipped ones are not failures)
  int interrupted_by = 0;  // the signal that stopped the suite, 0 if none
};
SuiteRunOutcome run_suite(const SuiteRunOptions& options);

// The loss-rule check (`ddpbench check-loss`, DESIGN.md): `config` (nproc ranks x grad_accum
// micro-batches) against 1 rank with the same global batch in one micro-batch, from the same weights
// and tokens. tolerance < 0: by precision. The verdict goes to runs_dir/<run id>/check-loss.json and
// to `out` when given. True when the losses and gradient norms agree (or the trainer is skipped
// because its packages are missing); false when they disagree or a run failed.
struct CheckLossOptions {
  train::Config config;
  double tolerance = -1;
  std::string runs_dir = "runs";
  std::string out;
  bool memory_check = true;  // CellRequest::memory_check
};
bool check_loss(const CheckLossOptions& options);

// Turns the activity files that profiled ranks leave behind into the run's profile section: one
// breakdown per rank, the straggler view across ranks, and a Chrome trace per rank.
struct ProfileReport {
  nlohmann::json json;               // {"ranks": [...], "stragglers": {...}, "traces": [...], "missing": [...]}
  std::vector<std::string> rendered;  // one screen per rank that had activity, then the straggler view (2+ ranks)
};

// Reads <dir>/rank<k>.activity.json for each k in ranks, writes <trace_dir>/rank<k>.trace.json (creating
// trace_dir). trace_dir holds nothing else, so that it is the folder to give Holistic Trace Analysis,
// which reads every .json it finds.
ProfileReport analyze_activity(const std::string& dir, const std::vector<int>& ranks, const profile::AnalysisOptions& options,
                               const std::string& trace_dir);

// Where traces go: a run folder's traces/ (`train --profile`, `profile`).
inline std::string trace_dir_of_run(const std::string& run_dir) { return run_dir + "/traces"; }

}  // namespace ddpbench::orchestrate
