// `predict` on hand-made inputs with known answers: the collective model's formulas, a fit that
// recovers the alpha and bandwidth its points were made from, the bucket schedule's exposed time,
// and whole predictions whose step times follow by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "collectives/collectives.h"
#include "common/error.h"
#include "common/strings.h"
#include "predict/predict.h"

namespace {

using namespace ddpbench::predict;

Fabric node(double alpha, double bandwidth) {
  Fabric f;
  f.intra = {alpha, bandwidth};
  f.inter = {10 * alpha, bandwidth / 8};
  return f;
}

TEST(PredictModel, RingAndTreeFollowTheirFormulasAndTheFasterWins) {
  const auto f = node(2e-6, 100e9);
  EXPECT_EQ(all_reduce_time(f, 1e9, 1).seconds, 0);
  // Large: ring, 2(n-1)/n x S/B + 2(n-1) alpha.
  const auto big = all_reduce_time(f, 1e9, 4);
  EXPECT_EQ(big.algorithm, Algorithm::ring);
  EXPECT_DOUBLE_EQ(big.seconds, 1.5 * 1e9 / 100e9 + 6 * 2e-6);
  // Small on 8: tree, 2 x S/B + 2 log2(8) alpha beats the ring's 14 hops.
  const auto small = all_reduce_time(f, 1024, 8);
  EXPECT_EQ(small.algorithm, Algorithm::tree);
  EXPECT_DOUBLE_EQ(small.seconds, 2 * 1024 / 100e9 + 6 * 2e-6);
  EXPECT_DOUBLE_EQ(scatter_gather_time(f, 1e9, 4), 0.75 * 1e9 / 100e9 + 3 * 2e-6);
  // Across 2 nodes of 8: the ring crosses 2 inter-node hops and runs at the slower link.
  const auto two_nodes = all_reduce_time(f, 1e9, 16);
  EXPECT_DOUBLE_EQ(two_nodes.seconds, 2.0 * 15 / 16 * 1e9 / (100e9 / 8) + 2 * (14 * 2e-6 + 2 * 20e-6));
  auto domain = f;
  domain.single_domain = true;
  EXPECT_DOUBLE_EQ(all_reduce_time(domain, 1e9, 16).seconds, 2.0 * 15 / 16 * 1e9 / 100e9 + 2 * 15 * 2e-6);
}

TEST(PredictModel, FitRecoversAlphaAndBandwidthOfExactPoints) {
  const double alpha = 3e-6, bw = 40e9;
  std::vector<std::pair<double, double>> pts;
  for (double s = 8; s <= (1 << 28); s *= 4) pts.emplace_back(s, s / bw + 2 * alpha);  // ring on 2 ranks
  const auto fit = fit_all_reduce(pts, 2, 8);
  EXPECT_NEAR(fit.link.alpha_s, alpha, alpha * 1e-9);
  EXPECT_NEAR(fit.link.bandwidth, bw, bw * 1e-9);
  EXPECT_LT(fit.max_abs_rel_error, 1e-9);
  ASSERT_EQ(fit.points.size(), pts.size());
  // A point off the line shows in the error.
  pts[3].second *= 1.5;
  EXPECT_GT(fit_all_reduce(pts, 2, 8).max_abs_rel_error, 0.1);
  EXPECT_THROW(fit_all_reduce(pts, 1, 8), ddpbench::UsageError);
  EXPECT_THROW(fit_all_reduce({{8, 1e-5}}, 2, 8), ddpbench::UsageError);
}

TEST(PredictModel, FitReadsACollectivesRunFolder) {
  namespace fs = std::filesystem;
  namespace coll = ddpbench::collectives;
  const fs::path dir = fs::temp_directory_path() / ("ddpbench_predict_fit_" + std::to_string(::getpid()));
  fs::create_directories(dir / "cells");
  coll::Series s{"all_reduce", "bf16", "in-place", {}};
  for (std::int64_t b = 1024; b <= (1 << 24); b *= 2) {
    coll::Row r;
    r.bytes = b;
    r.time_s = 2 * 5e-6 + b / 20e9;
    s.rows.push_back(r);
  }
  coll::RunInfo info;
  info.nproc = 2;
  info.device = "cpu";
  info.backend = "gloo";
  ddpbench::write_file_atomic((dir / "cells/a.json").string(), coll::series_document(s, info).dump());
  // A reduce-scatter that runs as the ring model says (1/2 x S / B + 1 hop on 2 ranks), and a slower one.
  coll::Series rs{"reduce_scatter", "bf16", "out-of-place", {}};
  for (const std::int64_t b : {std::int64_t{1024}, std::int64_t{1} << 20}) {
    coll::Row r;
    r.bytes = b;
    r.time_s = 5e-6 + 0.5 * b / 20e9;
    rs.rows.push_back(r);
  }
  ddpbench::write_file_atomic((dir / "cells/b.json").string(), coll::series_document(rs, info).dump());
  for (auto& r : rs.rows) r.time_s *= 2;
  rs.mode = "in-place";
  ddpbench::write_file_atomic((dir / "cells/c.json").string(), coll::series_document(rs, info).dump());
  ddpbench::write_file_atomic((dir / "run.json").string(),
                              nlohmann::json{{"kind", "collectives"},
                                             {"cells", {{{"file", "cells/a.json"}}, {{"file", "cells/b.json"}}, {{"file", "cells/c.json"}}}}}
                                  .dump());
  const auto fit = fit_collectives_run(dir.string(), "bf16", 8);
  EXPECT_EQ(fit.ranks, 2);
  EXPECT_NEAR(fit.link.alpha_s, 5e-6, 1e-12);
  EXPECT_NEAR(fit.link.bandwidth, 20e9, 1e-3);
  ASSERT_EQ(fit.held_out.size(), 2u);
  EXPECT_LT(fit.held_out[0].max_abs_rel_error, 1e-9);
  EXPECT_NEAR(fit.held_out[1].median_abs_rel_error, 0.5, 1e-9);  // measured twice the model: off by 50%
  fs::remove_all(dir);
}

TEST(PredictModel, BucketScheduleExposesWhatRunsPastTheWindow) {
  EXPECT_DOUBLE_EQ(exposed_after_window({1, 1, 1, 1}, 4), 1);  // ready at 1,2,3,4; the last ends at 5
  EXPECT_DOUBLE_EQ(exposed_after_window({3, 3}, 2), 5);        // ready at 1,2; serialised: 4, 7
  EXPECT_DOUBLE_EQ(exposed_after_window({}, 2), 0);
  EXPECT_DOUBLE_EQ(exposed_after_window({0.5, 0.5}, 10), 0.5);
}

Measured hand_made() {
  Measured m;
  m.cell = "hand";
  m.ranks = 1;
  m.grad_accum = 1;
  m.micro_batch = 1;
  m.seq_len = 1024;
  m.hidden = 1024, m.layers = 8, m.heads = 8, m.kv_heads = 8;
  m.step_s = 0.1;
  m.tokens_per_gpu_step = 4096;
  m.has_profile = true;
  m.backward_s = 0.06;
  m.buckets = 4;
  m.grad_bytes = 4e8;
  m.weight_bytes = 4e8;
  m.optimizer_bytes = 2.4e9;
  m.peak_bytes = 4e9;
  return m;
}

const Prediction& find(const std::vector<Prediction>& ps, const std::string& strategy, int gpus, int degree = 1) {
  for (const auto& p : ps)
    if (p.strategy == strategy && p.gpus == gpus && std::max(p.tp, p.pp) == degree) return p;
  throw std::runtime_error("no prediction " + strategy + " at " + std::to_string(gpus));
}

TEST(PredictModel, NoCommunicationScalesPerfectly) {
  auto m = hand_made();
  m.grad_bytes = 0;
  const auto ps = predict(make_model(m, node(1e-6, 100e9)), {1, 8, 64, 1024});
  for (const int n : {1, 8, 64, 1024}) {
    EXPECT_DOUBLE_EQ(find(ps, "ddp", n).efficiency, 1.0);
    EXPECT_DOUBLE_EQ(find(ps, "ddp", n).tokens_per_s_per_gpu, 4096 / 0.1);
    EXPECT_DOUBLE_EQ(find(ps, "zero1", n).efficiency, 1.0);
  }
}

TEST(PredictModel, KnownAlphaAndBandwidthGiveKnownStepTimes) {
  const auto model = make_model(hand_made(), node(0, 100e9));
  EXPECT_DOUBLE_EQ(model.compute_s, 0.1);
  const auto ps = predict(model, {1, 2, 4});
  // 2 GPUs: 4 buckets of 1e8 B, each 2(1)/2 x 1e8 / 1e11 = 1 ms, ready every 15 ms of a 60 ms
  // backward: only the last bucket's 1 ms runs past it.
  EXPECT_NEAR(find(ps, "ddp", 2).exposed_comm_s, 1e-3, 1e-12);
  EXPECT_NEAR(find(ps, "ddp", 2).step_s, 0.101, 1e-12);
  EXPECT_NEAR(find(ps, "ddp", 2).efficiency, 0.1 / 0.101, 1e-12);
  EXPECT_DOUBLE_EQ(find(ps, "ddp", 1).step_s, 0.1);
  // ZeRO-1 on 4: reduce-scatter 0.75 x 1e8 / 1e11 = 0.75 ms per bucket (last one exposed) and the
  // all-gather of all 4 buckets, 3 ms; optimizer state a quarter.
  const auto& z = find(ps, "zero1", 4);
  EXPECT_NEAR(z.exposed_comm_s, 0.75e-3 + 3e-3, 1e-12);
  EXPECT_NEAR(z.step_s, 0.1 + 3.75e-3, 1e-12);
  EXPECT_DOUBLE_EQ(z.memory.optimizer, 2.4e9 / 4);
  EXPECT_DOUBLE_EQ(find(ps, "ddp", 4).memory.optimizer, 2.4e9);
  EXPECT_DOUBLE_EQ(find(ps, "ddp", 4).memory.activations, 4e9 - 4e8 - 4e8 - 2.4e9);
  // Tensor parallel 2 on 2 GPUs: compute halves, 4 x 8 layers all-reduces of 1 x 1024 x 1024 x 2 B
  // over 2 GPUs (1 x S / B each), no data-parallel group left.
  const auto& tp = find(ps, "tp", 2, 2);
  const double act = 1024.0 * 1024 * 2;
  EXPECT_NEAR(tp.step_s, 0.05 + 32 * act / 100e9, 1e-12);
  EXPECT_DOUBLE_EQ(tp.memory.weights, 2e8);
  // Pipeline 2 with one micro-batch: the bubble makes it as slow as one GPU, plus the sends.
  const auto& pp = find(ps, "pp", 2, 2);
  EXPECT_NEAR(pp.step_s, 0.1 + 2 * act / 100e9, 1e-12);
  EXPECT_NEAR(pp.efficiency, 0.1 / (2 * pp.step_s), 1e-12);
}

TEST(PredictModel, ExpectedMaximumOfDrawsFromMeasuredSteps) {
  // {1, 2, 3, 4}: the maximum of two draws is 1, 2, 3, 4 in 1, 3, 5, 7 of the 16 pairs.
  EXPECT_DOUBLE_EQ(expected_max({4, 2, 1, 3}, 2), 50.0 / 16);
  EXPECT_DOUBLE_EQ(expected_max({4, 2, 1, 3}, 1), 2.5);
  EXPECT_DOUBLE_EQ(expected_max({7, 7, 7}, 64), 7.0);
  EXPECT_EQ(expected_max({}, 8), 0.0);
}

TEST(PredictModel, AStepOfMoreGpusWaitsForTheSlowest) {
  // One rank, one step in four 20 ms slow: with n ranks a step is slow unless all n are fast.
  auto m = hand_made();
  m.grad_bytes = 0;
  m.step_times = {0.1, 0.1, 0.1, 0.12};
  const auto ps = predict(make_model(m, node(1e-6, 100e9)), {1, 2, 8});
  EXPECT_DOUBLE_EQ(find(ps, "ddp", 1).straggler_s, 0.0);
  for (const int n : {2, 8}) {
    const double slow = 1 - std::pow(0.75, n);  // P(at least one of n is slow)
    EXPECT_NEAR(find(ps, "ddp", n).straggler_s, 0.1 + 0.02 * slow - 0.105, 1e-12) << n;
    EXPECT_NEAR(find(ps, "ddp", n).step_s, 0.1 + 0.1 + 0.02 * slow - 0.105, 1e-12) << n;
    EXPECT_LT(find(ps, "ddp", n).efficiency, 1.0);
  }
  // Measured on 2 ranks, the steps already wait for the slower of 2: at 8, for the slowest of 4 such.
  m.ranks = 2;
  const auto at8 = predict(make_model(m, node(1e-6, 100e9)), {2, 8});
  EXPECT_DOUBLE_EQ(find(at8, "ddp", 2).straggler_s, 0.0);
  EXPECT_NEAR(find(at8, "ddp", 8).straggler_s, 0.02 * (1 - std::pow(0.75, 4)) - 0.005, 1e-12);
}

TEST(PredictModel, WithoutAProfileTheModelSubtractsItsOwnExposedCommunication) {
  auto m = hand_made();
  m.has_profile = false;
  m.ranks = 2;
  m.step_s = 0.101;
  const auto model = make_model(m, node(0, 100e9));
  EXPECT_NEAR(model.compute_s, 0.1, 1e-12);
  EXPECT_FALSE(model.assumptions.empty());
}

TEST(PredictModel, ReadsAResultDocument) {
  nlohmann::json doc = {
      {"status", {{"state", "ok"}}},
      {"config", {{"grad_accum", 2}, {"micro_batch", 4}, {"seq_len", 2048}, {"preset", "350m"}, {"device", "cuda"}}},
      {"summary", {{"step_time_p50_s", 0.2}, {"step_time_mean_s", 0.2}, {"tokens_per_s_per_gpu", 81920.0}, {"peak_allocated_bytes", 1e10}}},
      {"ranks", {{{"buckets", 18}, {"bucket_bytes", 6.68e8}, {"parameters", 3.34e8}, {"trainable_parameters", 3.34e8}, {"optimizer_state_bytes", 4.1e9}}}}};
  auto m = measured_from(doc, "doc");
  EXPECT_FALSE(m.has_profile);
  EXPECT_DOUBLE_EQ(m.tokens_per_gpu_step, 16384);
  EXPECT_EQ(m.buckets, 18);
  EXPECT_DOUBLE_EQ(m.weight_bytes, 3.34e8 * 2);
  EXPECT_GT(m.layers, 0);
  EXPECT_NEAR(m.backward_s, 0.2 * 2 / 3, 1e-12);
  EXPECT_FALSE(m.assumptions.empty());
  doc["profile"] = {{"ranks", {{{"summary", {{"median", {{"step_ns", 1.9e8}, {"exposed_comm_ns", 1e7}, {"phases_ns", {{"backward", 1.2e8}, {"optimizer", 2e7}}}}}}}}}}};
  m = measured_from(doc, "doc");
  EXPECT_TRUE(m.has_profile);
  EXPECT_DOUBLE_EQ(m.step_s, 0.19);
  EXPECT_DOUBLE_EQ(m.exposed_comm_s, 0.01);
  EXPECT_DOUBLE_EQ(m.backward_s, 0.12);
  EXPECT_DOUBLE_EQ(m.optimizer_s, 0.02);
  doc["status"]["state"] = "failed";
  EXPECT_THROW(measured_from(doc, "doc"), ddpbench::UsageError);
}

TEST(PredictModel, GpuCountsExpandDoubling) {
  EXPECT_EQ(parse_gpu_counts("8,16,...,1024"), (std::vector<int>{8, 16, 32, 64, 128, 256, 512, 1024}));
  EXPECT_EQ(parse_gpu_counts("1,3,6"), (std::vector<int>{1, 3, 6}));
  EXPECT_THROW(parse_gpu_counts("8,...,"), ddpbench::UsageError);
  EXPECT_THROW(parse_gpu_counts("0"), ddpbench::UsageError);
  EXPECT_THROW(parse_gpu_counts("x"), ddpbench::UsageError);
}

}  // namespace
