// --impl fused on a GPU (ctest label gpu; skipped with the reason elsewhere): the fused linear +
// cross-entropy and LoRA linear against their ATen references at awkward shapes, the linear +
// cross-entropy's memory and time at the 1b shape against the unfused path, and the trainer's loss
// curve under fused against baseline from the same weights and tokens, within the A/A floor.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include <torch/cuda.h>

#include "device/device.h"
#include "kernels/fused.h"
#include "kernels/linear_ce/linear_ce.h"
#include "kernels/lora/lora.h"
#include "launch/launch.h"
#include "train/trainer.h"

namespace ddpbench {
namespace {

#define DDPBENCH_NEED_GPU()                                                                          \
  do {                                                                                               \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "skipped: no CUDA device (runs on GPU hosts)"; \
    if (!kernels::fused_kernels_built()) GTEST_SKIP() << "skipped: built without the fused kernels"; \
  } while (0)

double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  const auto r = ref.to(at::kDouble);
  return (a.to(at::kDouble) - r).norm().item<double>() / std::max(r.norm().item<double>(), 1e-30);
}

double tolerance(at::ScalarType t) { return t == at::kBFloat16 ? 1e-2 : 1e-5; }

TEST(FusedOpsGpu, LinearCrossEntropyMatchesFp32Reference) {
  DDPBENCH_NEED_GPU();
  const at::Device cuda(at::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(3);
  // One row; 37 tokens in chunks of 16; vocab 1000 (vectorised rows) and 1001 (scalar rows).
  for (auto dtype : {at::kBFloat16, at::kFloat}) {
    for (auto [tokens, vocab, chunk] : {std::tuple{1L, 1000L, 128L}, std::tuple{37L, 1001L, 16L}, std::tuple{300L, 1000L, 128L}}) {
      const std::int64_t hidden = 72;
      const auto h0 = at::empty({tokens, hidden}).normal_(0, 1, gen);
      const auto w0 = at::empty({vocab, hidden}).normal_(0, 1 / std::sqrt(72.0), gen);
      auto labels = at::empty({tokens}, at::kLong).random_(0, vocab, gen);
      if (tokens > 1) labels.narrow(0, 0, tokens / 4).fill_(-100);
      labels = labels.to(cuda);
      const double grad_loss = 0.37;
      // Reference: fp32 copies of the rounded inputs, unfused.
      auto hr = h0.to(dtype).to(cuda, at::kFloat).requires_grad_(true), wr = w0.to(dtype).to(cuda, at::kFloat).requires_grad_(true);
      const auto ref = at::cross_entropy_loss(at::linear(hr, wr), labels, {}, at::Reduction::Sum, -100);
      (ref * grad_loss).backward();
      auto h = h0.to(cuda, dtype).requires_grad_(true), w = w0.to(cuda, dtype).requires_grad_(true);
      const auto got = kernels::linear_cross_entropy_sum_chunked(h, w, labels, -100, chunk);
      (got * grad_loss).backward();
      const auto where = std::string(c10::toString(dtype)) + " tokens " + std::to_string(tokens) + " vocab " + std::to_string(vocab);
      EXPECT_LT(rel_err(got, ref), tolerance(dtype)) << where << " loss";
      EXPECT_LT(rel_err(h.grad(), hr.grad()), tolerance(dtype)) << where << " grad hidden";
      EXPECT_LT(rel_err(w.grad(), wr.grad()), tolerance(dtype)) << where << " grad weight";
    }
  }
  // A label outside the vocabulary gives a NaN loss rather than a silent wrong one.
  const auto h = at::ones({2, 8}, at::TensorOptions().device(cuda).dtype(at::kBFloat16));
  const auto w = at::ones({16, 8}, h.options());
  const auto bad = at::tensor(std::vector<std::int64_t>{3, 16}, at::kLong).to(cuda);
  EXPECT_TRUE(std::isnan(kernels::linear_cross_entropy_sum(h, w, bad).item<double>()));
}

TEST(FusedOpsGpu, LoraLinearMatchesFp32Reference) {
  DDPBENCH_NEED_GPU();
  const auto& op = kernels::find_op("lora_linear");
  auto shape = kernels::preset_op_shape("350m", 1000);  // 1000 tokens: not a multiple of any tile
  auto gen = at::detail::createCPUGenerator(4);
  const auto in = op.make_inputs(shape, at::kBFloat16, at::Device(at::kCUDA, 0), gen);
  std::vector<at::Tensor> fused_in, ref_in;
  for (std::size_t i = 0; i < in.inputs.size(); ++i) {
    fused_in.push_back(in.inputs[i].detach().clone().requires_grad_(in.differentiable[i]));
    ref_in.push_back(in.inputs[i].detach().to(at::kFloat).requires_grad_(in.differentiable[i]));
  }
  const auto y = op.fused(fused_in)[0];
  const auto ref = op.reference(ref_in)[0];
  y.backward(in.grad_outputs[0]);
  ref.backward(in.grad_outputs[0].to(at::kFloat));
  EXPECT_LT(rel_err(y, ref), 1e-2);
  for (std::size_t i : {0, 2, 3}) EXPECT_LT(rel_err(fused_in[i].grad(), ref_in[i].grad()), 1e-2) << "input " << i;
}

struct Timed {
  double ms = 0;
  double extra_gib = 0;  // peak allocated beyond what was allocated before the call
};

template <typename F>
Timed time_and_peak(F&& step) {
  step();  // warm-up: cuBLAS handles, allocator blocks
  device::synchronize("cuda", 0);
  device::reset_memory_peaks("cuda", 0);
  const auto base = device::memory_peaks("cuda", 0).allocated;  // the peak just reset: what is allocated now
  constexpr int kIters = 5;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kIters; ++i) step();
  device::synchronize("cuda", 0);
  Timed t;
  t.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / kIters;
  t.extra_gib = static_cast<double>(device::memory_peaks("cuda", 0).allocated - base) / (1 << 30);
  return t;
}

// The target at vocab 128256 and 8192 tokens: at most a quarter of the unfused peak memory
// and no more time. Forward + backward, with the weight trainable (full fine-tuning) and frozen (LoRA).
TEST(FusedOpsGpu, LinearCrossEntropyAt1bShapeAgainstUnfused) {
  DDPBENCH_NEED_GPU();
  const auto& op = kernels::find_op("linear_cross_entropy");
  const auto shape = kernels::preset_op_shape("1b", 8192);
  auto gen = at::detail::createCPUGenerator(5);
  const auto in = op.make_inputs(shape, at::kBFloat16, at::Device(at::kCUDA, 0), gen);
  for (bool weight_grad : {true, false}) {
    auto h = in.inputs[0].detach().clone().requires_grad_(true);
    auto w = in.inputs[1].detach().clone().requires_grad_(weight_grad);
    const auto& labels = in.inputs[2];
    auto run = [&](bool fused) {
      return [&, fused] {
        h.mutable_grad() = at::Tensor();
        w.mutable_grad() = at::Tensor();
        const auto loss = fused ? op.fused({h, w, labels})[0] : op.reference({h, w, labels})[0];
        loss.backward(in.grad_outputs[0]);
      };
    };
    const auto unfused = time_and_peak(run(false));
    const auto fused = time_and_peak(run(true));
    std::printf("LINEAR_CE 1b tokens 8192 vocab 128256 weight_grad %d: unfused %.2f ms %.2f GiB extra, fused %.2f ms %.2f GiB extra\n",
                weight_grad, unfused.ms, unfused.extra_gib, fused.ms, fused.extra_gib);
    EXPECT_LE(fused.extra_gib, unfused.extra_gib / 4) << "weight_grad " << weight_grad;
    EXPECT_LE(fused.ms, unfused.ms) << "weight_grad " << weight_grad;
  }
}

std::vector<double> train_losses(train::Config cfg) {
  train::RankEnv env;
  env.master_port = launch::pick_free_port();
  train::Probe probe;
  probe.live_log = false;
  const auto rep = train::run_rank(cfg, env, probe);
  EXPECT_EQ(rep.status, "ok") << cfg.impl << ": " << rep.phase << ": " << rep.error;
  std::vector<double> losses;
  for (const auto& s : rep.steps) losses.push_back(s.loss);
  return losses;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

// Equal work: baseline and fused from the same seeded weights and the same Markov tokens. The
// tolerance comes from the A/A floor measured here: the baseline against itself at half the
// micro-batch and twice the accumulation, which changes only the bf16 rounding (the suites' A/A
// twin). The fused path changes rounding in more places (chunked loss, the LoRA backward's order,
// fp32 accumulation of the head's gradient) but no arithmetic, so its largest per-step distance
// from baseline must stay within 3 times the A/A twin's.
TEST(FusedTrainerGpu, LossCurveWithinTheAAFloor) {
  DDPBENCH_NEED_GPU();
  struct Case {
    std::string preset;
    train::Mode mode;
    int seq_len;
  };
  for (const auto& c : {Case{"tiny", train::Mode::lora, 256}, Case{"tiny", train::Mode::full, 256},
                        Case{"350m", train::Mode::lora, 512}}) {
    train::Config cfg;
    cfg.device = "cuda";
    cfg.preset = c.preset;
    cfg.mode = c.mode;
    cfg.micro_batch = 4;
    cfg.seq_len = c.seq_len;
    cfg.lengths = train::Lengths::parse("fixed", c.seq_len);
    cfg.steps = 12;
    cfg.warmup = 0;
    cfg.lr = 1e-3;
    cfg.optim_state = train::OptimState::param;
    const auto base = train_losses(cfg);
    auto aa = cfg;
    aa.micro_batch = 2;
    aa.grad_accum = 2;
    const auto twin = train_losses(aa);
    auto fused_cfg = cfg;
    fused_cfg.impl = "fused";
    const auto fused = train_losses(fused_cfg);
    ASSERT_EQ(base.size(), fused.size());
    const double floor = max_abs_diff(twin, base), dev = max_abs_diff(fused, base);
    std::printf("FUSED_TRAINER %s %s: A/A floor %.5f, fused - baseline %.5f (first loss %.4f, last %.4f vs %.4f)\n",
                c.preset.c_str(), train::to_string(c.mode).c_str(), floor, dev, base.front(), base.back(), fused.back());
    EXPECT_GT(floor, 0.0) << "the A/A twin gave bit-identical losses: no floor to judge by";
    EXPECT_LE(dev, 3 * floor) << c.preset << " " << train::to_string(c.mode);
  }
}

}  // namespace
}  // namespace ddpbench
