// `ddpbench bench collectives`: starts bench_collectives on N ranks through the launcher and turns
// rank 0's Google Benchmark JSON into a run folder (run.json, one document per collective, dtype
// and mode, results.csv), so that reports and the gate read it like any other run.
// `ddpbench bench kernels`: starts bench_kernels (and, where Liger-Kernel imports,
// bench/kernels/liger_ops.py on the same shapes) and writes a run folder the same way: one document
// per op/preset/pass with a row per implementation, and kernels.json, the merged Google Benchmark
// output that the report's kernel table reads.
#include <cstdio>
#include <filesystem>
#include <optional>

#include "cli/commands.h"
#include "collectives/collectives.h"
#include "common/error.h"
#include "common/strings.h"
#include "device/device.h"
#include "kernels/bench_results.h"
#include "launch/launch.h"
#include "results/fingerprint.h"
#include "results/results.h"

namespace ddpbench::cli {

namespace {

struct CollectivesArgs {
  int nproc = 1;
  std::string device;  // empty: cuda where GPUs are visible, else cpu
  std::string min_bytes = "8";
  std::string max_bytes;  // empty: 4 MiB on the CPU, 4 GiB on GPUs
  std::vector<std::string> dtypes{"bf16", "fp32"};
  std::vector<std::string> collectives{"all_reduce", "reduce_scatter", "all_gather", "broadcast"};
  int repetitions = 3;
  int iterations = 5;
  int batch = 0;
  std::string out;
  std::string runs_dir = "runs";
  int timeout_s = 3600;
  std::string filter;
  int inject_error_rank = -1;
};

// "4096", "64K", "4M", "1G", "4GiB": binary multiples.
std::int64_t parse_bytes(const std::string& flag, const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  const auto n = parse_int(text.substr(0, digits));
  std::string unit = text.substr(digits);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() == 2 && unit[1] == 'i') unit.pop_back();
  const std::string units = "KMGT";
  std::int64_t scale = 1;
  if (unit.size() == 1 && units.find(static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])))) != std::string::npos) {
    scale = std::int64_t{1} << (10 * (units.find(static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])))) + 1));
  } else if (!unit.empty()) {
    throw UsageError(flag + ": '" + text + "' is not a size (e.g. 4096, 64K, 4M, 1G)");
  }
  if (!n || *n < 1) throw UsageError(flag + ": '" + text + "' is not a size (e.g. 4096, 64K, 4M, 1G)");
  return *n * scale;
}

// A benchmark program built next to this binary, or where `env` says.
std::string bench_binary(const std::string& name, const char* env, const char* built_where) {
  const std::string built = (std::filesystem::path(self_executable()).parent_path() / name).string();
  const std::string path = getenv_or(env, built);
  if (!std::filesystem::exists(path))
    throw UsageError(name + " not found at " + path + " (it is built " + built_where + "; set " + env + ")");
  return path;
}

std::string collectives_binary() {
  return bench_binary("bench_collectives", "DDPBENCH_BENCH_COLLECTIVES", "where Google Benchmark is found");
}

int collectives_main(const CollectivesArgs& a) {
  if (a.nproc < 1) throw UsageError("--nproc: must be at least 1");
  if (a.repetitions < 1) throw UsageError("--repetitions: must be at least 1");
  const auto runtime = device::runtime_info();
  const int gpus = runtime.cuda_available ? runtime.cuda_device_count : 0;
  const std::string device = a.device.empty() ? (gpus > 0 ? "cuda" : "cpu") : a.device;
  if (device == "cuda" && a.nproc > gpus)
    throw UsageError("--nproc: " + std::to_string(a.nproc) + " ranks on cuda, " + std::to_string(gpus) + " GPU(s) visible");
  const std::int64_t min_bytes = parse_bytes("--min-bytes", a.min_bytes);
  const std::int64_t max_bytes = a.max_bytes.empty() ? (device == "cuda" ? std::int64_t{4} << 30 : std::int64_t{4} << 20)
                                                     : parse_bytes("--max-bytes", a.max_bytes);
  collectives::sizes(min_bytes, max_bytes);
  for (const auto& d : a.dtypes) collectives::element_bytes(d);
  for (const auto& c : a.collectives) collectives::find(c);
  const std::string binary = collectives_binary();

  check_runs_dir("--runs-dir", a.runs_dir);
  const std::string run_id = new_run_id();
  const std::string dir = a.out.empty() ? a.runs_dir + "/" + run_id : a.out;
  make_dirs(dir + "/cells");
  make_dirs(dir + "/work");
  const std::string gbench_json = dir + "/work/gbench.json";
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s;
  };
  launch::Spec spec;
  spec.topology.nproc_per_node = a.nproc;
  spec.argv = {binary, "--device", device, "--min-bytes", std::to_string(min_bytes), "--max-bytes", std::to_string(max_bytes),
               "--dtypes", join(a.dtypes), "--collectives", join(a.collectives), "--iterations", std::to_string(a.iterations),
               "--batch", std::to_string(a.batch), "--benchmark_out=" + gbench_json, "--benchmark_out_format=json",
               "--benchmark_repetitions=" + std::to_string(a.repetitions)};
  if (!a.filter.empty()) spec.argv.push_back("--benchmark_filter=" + a.filter);
  if (a.inject_error_rank >= 0) spec.argv.insert(spec.argv.end(), {"--inject-error-rank", std::to_string(a.inject_error_rank)});
  spec.log_dir = dir + "/work/logs";
  spec.timeout = std::chrono::seconds(a.timeout_s);
  std::printf("ddpbench bench collectives: %d rank(s) on %s, %s..%s -> %s\n", a.nproc, device.c_str(),
              format_bytes(static_cast<double>(min_bytes)).c_str(), format_bytes(static_cast<double>(max_bytes)).c_str(), dir.c_str());
  std::fflush(stdout);
  const auto outcome = launch::run(spec);
  if (!outcome.ok) {
    std::fprintf(stderr, "ddpbench bench collectives: failed: %s\n%s", outcome.reason.c_str(), outcome.failed_log_tail.c_str());
    std::fprintf(stderr, "logs: %s\n", spec.log_dir.c_str());
    return 1;
  }

  const auto gbench = collectives::parse_gbench_json(read_file(gbench_json), gbench_json);
  const auto fp = results::collect_fingerprint(runtime);
  collectives::RunInfo info;
  info.run_id = run_id;
  info.nproc = a.nproc;
  info.device = device;
  info.backend = device == "cuda" ? "nccl" : "gloo";
  info.max_bytes = max_bytes;
  info.repetitions = a.repetitions;
  info.batch = a.batch > 0 ? a.batch : (device == "cuda" ? 20 : 5);
  info.fingerprint = results::to_json(fp);
  info.hardware_key = results::hardware_key(fp);

  nlohmann::json index = {{"suite", "collectives"}, {"kind", "collectives"}, {"run_id", run_id}, {"created", utc_timestamp()},
                          {"cells", nlohmann::json::array()}};
  std::string csv = results::long_csv_header();
  std::int64_t wrong = 0;
  std::printf("\n%-34s %6s %12s %12s %12s %12s %7s\n", "collective/dtype/mode", "sizes", "t(smallest)", "busbw max", "busbw avg",
              "busbw(largest)", "wrong");
  for (const auto& s : collectives::series_from_gbench(gbench, a.nproc)) {
    const auto doc = collectives::series_document(s, info);
    const std::string file = "cells/" + collectives::series_file_name(s);
    write_file_atomic(dir + "/" + file, doc.dump(2) + "\n");
    csv += results::long_csv_rows(doc);
    index["cells"].push_back({{"name", doc["cell"]}, {"cell_id", doc["cell_id"]}, {"status", doc["status"]["state"]}, {"file", file}});
    const auto& sum = doc["summary"];
    wrong += sum["wrong_elements"].get<std::int64_t>();
    std::printf("%-34s %6zu %10.1fus %8.2fGB/s %8.2fGB/s %10.2fGB/s %7lld\n",
                (s.collective + "/" + s.dtype + "/" + s.mode).c_str(), s.rows.size(),
                sum.value("time_smallest_s", 0.0) * 1e6, sum.value("busbw_max_GBps", 0.0), sum.value("busbw_avg_GBps", 0.0),
                sum.value("busbw_largest_GBps", 0.0), static_cast<long long>(sum["wrong_elements"].get<std::int64_t>()));
  }
  write_file_atomic(dir + "/run.json", index.dump(2) + "\n");
  write_file_atomic(dir + "/results.csv", csv);
  std::printf("\nresults: %s/run.json, cells in %s/cells (busbw as nccl-tests defines it; GB/s = 1e9 B/s)\n", dir.c_str(), dir.c_str());
  if (wrong > 0) {
    std::fprintf(stderr, "ddpbench bench collectives: the data check found %lld wrong element(s)\n", static_cast<long long>(wrong));
    return 1;
  }
  return 0;
}

struct KernelsArgs {
  std::vector<std::string> presets{"350m", "1b", "8b"};
  std::vector<std::string> ops;
  std::int64_t tokens = 8192;
  std::int64_t seq_len = 2048;
  int repetitions = 5;
  int iterations = 10;
  int batch = 10;
  std::string liger = "auto";  // auto | off
  bool no_l2_flush = false;     // both programs time L2-warm
  std::string filter;
  std::string out;
  std::string runs_dir = "runs";
  int timeout_s = 1800;
  std::vector<std::string> from;  // convert these Google Benchmark files instead of running
};

std::string join_csv(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

launch::Outcome run_one(const std::vector<std::string>& argv, const std::string& log_dir, int timeout_s) {
  launch::Spec spec;
  spec.topology.nproc_per_node = 1;
  spec.argv = argv;
  spec.log_dir = log_dir;
  spec.timeout = std::chrono::seconds(timeout_s);
  return launch::run(spec);
}

// Runs bench_kernels (and liger_ops.py) into DIR/work; the merged Google Benchmark output, or
// nullopt with the reason printed when bench_kernels wrote none.
struct KernelsMeasured {
  nlohmann::json gbench;
  std::string liger_note;
  std::string failure;  // bench_kernels' own failure (a failed check exits 1 with its file written)
};

std::optional<KernelsMeasured> measure_kernels(const KernelsArgs& a, const std::string& dir) {
  const std::string binary = bench_binary("bench_kernels", "DDPBENCH_BENCH_KERNELS", "where nvcc and Google Benchmark are found");
  const std::string gbench_json = dir + "/work/gbench.json", shapes_json = dir + "/work/shapes.json";
  std::vector<std::string> common{"--presets", join_csv(a.presets), "--tokens", std::to_string(a.tokens), "--seq-len",
                                  std::to_string(a.seq_len), "--batch", std::to_string(a.batch), "--iterations",
                                  std::to_string(a.iterations), "--l2-flush", a.no_l2_flush ? "0" : "1"};
  if (!a.ops.empty()) common.insert(common.end(), {"--ops", join_csv(a.ops)});
  std::vector<std::string> argv{binary};
  argv.insert(argv.end(), common.begin(), common.end());
  argv.insert(argv.end(), {"--benchmark_out=" + gbench_json, "--benchmark_out_format=json",
                           "--benchmark_repetitions=" + std::to_string(a.repetitions)});
  if (!a.filter.empty()) argv.push_back("--benchmark_filter=" + a.filter);
  const auto outcome = run_one(argv, dir + "/work/logs", a.timeout_s);
  if (!std::filesystem::exists(gbench_json)) {
    std::fprintf(stderr, "ddpbench bench kernels: failed: %s\n%s", outcome.reason.c_str(), outcome.failed_log_tail.c_str());
    return std::nullopt;
  }
  KernelsMeasured m{collectives::parse_gbench_json(read_file(gbench_json), gbench_json), "off", outcome.ok ? "" : outcome.reason};
  // Liger-Kernel's same ops on the same shapes, where it imports (the script exits 3 where not).
  if (a.liger != "off") {
    std::vector<std::string> describe{binary};
    describe.insert(describe.end(), common.begin(), common.end());
    describe.insert(describe.end(), {"--describe", shapes_json});
    const std::string liger_json = dir + "/work/liger.json";
    const std::string script = getenv_or("DDPBENCH_LIGER_OPS_SCRIPT", std::string(DDPBENCH_SOURCE_DIR) + "/bench/kernels/liger_ops.py");
    if (run_one(describe, dir + "/work/logs-describe", 120).ok) {
      const auto liger = run_one({getenv_or("DDPBENCH_PYTHON", "python3"), script, "--shapes", shapes_json, "--out", liger_json,
                                  "--repetitions", std::to_string(a.repetitions), "--iterations", std::to_string(a.iterations),
                                  "--batch", std::to_string(a.batch), "--l2-flush", a.no_l2_flush ? "0" : "1"},
                                 dir + "/work/logs-liger", a.timeout_s);
      if (std::filesystem::exists(liger_json)) {
        const auto l = collectives::parse_gbench_json(read_file(liger_json), liger_json);
        for (const auto& e : l.at("benchmarks")) m.gbench["benchmarks"].push_back(e);
        m.liger_note = "timed";
      } else {
        m.liger_note = "not timed (" + liger.reason + ", see " + dir + "/work/logs-liger)";
      }
    } else {
      m.liger_note = "not timed (bench_kernels --describe failed)";
    }
  }
  return m;
}

int kernels_main(const KernelsArgs& a) {
  if (a.repetitions < 1) throw UsageError("--repetitions: must be at least 1");
  check_runs_dir("--runs-dir", a.runs_dir);
  const std::string run_id = new_run_id();
  const std::string dir = a.out.empty() ? a.runs_dir + "/" + run_id : a.out;
  // Output measured before (bench_kernels' and liger_ops.py's files), merged to be converted without
  // running anything; checked before anything is written.
  nlohmann::json from = {{"benchmarks", nlohmann::json::array()}};
  for (const auto& f : a.from) {
    if (!std::filesystem::is_regular_file(f)) throw UsageError("--from: " + f + " is not a file");
    const auto given = collectives::parse_gbench_json(read_file(f), f);
    if (!given.contains("benchmarks") || !given["benchmarks"].is_array()) throw UsageError("--from: " + f + " has no 'benchmarks' list");
    if (!from.contains("context") && given.contains("context")) from["context"] = given["context"];
    for (const auto& e : given["benchmarks"]) from["benchmarks"].push_back(e);
  }
  if (!a.from.empty()) {
    try {
      kernels::timed_l2_cold(from);
    } catch (const RunError& e) {
      throw UsageError(std::string("--from: ") + e.what());
    }
  }
  make_dirs(dir + "/cells");
  make_dirs(dir + "/work");
  KernelsMeasured m;
  if (a.from.empty()) {
    std::printf("ddpbench bench kernels: %s at %lld tokens, %d repetition(s) -> %s\n", join_csv(a.presets).c_str(),
                static_cast<long long>(a.tokens), a.repetitions, dir.c_str());
    std::fflush(stdout);
    auto measured = measure_kernels(a, dir);
    if (!measured) return 1;
    m = std::move(*measured);
  } else {
    m.gbench = std::move(from);
    m.liger_note = "read with --from";
  }
  const auto& gbench = m.gbench;
  const std::string& liger_note = m.liger_note;
  // Throws (exit 1) where bench_kernels and liger_ops.py timed differently in one run.
  const bool l2_cold = kernels::timed_l2_cold(gbench);
  write_file_atomic(dir + "/kernels.json", gbench.dump(1) + "\n");

  const auto runtime = device::runtime_info();
  const auto fp = results::collect_fingerprint(runtime);
  kernels::KernelRunInfo info;
  info.run_id = run_id;
  info.tokens = a.tokens;
  info.seq_len = a.seq_len;
  info.repetitions = a.repetitions;
  info.iterations = a.iterations;
  info.batch = a.batch;
  info.l2_flush = l2_cold;
  info.fingerprint = results::to_json(fp);
  info.hardware_key = results::hardware_key(fp);
  const auto copies = kernels::copy_rates(gbench);
  const double copy = kernels::best_copy_rate(copies);
  nlohmann::json index = {{"suite", "kernels"}, {"kind", "kernels"}, {"run_id", run_id}, {"created", utc_timestamp()},
                          {"copy_best_GBps", copy / 1e9}, {"liger", liger_note}, {"l2_flush", l2_cold},
                          {"cells", nlohmann::json::array()}};
  std::string csv = results::long_csv_header();
  int failed = 0;
  std::printf("\n%s\n", l2_cold ? "timed L2-cold: a buffer of twice the L2 cache written before each call, outside its timing"
                                : "timed L2-warm: no L2 flush between calls (working sets that fit in L2 stay there)");
  std::printf("best copy %.0f GB/s (read + write; %% copy is against the copy of comparable size); Liger %s\n%-30s %10s %10s %10s %9s %7s %8s %8s\n", copy / 1e9,
              liger_note.c_str(), "op/preset/pass", "baseline", "fused", "liger", "fused GB/s", "% copy", "x base", "x liger");
  for (const auto& s : kernels::kernel_series(gbench)) {
    const auto doc = kernels::kernel_document(s, copies, info);
    const std::string file = "cells/" + kernels::kernel_file_name(s);
    write_file_atomic(dir + "/" + file, doc.dump(2) + "\n");
    csv += results::long_csv_rows(doc);
    index["cells"].push_back({{"name", doc["cell"]}, {"cell_id", doc["cell_id"]}, {"status", doc["status"]["state"]}, {"file", file}});
    failed += doc["status"]["state"] == "ok" ? 0 : 1;
    const auto& sum = doc["summary"];
    auto num = [&](const char* key, int digits, double scale = 1.0, const char* unit = "") {
      if (!sum.contains(key)) return std::string("-");
      char buf[48];
      std::snprintf(buf, sizeof buf, "%.*f%s", digits, sum[key].get<double>() * scale, unit);
      return std::string(buf);
    };
    auto ms = [&](const char* key) { return num(key, 3, 1e3, "ms"); };
    std::printf("%-30s %10s %10s %10s %9s %7s %8s %8s\n", (s.op + "/" + s.preset + "/" + s.pass).c_str(), ms("baseline_time_s").c_str(),
                ms("fused_time_s").c_str(), ms("liger_time_s").c_str(), num("fused_GBps", 0).c_str(), num("fused_pct_copy", 1).c_str(),
                num("speedup_vs_baseline", 2).c_str(), num("speedup_vs_liger", 2).c_str());
  }
  write_file_atomic(dir + "/run.json", index.dump(2) + "\n");
  write_file_atomic(dir + "/results.csv", csv);
  std::printf("\nresults: %s/run.json, cells in %s/cells, Google Benchmark output in %s/kernels.json\n", dir.c_str(), dir.c_str(), dir.c_str());
  if (failed > 0 || !m.failure.empty()) {
    std::fprintf(stderr, "ddpbench bench kernels: %s\n",
                 failed > 0 ? (std::to_string(failed) + " cell(s) failed the check of fused against reference").c_str()
                            : ("bench_kernels: " + m.failure).c_str());
    return 1;
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto* bench = app.add_subcommand("bench", "Google Benchmark programs: collectives (algbw, busbw, data check), kernels (reference against fused)");
  bench->require_subcommand(1);
  auto args = std::make_shared<CollectivesArgs>();
  auto* sub = bench->add_subcommand(
      "collectives", "All-reduce, reduce-scatter, all-gather and broadcast through the trainer's c10d layer on --nproc ranks");
  sub->add_option("--nproc", args->nproc, "ranks on this node [1]");
  sub->add_option("--device", args->device, "cpu (Gloo) or cuda (NCCL) [cuda where GPUs are visible]")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--min-bytes", args->min_bytes, "smallest size, doubling from here [8]");
  sub->add_option("--max-bytes", args->max_bytes, "largest size, e.g. 64M [4M on the CPU, 4G on GPUs]");
  sub->add_option("--dtypes", args->dtypes, "bf16, fp32 [both]")->delimiter(',');
  sub->add_option("--collectives", args->collectives, "all_reduce, reduce_scatter, all_gather, broadcast [all]")->delimiter(',');
  sub->add_option("--repetitions", args->repetitions, "Google Benchmark repetitions; rows hold their median [3]");
  sub->add_option("--iterations", args->iterations, "timed intervals per repetition [5]");
  sub->add_option("--batch", args->batch, "collectives per timed interval [20 on GPUs, 5 on the CPU]");
  sub->add_option("--filter", args->filter, "Google Benchmark filter (regex over collective/dtype/mode/bytes)");
  sub->add_option("--out", args->out, "run folder [RUNS_DIR/<run id>]");
  sub->add_option("--runs-dir", args->runs_dir, "folder for run folders [runs]");
  sub->add_option("--timeout", args->timeout_s, "seconds for the whole benchmark [3600]");
  sub->add_option("--inject-error-rank", args->inject_error_rank)->group("");  // tests the data check
  sub->callback([args, &action] { action = [args] { return collectives_main(*args); }; });

  auto kargs = std::make_shared<KernelsArgs>();
  auto* ksub = bench->add_subcommand(
      "kernels", "The kernel registry's ops on one GPU: ATen reference against fused (and Liger-Kernel where it imports), forward and backward");
  ksub->add_option("--presets", kargs->presets, "model shapes [350m,1b,8b]")->delimiter(',');
  ksub->add_option("--ops", kargs->ops, "registry ops [all]")->delimiter(',');
  ksub->add_option("--tokens", kargs->tokens, "tokens per call [8192]");
  ksub->add_option("--seq-len", kargs->seq_len, "sequence length (RoPE's positions) [2048]");
  ksub->add_option("--repetitions", kargs->repetitions, "Google Benchmark repetitions; rows hold their median [5]");
  ksub->add_option("--iterations", kargs->iterations, "timed intervals per repetition [10]");
  ksub->add_option("--batch", kargs->batch, "calls per timed interval [10]");
  ksub->add_option("--liger", kargs->liger, "auto: time Liger-Kernel's ops where it imports; off [auto]")
      ->check(CLI::IsMember({"auto", "off"}));
  ksub->add_flag("--no-l2-flush", kargs->no_l2_flush,
                 "time L2-warm: calls back to back, without writing a buffer of twice the L2 cache before each one "
                 "(both programs; with --from the files say how they were timed)");
  ksub->add_option("--filter", kargs->filter, "Google Benchmark filter (regex over op/preset/pass/impl)");
  ksub->add_option("--out", kargs->out, "run folder [RUNS_DIR/<run id>]");
  ksub->add_option("--runs-dir", kargs->runs_dir, "folder for run folders [runs]");
  ksub->add_option("--timeout", kargs->timeout_s, "seconds for each program [1800]");
  ksub->add_option("--from", kargs->from,
                   "convert these Google Benchmark JSON files (bench_kernels' --benchmark_out, liger_ops.py's --out) into the "
                   "run folder instead of running anything; the run is described by the other flags")
      ->delimiter(',');
  ksub->callback([kargs, &action] { action = [kargs] { return kernels_main(*kargs); }; });
}

}  // namespace ddpbench::cli
