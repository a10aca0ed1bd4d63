// A cell's identity across runs (cell_id, the file a repeat of it is written to) and its figures
// across repeats (median and range of tokens/s, scaling efficiency against the 1-rank cell).
// `run`, `train`, `report` and `gate` name a cell by these; nothing here needs LibTorch.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpbench::results {

// FNV-1a, 64 bits.
std::uint64_t fnv1a64(std::string_view text);
// The first 8 hex digits of fnv1a64(text): a short, stable name for a canonical text.
std::string short_hash(std::string_view text);

// config without the fields that do not change the work a cell does (timeouts, profiling, the
// debug delay, CPU binding, and the paths of checkpoint and token file, which differ per run).
// Keys stay sorted, as nlohmann's objects keep them, so dump() is canonical.
nlohmann::json work_config(const nlohmann::json& config);

// The trainer as cells, reports and suites name it: the built-in trainer's implementation is part of
// its name where it is not the baseline ("builtin-fused"), so that both can share one suite.
std::string trainer_label(const std::string& trainer, const std::string& impl);

// "<workload>/<trainer label>/n<N>/b<B>/g<G>/s<S>#<8 hex>": the readable part from the trainer
// configuration, the hash of the workload name and work_config(config). The workload name is
// hashed too, so that the file names of workloads "x/y" and "x_y" (which map to the same
// characters) still differ. Fields missing from config read "?".
std::string cell_id(const std::string& workload, const nlohmann::json& config);

// Cells that differ only in their rank count: "<workload>/<trainer label>/b<B>/g<G>/s<S>", or with
// "/G<global batch>" in place of "/g<G>" under strong scaling (grad_accum follows the rank count).
std::string scaling_group(const std::string& workload, const nlohmann::json& config);

// The file (relative to a run's cells/ folder) of one repeat of a cell: cell_id with '/' -> '_'
// and '#' -> '-', then "-r<repeat>.json".
std::string cell_file_name(const std::string& cell_id, int repeat);

// One figure over the ok repeats of a cell (n = 0: none; the other fields are then NaN).
struct Spread {
  int n = 0;
  double median = 0;
  double min = 0;
  double max = 0;
};
Spread spread_of(std::span<const double> samples);

// What the scaling computation needs of a cell: tokens/s of each of its ok repeats.
struct CellFigures {
  std::string cell_id;
  std::string group;  // scaling_group()
  int nproc = 1;
  std::vector<double> tokens_per_s;
};

// The scaling efficiency of a cell, from medians over repeats, against the 1-rank cell of its
// group: median tokens/s / (nproc x the 1-rank cell's median tokens/s).
struct ScalingPoint {
  std::string group;
  std::string cell_id;
  int nproc = 1;
  double efficiency = 0;
  std::string baseline_cell_id;
};
// One point per cell with ok repeats whose group has a 1-rank cell with ok repeats (the 1-rank
// cell included, at 1.0), in the order of cells. With several 1-rank cells in a group (there
// are none in a suite), the first is the baseline.
std::vector<ScalingPoint> scaling_efficiencies(const std::vector<CellFigures>& cells);
nlohmann::json to_json(const ScalingPoint& p);

// Loss curves of equal work and the A/A floor that judges them (issue 10). A curve is a run
// document's losses over its measured steps (warm-up steps left out); a cell has one per ok repeat.
using LossCurves = std::vector<std::vector<double>>;
std::vector<double> measured_losses(const nlohmann::json& run_document);
// Largest |a[i] - b[i]| over the steps; nullopt when the curves do not cover the same steps.
std::optional<double> max_loss_difference(std::span<const double> a, std::span<const double> b);
// Mean of a[i] - b[i] over the steps (signed: a curve lying below another has a negative mean,
// where rounding noise flips sign from step to step and averages out); nullopt as above.
std::optional<double> mean_loss_difference(std::span<const double> a, std::span<const double> b);
// A trainer's A/A floor: the largest max_loss_difference between any repeat of its cell and any of
// the cell's A/A twin, and between any two repeats of the cell (runs of identical work). nullopt:
// no pair of curves covering the same steps.
std::optional<double> aa_floor(const LossCurves& cell, const LossCurves& twin);
// A trainer's A/A bias: the largest |mean_loss_difference| over the pairs aa_floor takes.
std::optional<double> aa_bias(const LossCurves& cell, const LossCurves& twin);
// Two cells' curve distance: the median over pairs of their repeats of max_loss_difference.
std::optional<double> loss_curve_distance(const LossCurves& a, const LossCurves& b);
// Two cells' curve bias, a minus b: the median over pairs of their repeats of mean_loss_difference.
std::optional<double> loss_curve_bias(const LossCurves& a, const LossCurves& b);

}  // namespace ddpbench::results
