// Synthetic data (determinism under any split, padding, token counts), order statistics, result
// documents (merge, summary, status, JSON and CSV) and the file helpers they rely on.
#include <gtest/gtest.h>

#include "test_helpers.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/strings.h"
#include "results/cells.h"
#include "results/results.h"
#include "results/stats.h"
#include "train/config.h"
#include "train/data.h"

namespace ddpbench {
namespace {

using train::Lengths;
using train::SyntheticData;
using train::TokenBatch;

using testing_helpers::contains;
using testing_helpers::message_of;
using testing_helpers::TempDirTest;

// ---------------------------------------------------------------------------------------------
// Synthetic data

constexpr int kVocab = 256;
constexpr int kSeq = 64;

SyntheticData uneven(std::uint64_t seed = 7, const std::string& kind = "markov") {
  return SyntheticData(seed, kVocab, kSeq, Lengths{true, 16, 64}, kind);
}

void append(TokenBatch& to, const TokenBatch& b) {
  to.rows += b.rows;
  to.tokens.insert(to.tokens.end(), b.tokens.begin(), b.tokens.end());
  to.labels.insert(to.labels.end(), b.labels.begin(), b.labels.end());
  to.lengths.insert(to.lengths.end(), b.lengths.begin(), b.lengths.end());
}

TEST(SyntheticData, RepeatableCalls) {
  const auto data = uneven();
  const auto a = data.rows(3, 5, 4);
  const auto b = data.rows(3, 5, 4);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.lengths, b.lengths);
  // A second object with the same seed: a pure function, no hidden state.
  EXPECT_EQ(uneven().rows(3, 5, 4).tokens, a.tokens);
}

TEST(SyntheticData, AnySplitSeesTheSameGlobalBatch) {
  const auto data = uneven();
  constexpr int W = 2, G = 3, B = 2;
  for (int step : {0, 1, 9}) {
    TokenBatch joined;
    joined.seq_len = kSeq;
    for (int rank = 0; rank < W; ++rank)
      for (int micro = 0; micro < G; ++micro) {
        const auto mb = data.micro_batch(step, rank, micro, G, B);
        EXPECT_EQ(mb.rows, B);
        EXPECT_EQ(mb.seq_len, kSeq);
        ASSERT_EQ(mb.tokens.size(), static_cast<std::size_t>(B * kSeq));
        append(joined, mb);
      }
    const auto global = data.rows(step, 0, W * G * B);
    EXPECT_EQ(joined.rows, global.rows);
    EXPECT_EQ(joined.tokens, global.tokens) << "step " << step;
    EXPECT_EQ(joined.labels, global.labels) << "step " << step;
    EXPECT_EQ(joined.lengths, global.lengths) << "step " << step;

    // The same global batch split as 1 rank x 12 micro-batches of 1, and 4 ranks x 1 of 3.
    TokenBatch single;
    for (int micro = 0; micro < 12; ++micro) append(single, data.micro_batch(step, 0, micro, 12, 1));
    EXPECT_EQ(single.tokens, global.tokens);
    TokenBatch four;
    for (int rank = 0; rank < 4; ++rank) append(four, data.micro_batch(step, rank, 0, 1, 3));
    EXPECT_EQ(four.tokens, global.tokens);
  }
}

TEST(SyntheticData, RanksReadDisjointShards) {
  const auto data = uneven();
  EXPECT_NE(data.micro_batch(0, 0, 0, 1, 2).tokens, data.micro_batch(0, 1, 0, 1, 2).tokens);
  EXPECT_NE(data.micro_batch(0, 0, 0, 2, 2).tokens, data.micro_batch(0, 0, 1, 2, 2).tokens);
}

TEST(SyntheticData, SeedAndStepChangeTokens) {
  const auto a = uneven(1).rows(0, 0, 4);
  EXPECT_NE(uneven(2).rows(0, 0, 4).tokens, a.tokens);
  EXPECT_NE(uneven(1).rows(1, 0, 4).tokens, a.tokens);
  // Fixed lengths: the tokens still differ, not only the padding.
  const SyntheticData f1(1, kVocab, kSeq, Lengths{false, kSeq, kSeq});
  const SyntheticData f2(2, kVocab, kSeq, Lengths{false, kSeq, kSeq});
  EXPECT_NE(f1.rows(0, 0, 2).tokens, f2.rows(0, 0, 2).tokens);
  EXPECT_NE(f1.rows(0, 0, 2).tokens, f1.rows(1, 0, 2).tokens);
}

TEST(SyntheticData, UniformLengthsStayInRangeAndVary) {
  const auto data = uneven();
  const auto b = data.rows(0, 0, 256);
  ASSERT_EQ(b.lengths.size(), 256u);
  std::set<int> distinct(b.lengths.begin(), b.lengths.end());
  EXPECT_GE(*distinct.begin(), 16);
  EXPECT_LE(*distinct.rbegin(), 64);
  EXPECT_GT(distinct.size(), 10u) << "lengths should be spread over [16, 64]";
  EXPECT_LT(*distinct.begin(), 24);
  EXPECT_GT(*distinct.rbegin(), 56);

  // A degenerate range is one length.
  const SyntheticData same(7, kVocab, kSeq, Lengths{true, 10, 10});
  for (int len : same.rows(0, 0, 32).lengths) EXPECT_EQ(len, 10);
}

TEST(SyntheticData, PaddingAndTokenRanges) {
  const auto data = uneven(7, "random");
  const auto b = data.rows(4, 100, 64);
  ASSERT_EQ(b.tokens.size(), static_cast<std::size_t>(64 * kSeq));
  ASSERT_EQ(b.labels.size(), b.tokens.size());
  std::set<std::int64_t> seen;
  bool some_padding = false;
  for (int r = 0; r < b.rows; ++r) {
    const int len = b.lengths[r];
    for (int t = 0; t < kSeq; ++t) {
      const auto i = static_cast<std::size_t>(r) * kSeq + t;
      if (t < len) {
        EXPECT_GE(b.tokens[i], 1) << "row " << r << " pos " << t;
        EXPECT_LT(b.tokens[i], kVocab);
        EXPECT_EQ(b.labels[i], b.tokens[i]);
        seen.insert(b.tokens[i]);
      } else {
        some_padding = true;
        EXPECT_EQ(b.tokens[i], train::kPadToken);
        EXPECT_EQ(b.labels[i], train::kIgnoreIndex);
      }
    }
  }
  EXPECT_TRUE(some_padding);
  EXPECT_GT(seen.size(), 200u) << "tokens should cover most of the vocabulary";

  // A tiny vocabulary: ids 1..vocab-1, all of them used.
  const SyntheticData small(3, 3, 16, Lengths{false, 16, 16}, "random");
  std::set<std::int64_t> ids;
  for (auto t : small.rows(0, 0, 8).tokens) ids.insert(t);
  EXPECT_EQ(ids, (std::set<std::int64_t>{1, 2}));
}

// The learnable generator: every token has at most kMarkovSuccessors successors, so a model that
// learns the chain can reach ln(kMarkovSuccessors); random data has no such structure.
TEST(SyntheticData, MarkovChainHasFewSuccessorsPerToken) {
  std::map<std::int64_t, std::set<std::int64_t>> successors;
  std::map<std::int64_t, std::set<std::int64_t>> random_successors;
  for (int step = 0; step < 4; ++step) {
    const auto m = uneven(7, "markov").rows(step, 0, 32);
    const auto r = uneven(7, "random").rows(step, 0, 32);
    for (int row = 0; row < 32; ++row) {
      for (int t = 1; t < m.lengths[row]; ++t) {
        const auto i = static_cast<std::size_t>(row) * kSeq + t;
        successors[m.tokens[i - 1]].insert(m.tokens[i]);
      }
      for (int t = 1; t < r.lengths[row]; ++t) {
        const auto i = static_cast<std::size_t>(row) * kSeq + t;
        random_successors[r.tokens[i - 1]].insert(r.tokens[i]);
      }
    }
  }
  std::size_t most = 0, random_most = 0;
  for (const auto& [tok, next] : successors) most = std::max(most, next.size());
  for (const auto& [tok, next] : random_successors) random_most = std::max(random_most, next.size());
  EXPECT_LE(most, static_cast<std::size_t>(train::kMarkovSuccessors));
  EXPECT_GE(most, 2u);
  EXPECT_GT(random_most, static_cast<std::size_t>(train::kMarkovSuccessors));
}

TEST(SyntheticData, MarkovStatesBoundTheTokensUsed) {
  for (int states : {8, 64}) {
    const SyntheticData data(11, kVocab, kSeq, Lengths{false, kSeq, kSeq}, "markov", states);
    std::set<std::int64_t> seen;
    for (int step = 0; step < 8; ++step) {
      const auto b = data.rows(step, 0, 16);
      seen.insert(b.tokens.begin(), b.tokens.end());
    }
    EXPECT_LE(seen.size(), static_cast<std::size_t>(states)) << states << " states";
    EXPECT_GE(seen.size(), static_cast<std::size_t>(states) / 2) << states << " states";
  }
}

TEST(SyntheticData, TokenCounts) {
  const auto b = uneven().rows(2, 0, 10);
  std::int64_t real = 0, predicted = 0, nonpad = 0, counted_labels = 0;
  for (int len : b.lengths) {
    real += len;
    predicted += len - 1;
  }
  for (auto t : b.tokens) nonpad += t != train::kPadToken;
  for (auto l : b.labels) counted_labels += l != train::kIgnoreIndex;
  EXPECT_EQ(b.real_tokens(), real);
  EXPECT_EQ(b.real_tokens(), nonpad);
  EXPECT_EQ(b.padded_tokens(), 10 * kSeq);
  EXPECT_EQ(b.predicted_tokens(), predicted);
  // After the model's shift the first label of each row is never predicted: one fewer per row.
  EXPECT_EQ(b.predicted_tokens(), counted_labels - b.rows);
  EXPECT_LT(b.real_tokens(), b.padded_tokens());

  const SyntheticData fixed(1, kVocab, 32, Lengths{false, 32, 32});
  const auto f = fixed.rows(0, 0, 3);
  EXPECT_EQ(f.real_tokens(), 96);
  EXPECT_EQ(f.padded_tokens(), 96);
  EXPECT_EQ(f.predicted_tokens(), 93);
}

TEST(SyntheticData, Mix64IsTheSplitmixFinaliser) {
  // Reference values of splitmix64 seeded with 0: the first two outputs.
  EXPECT_EQ(train::mix64(0), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(train::mix64(0x9E3779B97F4A7C15ull), 0x6E789E6AA1B965F4ull);
}

// ---------------------------------------------------------------------------------------------
// Order statistics

TEST(Stats, PercentileLikeNumpy) {
  const std::vector<double> v{4, 1, 3, 2};  // unsorted on purpose
  EXPECT_DOUBLE_EQ(results::percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(results::percentile(v, 95), 3.85);
  EXPECT_DOUBLE_EQ(results::percentile(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(results::percentile(v, 100), 4.0);
  EXPECT_DOUBLE_EQ(results::percentile(v, 25), 1.75);
  EXPECT_DOUBLE_EQ(results::median(v), 2.5);
  // numpy.percentile([10, 20, 30, 40, 50], 90) == 46.0; [1..10] p95 == 9.55
  EXPECT_DOUBLE_EQ(results::percentile(std::vector<double>{10, 20, 30, 40, 50}, 90), 46.0);
  EXPECT_NEAR(results::percentile(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 95), 9.55, 1e-12);
  EXPECT_DOUBLE_EQ(results::median(std::vector<double>{3, 1, 2}), 2.0);
}

TEST(Stats, SingleAndEmpty) {
  const std::vector<double> one{7.25};
  EXPECT_DOUBLE_EQ(results::percentile(one, 0), 7.25);
  EXPECT_DOUBLE_EQ(results::percentile(one, 50), 7.25);
  EXPECT_DOUBLE_EQ(results::percentile(one, 95), 7.25);
  EXPECT_DOUBLE_EQ(results::mean(one), 7.25);
  const std::vector<double> none;
  EXPECT_TRUE(std::isnan(results::percentile(none, 50)));
  EXPECT_TRUE(std::isnan(results::median(none)));
  EXPECT_TRUE(std::isnan(results::mean(none)));
}

TEST(Stats, MeanAndSampleStddev) {
  const std::vector<double> v{2, 4, 4, 4, 5, 5, 7, 9};
  EXPECT_DOUBLE_EQ(results::mean(v), 5.0);
  // Sum of squared deviations 32 over n - 1 = 7 (numpy.std(v, ddof=1)).
  EXPECT_NEAR(results::stddev(v), std::sqrt(32.0 / 7.0), 1e-12);
  EXPECT_DOUBLE_EQ(results::stddev(std::vector<double>{1, 3}), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(results::stddev(std::vector<double>{5, 5, 5}), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Results

// World 2, 2 warm-up steps then 4 measured; ranks differ in step time and tokens.
const double kTimes[2][6] = {{5.0, 3.0, 1.0, 2.0, 1.5, 1.0}, {4.0, 6.0, 1.25, 1.75, 1.5, 3.0}};
const std::int64_t kTokens[2][6] = {{100, 110, 120, 130, 140, 150}, {90, 95, 60, 70, 80, 85}};
const double kLoss[6] = {5.5, 5.0, 4.5, 4.0, 3.5, 3.25};

std::vector<results::RankReport> two_ranks() {
  std::vector<results::RankReport> ranks;
  for (int r = 0; r < 2; ++r) {
    results::RankReport rep;
    rep.rank = rep.local_rank = r;
    rep.world_size = 2;
    rep.host = "node0";
    rep.device = "cuda:" + std::to_string(r);
    rep.setup_s = 1.5 + r;
    rep.buckets = 3;
    rep.bucket_bytes = 1 << 20;
    rep.parameters = 1000;
    rep.trainable_parameters = 100;
    for (int s = 0; s < 6; ++s) {
      results::StepSample x;
      x.step = s;
      x.warmup = s < 2;
      x.loss = kLoss[s];
      x.tokens = kTokens[r][s];
      x.padded_tokens = 256;
      x.predicted_tokens = kTokens[r][s] - 4;
      x.global_predicted = kTokens[0][s] + kTokens[1][s] - 8;
      x.step_time_s = kTimes[r][s];
      x.grad_norm = 0.5;
      x.mem_allocated_peak = (r == 0 ? 1000 : 3000) + s;  // rank 1 peaks higher
      x.mem_reserved_peak = (r == 0 ? 9000 : 2000) + s;   // rank 0 reserves more
      rep.steps.push_back(x);
    }
    ranks.push_back(rep);
  }
  return ranks;
}


TEST(Results, Summarize) {
  const auto ranks = two_ranks();
  const double flops = 6e9, peak = 1e12;
  const auto s = results::summarize(ranks, flops, peak);
  EXPECT_EQ(s.measured_steps, 4);
  const double time = 1.25 + 2.0 + 1.5 + 3.0;
  const double tokens = (120 + 130 + 140 + 150) + (60 + 70 + 80 + 85);  // warm-up steps left out
  EXPECT_DOUBLE_EQ(s.tokens_per_s, tokens / time);
  EXPECT_DOUBLE_EQ(s.tokens_per_s_per_gpu, tokens / time / 2);
  EXPECT_DOUBLE_EQ(s.padded_tokens_per_s, 4 * 2 * 256 / time);
  EXPECT_DOUBLE_EQ(s.step_time_p50_s, 1.75);             // numpy.percentile(kMerged, 50)
  EXPECT_DOUBLE_EQ(s.step_time_p95_s, 2.0 + 0.85 * 1.0);  // numpy.percentile(kMerged, 95)
  EXPECT_DOUBLE_EQ(s.step_time_mean_s, time / 4);
  EXPECT_DOUBLE_EQ(s.mfu, flops * (tokens / time / 2) / peak);
  EXPECT_DOUBLE_EQ(s.final_loss, 3.25);
  EXPECT_EQ(s.peak_allocated_max, 3005);
  EXPECT_EQ(s.peak_reserved_max, 9005);
}

// A node of a two-node run holds one rank of two: its figures are that rank's, per rank over the
// ranks it holds (not the world), and the document says it is partial and why.
TEST(Results, PartialDocumentCountsTheRanksItHolds) {
  auto ranks = two_ranks();
  ranks.erase(ranks.begin());  // node 1's view: rank 1 only
  const auto s = results::summarize(ranks, 0, 0);
  const double time = 1.25 + 1.75 + 1.5 + 3.0;  // rank 1's measured steps
  const double tokens = 60 + 70 + 80 + 85;
  EXPECT_DOUBLE_EQ(s.tokens_per_s, tokens / time);
  EXPECT_DOUBLE_EQ(s.tokens_per_s_per_gpu, tokens / time);
  results::RunContext ctx;
  ctx.partial_reason = "node 1 of 2: this node's ranks only";
  const auto doc = results::make_run_document(ctx, ranks);
  ASSERT_TRUE(doc.contains("partial"));
  EXPECT_EQ(doc["partial"]["world_size"], 2);
  EXPECT_EQ(doc["partial"]["ranks"], nlohmann::json::array({1}));
  EXPECT_EQ(doc["partial"]["reason"], "node 1 of 2: this node's ranks only");
  // Every rank's report: no partial section.
  EXPECT_FALSE(results::make_run_document(ctx, two_ranks()).contains("partial"));
}

TEST(Results, MfuUnknownWithoutPeakOrFlops) {
  const auto ranks = two_ranks();
  EXPECT_EQ(results::summarize(ranks, 6e9, 0).mfu, -1);
  EXPECT_EQ(results::summarize(ranks, 0, 1e12).mfu, -1);
  EXPECT_TRUE(results::to_json(results::summarize(ranks, 6e9, 0))["mfu"].is_null());
}

TEST(Results, MfuPeakIsTheMedianMeasuredRateWithTheDatasheetBeside) {
  auto ranks = two_ranks();
  EXPECT_EQ(results::measured_peak_flops(ranks), 0);  // nothing measured (CPU ranks)
  ranks[0].matmul_bf16_flops = 760e12;
  EXPECT_EQ(results::measured_peak_flops(ranks), 760e12);  // a rank without a figure does not count
  ranks[1].matmul_bf16_flops = 780e12;
  EXPECT_DOUBLE_EQ(results::measured_peak_flops(ranks), 770e12);
  EXPECT_EQ(results::datasheet_bf16_flops("NVIDIA H100 80GB HBM3"), 989e12);
  EXPECT_EQ(results::datasheet_bf16_flops("NVIDIA H100 PCIe"), 756e12);
  EXPECT_EQ(results::datasheet_bf16_flops("NVIDIA H100 NVL"), 835e12);
  EXPECT_EQ(results::datasheet_bf16_flops("NVIDIA H200"), 989e12);
  EXPECT_EQ(results::datasheet_bf16_flops("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_EQ(results::datasheet_bf16_flops("Tesla T4"), 0);
  EXPECT_EQ(results::datasheet_bf16_flops(""), 0);
}

TEST(Results, SingleRankIsItsOwnMerge) {
  auto ranks = two_ranks();
  ranks.resize(1);
  ranks[0].world_size = 1;
  const auto s = results::summarize(ranks, 0, 0);
  EXPECT_EQ(s.measured_steps, 4);
  EXPECT_DOUBLE_EQ(s.tokens_per_s, (120 + 130 + 140 + 150) / (1.0 + 2.0 + 1.5 + 1.0));
  EXPECT_DOUBLE_EQ(s.tokens_per_s_per_gpu, s.tokens_per_s);
}

TEST(Results, StepsOnlySomeRanksFinishedDoNotCount) {
  auto ranks = two_ranks();
  ranks[1].steps.pop_back();  // rank 1 died in step 5
  ranks[1].status = "failed";
  const auto s = results::summarize(ranks, 0, 0);
  EXPECT_EQ(s.measured_steps, 3);
  EXPECT_DOUBLE_EQ(s.tokens_per_s, ((120 + 130 + 140) + (60 + 70 + 80)) / (1.25 + 2.0 + 1.5));
}

TEST(Results, RunDocument) {
  results::RunContext ctx;
  ctx.run_id = "run-1";
  ctx.cell = "lora-a/builtin/n2/b2/g1/s64";
  ctx.cell_id = "lora-a/builtin/n2/b2/g1/s64#0a1b2c3d";
  ctx.repeat = 3;
  ctx.config = {{"trainer", "builtin"}, {"nproc", 2}};
  ctx.fingerprint = {{"git_commit", "abc123"}};
  ctx.hardware_key = "2xH100";
  ctx.flops_per_token = 6e9;
  ctx.peak_flops = 1e12;
  ctx.datasheet_flops = 989e12;
  const auto doc = results::make_run_document(ctx, two_ranks());

  EXPECT_EQ(doc.at("schema_version"), results::kSchemaVersion);
  EXPECT_EQ(doc.at("run_id"), "run-1");
  EXPECT_EQ(doc.at("cell"), ctx.cell);
  EXPECT_EQ(doc.at("cell_id"), ctx.cell_id);
  EXPECT_EQ(doc.at("repeat"), 3);
  EXPECT_EQ(doc.at("config"), ctx.config);
  EXPECT_EQ(doc.at("fingerprint"), ctx.fingerprint);
  EXPECT_EQ(doc.at("status").at("state"), "ok");

  const auto& steps = doc.at("steps");
  ASSERT_EQ(steps.size(), 6u);
  for (int s = 0; s < 6; ++s) {
    const auto& st = steps[s];
    EXPECT_EQ(st.at("step"), s);
    EXPECT_EQ(st.at("warmup").get<bool>(), s < 2);
    EXPECT_EQ(st.at("tokens").get<std::int64_t>(), kTokens[0][s] + kTokens[1][s]);
    EXPECT_EQ(st.at("padded_tokens").get<std::int64_t>(), 512);
    EXPECT_EQ(st.at("global_predicted_tokens").get<std::int64_t>(), kTokens[0][s] + kTokens[1][s] - 8);
    EXPECT_DOUBLE_EQ(st.at("loss").get<double>(), kLoss[s]);
    EXPECT_DOUBLE_EQ(st.at("step_time_s").get<double>(), std::max(kTimes[0][s], kTimes[1][s]));
    const auto rank_times = st.at("rank_step_time_s").get<std::vector<double>>();
    ASSERT_EQ(rank_times.size(), 2u);
    EXPECT_EQ(std::multiset<double>(rank_times.begin(), rank_times.end()),
              (std::multiset<double>{kTimes[0][s], kTimes[1][s]}));
  }

  const auto& per_rank = doc.at("ranks");
  ASSERT_EQ(per_rank.size(), 2u);
  EXPECT_EQ(per_rank[1].at("rank"), 1);
  EXPECT_EQ(per_rank[1].at("device"), "cuda:1");
  EXPECT_EQ(per_rank[0].at("measured_tokens").get<std::int64_t>(), 120 + 130 + 140 + 150);
  EXPECT_EQ(per_rank[1].at("measured_tokens").get<std::int64_t>(), 60 + 70 + 80 + 85);
  EXPECT_EQ(per_rank[1].at("predicted_tokens_per_step").size(), 6u);
  EXPECT_DOUBLE_EQ(per_rank[0].at("step_time_p50_s").get<double>(), 1.25);  // median of 1, 2, 1.5, 1

  const auto& summary = doc.at("summary");
  EXPECT_EQ(summary.at("measured_steps"), 4);
  const double tps = 835.0 / 7.75;
  EXPECT_DOUBLE_EQ(summary.at("tokens_per_s").get<double>(), tps);
  EXPECT_DOUBLE_EQ(summary.at("mfu").get<double>(), 6e9 * tps / 2 / 1e12);
  EXPECT_DOUBLE_EQ(summary.at("flops_per_token").get<double>(), 6e9);
  EXPECT_DOUBLE_EQ(summary.at("peak_flops").get<double>(), 1e12);
  EXPECT_DOUBLE_EQ(summary.at("datasheet_flops").get<double>(), 989e12);
  EXPECT_EQ(summary.at("peak_allocated_bytes").get<std::int64_t>(), 3005);
}

TEST(Results, FailedRankReportSetsStatus) {
  auto ranks = two_ranks();
  ranks[1].status = "failed";
  ranks[1].phase = "step 4";
  ranks[1].error = "CUDA out of memory";
  results::RunContext ctx;
  ctx.launcher_status = "failed";  // the rank's own account wins over the launcher's
  ctx.launcher_reason = "rank 1 exited with status 1";
  ctx.failed_rank = 1;
  const auto status = results::make_run_document(ctx, ranks).at("status");
  EXPECT_EQ(status.at("state"), "failed");
  EXPECT_EQ(status.at("rank"), 1);
  EXPECT_EQ(status.at("phase"), "step 4");
  EXPECT_EQ(status.at("reason"), "CUDA out of memory");
}

TEST(Results, LauncherFailureWithoutRankReport) {
  results::RunContext ctx;
  ctx.launcher_status = "timeout";
  ctx.launcher_reason = "ranks did not finish within 300 s";
  ctx.failed_rank = 0;
  const auto status = results::make_run_document(ctx, two_ranks()).at("status");
  EXPECT_EQ(status.at("state"), "failed");
  EXPECT_EQ(status.at("reason"), "ranks did not finish within 300 s");
  EXPECT_EQ(status.at("rank"), 0);

  // No rank report at all: still a document, failed, with nothing measured.
  const auto empty = results::make_run_document(ctx, {});
  EXPECT_EQ(empty.at("status").at("state"), "failed");
  EXPECT_EQ(empty.at("summary").at("measured_steps"), 0);
  EXPECT_TRUE(empty.at("steps").empty());
}

TEST(Results, RankReportRoundTrip) {
  auto r = two_ranks()[1];
  r.status = "failed";
  r.phase = "step 5";
  r.error = "NaN loss";
  r.steps[5].loss = std::numeric_limits<double>::quiet_NaN();
  r.steps[5].grad_norm = std::numeric_limits<double>::quiet_NaN();
  r.steps[4].mem_reserved_peak = std::int64_t{80} << 30;  // beyond 32 bits
  r.matmul_bf16_flops = 771.5e12;
  const auto back = results::rank_report_from_json(nlohmann::json::parse(results::to_json(r).dump()));
  EXPECT_EQ(back.rank, r.rank);
  EXPECT_EQ(back.local_rank, r.local_rank);
  EXPECT_EQ(back.world_size, r.world_size);
  EXPECT_EQ(back.host, r.host);
  EXPECT_EQ(back.device, r.device);
  EXPECT_EQ(back.status, r.status);
  EXPECT_EQ(back.phase, r.phase);
  EXPECT_EQ(back.error, r.error);
  EXPECT_EQ(back.setup_s, r.setup_s);
  EXPECT_EQ(back.buckets, r.buckets);
  EXPECT_EQ(back.bucket_bytes, r.bucket_bytes);
  EXPECT_EQ(back.parameters, r.parameters);
  EXPECT_EQ(back.trainable_parameters, r.trainable_parameters);
  EXPECT_EQ(back.matmul_bf16_flops, 771.5e12);
  ASSERT_EQ(back.steps.size(), r.steps.size());
  for (std::size_t i = 0; i < r.steps.size(); ++i) {
    const auto& a = back.steps[i];
    const auto& b = r.steps[i];
    EXPECT_EQ(a.step, b.step);
    EXPECT_EQ(a.warmup, b.warmup);
    if (std::isnan(b.loss))
      EXPECT_TRUE(std::isnan(a.loss)) << "step " << i;
    else
      EXPECT_EQ(a.loss, b.loss);
    if (std::isnan(b.grad_norm))
      EXPECT_TRUE(std::isnan(a.grad_norm)) << "step " << i;
    else
      EXPECT_EQ(a.grad_norm, b.grad_norm);
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.padded_tokens, b.padded_tokens);
    EXPECT_EQ(a.predicted_tokens, b.predicted_tokens);
    EXPECT_EQ(a.global_predicted, b.global_predicted);
    EXPECT_EQ(a.step_time_s, b.step_time_s);
    EXPECT_EQ(a.mem_allocated_peak, b.mem_allocated_peak);
    EXPECT_EQ(a.mem_reserved_peak, b.mem_reserved_peak);
  }
  EXPECT_TRUE(std::isnan(back.steps[5].loss));
}

TEST(Results, RankReportFromBrokenJson) {
  auto j = results::to_json(two_ranks()[0]);
  j.erase("steps");
  EXPECT_THROW(results::rank_report_from_json(j), RunError);
  j = results::to_json(two_ranks()[0]);
  j["steps"][0].erase("tokens");
  EXPECT_THROW(results::rank_report_from_json(j), RunError);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  for (auto& l : split(text, '\n'))
    if (!l.empty()) out.push_back(l);
  return out;
}

std::size_t columns(const std::string& line) { return split(line, ',').size(); }

results::RunContext csv_context(double peak) {
  results::RunContext ctx;
  ctx.cell = "lora-a/builtin/n2/b2/g1/s64";
  ctx.config = {{"trainer", "builtin"}, {"preset", "1b"},     {"mode", "lora"},   {"impl", "baseline"},
                {"nproc", 2},           {"micro_batch", 2}, {"grad_accum", 1}, {"seq_len", 64}};
  ctx.fingerprint = {{"git_commit", "abc123"}, {"runtime", {{"libtorch", "2.11.0"}}}};
  ctx.hardware_key = "2x NVIDIA H100 80GB HBM3 nvlink";
  ctx.flops_per_token = 6e9;
  ctx.peak_flops = peak;
  return ctx;
}

TEST(Results, LongCsv) {
  const auto doc = results::make_run_document(csv_context(1e12), two_ranks());
  const auto header = results::long_csv_header();
  ASSERT_FALSE(header.empty());
  EXPECT_EQ(header.back(), '\n');
  const auto header_columns = columns(lines_of(header).at(0));
  EXPECT_EQ(header_columns, 14u);

  const auto rows = lines_of(results::long_csv_rows(doc));
  std::set<std::string> numeric;
  for (const auto& [k, v] : doc.at("summary").items())
    if (v.is_number()) numeric.insert(k);
  for (const char* k : {"measured_steps", "tokens_per_s", "tokens_per_s_per_gpu", "step_time_p50_s",
                        "step_time_p95_s", "mfu", "flops_per_token"})
    EXPECT_TRUE(numeric.count(k)) << k;
  EXPECT_EQ(rows.size(), numeric.size());

  std::map<std::string, std::string> by_metric;
  for (const auto& row : rows) {
    EXPECT_EQ(columns(row), header_columns) << row;
    const auto cols = split(row, ',');
    EXPECT_EQ(cols[0], "\"2x NVIDIA H100 80GB HBM3 nvlink\"");
    EXPECT_EQ(cols[1], "abc123");
    EXPECT_EQ(cols[2], "2.11.0");
    EXPECT_EQ(cols[3], "lora-a/builtin/n2/b2/g1/s64");
    EXPECT_EQ(cols[5], "1b");
    EXPECT_EQ(cols[8], "2");
    EXPECT_TRUE(by_metric.emplace(cols[12], cols[13]).second) << "metric twice: " << cols[12];
  }
  EXPECT_EQ(by_metric.at("measured_steps"), "4");
  EXPECT_DOUBLE_EQ(std::stod(by_metric.at("tokens_per_s")), 835.0 / 7.75);

  // Unknown MFU is null in the document, so it has no row.
  const auto no_peak = lines_of(results::long_csv_rows(results::make_run_document(csv_context(0), two_ranks())));
  EXPECT_EQ(no_peak.size(), rows.size() - 1);
  for (const auto& row : no_peak) EXPECT_NE(split(row, ',')[12], "mfu");
}

using ResultFiles = TempDirTest;

TEST_F(ResultFiles, LoadRunDocument) {
  const auto doc = results::make_run_document(csv_context(1e12), two_ranks());
  const auto good = path("run.json");
  write_file_atomic(good, doc.dump(2));
  const auto loaded = results::load_run_document(good);
  EXPECT_EQ(loaded.at("summary"), doc.at("summary"));
  EXPECT_EQ(loaded.at("steps").size(), 6u);

  auto no_summary = doc;
  no_summary.erase("summary");
  const auto p1 = path("no-summary.json");
  write_file_atomic(p1, no_summary.dump());
  auto msg = message_of<UsageError>([&] { results::load_run_document(p1); });
  EXPECT_TRUE(contains(msg, p1)) << msg;
  EXPECT_TRUE(contains(msg, "summary")) << msg;

  auto future = doc;
  future["schema_version"] = results::kSchemaVersion + 1;
  const auto p2 = path("future.json");
  write_file_atomic(p2, future.dump());
  msg = message_of<UsageError>([&] { results::load_run_document(p2); });
  EXPECT_TRUE(contains(msg, p2)) << msg;
  EXPECT_TRUE(contains(msg, "schema")) << msg;

  const auto p3 = path("not-json.json");
  write_file_atomic(p3, "{\"schema_version\": 1,");
  msg = message_of<UsageError>([&] { results::load_run_document(p3); });
  EXPECT_TRUE(contains(msg, p3)) << msg;

  const auto p4 = path("rank.json");  // a rank report is not a run document
  write_file_atomic(p4, results::to_json(two_ranks()[0]).dump());
  msg = message_of<UsageError>([&] { results::load_run_document(p4); });
  EXPECT_TRUE(contains(msg, p4)) << msg;

  const auto missing = path("missing.json");
  msg = message_of<UsageError>([&] { results::load_run_document(missing); });
  EXPECT_TRUE(contains(msg, missing)) << msg;
}

// ---------------------------------------------------------------------------------------------
// File and text helpers

using Files = TempDirTest;

TEST_F(Files, WriteAtomicReplacesAndLeavesNoTemp) {
  const auto p = path("out.json");
  write_file_atomic(p, "first version, rather long\n");
  EXPECT_EQ(read_file(p), "first version, rather long\n");
  write_file_atomic(p, "second");
  EXPECT_EQ(read_file(p), "second");  // replaced, not appended or overlaid
  write_file_atomic(p, "");
  EXPECT_EQ(read_file(p), "");
  EXPECT_EQ(entries(), std::vector<std::string>{"out.json"});

  const std::string big(3 << 20, 'x');
  write_file_atomic(p, big);
  EXPECT_EQ(read_file(p), big);
  EXPECT_EQ(entries(), std::vector<std::string>{"out.json"});
}

TEST_F(Files, FailedWriteLeavesNoTempFile) {
  // The rename fails (a non-empty folder is in the way) after the temp file was written in full.
  std::filesystem::create_directories(path("out.json/inside"));
  const auto msg = message_of<RunError>([&] { write_file_atomic(path("out.json"), "content"); });
  EXPECT_TRUE(contains(msg, path("out.json"))) << msg;
  EXPECT_EQ(entries(), std::vector<std::string>{"out.json"});
}

TEST_F(Files, OutputPathsCheckedBeforeARun) {
  std::filesystem::create_directories(path("folder"));
  EXPECT_TRUE(contains(message_of<UsageError>([&] { check_output_file("--out", path("folder")); }), "is a folder"));
  EXPECT_TRUE(contains(message_of<UsageError>([&] { check_output_file("--out", "/proc/x/y.json"); }), "/proc/x"));
  EXPECT_TRUE(contains(message_of<UsageError>([&] { check_output_file("--out", ""); }), "--out"));
  EXPECT_NO_THROW(check_output_file("--out", path("new.json")));
  EXPECT_TRUE(contains(message_of<UsageError>([&] { check_runs_dir("--runs-dir", ""); }), "--runs-dir: empty"));
  write_file_atomic(path("file"), "x");
  EXPECT_TRUE(contains(message_of<UsageError>([&] { check_runs_dir("--runs-dir", path("file")); }), "not a folder"));
  EXPECT_NO_THROW(check_runs_dir("--runs-dir", path("not-yet")));
  EXPECT_EQ(entries().size(), 2u);  // the checks create nothing
}

TEST_F(Files, WriteIntoMissingFolderFails) {
  const auto p = path("no/such/folder/out.json");
  const auto msg = message_of<RunError>([&] { write_file_atomic(p, "x"); });
  EXPECT_TRUE(contains(msg, p)) << msg;
}

TEST_F(Files, ReadMissingNamesThePath) {
  const auto p = path("absent.txt");
  const auto msg = message_of<RunError>([&] { read_file(p); });
  EXPECT_TRUE(contains(msg, p)) << msg;
}

TEST(Strings, FormatSi) {
  EXPECT_EQ(format_si(12345), "12.3k");
  EXPECT_EQ(format_si(999), "999");
  EXPECT_EQ(format_si(0), "0");
  EXPECT_EQ(format_si(1000), "1.0k");
  EXPECT_EQ(format_si(1'500'000), "1.5M");
  EXPECT_EQ(format_si(2.5e9), "2.5G");
  EXPECT_EQ(format_si(989e12), "989.0T");
  EXPECT_EQ(format_si(1234567, 2), "1.23M");
  EXPECT_EQ(format_si(-12345), "-12.3k");
}

TEST(Strings, FormatBytes) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1024), "1.00 KiB");
  EXPECT_EQ(format_bytes(1.5 * 1024 * 1024 * 1024), "1.50 GiB");
  EXPECT_EQ(format_bytes(80.0 * (1ull << 30)), "80.00 GiB");
  EXPECT_EQ(format_bytes(3.0 * (1ull << 40)), "3.00 TiB");
}

TEST(Strings, SplitAndParse) {
  EXPECT_EQ(split("a,,b", ','), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(split("", ','), (std::vector<std::string>{""}));
  EXPECT_EQ(parse_int("42"), 42);
  EXPECT_EQ(parse_int("-7"), -7);
  EXPECT_FALSE(parse_int("4x").has_value());
  EXPECT_FALSE(parse_int("").has_value());
  EXPECT_FALSE(parse_int("1.5").has_value());
  EXPECT_DOUBLE_EQ(parse_double("3e-5").value(), 3e-5);
  EXPECT_FALSE(parse_double("nan").has_value());
  EXPECT_FALSE(parse_double("1.0x").has_value());
}

// ---------------------------------------------------------------------------------------------
// Figures across repeats (results/cells.h)

TEST(Repeats, SpreadIsMedianAndRange) {
  const std::vector<double> v{30, 10, 20, 100};
  const auto s = results::spread_of(v);
  EXPECT_EQ(s.n, 4);
  EXPECT_DOUBLE_EQ(s.median, 25);
  EXPECT_DOUBLE_EQ(s.min, 10);
  EXPECT_DOUBLE_EQ(s.max, 100);
  const auto none = results::spread_of({});
  EXPECT_EQ(none.n, 0);
  EXPECT_TRUE(std::isnan(none.median));
}

TEST(Repeats, ScalingFromMediansAgainstTheOneRankCellOfTheGroup) {
  // Group g: the 1-rank cell's repeats have median 100; the 2-rank cell's median 150 -> 75%.
  // Group h has no 1-rank cell that ran, so its cells get no efficiency.
  const std::vector<results::CellFigures> cells{
      {"g/n2#b", "g", 2, {140, 150, 400}},
      {"g/n1#a", "g", 1, {90, 100, 130}},
      {"h/n1#c", "h", 1, {}},
      {"h/n2#d", "h", 2, {50}},
      {"g/n4#e", "g", 4, {}},
  };
  const auto points = results::scaling_efficiencies(cells);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].cell_id, "g/n2#b");
  EXPECT_EQ(points[0].nproc, 2);
  EXPECT_DOUBLE_EQ(points[0].efficiency, 150.0 / (2 * 100.0));
  EXPECT_EQ(points[0].baseline_cell_id, "g/n1#a");
  EXPECT_EQ(points[1].cell_id, "g/n1#a");
  EXPECT_DOUBLE_EQ(points[1].efficiency, 1.0);
  const auto j = results::to_json(points[0]);
  EXPECT_EQ(j.at("group"), "g");
  EXPECT_EQ(j.at("baseline_cell_id"), "g/n1#a");
  EXPECT_DOUBLE_EQ(j.at("efficiency").get<double>(), 0.75);
}

// A/A floors (issue 10): curves over the measured steps only; the floor is the largest gap of the
// cell against its twin and between the cell's own repeats; the distance of two cells the median
// over pairs of repeats; curves that cover different steps are not equal work and give nothing.
TEST(LossCurves, FloorAndDistanceOverMeasuredSteps) {
  const nlohmann::json doc = {{"steps",
                               {{{"step", 0}, {"warmup", true}, {"loss", 9.0}},
                                {{"step", 1}, {"warmup", false}, {"loss", 4.0}},
                                {{"step", 2}, {"warmup", false}, {"loss", 3.0}}}}};
  EXPECT_EQ(results::measured_losses(doc), (std::vector<double>{4.0, 3.0}));
  EXPECT_TRUE(results::measured_losses(nlohmann::json::object()).empty());

  EXPECT_DOUBLE_EQ(*results::max_loss_difference(std::vector<double>{4.0, 3.0}, std::vector<double>{3.9, 3.25}), 0.25);
  EXPECT_FALSE(results::max_loss_difference(std::vector<double>{4.0}, std::vector<double>{4.0, 3.0}));
  EXPECT_FALSE(results::max_loss_difference(std::vector<double>{}, std::vector<double>{}));

  const results::LossCurves cell{{4.0, 3.0}, {4.0, 3.01}}, twin{{4.02, 3.0}};
  // Twin against repeat 1: 0.02, against repeat 2: 0.02; the repeats: 0.01.
  EXPECT_NEAR(*results::aa_floor(cell, twin), 0.02, 1e-12);
  EXPECT_NEAR(*results::aa_floor({{4.0, 3.0}, {4.0, 3.05}}, twin), 0.05, 1e-12);  // repeats wider than the twin
  EXPECT_NEAR(*results::aa_floor({{4.0, 3.0}}, twin), 0.02, 1e-12);
  EXPECT_FALSE(results::aa_floor({{4.0, 3.0}}, {}));  // a twin that did not run: no floor
  EXPECT_FALSE(results::aa_floor({{4.0, 3.0}}, {{4.0}}));

  // Pairs: 0.1, 0.2, 0.1, 0.4 -> median 0.15.
  EXPECT_NEAR(*results::loss_curve_distance({{4.0, 3.0}, {4.2, 3.0}}, {{4.1, 3.0}, {3.8, 3.0}}), 0.15, 1e-12);
  EXPECT_FALSE(results::loss_curve_distance({{4.0, 3.0}}, {}));
}

// The bias test beside the floor: the signed mean difference, which noise (flipping sign from step
// to step) averages out of and a curve lying below another at every step keeps.
TEST(LossCurves, BiasIsTheSignedMeanDifference) {
  EXPECT_NEAR(*results::mean_loss_difference(std::vector<double>{4.0, 3.0}, std::vector<double>{3.9, 3.25}), -0.075, 1e-12);
  EXPECT_NEAR(*results::mean_loss_difference(std::vector<double>{3.9, 3.25}, std::vector<double>{4.0, 3.0}), 0.075, 1e-12);
  // Noise that flips sign: a large max, no bias.
  EXPECT_NEAR(*results::mean_loss_difference(std::vector<double>{4.1, 2.9}, std::vector<double>{4.0, 3.0}), 0.0, 1e-12);
  EXPECT_FALSE(results::mean_loss_difference(std::vector<double>{4.0}, std::vector<double>{4.0, 3.0}));
  EXPECT_FALSE(results::mean_loss_difference(std::vector<double>{}, std::vector<double>{}));

  // Means, cell minus twin: repeat 1 -0.01, repeat 2 +0.02; repeat 1 minus repeat 2: -0.03, the largest.
  const results::LossCurves cell{{4.0, 3.0}, {4.0, 3.06}}, twin{{4.02, 3.0}};
  EXPECT_NEAR(*results::aa_bias(cell, twin), 0.03, 1e-12);
  EXPECT_NEAR(*results::aa_bias({{4.0, 3.0}}, twin), 0.01, 1e-12);                    // the twin alone
  EXPECT_NEAR(*results::aa_bias({{4.1, 2.9}}, {{4.0, 3.0}}), 0.0, 1e-12);             // a max floor of 0.1, no bias
  EXPECT_FALSE(results::aa_bias({{4.0, 3.0}}, {}));
  EXPECT_FALSE(results::aa_bias({{4.0, 3.0}}, {{4.0}}));

  // Pairs, a minus b: -0.05, -0.15, +0.1, 0 -> median -0.025.
  EXPECT_NEAR(*results::loss_curve_bias({{3.9, 3.0}, {4.2, 3.0}}, {{4.0, 3.0}, {4.1, 3.1}}), -0.025, 1e-12);
  EXPECT_NEAR(*results::loss_curve_bias({{4.0, 3.0}, {4.1, 3.1}}, {{3.9, 3.0}, {4.2, 3.0}}), 0.025, 1e-12);  // signed
  EXPECT_FALSE(results::loss_curve_bias({{4.0, 3.0}}, {}));
  EXPECT_FALSE(results::loss_curve_bias({{4.0, 3.0}}, {{4.0}}));
}

}  // namespace
}  // namespace ddpbench
