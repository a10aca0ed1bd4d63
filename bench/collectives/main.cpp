// bench_collectives: all-reduce, reduce-scatter, all-gather and broadcast through the trainer's own
// c10d layer (NCCL on GPUs, Gloo on the CPU), one Google Benchmark per collective x dtype x mode x
// size, on every rank of a launcher world (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
// Every rank registers the same benchmarks with the same fixed iteration counts, so that all ranks
// issue the same collectives in the same order; only rank 0 reports. With one rank it also measures
// the device copy bandwidth, the baseline of a single GPU. `ddpbench bench collectives` starts it.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "collectives/collectives.h"
#include "bench/bench_main.h"
#include "common/error.h"
#include "common/strings.h"
#include "ddp/collective_bench.h"

namespace {

using namespace ddpbench;
namespace coll = ddpbench::collectives;

struct Options {
  std::string device = "cpu";
  std::int64_t min_bytes = 8;
  std::int64_t max_bytes = 4 << 20;
  std::vector<std::string> dtypes{"bf16", "fp32"};
  std::vector<std::string> collectives{"all_reduce", "reduce_scatter", "all_gather", "broadcast"};
  int batch = 0;               // collectives per timed interval; 0: 20 on GPUs (nccl-tests' -n 20), 5 on the CPU
  int iterations = 5;          // timed intervals per repetition
  int inject_error_rank = -1;  // a test of the check itself: this rank spoils one element
};

void run_point(benchmark::State& state, ddp::CollectiveBench& bench, const Options& opt, const ddp::CollectivePoint& p,
               const coll::Layout& layout) {
  const double wrong = static_cast<double>(bench.prepare_and_check(p, opt.inject_error_rank));
  const int batch = opt.batch > 0 ? opt.batch : (opt.device == "cuda" ? 20 : 5);
  bench.timed_batch(batch);  // warm-up
  double total = 0;
  for (auto _ : state) {
    const double seconds = bench.timed_batch(batch);
    state.SetIterationTime(seconds);
    total += seconds;
  }
  bench.release();
  const auto bw = coll::bandwidth(coll::find(p.collective), static_cast<double>(layout.bytes),
                                  total / static_cast<double>(state.iterations()), bench.world_size());
  state.counters["bytes"] = static_cast<double>(layout.bytes);
  state.counters["count"] = static_cast<double>(layout.count);
  state.counters["algbw_GBps"] = bw.algbw / 1e9;
  state.counters["busbw_GBps"] = bw.busbw / 1e9;
  state.counters["wrong"] = wrong;
}

// Ranks other than 0 run the same benchmarks but report nothing.
class Silent : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  const auto x = parse_int(v);
  if (!x) throw UsageError(std::string(name) + "='" + v + "' is not a number");
  return static_cast<int>(*x);
}

int bench_main(int argc, char** argv) {
  const int rank = env_int("RANK", 0);
  // Only rank 0 writes Google Benchmark's file; the other ranks drop --benchmark_out*.
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i)
    if (rank == 0 || std::string_view(argv[i]).rfind("--benchmark_out", 0) != 0) args.push_back(argv[i]);
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());

  Options opt;
  CLI::App app{"bench_collectives: collectives through ddpbench's c10d layer (start it with `ddpbench bench collectives`)"};
  app.add_option("--device", opt.device, "cpu (Gloo) or cuda (NCCL) [cpu]")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--min-bytes", opt.min_bytes, "smallest size [8]");
  app.add_option("--max-bytes", opt.max_bytes, "largest size [4 MiB]");
  app.add_option("--dtypes", opt.dtypes, "bf16, fp32")->delimiter(',');
  app.add_option("--collectives", opt.collectives, "all_reduce, reduce_scatter, all_gather, broadcast")->delimiter(',');
  app.add_option("--batch", opt.batch, "collectives per timed interval [20 on GPUs, 5 on the CPU]");
  app.add_option("--iterations", opt.iterations, "timed intervals per repetition [5]")->check(CLI::PositiveNumber);
  app.add_option("--inject-error-rank", opt.inject_error_rank)->group("");
  try {
    app.parse(n, args.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (const auto& d : opt.dtypes) coll::element_bytes(d);
  for (const auto& name : opt.collectives) coll::find(name);
  const auto sizes = coll::sizes(opt.min_bytes, opt.max_bytes);

  ddp::CollectiveBench bench(opt.device, rank, env_int("LOCAL_RANK", 0), env_int("WORLD_SIZE", 1),
                             getenv_or("MASTER_ADDR", "127.0.0.1"), env_int("MASTER_PORT", 29500));
  std::vector<std::string> names = opt.collectives;
  if (bench.world_size() == 1) names.push_back("copy");
  for (const auto& name : names) {
    const auto& c = coll::find(name);
    for (const auto& dtype : opt.dtypes) {
      for (const bool in_place : {false, true}) {
        if (in_place ? !c.in_place : !c.out_of_place) continue;
        for (const auto bytes : sizes) {
          const auto layout = c.layout(bytes, coll::element_bytes(dtype), bench.world_size(), rank);
          if (layout.send == 0 || layout.recv == 0) continue;  // too small to split over the ranks
          const ddp::CollectivePoint p{std::string(c.name), dtype, in_place, bytes};
          const auto name_of = coll::benchmark_name(c.name, dtype, in_place ? "in-place" : "out-of-place", layout.bytes);
          benchmark::RegisterBenchmark(name_of.c_str(),
                                       [&bench, &opt, p, layout](benchmark::State& s) { run_point(s, bench, opt, p, layout); })
              ->UseManualTime()
              ->Iterations(opt.iterations)
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }

  if (rank == 0) {
    std::printf("bench_collectives: %d rank(s), %s (%s), sizes %s..%s\n", bench.world_size(), opt.device.c_str(),
                bench.backend().c_str(), format_bytes(static_cast<double>(sizes.front())).c_str(),
                format_bytes(static_cast<double>(sizes.back())).c_str());
    std::fflush(stdout);
    benchmark::RunSpecifiedBenchmarks();
  } else {
    Silent silent;
    benchmark::RunSpecifiedBenchmarks(&silent);
  }
  benchmark::Shutdown();
  bench.shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ddpbench::bench::guarded_main("bench_collectives", [&] { return bench_main(argc, argv); });
}
