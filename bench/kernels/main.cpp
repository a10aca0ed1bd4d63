// bench_kernels: every op of the kernel registry (kernels/ops.h), its ATen reference ("baseline")
// against the fused kernels ("fused"), forward and backward, at the presets' shapes, one Google
// Benchmark each, named op/preset/pass/impl, timed with CUDA events (UseManualTime) around each call
// of a batch queued behind a spin kernel, so that the CPU's launch cost (autograd, Python for Liger)
// stays out of the GPU time. L2-cold by default (--l2-flush, class L2Flush): before each call, outside
// its events, a scratch buffer of twice the L2 cache (256 MiB at least) is written on the same stream,
// so that no call finds the working set the previous one left in L2 (the 50 MB L2 of an H100/H200
// holds much of an op's 40-100 MB at the 1b shape; an op writing its inputs in place keeps all of it
// there). The copies are timed the same way, and every entry carries the setting (counter l2_flush).
// Before any timing, each fused op is checked once per shape against its reference (as
// llm.c does); the check's relative error is a counter of the fused rows and a failed check makes
// the exit status 1. Device-to-device copies (copy/<bytes>, 8 MiB to 1 GiB) run first: the copy
// whose traffic is nearest the op's bytes is the "copy bandwidth" its rate is a share of. Counters: bytes_per_second (the
// op's minimum bytes over the time), pct_copy, tflops (for ops judged by FLOP/s), peak_extra_bytes
// (the caching allocator's peak above what was allocated before the timed calls).
// `ddpbench bench kernels` runs it; --describe writes the shapes and cost models for
// bench/kernels/liger_ops.py.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/Sleep.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/autograd.h>

#include "bench/bench_main.h"
#include "common/error.h"
#include "device/cuda_device.h"
#include "kernels/check.h"
#include "kernels/ops.h"

namespace {

using namespace ddpbench;
namespace k = ddpbench::kernels;
namespace dcuda = ddpbench::device::cuda;

struct Options {
  std::vector<std::string> presets{"350m", "1b", "8b"};
  std::vector<std::string> ops;  // empty: all
  std::int64_t tokens = 8192;
  std::int64_t seq_len = 2048;
  int batch = 10;       // calls queued behind one spin kernel, each timed by its own events
  bool l2_flush = true;  // flush L2 before each timed call
  int iterations = 10;  // timed intervals per repetition
  std::string describe;
};

// Evicts what earlier work left in L2 by writing a scratch buffer of `bytes` on the current stream,
// as nvbench (cudaMemsetAsync) and Triton's do_bench (zero_()) do. It leaves L2 full of its own dirty
// lines, written back inside the timed call that evicts them: for a call that writes at least the
// L2's size this stands in for the write-back of its own last outputs, still dirty in L2 when its
// stop event fires, so its writes are charged in full; a call writing less is charged up to the L2's
// size more than it wrote (its rate understated, never inflated). A read buffer would leave clean
// lines and charge no call for its dirty tail, inflating every rate. Allocated before the peaks are
// reset, so that peak_extra_bytes leaves it out.
class L2Flush {
 public:
  explicit L2Flush(std::int64_t bytes) : buffer_(at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA, 0))) {}
  void operator()() { buffer_.zero_(); }
  std::int64_t bytes() const { return buffer_.numel(); }

 private:
  at::Tensor buffer_;
};

// What the benchmarks share within this run: the copy rates measured, by traffic (read + write), and
// the L2 flush (null when off).
struct RunState {
  std::map<double, double> copy_rate_by_traffic;
  std::unique_ptr<L2Flush> flush;
  // The rate of the copy whose traffic is nearest `bytes` (by ratio); 0 before any copy ran.
  double copy_rate_near(double bytes) const {
    double best = 0, best_distance = 0;
    for (const auto& [traffic, rate] : copy_rate_by_traffic) {
      const double distance = std::abs(std::log(traffic / bytes));
      if (best == 0 || distance < best_distance) best = rate, best_distance = distance;
    }
    return best;
  }
};

// About 5 ms of spinning on an H100/H200 clock: longer than the CPU needs to queue a batch.
constexpr std::int64_t kSpinCycles = 10'000'000;

using Fn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// Inputs on the GPU as training holds them: the differentiable ones require gradients.
struct Prepared {
  std::vector<at::Tensor> inputs, wrt, grad_outputs;
};

Prepared prepare(const k::OpSpec& op, const k::OpShape& shape, std::uint64_t seed) {
  auto gen = k::make_generator(at::Device(at::kCUDA, 0), seed);
  auto in = op.make_inputs(shape, at::kBFloat16, at::Device(at::kCUDA, 0), gen);
  Prepared p;
  for (std::size_t i = 0; i < in.inputs.size(); ++i) {
    auto t = in.inputs[i].detach();
    if (in.differentiable[i]) p.wrt.push_back(t.requires_grad_(true));
    p.inputs.push_back(t);
  }
  p.grad_outputs = in.grad_outputs;
  return p;
}

// Mean seconds of one call over the repetition's timed intervals (what Google Benchmark reports as
// the time; the rate counters are computed from it here, as Google Benchmark's own rate counters
// would divide by CPU time). An interval is a batch of calls, each between its own pair of events,
// the flush (when on) before the start event, so that it is queued but never timed.
double time_batches(benchmark::State& state, const RunState& run, int batch, const std::function<void()>& call) {
  std::vector<std::unique_ptr<dcuda::EventPair>> events;
  for (int i = 0; i < batch; ++i) events.push_back(std::make_unique<dcuda::EventPair>(0));
  for (int i = 0; i < batch; ++i) call();  // warm-up
  dcuda::synchronize(0);
  double total = 0;
  std::int64_t n = 0;
  for (auto _ : state) {
    at::cuda::sleep(kSpinCycles);
    for (auto& e : events) {
      if (run.flush) (*run.flush)();
      e->record_start();
      call();
      e->record_stop();
    }
    double t = 0;
    for (auto& e : events) t += e->wait_seconds();
    t /= batch;
    state.SetIterationTime(t);
    total += t;
    ++n;
  }
  state.counters["l2_flush"] = run.flush ? 1 : 0;
  return n > 0 ? total / static_cast<double>(n) : 0.0;
}

void run_op(benchmark::State& state, const Options& opt, const RunState& run, const k::OpSpec& op,
            const k::OpShape& shape, bool backward, bool fused, double check_error) {
  const Fn& f = fused ? op.fused : op.reference;
  auto p = prepare(op, shape, 17);
  std::vector<at::Tensor> outputs;
  if (backward) outputs = f(p.inputs);
  dcuda::synchronize(0);
  dcuda::reset_peaks(0);
  const double base = static_cast<double>(dcuda::peak_allocated(0));
  const double seconds =
      backward ? time_batches(state, run, opt.batch, [&] { torch::autograd::grad(outputs, p.wrt, p.grad_outputs, true, false, true); })
               : time_batches(state, run, opt.batch, [&] { f(p.inputs); });
  const double peak = static_cast<double>(dcuda::peak_allocated(0)) - base;
  const double bytes = backward ? op.backward_bytes(shape, at::kBFloat16) : op.forward_bytes(shape, at::kBFloat16);
  const double flops = backward ? op.backward_flops(shape) : op.forward_flops(shape);
  state.counters["model_bytes"] = bytes;
  state.counters["bytes_per_second"] = bytes / seconds;
  state.counters["tflops"] = flops / seconds / 1e12;
  const double copy = run.copy_rate_near(bytes);
  state.counters["copy_bytes_per_second"] = copy;
  if (copy > 0) state.counters["pct_copy"] = 100.0 * bytes / seconds / copy;
  state.counters["peak_extra_bytes"] = peak;
  if (fused) state.counters["check_rel_error"] = check_error;
}

void run_copy(benchmark::State& state, const Options& opt, RunState& run, std::int64_t bytes) {
  auto src = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA, 0)).fill_(1);
  auto dst = at::empty_like(src);
  const double seconds = time_batches(state, run, opt.batch, [&] { dst.copy_(src); });
  // A copy reads and writes every byte once.
  const double rate = 2.0 * static_cast<double>(bytes) / seconds;
  auto& best = run.copy_rate_by_traffic[2.0 * static_cast<double>(bytes)];
  best = std::max(best, rate);
  state.counters["model_bytes"] = 2.0 * static_cast<double>(bytes);
  state.counters["bytes_per_second"] = rate;
}

std::vector<const k::OpSpec*> chosen_ops(const Options& opt) {
  std::vector<const k::OpSpec*> ops;
  if (opt.ops.empty())
    for (const auto& op : k::registry()) ops.push_back(&op);
  else
    for (const auto& name : opt.ops) ops.push_back(&k::find_op(name));
  return ops;
}

// The shapes and cost models, for bench/kernels/liger_ops.py.
void describe(const Options& opt, const std::string& path) {
  nlohmann::json out = {{"tokens", opt.tokens}, {"seq_len", opt.seq_len}, {"dtype", "bf16"}, {"ops", nlohmann::json::array()}};
  for (const auto* op : chosen_ops(opt)) {
    for (const auto& preset : opt.presets) {
      const auto s = k::preset_op_shape(preset, opt.tokens, opt.seq_len);
      out["ops"].push_back({{"op", op->name}, {"liger_name", op->liger_name}, {"preset", preset},
                            {"shape", {{"tokens", s.tokens}, {"hidden", s.hidden}, {"intermediate", s.intermediate},
                                       {"heads", s.heads}, {"kv_heads", s.kv_heads}, {"head_dim", s.head_dim},
                                       {"vocab", s.vocab}, {"lora_rank", s.lora_rank}, {"seq_len", s.seq_len}}},
                            {"forward_bytes", op->forward_bytes(s, at::kBFloat16)},
                            {"backward_bytes", op->backward_bytes(s, at::kBFloat16)},
                            {"forward_flops", op->forward_flops(s)}, {"backward_flops", op->backward_flops(s)},
                            {"memory_bound", op->memory_bound}});
    }
  }
  std::ofstream(path) << out.dump(2) << "\n";
}

int bench_main(int argc, char** argv) {
  Options opt;
  CLI::App app{"bench_kernels: the kernel registry's ops, ATen reference against fused (start it with `ddpbench bench kernels`)"};
  app.add_option("--presets", opt.presets, "model shapes [350m,1b,8b]")->delimiter(',');
  app.add_option("--ops", opt.ops, "registry ops [all]")->delimiter(',');
  app.add_option("--tokens", opt.tokens, "tokens per call (micro-batch x sequence) [8192]")->check(CLI::PositiveNumber);
  app.add_option("--seq-len", opt.seq_len, "sequence length (RoPE's positions) [2048]")->check(CLI::PositiveNumber);
  app.add_option("--batch", opt.batch, "calls per timed interval, each timed alone [10]")->check(CLI::PositiveNumber);
  app.add_option("--l2-flush", opt.l2_flush,
                 "1: write a scratch buffer of twice the L2 cache (256 MiB at least) before each timed call, outside its "
                 "timing, so that every op, reference and copy is timed L2-cold; 0: calls back to back, L2 warm [1]")
      ->check(CLI::Range(0, 1));
  app.add_option("--iterations", opt.iterations, "timed intervals per repetition [10]")->check(CLI::PositiveNumber);
  app.add_option("--describe", opt.describe, "write the shapes and cost models as JSON to this file and exit");
  // Google Benchmark answers --help with its own flags and exits: ours first.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") std::printf("%s\n", app.help().c_str());
  benchmark::Initialize(&argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    throw UsageError(e.what());  // one line, exit status 2
  }
  const auto ops = chosen_ops(opt);
  for (const auto& preset : opt.presets) k::preset_op_shape(preset, opt.tokens, opt.seq_len);
  if (!opt.describe.empty()) {
    describe(opt, opt.describe);
    return 0;
  }
  if (!k::fused_kernels_built()) throw RunError("this binary was built without the fused kernels");
  if (!at::hasCUDA()) throw RunError("no CUDA GPU visible");

  // Validate before timing: one check per op and shape.
  std::map<std::string, double> check_error;
  int failed = 0;
  for (const auto* op : ops) {
    for (const auto& preset : opt.presets) {
      const auto shape = k::preset_op_shape(preset, opt.tokens, opt.seq_len);
      auto gen = k::make_generator(at::Device(at::kCUDA, 0), 7);
      const auto r = k::check_against_reference(*op, op->make_inputs(shape, at::kBFloat16, at::Device(at::kCUDA, 0), gen));
      check_error[op->name + "/" + preset] = r.worst;
      std::printf("check %s/%s: %s %s\n", op->name.c_str(), preset.c_str(), r.ok() ? "ok" : "FAILED", r.describe().c_str());
      failed += r.ok() ? 0 : 1;
      dcuda::release_cached_memory();
    }
  }
  std::fflush(stdout);

  RunState run;
  const std::int64_t l2_bytes = dcuda::l2_cache_bytes(0);
  if (opt.l2_flush) run.flush = std::make_unique<L2Flush>(std::max<std::int64_t>(2 * l2_bytes, std::int64_t{256} << 20));
  // How the entries were timed, in the output's context as well as in each entry's l2_flush counter.
  benchmark::AddCustomContext("l2_flush", opt.l2_flush ? "true" : "false");
  benchmark::AddCustomContext("l2_cache_bytes", std::to_string(l2_bytes));
  benchmark::AddCustomContext("l2_flush_bytes", std::to_string(run.flush ? run.flush->bytes() : 0));
  std::printf("timing %s: L2 %lld MiB%s\n", opt.l2_flush ? "L2-cold" : "L2-warm (--l2-flush=0)",
              static_cast<long long>(l2_bytes >> 20),
              run.flush ? (", " + std::to_string(run.flush->bytes() >> 20) + " MiB written before each timed call").c_str() : "");
  std::fflush(stdout);
  for (std::int64_t mib = 8; mib <= 1024; mib *= 2) {
    const std::int64_t bytes = mib << 20;
    benchmark::RegisterBenchmark(("copy/" + std::to_string(bytes)).c_str(),
                                 [&opt, &run, bytes](benchmark::State& s) { run_copy(s, opt, run, bytes); })
        ->UseManualTime()->Iterations(opt.iterations)->Unit(benchmark::kMicrosecond);
  }
  for (const auto* op : ops) {
    for (const auto& preset : opt.presets) {
      const auto shape = k::preset_op_shape(preset, opt.tokens, opt.seq_len);
      const double err = check_error[op->name + "/" + preset];
      for (const bool backward : {false, true}) {
        for (const bool fused : {false, true}) {
          const std::string name = op->name + "/" + preset + "/" + (backward ? "bwd" : "fwd") + "/" + (fused ? "fused" : "baseline");
          benchmark::RegisterBenchmark(name.c_str(), [&opt, &run, op, shape, backward, fused, err](benchmark::State& s) {
            run_op(s, opt, run, *op, shape, backward, fused, err);
            dcuda::release_cached_memory();
          })->UseManualTime()->Iterations(opt.iterations)->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (failed > 0) {
    std::fprintf(stderr, "bench_kernels: %d check(s) of fused against reference failed (see above)\n", failed);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ddpbench::bench::guarded_main("bench_kernels", [&] { return bench_main(argc, argv); });
}
