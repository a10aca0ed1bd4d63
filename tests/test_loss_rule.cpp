// The loss-normalisation rule of DESIGN.md, proven on the CPU with real Gloo process groups: W ranks
// x G micro-batches must train exactly like 1 rank on the same global batch, also with uneven
// sequence lengths; the two wrong variants users hit must not.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <mutex>
#include <thread>

#include "device/device.h"
#include "launch/launch.h"
#include "train/trainer.h"

namespace ddpbench::train {
namespace {

struct WorldRun {
  std::vector<double> losses;                     // per step
  std::vector<std::vector<double>> grads;         // per step, rank 0's averaged gradient
  std::vector<std::vector<double>> rank1_grads;   // per step, rank 1's (world > 1)
  std::vector<std::int64_t> global_tokens;        // N per step
  std::vector<std::vector<double>> weights;       // per rank, the trainable weights after training
  std::int64_t optimizer_state_bytes = 0;         // rank 0's
  int buckets = 0;                                // rank 0's gradient buckets
  std::vector<std::string> failures;
};

// Runs every rank of a world as a thread of this process, each with its own Gloo process group.
WorldRun run_world(Config cfg, int world) {
  cfg.nproc = world;
  const int port = launch::pick_free_port();
  WorldRun out;
  std::vector<results::RankReport> reports(static_cast<std::size_t>(world));
  std::map<int, std::vector<std::vector<double>>> grads;
  std::mutex mu;
  std::vector<std::thread> threads;
  out.weights.resize(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      RankEnv env;
      env.rank = env.local_rank = r;
      env.world_size = env.local_world_size = world;
      env.master_port = port;
      Probe probe;
      probe.live_log = false;
      probe.on_grads = [&, r](int, const std::vector<double>& g) {
        std::lock_guard<std::mutex> lock(mu);
        grads[r].push_back(g);
      };
      probe.on_weights = [&, r](const std::vector<double>& w) {
        std::lock_guard<std::mutex> lock(mu);
        out.weights[static_cast<std::size_t>(r)] = w;
      };
      reports[static_cast<std::size_t>(r)] = run_rank(cfg, env, probe);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& rep : reports) {
    if (rep.status != "ok") out.failures.push_back("rank " + std::to_string(rep.rank) + " " + rep.phase + ": " + rep.error);
  }
  for (const auto& s : reports[0].steps) {
    out.losses.push_back(s.loss);
    out.global_tokens.push_back(s.global_predicted);
  }
  out.grads = grads[0];
  out.optimizer_state_bytes = reports[0].optimizer_state_bytes;
  out.buckets = reports[0].buckets;
  if (world > 1) out.rank1_grads = grads[1];
  return out;
}

double rel_err(const std::vector<double>& a, const std::vector<double>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < std::min(a.size(), ref.size()); ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num) / std::sqrt(den);
}

Config base_config(Mode mode) {
  Config c;
  c.preset = "tiny";
  c.mode = mode;
  c.seq_len = 32;
  c.lengths = Lengths::parse("uniform:4:32", 32);
  c.warmup = 0;
  c.steps = 3;
  c.lr = 1e-2;  // large enough that a wrong gradient moves later losses visibly
  c.seed = 1234;
  c.lora_rank = 4;
  // Every token of the tiny vocabulary in play. Adam's first update is about lr * sign(g), so a
  // gradient element that is zero up to fp32 summation order can move its weight by +-lr in one run
  // and the other way in the other; with few active tokens many such elements exist and the later
  // steps' gradients differ by more than the loss rule's tolerance for reasons that are not the
  // loss rule.
  c.markov_states = 255;
  return c;
}

Config split(Config c, int micro_batch, int grad_accum) {
  c.micro_batch = micro_batch;
  c.grad_accum = grad_accum;
  return c;
}

class LossRule : public ::testing::TestWithParam<Mode> {};

TEST_P(LossRule, TwoRanksTimesThreeMicroBatchesEqualsOneRankWithTheWholeBatch) {
  const auto reference = run_world(split(base_config(GetParam()), 12, 1), 1);
  const auto ddp = run_world(split(base_config(GetParam()), 2, 3), 2);
  ASSERT_TRUE(reference.failures.empty()) << reference.failures.front();
  ASSERT_TRUE(ddp.failures.empty()) << ddp.failures.front();
  ASSERT_EQ(reference.losses.size(), 3u);
  ASSERT_EQ(ddp.losses.size(), 3u);
  ASSERT_EQ(ddp.grads.size(), 3u);
  for (int s = 0; s < 3; ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    // Uneven lengths: the test means nothing if every micro-batch had the same token count.
    EXPECT_EQ(ddp.global_tokens[s], reference.global_tokens[s]);
    EXPECT_LT(std::fabs(ddp.losses[s] - reference.losses[s]) / std::fabs(reference.losses[s]), 1e-5)
        << ddp.losses[s] << " vs " << reference.losses[s];
    EXPECT_LT(rel_err(ddp.grads[s], reference.grads[s]), 1e-5);
    // After the all-reduce every rank holds the same averaged gradient.
    EXPECT_EQ(ddp.grads[s], ddp.rank1_grads[s]);
  }
}

// The tiny model fits one bucket of the smallest MiB cap; with a cap in KiB its gradients spread
// over several, launched as backward produces them, and the rule must hold all the same.
TEST_P(LossRule, HoldsWithTheGradientsInSeveralBuckets) {
  const auto reference = run_world(split(base_config(GetParam()), 12, 1), 1);
  auto cfg = split(base_config(GetParam()), 2, 3);
  cfg.bucket_cap_kib = GetParam() == Mode::lora ? 4 : 64;
  const auto ddp = run_world(cfg, 2);
  ASSERT_TRUE(reference.failures.empty()) << reference.failures.front();
  ASSERT_TRUE(ddp.failures.empty()) << ddp.failures.front();
  EXPECT_GE(ddp.buckets, 3);
  ASSERT_EQ(ddp.losses.size(), reference.losses.size());
  for (std::size_t s = 0; s < reference.losses.size(); ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    EXPECT_LT(std::fabs(ddp.losses[s] - reference.losses[s]) / std::fabs(reference.losses[s]), 1e-5);
    EXPECT_LT(rel_err(ddp.grads[s], reference.grads[s]), 1e-5);
  }
}

TEST_P(LossRule, TheTwoWrongVariantsBreakTheEquivalence) {
  const auto reference = run_world(split(base_config(GetParam()), 12, 1), 1);
  ASSERT_TRUE(reference.failures.empty()) << reference.failures.front();
  for (auto rule : {LossNorm::mean_of_micro_means, LossNorm::local_tokens}) {
    SCOPED_TRACE(to_string(rule));
    auto cfg = split(base_config(GetParam()), 2, 3);
    cfg.loss_norm = rule;
    const auto wrong = run_world(cfg, 2);
    ASSERT_TRUE(wrong.failures.empty()) << wrong.failures.front();
    // The first step's LoRA gradient of A is zero (B starts at zero), so compare the whole run:
    // the largest deviation over steps must be far beyond rounding.
    double worst_grad = 0, worst_loss = 0;
    for (std::size_t s = 0; s < reference.grads.size(); ++s) {
      worst_grad = std::max(worst_grad, rel_err(wrong.grads[s], reference.grads[s]));
      worst_loss = std::max(worst_loss, std::fabs(wrong.losses[s] - reference.losses[s]) / std::fabs(reference.losses[s]));
    }
    EXPECT_GT(worst_grad, 1e-3);
    EXPECT_GT(worst_loss, 1e-4);
  }
}

double norm_of(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x * x;
  return std::sqrt(sum);
}

// Labelled gpu (tests/CMakeLists.txt: test suites named Gpu*): the rule on the GPU path, bf16 weights
// and NCCL (2 ranks where 2 GPUs are visible, else a world of 1 accumulating 3 micro-batches), within
// check-loss's bf16 tolerance (orchestrate/check_loss.cpp).
TEST(GpuTrainer, Bf16OnNcclTrainsLikeOneRankWithTheWholeBatch) {
  const auto runtime = device::runtime_info();
  const int gpus = runtime.cuda_available ? runtime.cuda_device_count : 0;
  if (gpus < 1) GTEST_SKIP() << "no GPU visible: NCCL and bf16 run only on GPUs";
  const int ranks = std::min(gpus, 2);
  auto cfg = base_config(Mode::lora);
  cfg.device = "cuda";
  cfg.lr = 1e-3;  // as check-loss on GPUs: bf16 rounding, moved by large updates, would blur later steps
  const auto reference = run_world(split(cfg, 12, 1), 1);
  const auto ddp = run_world(split(cfg, 12 / (3 * ranks), 3), ranks);
  ASSERT_TRUE(reference.failures.empty()) << reference.failures.front();
  ASSERT_TRUE(ddp.failures.empty()) << ddp.failures.front();
  ASSERT_EQ(ddp.losses.size(), reference.losses.size());
  for (std::size_t s = 0; s < reference.losses.size(); ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    EXPECT_EQ(ddp.global_tokens[s], reference.global_tokens[s]);
    EXPECT_LT(std::fabs(ddp.losses[s] - reference.losses[s]) / std::fabs(reference.losses[s]), 5e-3);
    const double norm = norm_of(ddp.grads[s]), ref = norm_of(reference.grads[s]);
    if (ref > 0) EXPECT_LT(std::fabs(norm - ref) / ref, 5e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, LossRule, ::testing::Values(Mode::full, Mode::lora),
                         [](const auto& info) { return to_string(info.param); });

TEST(Trainer, SameSeedSameConfigGivesIdenticalLossCurves) {
  auto cfg = split(base_config(Mode::lora), 2, 2);
  const auto a = run_world(cfg, 2);
  const auto b = run_world(cfg, 2);
  ASSERT_TRUE(a.failures.empty() && b.failures.empty());
  EXPECT_EQ(a.losses, b.losses);  // bit for bit
  cfg.seed += 1;
  const auto c = run_world(cfg, 2);
  EXPECT_NE(a.losses, c.losses);
}

TEST(Trainer, GradientCheckpointingChangesNothingButMemory) {
  for (auto mode : {Mode::full, Mode::lora}) {
    SCOPED_TRACE(to_string(mode));
    auto cfg = split(base_config(mode), 2, 3);
    const auto plain = run_world(cfg, 2);
    cfg.grad_ckpt = true;
    const auto recomputed = run_world(cfg, 2);
    ASSERT_TRUE(plain.failures.empty() && recomputed.failures.empty());
    ASSERT_EQ(recomputed.grads.size(), plain.grads.size());
    for (std::size_t s = 0; s < plain.grads.size(); ++s) {
      // The recomputation repeats the same fp32 operations in the same order.
      EXPECT_LT(rel_err(recomputed.grads[s], plain.grads[s]), 1e-6) << "step " << s;
      EXPECT_DOUBLE_EQ(recomputed.losses[s], plain.losses[s]);
    }
  }
}

TEST(Trainer, MarkovDataIsLearnableAndRandomDataIsNot) {
  auto cfg = split(base_config(Mode::full), 8, 1);
  cfg.seq_len = 64;
  cfg.lengths = Lengths::parse("fixed", 64);
  cfg.steps = 50;
  const double ln_vocab = std::log(255.0);  // token ids 1..255
  cfg.data = "markov";
  const auto markov = run_world(cfg, 1);
  cfg.data = "random";
  const auto random = run_world(cfg, 1);
  ASSERT_TRUE(markov.failures.empty() && random.failures.empty());
  // A chain with 4 successors per state: the floor is ln 4 = 1.39; within 50 steps the loss must
  // be well below ln(vocab) = 5.54, while uniform tokens leave nothing to learn.
  EXPECT_LT(markov.losses.back(), 0.5 * ln_vocab);
  EXPECT_GT(random.losses.back(), 0.95 * ln_vocab);
}

TEST(Trainer, FailureIsReportedWithPhaseNotThrown) {
  auto cfg = base_config(Mode::lora);
  RankEnv env;
  env.world_size = 2;  // rank 1 never comes: the rendezvous must time out and say so
  env.master_port = launch::pick_free_port();
  cfg.timeout_s = 2;
  Probe probe;
  probe.live_log = false;
  const auto rep = run_rank(cfg, env, probe);
  EXPECT_EQ(rep.status, "failed");
  EXPECT_EQ(rep.phase, "rendezvous");
  EXPECT_FALSE(rep.error.empty());
}

}  // namespace
}  // namespace ddpbench::train

namespace ddpbench::train {
namespace {

// ZeRO-1 changes where the optimizer runs, not what it computes: the same losses and weights as
// plain DDP in fp32, on 2 ranks and on 3 (buckets that do not split evenly, so padded), with 1/W of
// the optimizer state per rank.
TEST(Trainer, ShardedOptimizerTrainsLikePlainDdp) {
  for (const auto& [mode, world] : std::vector<std::pair<Mode, int>>{{Mode::full, 2}, {Mode::lora, 2}, {Mode::full, 3}}) {
    SCOPED_TRACE(to_string(mode) + " on " + std::to_string(world));
    auto cfg = split(base_config(mode), 2, 2);
    cfg.steps = 4;
    cfg.weight_decay = 0.01;
    cfg.max_grad_norm = 0.5;  // clipping engaged, so the sharded norm counts
    const auto plain = run_world(cfg, world);
    cfg.shard_optimizer = true;
    const auto zero = run_world(cfg, world);
    ASSERT_TRUE(plain.failures.empty()) << plain.failures.front();
    ASSERT_TRUE(zero.failures.empty()) << zero.failures.front();
    ASSERT_EQ(zero.losses.size(), plain.losses.size());
    for (std::size_t s = 0; s < plain.losses.size(); ++s)
      EXPECT_NEAR(zero.losses[s], plain.losses[s], 1e-5 * std::abs(plain.losses[s])) << "step " << s;
    EXPECT_LT(rel_err(zero.weights[0], plain.weights[0]), 1e-5);
    // Every rank ends with the same weights: the all-gather handed each one every block.
    for (int r = 1; r < world; ++r) EXPECT_EQ(zero.weights[static_cast<std::size_t>(r)], zero.weights[0]);
    // The weights moved: a step that changed nothing would pass the comparisons above too.
    auto untrained = cfg;
    untrained.steps = 0;
    EXPECT_GT(rel_err(plain.weights[0], run_world(untrained, world).weights[0]), 1e-4);
    EXPECT_LT(zero.optimizer_state_bytes, plain.optimizer_state_bytes * (1.0 / world + 0.1));
  }
}

}  // namespace
}  // namespace ddpbench::train
