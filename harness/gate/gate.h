// The performance gate: compares the repeats of current runs with a baseline of the same hardware,
// cell by cell and metric by metric, and says whether anything got worse beyond noise.
//
// The unit of replication is the run. Per-step samples of one run are correlated, and two runs of
// one build differ by more than their steps' spread (0.3-1.7% for the built-in trainer, up to 10%
// for the HF trainer, between runs on one host; on H200s a rank test on per-step times called 8 of
// 9 same-build pairs different). So every figure below is one number per repeat (a run's summary), and a
// metric regresses only when both hold:
//
//  1. the difference of the repeat medians, in the metric's bad direction, exceeds the tolerance:
//       tolerance = max(floor, spread_multiple x spread) x |baseline median|   (and >= abs_floor)
//     where spread is the larger relative range ((max - min) / median) of the two sides' repeats:
//     a difference smaller than what either build varies between its own runs is not called;
//     the floors come from the rules file (ci/gate.toml);
//  2. the difference is real across repeats: a one-sided exact Wilcoxon rank-sum (Mann-Whitney U)
//     test of the repeats, as Google Benchmark's compare.py runs across repetitions, has p <= alpha
//     (0.05).
//
// Why a rank test rather than a bootstrap interval of the ratio of medians: with the 3-5 repeats a
// GPU budget allows, a bootstrap median takes only a handful of distinct values, so its interval is
// coarse and its coverage is poor; the rank test is exact at any count, needs no distribution and
// is not moved by one outlier run. Its cost: with k repeats a side the smallest p it can give is
// 1 / C(2k, k), so it says nothing below 3 repeats (3 + 3: p >= 0.05, only a complete separation).
//
// How many repeats: 5 a side. Measured on synthetic runs (tests/test_gate.cpp: a random factor per
// run plus per-step noise, 1000 seeds each), with no floor helping: same build against itself is
// called regressed in 0-0.1% of seeds (a simulation over 4000: 0.1-0.2% at 5 repeats, 0.5% at 4,
// 3% at 3); a 5% throughput loss at a run-to-run standard deviation of 1% (built-in-like) is
// caught in 96.6% (with ci/gate.toml's 2% floor). With HF-like noise (4%, runs ranging ~10%) the
// tolerance itself is ~10%, so a 5% loss is mostly not called (5.7%), a 20% loss is (97.4%): such
// a cell gates only changes larger than its own spread. Fewer than `min_repeats` (3) is unusable input.
//
// Directions: tokens/s per GPU, MFU and scaling efficiency higher is better; step time p50 and p95,
// peak memory and exposed communication lower is better; the final loss (fixed steps, same seed)
// must stay equal within its tolerance either way. Improvements are reported the same way, with a
// hint to refresh the baseline.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpbench::gate {

enum class Direction { higher_is_better, lower_is_better, equal };

// One metric as the gate reads it from a result document. Which metrics exist and their directions
// are fixed here; the rules file sets floors and may switch one off.
enum class Format { si, milliseconds, bytes, percent, plain };
struct Metric {
  std::string key;    // "tokens_per_s_per_gpu": the rules file's and the baseline's name for it
  std::string label;  // "tokens/s/GPU"
  Direction direction;
  Format format;      // how a value is shown (the value itself stays in its document's unit)
};
const std::vector<Metric>& metrics();

struct MetricRule {
  bool enabled = true;
  double floor = 0;      // smallest relative tolerance (0.02: 2%)
  double abs_floor = 0;  // smallest absolute tolerance, in the metric's own unit (for figures near 0)
};

struct Rules {
  double alpha = 0.05;          // the rank test's one-sided level
  double spread_multiple = 1.0; // tolerance = this x the measured relative range, at least the floor
  int min_repeats = 3;          // fewer repeats on either side of a cell: unusable input
  std::map<std::string, MetricRule> metrics;  // by Metric::key; absent: enabled, floors 0
  const MetricRule& rule(const std::string& key) const;
};
// The rules file (TOML, see ci/gate.toml); UsageError "<source>:<line>: <what>" for a mistake.
Rules parse_rules(const std::string& toml_text, const std::string& source);
Rules load_rules(const std::string& path);

// The repeats of one cell on one side: per metric, one value per repeat that finished.
struct CellRepeats {
  std::string id;    // cell_id (older documents: the cell name)
  std::string name;  // cell name, for people
  std::vector<std::string> repeats;  // "run_id#repeat" of each repeat that counted
  std::map<std::string, std::vector<double>> values;  // metric key -> one per repeat (metrics present)
  std::vector<std::string> failures;  // "run_id#repeat: reason" of repeats that failed
  int skipped = 0;                    // repeats the runner skipped (no steps)
};

// One side of a comparison: documents from run folders, single result documents, or a baseline
// file written by `gate --update`.
struct Side {
  std::string hardware_key;
  std::vector<std::string> sources;      // what was read, for the report
  std::map<std::string, CellRepeats> cells;  // by id
};

// How cells are matched: by the full cell_id (configuration hash included), or by its name part
// (before '#'), to compare two configurations of one cell (--impl baseline against fused).
enum class Match { id, name };

// The gate's figures of one result document: metric key -> value, for the metrics it has.
std::map<std::string, double> metric_values(const nlohmann::json& document);
// Reads PATHs: a run folder (its cells/*.json), a folder of result documents, one result document,
// or one baseline file. Every document is one repeat of its cell. UsageError naming the path for
// anything unreadable, for documents of different hardware, or for the same repeat read twice.
Side load_side(const std::vector<std::string>& paths, Match match);
// Adds one document as a repeat (what load_side does per file); `where` names it in errors.
void add_document(Side& side, const nlohmann::json& document, const std::string& where, Match match);

enum class Verdict {
  unchanged,    // within tolerance, or not consistent across repeats
  regression,   // worse beyond tolerance and across repeats (the loss: changed)
  improvement,  // better beyond tolerance and across repeats
  missing,      // the metric is on one side only
};
std::string to_string(Verdict v);

struct MetricResult {
  const Metric* metric = nullptr;
  Verdict verdict = Verdict::unchanged;
  double baseline_median = 0, current_median = 0;
  int baseline_n = 0, current_n = 0;
  double change = 0;         // (current - baseline) / |baseline|; NaN for a zero baseline
  double spread = 0;         // the larger relative range of the two sides
  double tolerance = 0;      // absolute, in the metric's unit
  double p_worse = 1, p_better = 1;  // the rank test, each direction
  std::string note;          // why unchanged, when that is not obvious
};

struct CellResult {
  std::string id, name;
  bool failed = false;        // a current repeat failed: a regression of its own
  std::vector<std::string> failures;
  std::vector<MetricResult> metrics;
  bool regressed() const;
  bool improved() const;
};

struct Comparison {
  std::string hardware_key;
  Match match = Match::id;
  std::vector<std::string> baseline_sources, current_sources;
  std::vector<CellResult> cells;           // cells on both sides
  std::vector<std::string> only_baseline;  // cell ids
  std::vector<std::string> only_current;
  std::vector<std::string> regressed_cells() const;  // names, in order
  bool regressed() const { return !regressed_cells().empty(); }
  bool improved() const;
};

// One metric's decision on its own: what compare() applies to every metric of every common cell.
MetricResult compare_metric(const Metric& metric, const std::vector<double>& baseline,
                            const std::vector<double>& current, const Rules& rules);
// UsageError for unusable input: different hardware, no common cell, a side with fewer than
// min_repeats repeats of a common cell (failed current repeats aside: those are a regression).
Comparison compare(const Side& baseline, const Side& current, const Rules& rules);

std::string terminal_table(const Comparison& c);
std::string markdown_summary(const Comparison& c);
std::string junit_xml(const Comparison& c);

// The baseline file of `gate --update`: per cell and metric the repeat values, their median and the
// spreads measured (relative range, MAD), with the hardware key and the runs it came from.
nlohmann::json baseline_document(const Side& side);
// ci/baselines/<file name>: the hardware key made safe for a file name ("4x-NVIDIA-H200-NV18.json").
std::string baseline_file_name(const std::string& hardware_key);

}  // namespace ddpbench::gate
