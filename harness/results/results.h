// Result documents: what one rank measured (RankReport), and what one run is (RunDocument: config,
// environment fingerprint, status, per-step samples, per-rank breakdown, summary). `report` and
// `gate` read only these files; they never re-run anything.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpbench::results {

inline constexpr int kSchemaVersion = 1;

struct StepSample {
  int step = 0;
  bool warmup = false;
  double loss = 0;                      // the loss of the optimizer step, identical on all ranks
  std::int64_t tokens = 0;              // non-padding tokens of this rank
  std::int64_t padded_tokens = 0;       // tokens including padding, this rank
  std::int64_t predicted_tokens = 0;    // n(r): labels that count in the loss, this rank
  std::int64_t global_predicted = 0;    // N: the same summed over ranks (the loss's divisor)
  double step_time_s = 0;               // wall time of the step on this rank, device synchronised
  double grad_norm = 0;                 // global norm of the averaged gradient, before clipping
  std::int64_t mem_allocated_peak = 0;  // bytes, peak within the step (CPU: process peak RSS)
  std::int64_t mem_reserved_peak = 0;
};

struct RankReport {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  std::string host;
  std::string device;             // "cpu" or "cuda:1"
  std::string status = "ok";      // ok | failed
  std::string phase;              // where it failed: setup, rendezvous, step N, shutdown
  std::string error;
  // When it failed, seconds since the Unix epoch (0: unknown). Of several failed ranks the first
  // in time is the cause: the others are peers that saw it ("Connection closed by peer").
  double failed_at = 0;
  double setup_s = 0;             // model build + rendezvous + first broadcast
  int buckets = 0;
  std::int64_t bucket_bytes = 0;
  std::int64_t parameters = 0;
  std::int64_t trainable_parameters = 0;
  std::int64_t optimizer_state_bytes = 0;  // moments, master weights and scratch on the device
  double matmul_bf16_flops = 0;   // this rank's GPU's measured bf16 matrix rate, FLOP/s (0: none)
  // Versions of the Python packages a Python trainer ran on ("" for one not installed); empty for
  // the built-in trainer. The run document carries them in its fingerprint.
  std::map<std::string, std::string> packages;
  std::vector<StepSample> steps;
};

nlohmann::json to_json(const StepSample& s);
StepSample step_sample_from_json(const nlohmann::json& j);  // nlohmann's exception on a bad field
nlohmann::json to_json(const RankReport& r);
RankReport rank_report_from_json(const nlohmann::json& j);

// Every rank streams its samples as it measures them, one JSON line per optimizer step appended and
// flushed to ranks/rank<k>.steps.jsonl, so that a rank killed at step k (a signal, a timeout, the
// OOM killer) still leaves its k completed steps. The file of rank k under ranks_dir:
std::string step_stream_path(const std::string& ranks_dir, int rank);
// Appends one sample as a line and flushes it to the file (RunError naming the path).
void append_step_sample(const std::string& path, const StepSample& sample);
// The samples of a stream; a torn last line (the rank died while writing it) is left out.
std::vector<StepSample> read_step_stream(const std::string& path);

// Inputs that the run's merge needs beside the rank reports.
struct RunContext {
  std::string run_id;
  std::string cell;                 // name of the suite cell, or "train"
  std::string cell_id;              // cells.h's cell_id(): the same in every run of the same work
  int repeat = 1;                   // 1-based: which of a run's repeats of the cell this is
  nlohmann::json config;            // the trainer configuration as given to the ranks
  nlohmann::json fingerprint;
  std::string hardware_key;
  double flops_per_token = 0;       // model FLOPs per trained token (0: unknown)
  double peak_flops = 0;            // per device, FLOP/s (0: unknown, MFU left out)
  double datasheet_flops = 0;       // the card's dense bf16 datasheet rate, reported beside (0: unknown)
  std::string skipped_reason;       // non-empty: the cell did not run (e.g. its trainer is not installed)
  std::string launcher_status = "ok";  // the launcher's verdict when it is not ok
  std::string launcher_reason;
  int failed_rank = -1;                  // the launcher's first rank to fail by time (-1: none, or the run as a whole)
  std::string failed_phase = "unknown";  // the failed rank's last phase, where the launcher knows it
  // Why the document holds fewer reports than the world has ranks (written as "partial"), e.g. a
  // node of a multi-node run that holds only its own ranks.
  std::string partial_reason;
  // The launcher's failed rank ended without an account of its own (killed by a signal, crashed,
  // stalled, torn down): the launcher's verdict is then the cause, whatever peers reported after.
  bool failed_rank_silent = false;
};

struct Summary {
  int measured_steps = 0;
  double tokens_per_s = 0;          // global, non-padding
  double tokens_per_s_per_gpu = 0;
  double padded_tokens_per_s = 0;
  double step_time_p50_s = 0;
  double step_time_p95_s = 0;
  double step_time_mean_s = 0;
  double mfu = -1;                  // -1: unknown peak
  double final_loss = 0;
  std::int64_t peak_allocated_max = 0;  // largest over ranks
  std::int64_t peak_reserved_max = 0;
};

// The dense bf16 tensor-core rate NVIDIA's datasheet gives for a GPU by its name (FLOP/s), 0 for a
// card not in the table. MFU divides by the measured rate; this one is printed beside it.
double datasheet_bf16_flops(const std::string& gpu_name);

// The MFU peak of a run: the median of the ranks' measured bf16 matrix rates (0 when none measured).
double measured_peak_flops(const std::vector<RankReport>& ranks);

// Merges per-rank reports: the step time of a step is the slowest rank's; tokens are summed over
// ranks. Summary figures cover measured steps only (warm-up steps are kept but not counted).
// Status: the first cause in time (see failed_rank_silent and RankReport::failed_at); a failed
// run's status says how many steps every rank completed (completed_steps), which the document keeps.
nlohmann::json make_run_document(const RunContext& ctx, const std::vector<RankReport>& ranks);
Summary summarize(const std::vector<RankReport>& ranks, double flops_per_token, double peak_flops);
nlohmann::json to_json(const Summary& s);

// Long format: one metric a row, keyed by hardware, version and configuration (CSV, with header).
// The head of a benchmark program's result document (bench collectives, bench kernels): schema
// version, kind, run id, cell, cell_id (cell#hash of config), repeat 1, created, config,
// fingerprint and hardware key; the caller adds rows, status, steps, ranks and summary.
nlohmann::json benchmark_document_head(const std::string& kind, const std::string& cell, const nlohmann::json& config,
                                       const std::string& run_id, const nlohmann::json& fingerprint,
                                       const std::string& hardware_key);

std::string long_csv_header();
std::string long_csv_rows(const nlohmann::json& run_document);

// Reads and checks a run document (schema version, required fields); UsageError naming the path.
nlohmann::json load_run_document(const std::string& path);

}  // namespace ddpbench::results
