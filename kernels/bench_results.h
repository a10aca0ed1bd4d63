// The kernel benchmarks' torch-free half: Google Benchmark JSON of bench_kernels (and of
// bench/kernels/liger_ops.py, which writes the same entries) grouped into one series per
// op/preset/pass with a row per implementation (baseline, fused, liger), and each series as a
// result document in the run format, as `ddpbench bench kernels` writes them and reports and the
// gate read them.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpbench::kernels {

// One implementation of one op/preset/pass: medians over the repetitions.
struct ImplRow {
  std::string impl;  // baseline | fused | liger
  int repetitions = 0;
  double time_s = 0, time_min_s = 0, time_max_s = 0;
  double model_bytes = 0;       // the op's minimum bytes (read + written once)
  double bytes_per_s = 0;       // model_bytes over time_s
  double tflops = 0;
  double peak_extra_bytes = 0;  // allocator peak above what the inputs held
  double check_rel_error = -1;  // fused only: the validation's worst relative error; -1 where none
};

struct KernelSeries {
  std::string op, preset, pass;  // pass: fwd | bwd
  std::vector<ImplRow> rows;     // baseline, fused, liger, those present
  const ImplRow* find(const std::string& impl) const;
};

// The median rate (read + write, bytes/s) of each copy/<bytes> entry, by its traffic (2 x bytes).
std::map<double, double> copy_rates(const nlohmann::json& gbench);
// The best of them, and the one whose traffic is nearest `bytes` by ratio (the op's comparable
// copy); 0 where none ran.
double best_copy_rate(const std::map<double, double>& rates);
double copy_rate_near(const std::map<double, double>& rates, double bytes);

// Whether the iteration entries (ops and copies alike) were timed L2-cold, with the L2 flushed
// before each call: their l2_flush counter (1 or 0; absent in output written before the flag
// existed, which was timed L2-warm). Throws RunError naming two entries that disagree: rows and
// copy rates compare only when timed alike.
bool timed_l2_cold(const nlohmann::json& gbench);

// Entries named op/preset/pass/impl; iteration entries only (aggregates are recomputed here).
std::vector<KernelSeries> kernel_series(const nlohmann::json& gbench);

struct KernelRunInfo {
  std::string run_id;
  std::int64_t tokens = 0, seq_len = 0;
  int repetitions = 0, iterations = 0, batch = 0;
  bool l2_flush = false;  // timed L2-cold (timed_l2_cold)
  double tolerance = 1e-2;  // the validation's bound (bf16)
  nlohmann::json fingerprint;
  std::string hardware_key;
};

// kind "kernels", cell kernels/<op>/<preset>/<pass>, config with l2_flush; rows per impl with GB/s and % of the copy
// bandwidth at a comparable size (copy_rate_near); summary: fused and baseline (and liger) times,
// speed-ups, shares of copy bandwidth, peak memory. Status failed when the fused row's check
// exceeded the tolerance.
nlohmann::json kernel_document(const KernelSeries& s, const std::map<double, double>& copy_rates, const KernelRunInfo& info);
std::string kernel_file_name(const KernelSeries& s);  // rms_norm-1b-fwd.json

}  // namespace ddpbench::kernels
