// `ddpbench bench collectives`: starts bench_collectives on N ranks through the launcher and turns
// rank 0's Google Benchmark JSON into a run folder (run.json, one document per collective, dtype
// and mode, results.csv), so that reports and the gate read it like any other run.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "collectives/collectives.h"
#include "common/error.h"
#include "common/strings.h"
#include "device/device.h"
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

std::string collectives_binary() {
  const std::string built = (std::filesystem::path(self_executable()).parent_path() / "bench_collectives").string();
  const std::string path = getenv_or("DDPBENCH_BENCH_COLLECTIVES", built);
  if (!std::filesystem::exists(path))
    throw UsageError("bench_collectives not found at " + path + " (it is built where Google Benchmark is found; set DDPBENCH_BENCH_COLLECTIVES)");
  return path;
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

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto* bench = app.add_subcommand("bench", "Google Benchmark programs: collectives (algbw, busbw, data check)");
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
}

}  // namespace ddpbench::cli
