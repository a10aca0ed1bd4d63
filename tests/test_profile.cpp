// Trace analysis on hand-built activity whose answers are known: interval arithmetic per step (busy,
// compute, communication, exposed communication, overlap, idle, host-bound gaps), step windows,
// phases, top kernels, memory peaks, the straggler view, and the formats (activity JSON, Chrome trace).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/strings.h"
#include "profile/activity.h"
#include "profile/analysis.h"
#include "profile/chrome_trace.h"
#include "test_helpers.h"

namespace ddpbench {
namespace {

namespace fs = std::filesystem;
using namespace profile;
using testing_helpers::contains;
using testing_helpers::message_of;

KernelRecord kernel(std::uint64_t start, std::uint64_t end, std::string name = "gemm", std::uint32_t stream = 7) {
  KernelRecord k;
  k.start = start;
  k.end = end;
  k.stream = stream;
  k.name = std::move(name);
  return k;
}

KernelRecord nccl(std::uint64_t start, std::uint64_t end, std::uint32_t stream = 20) {
  return kernel(start, end, "ncclDevKernel_AllReduce_Sum_f32_RING_LL", stream);
}

MemcpyRecord memcpy_rec(std::uint64_t start, std::uint64_t end, std::string kind = "HtoD") {
  MemcpyRecord m;
  m.start = start;
  m.end = end;
  m.stream = 7;
  m.bytes = 4096;
  m.kind = std::move(kind);
  return m;
}

MemsetRecord memset_rec(std::uint64_t start, std::uint64_t end) {
  MemsetRecord m;
  m.start = start;
  m.end = end;
  m.stream = 7;
  m.bytes = 64;
  return m;
}

RangeRecord range(std::uint64_t start, std::uint64_t end, std::string name = kStepRange, std::uint64_t thread = 1) {
  return {start, end, thread, std::move(name)};
}

MemoryRecord mem(std::uint64_t t, std::uint64_t bytes, bool allocation, std::uint32_t device = 0) {
  MemoryRecord m;
  m.timestamp = t;
  m.bytes = bytes;
  m.allocation = allocation;
  m.device = device;
  m.address = 0x1000 + t;
  return m;
}

AnalysisOptions opts(std::uint64_t gap = 50, int warmup = 0) {
  AnalysisOptions o;
  o.gap_threshold_ns = gap;
  o.warmup = warmup;
  return o;
}

void expect_invariant(const StepBreakdown& s) {
  EXPECT_EQ(s.compute_ns + s.exposed_comm_ns + s.other_ns + s.idle_ns, s.step_ns) << "step " << s.index;
  EXPECT_LE(s.exposed_comm_ns, s.comm_ns);
  EXPECT_EQ(s.overlapped_comm_ns + s.exposed_comm_ns, s.comm_ns);
  EXPECT_LE(s.busy_ns, s.step_ns);
}

// ---------------------------------------------------------------------------------------------------
// Interval arithmetic within one step.

TEST(ProfileAnalysis, OverlappingAndNestedKernelsOnOneStream) {
  RankActivity a;
  a.ranges = {range(0, 1000)};
  // [100,300) holds [200,250); [250,400) overlaps its tail: union [100,400).
  a.kernels = {kernel(100, 300), kernel(200, 250), kernel(250, 400)};
  const auto b = analyze(a, opts(50));
  ASSERT_EQ(b.steps.size(), 1u);
  const auto& s = b.steps[0];
  EXPECT_EQ(s.step_ns, 1000u);
  EXPECT_EQ(s.busy_ns, 300u);
  EXPECT_EQ(s.compute_ns, 300u);
  EXPECT_EQ(s.comm_ns, 0u);
  EXPECT_EQ(s.exposed_comm_ns, 0u);
  EXPECT_EQ(s.other_ns, 0u);
  EXPECT_EQ(s.idle_ns, 700u);
  EXPECT_TRUE(std::isnan(s.overlap));
  EXPECT_EQ(s.host_gaps, 2u);  // [0,100) and [400,1000)
  EXPECT_EQ(s.host_gap_ns, 700u);
  EXPECT_EQ(s.kernels, 3u);
  expect_invariant(s);
}

TEST(ProfileAnalysis, KernelsOnSeveralStreamsCountOnceWhenConcurrent) {
  RankActivity a;
  a.ranges = {range(0, 500)};
  a.kernels = {kernel(0, 200, "gemm", 7), kernel(100, 300, "softmax", 13), kernel(250, 260, "add", 21),
               kernel(400, 450, "gemm", 13)};
  const auto s = analyze(a, opts(50)).steps.at(0);
  EXPECT_EQ(s.busy_ns, 350u);
  EXPECT_EQ(s.compute_ns, 350u);
  EXPECT_EQ(s.idle_ns, 150u);
  EXPECT_EQ(s.host_gaps, 1u);  // [300,400); [450,500) is 50 ns, not longer than the threshold
  EXPECT_EQ(s.host_gap_ns, 100u);
  EXPECT_EQ(s.launch_gaps, 1u);  // [450,500)
  expect_invariant(s);
}

TEST(ProfileAnalysis, CommunicationHalfCoveredAndFullyExposed) {
  RankActivity a;
  a.ranges = {range(0, 1000)};
  a.kernels = {kernel(0, 100),       // compute
               nccl(50, 150),        // half under compute: 50 overlapped, 50 exposed
               nccl(300, 400, 21)};  // nothing computing: 100 exposed
  const auto s = analyze(a, opts()).steps.at(0);
  EXPECT_EQ(s.compute_ns, 100u);
  EXPECT_EQ(s.comm_ns, 200u);
  EXPECT_EQ(s.exposed_comm_ns, 150u);
  EXPECT_EQ(s.overlapped_comm_ns, 50u);
  EXPECT_DOUBLE_EQ(s.overlap, 0.25);
  EXPECT_EQ(s.busy_ns, 250u);
  EXPECT_EQ(s.idle_ns, 750u);
  expect_invariant(s);
}

TEST(ProfileAnalysis, CommunicationEntirelyUnderComputeIsFullyOverlapped) {
  RankActivity a;
  a.ranges = {range(0, 100)};
  a.kernels = {kernel(0, 100, "gemm", 7), nccl(10, 60), kernel(0, 100, "gemm", 8)};
  const auto s = analyze(a, opts()).steps.at(0);
  EXPECT_EQ(s.exposed_comm_ns, 0u);
  EXPECT_DOUBLE_EQ(s.overlap, 1.0);
  EXPECT_EQ(s.idle_ns, 0u);
  expect_invariant(s);
}

TEST(ProfileAnalysis, NcclPrefixIsCaseSensitive) {
  RankActivity a;
  a.ranges = {range(0, 100)};
  a.kernels = {kernel(0, 10, "NcclLookalike"), kernel(20, 30, "my_nccl_kernel"),
               kernel(40, 50, "ncclKernel_Broadcast")};
  const auto s = analyze(a, opts()).steps.at(0);
  EXPECT_EQ(s.compute_ns, 20u);
  EXPECT_EQ(s.comm_ns, 10u);
}

TEST(ProfileAnalysis, HostBoundGapsAreThoseLongerThanTheThreshold) {
  RankActivity a;
  a.ranges = {range(0, 400)};
  // Gaps: [0,50) = 50 (not longer), [60,111) = 51, [121,200) = 79, [210,400) = 190.
  a.kernels = {kernel(50, 60), kernel(111, 121), kernel(200, 210)};
  auto s = analyze(a, opts(50)).steps.at(0);
  EXPECT_EQ(s.host_gaps, 3u);
  EXPECT_EQ(s.host_gap_ns, 51u + 79u + 190u);
  EXPECT_EQ(s.idle_ns, 370u);
  s = analyze(a, opts(100)).steps.at(0);
  EXPECT_EQ(s.host_gaps, 1u);
  EXPECT_EQ(s.host_gap_ns, 190u);
  s = analyze(a, opts(1000)).steps.at(0);
  EXPECT_EQ(s.host_gaps, 0u);
  // Default threshold: 50 us.
  EXPECT_EQ(AnalysisOptions{}.gap_threshold_ns, 50'000u);
}

TEST(ProfileAnalysis, TouchingKernelsLeaveNoGap) {
  RankActivity a;
  a.ranges = {range(0, 300)};
  a.kernels = {kernel(0, 100, "a", 1), kernel(100, 200, "b", 2), kernel(200, 300, "c", 1)};
  const auto s = analyze(a, opts(0)).steps.at(0);
  EXPECT_EQ(s.host_gaps, 0u);
  EXPECT_EQ(s.idle_ns, 0u);
}

TEST(ProfileAnalysis, KernelsCrossingAStepBoundaryAreClipped) {
  RankActivity a;
  a.ranges = {range(0, 100), range(100, 200)};
  a.kernels = {kernel(80, 130), nccl(90, 160), kernel(190, 250)};
  const auto b = analyze(a, opts(1000));
  ASSERT_EQ(b.steps.size(), 2u);
  const auto& s0 = b.steps[0];
  const auto& s1 = b.steps[1];
  EXPECT_EQ(s0.compute_ns, 20u);
  EXPECT_EQ(s0.comm_ns, 10u);
  EXPECT_EQ(s0.exposed_comm_ns, 0u);
  EXPECT_EQ(s0.busy_ns, 20u);
  EXPECT_EQ(s0.kernels, 2u);  // kernels are counted where they start
  EXPECT_EQ(s1.compute_ns, 30u + 10u);
  EXPECT_EQ(s1.comm_ns, 60u);
  EXPECT_EQ(s1.exposed_comm_ns, 30u);  // [130,160)
  EXPECT_EQ(s1.busy_ns, 70u);
  EXPECT_EQ(s1.kernels, 1u);
  expect_invariant(s0);
  expect_invariant(s1);
}

TEST(ProfileAnalysis, MemcpyOnlyTimeIsOther) {
  RankActivity a;
  a.ranges = {range(0, 100)};
  a.memcpys = {memcpy_rec(10, 30)};
  a.memsets = {memset_rec(20, 40)};
  a.kernels = {kernel(35, 50)};
  const auto s = analyze(a, opts()).steps.at(0);
  EXPECT_EQ(s.busy_ns, 40u);        // [10,50)
  EXPECT_EQ(s.compute_ns, 15u);     // [35,50)
  EXPECT_EQ(s.memory_ops_ns, 30u);  // [10,40), whether a kernel runs or not
  EXPECT_EQ(s.other_ns, 25u);       // [10,35)
  EXPECT_EQ(s.idle_ns, 60u);
  expect_invariant(s);
}

TEST(ProfileAnalysis, ZeroLengthAndBackwardsRecordsCoverNothing) {
  RankActivity a;
  a.ranges = {range(0, 100)};
  a.kernels = {kernel(10, 10, "empty"), kernel(50, 40, "backwards"), nccl(60, 60)};
  const auto b = analyze(a, opts(1000));
  const auto& s = b.steps.at(0);
  EXPECT_EQ(s.busy_ns, 0u);
  EXPECT_EQ(s.comm_ns, 0u);
  EXPECT_TRUE(std::isnan(s.overlap));
  EXPECT_EQ(s.idle_ns, 100u);
  EXPECT_EQ(s.kernels, 3u);
  // They still count as launches among the top kernels, with no time.
  ASSERT_EQ(b.top_kernels.size(), 3u);
  for (const auto& k : b.top_kernels) {
    EXPECT_EQ(k.count, 1u);
    EXPECT_EQ(k.total_ns, 0u);
    EXPECT_EQ(k.share, 0.0);
  }
}

TEST(ProfileAnalysis, EmptyWindows) {
  RankActivity a;
  // A zero-length step, and a step in which the GPU does nothing.
  a.ranges = {range(50, 50), range(100, 300)};
  a.kernels = {kernel(0, 60), kernel(400, 500)};
  const auto b = analyze(a, opts(50));
  ASSERT_EQ(b.steps.size(), 2u);
  const auto& z = b.steps[0];
  EXPECT_EQ(z.step_ns, 0u);
  EXPECT_EQ(z.busy_ns, 0u);
  EXPECT_EQ(z.idle_ns, 0u);
  EXPECT_EQ(z.host_gaps, 0u);
  EXPECT_TRUE(std::isnan(z.overlap));
  expect_invariant(z);
  const auto& i = b.steps[1];
  EXPECT_EQ(i.step_ns, 200u);
  EXPECT_EQ(i.idle_ns, 200u);
  EXPECT_EQ(i.host_gaps, 1u);
  EXPECT_EQ(i.host_gap_ns, 200u);
  expect_invariant(i);
}

// ---------------------------------------------------------------------------------------------------
// Step windows.

TEST(ProfileWindows, NoRangesGiveOneWindowOverAllGpuActivity) {
  RankActivity a;
  a.kernels = {kernel(500, 600), kernel(100, 200)};
  a.memcpys = {memcpy_rec(50, 70)};
  a.memsets = {memset_rec(650, 700)};
  const auto w = step_windows(a);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].start, 50u);
  EXPECT_EQ(w[0].end, 700u);
  const auto b = analyze(a, opts(1000));
  EXPECT_FALSE(b.steps_from_ranges);
  ASSERT_EQ(b.steps.size(), 1u);
  EXPECT_EQ(b.steps[0].step_ns, 650u);
  EXPECT_EQ(b.steps[0].busy_ns, 20u + 100u + 100u + 50u);
  expect_invariant(b.steps[0]);
}

TEST(ProfileWindows, NoActivityAtAllGivesNoSteps) {
  RankActivity a;
  EXPECT_TRUE(step_windows(a).empty());
  const auto b = analyze(a);
  EXPECT_TRUE(b.steps.empty());
  EXPECT_EQ(b.summary.measured_steps, 0);
  EXPECT_TRUE(std::isnan(b.summary.median.step_ns));
  EXPECT_TRUE(std::isnan(b.summary.compute_fraction));
  const auto j = to_json(b);
  EXPECT_TRUE(j["summary"]["median"]["step_ns"].is_null());
  EXPECT_TRUE(j["summary"]["fractions"]["idle"].is_null());
  EXPECT_TRUE(contains(render_breakdown(b), "no measured steps"));
}

TEST(ProfileWindows, StepRangesAreSortedAndOtherRangesIgnored) {
  RankActivity a;
  a.ranges = {range(200, 300), range(210, 250, kForwardRange), range(0, 100), range(100, 200)};
  const auto w = step_windows(a);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].start, 0u);
  EXPECT_EQ(w[1].start, 100u);
  EXPECT_EQ(w[2].start, 200u);
  EXPECT_EQ(w[2].name, "step");
}

TEST(ProfileWindows, RegexAndExactStepMarkers) {
  RankActivity a;
  a.ranges = {range(0, 100, "train_step_0"), range(100, 250, "train_step_1"), range(10, 20, "optimizer_step"),
              range(250, 260, "train_step_1_extra")};
  auto w = step_windows(a, "re:^train_step_\\d+$");
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].name, "train_step_0");
  EXPECT_EQ(w[1].end, 250u);
  // A regex finds a match anywhere in the name unless anchored.
  EXPECT_EQ(step_windows(a, "re:step").size(), 4u);
  w = step_windows(a, "train_step_1");
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].start, 100u);
  // The analysis takes the marker from its options.
  AnalysisOptions o;
  o.step_marker = "re:^train_step_\\d+$";
  const auto b = analyze(a, o);
  ASSERT_EQ(b.steps.size(), 2u);
  EXPECT_EQ(b.steps[1].step_ns, 150u);
  EXPECT_EQ(b.step_marker, o.step_marker);
}

TEST(ProfileWindows, BadMarkersAreUsageErrors) {
  RankActivity a;
  a.ranges = {range(0, 100, "fwd"), range(0, 100, "bwd")};
  const auto msg = message_of<UsageError>([&] { step_windows(a, "step"); });
  EXPECT_TRUE(contains(msg, "'step'")) << msg;
  EXPECT_TRUE(contains(msg, "'bwd', 'fwd'")) << msg;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { step_windows(a, "re:(unclosed"); }), "regex"));
  message_of<UsageError>([&] { step_windows(a, ""); });
  message_of<UsageError>([&] { analyze(a, AnalysisOptions{.step_marker = "fwd", .warmup = -1}); });
  message_of<UsageError>([&] { analyze(a, AnalysisOptions{.step_marker = "fwd", .top_n = -1}); });
}

// ---------------------------------------------------------------------------------------------------
// Phases, warm-up, summary, top kernels, memory.

TEST(ProfileAnalysis, PhaseTimesPerStepCountNestedRangesOnce) {
  RankActivity a;
  a.ranges = {range(0, 1000), range(0, 100, kDataRange), range(100, 400, kForwardRange),
              range(400, 800, kBackwardRange), range(800, 900, kAllreduceRange),
              // Per-bucket allreduce ranges inside the step's allreduce, and one during backward.
              range(810, 850, kAllreduceRange, 2), range(850, 890, kAllreduceRange, 2),
              range(700, 750, kAllreduceRange, 2), range(900, 990, kOptimizerRange), range(1000, 2000),
              range(1950, 2100, kDataRange),  // crosses into a time after the last step
              range(0, 2000, "unrelated")};
  const auto b = analyze(a, opts());
  ASSERT_EQ(b.steps.size(), 2u);
  const auto& p0 = b.steps[0].phases_ns;
  EXPECT_EQ(p0.at(kDataRange), 100u);
  EXPECT_EQ(p0.at(kForwardRange), 300u);
  EXPECT_EQ(p0.at(kBackwardRange), 400u);
  EXPECT_EQ(p0.at(kAllreduceRange), 150u);
  EXPECT_EQ(p0.at(kOptimizerRange), 90u);
  EXPECT_EQ(p0.size(), 5u);
  const auto& p1 = b.steps[1].phases_ns;
  EXPECT_EQ(p1.at(kDataRange), 50u);
  EXPECT_EQ(p1.at(kForwardRange), 0u);
  EXPECT_EQ(b.summary.total_phases_ns.at(kDataRange), 150u);
  EXPECT_DOUBLE_EQ(b.summary.median_phases_ns.at(kDataRange), 75.0);
}

TEST(ProfileAnalysis, WarmupStepsAreLeftOutOfSummaryAndTopKernels) {
  RankActivity a;
  a.ranges = {range(0, 1000), range(1000, 1100), range(1100, 1300), range(1300, 1400)};
  a.kernels = {kernel(0, 900, "warmup_only"), kernel(1000, 1050, "gemm"), kernel(1100, 1200, "gemm"), nccl(1200, 1300),
               kernel(1300, 1310, "gemm")};
  const auto b = analyze(a, opts(50, 1));
  ASSERT_EQ(b.steps.size(), 4u);
  EXPECT_TRUE(b.steps[0].warmup);
  EXPECT_FALSE(b.steps[1].warmup);
  EXPECT_EQ(b.summary.warmup_steps, 1);
  EXPECT_EQ(b.summary.measured_steps, 3);
  EXPECT_DOUBLE_EQ(b.summary.median.step_ns, 100.0);  // of 100, 200, 100
  EXPECT_DOUBLE_EQ(b.summary.step_ns_mean, 400.0 / 3);
  EXPECT_EQ(b.summary.total.step_ns, 400u);
  EXPECT_EQ(b.summary.total.compute_ns, 160u);
  EXPECT_EQ(b.summary.total.exposed_comm_ns, 100u);
  EXPECT_EQ(b.summary.total.idle_ns, 140u);
  EXPECT_DOUBLE_EQ(b.summary.compute_fraction, 0.4);
  EXPECT_DOUBLE_EQ(b.summary.exposed_comm_fraction, 0.25);
  EXPECT_DOUBLE_EQ(b.summary.idle_fraction, 0.35);
  EXPECT_DOUBLE_EQ(b.summary.other_fraction, 0.0);
  EXPECT_DOUBLE_EQ(b.summary.overlap, 0.0);
  EXPECT_DOUBLE_EQ(b.summary.median_overlap, 0.0);  // only the step that communicates
  for (const auto& k : b.top_kernels) EXPECT_NE(k.name, "warmup_only");
  ASSERT_EQ(b.top_kernels.size(), 2u);
  EXPECT_EQ(b.top_kernels[0].name, "gemm");
  EXPECT_EQ(b.top_kernels[0].total_ns, 160u);
  EXPECT_EQ(b.top_kernels[0].count, 3u);
  EXPECT_DOUBLE_EQ(b.top_kernels[0].share, 160.0 / 260.0);

  // Warm-up covering every window leaves nothing measured, and says so rather than failing.
  const auto all = analyze(a, opts(50, 10));
  EXPECT_EQ(all.summary.measured_steps, 0);
  EXPECT_EQ(all.summary.warmup_steps, 4);
  EXPECT_TRUE(all.top_kernels.empty());
}

TEST(ProfileAnalysis, TopKernelsOrderAndTruncation) {
  RankActivity a;
  a.ranges = {range(0, 10'000)};
  std::uint64_t t = 0;
  auto add = [&](const std::string& name, std::uint64_t len, int times) {
    for (int i = 0; i < times; ++i) {
      a.kernels.push_back(kernel(t, t + len, name, static_cast<std::uint32_t>(i % 3)));
      t += len + 1;
    }
  };
  add("small", 10, 3);  // 30
  add("big", 100, 2);   // 200
  add("mid_b", 25, 2);  // 50, 2 launches
  add("mid_a", 50, 1);  // 50, 1 launch
  add("mid_c", 10, 5);  // 50, 5 launches
  add("ncclKernel_AllGather", 70, 1);
  AnalysisOptions o = opts();
  o.top_n = 4;
  const auto b = analyze(a, o);
  ASSERT_EQ(b.top_kernels.size(), 4u);
  EXPECT_EQ(b.top_kernels[0].name, "big");
  EXPECT_EQ(b.top_kernels[1].name, "ncclKernel_AllGather");
  // Equal time: more launches first, then by name.
  EXPECT_EQ(b.top_kernels[2].name, "mid_c");
  EXPECT_EQ(b.top_kernels[3].name, "mid_b");
  EXPECT_EQ(b.top_kernels[2].count, 5u);
  EXPECT_NEAR(b.top_kernels[0].share, 200.0 / 450.0, 1e-12);
  EXPECT_EQ(AnalysisOptions{}.top_n, 15);
  EXPECT_EQ(analyze(a).top_kernels.size(), 6u);
}

TEST(ProfileAnalysis, KernelSummaryPerStepWithSharesOfKernelTime) {
  // Two measured steps after a warm-up. "gemm" runs twice a step; "attn" once a step, on a stream of
  // its own and under the second gemm (so the shares are of kernel time, not of busy time); "tail"
  // runs in step 1 only and crosses its end, so only its part inside the step counts.
  RankActivity a;
  a.ranges = {range(0, 1000), range(1000, 2000), range(2000, 3000)};
  a.kernels = {kernel(0, 900, "warmup_only"),
               kernel(1000, 1300, "gemm"), kernel(1400, 1700, "gemm"), kernel(1500, 1600, "attn", 9),
               kernel(2000, 2300, "gemm"), kernel(2400, 2700, "gemm"), kernel(2500, 2600, "attn", 9),
               kernel(2900, 3100, "tail")};
  const auto b = analyze(a, opts(50, 1));
  ASSERT_EQ(b.summary.measured_steps, 2);
  EXPECT_EQ(b.kernel_time.total_ns, 4 * 300u + 2 * 100u + 100u);
  EXPECT_EQ(b.kernel_time.launches, 7u);
  EXPECT_EQ(b.kernel_time.distinct, 3u);
  ASSERT_EQ(b.top_kernels.size(), 3u);
  const KernelStat& gemm = b.top_kernels[0];
  EXPECT_EQ(gemm.name, "gemm");
  EXPECT_EQ(gemm.short_name, "gemm");
  EXPECT_EQ(gemm.count, 4u);
  EXPECT_DOUBLE_EQ(gemm.count_per_step, 2.0);
  EXPECT_EQ(gemm.total_ns, 1200u);
  EXPECT_DOUBLE_EQ(gemm.ns_per_step, 600.0);
  EXPECT_DOUBLE_EQ(gemm.share, 1200.0 / 1500.0);
  EXPECT_EQ(b.top_kernels[1].name, "attn");
  EXPECT_DOUBLE_EQ(b.top_kernels[1].share, 200.0 / 1500.0);
  EXPECT_EQ(b.top_kernels[2].name, "tail");
  EXPECT_DOUBLE_EQ(b.top_kernels[2].count_per_step, 0.5);
  EXPECT_DOUBLE_EQ(b.top_kernels[2].ns_per_step, 50.0);
  double shares = 0;
  for (const auto& k : b.top_kernels) shares += k.share;
  EXPECT_DOUBLE_EQ(shares, 1.0);
  // GPU busy is less than kernel time here: attn runs under gemm.
  EXPECT_LT(b.summary.total.busy_ns, b.kernel_time.total_ns);

  const auto j = to_json(b);
  EXPECT_EQ(j["kernel_time"]["total_ns"], 1500);
  EXPECT_EQ(j["kernel_time"]["launches"], 7);
  EXPECT_EQ(j["top_kernels"][0]["short_name"], "gemm");
  EXPECT_DOUBLE_EQ(j["top_kernels"][0]["ns_per_step"].get<double>(), 600.0);
  EXPECT_DOUBLE_EQ(j["top_kernels"][2]["count_per_step"].get<double>(), 0.5);

  const std::string text = render_breakdown(b);
  for (const char* part : {"top kernels     0.00 ms/step of kernel time, 4 launches/step, 3 distinct kernels\n", "share      ms/step   per step",
                           "80.0%        0.001          2  gemm", "13.3%        0.000          1  attn",
                           "6.7%        0.000        0.5  tail"})
    EXPECT_TRUE(contains(text, part)) << part << "\n" << text;
}

TEST(ProfileRender, FifteenTopKernelsWithShortNames) {
  RankActivity a;
  a.ranges = {range(0, 100'000)};
  for (int i = 0; i < 20; ++i) {
    const std::string name = "void ns::(anonymous namespace)::kernel_" + std::to_string(i) + "<float, 4>(float const*, long)";
    a.kernels.push_back(kernel(static_cast<std::uint64_t>(i) * 1000, static_cast<std::uint64_t>(i) * 1000 + 100 + i, name));
  }
  const auto b = analyze(a, opts());
  ASSERT_EQ(b.top_kernels.size(), 15u);
  EXPECT_EQ(b.top_kernels[0].short_name, "ns::kernel_19<float, 4>");
  const std::string text = render_breakdown(b);
  EXPECT_TRUE(contains(text, "ns::kernel_19<float, 4>\n")) << text;
  EXPECT_TRUE(contains(text, "ns::kernel_5<float, 4>\n")) << "the 15th" << text;
  EXPECT_FALSE(contains(text, "ns::kernel_4<")) << "the 16th is in no list" << text;
  EXPECT_FALSE(contains(text, "(float const*, long)")) << text;
}

TEST(ProfileAnalysis, ShortKernelNames) {
  EXPECT_EQ(short_kernel_name("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, "
                              "std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)"),
            "at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >");
  EXPECT_EQ(short_kernel_name("void ddpbench::kernels::(anonymous namespace)::rms_norm_forward_kernel<__nv_bfloat16, 8, "
                              "1>(__nv_bfloat16 const*, float*, long, int, float)"),
            "ddpbench::kernels::rms_norm_forward_kernel<__nv_bfloat16, 8, 1>");
  // Parentheses inside the template arguments (a lambda of a function) are not the parameter list.
  EXPECT_EQ(short_kernel_name("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda("
                              "at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda(float)#1}, "
                              "std::array<char*, 2ul>, 4>(int, std::array<char*, 2ul>)"),
            "at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
            "{lambda()#3}::operator()() const::{lambda(float)#1}, std::array<char*, 2ul>, 4>");
  EXPECT_EQ(short_kernel_name("void cutlass::Kernel2<cutlass_80_simt_sgemm_32x128_8x5_nt_align1>("
                              "cutlass_80_simt_sgemm_32x128_8x5_nt_align1::Params)"),
            "cutlass::Kernel2<cutlass_80_simt_sgemm_32x128_8x5_nt_align1>");
  EXPECT_EQ(short_kernel_name("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"),
            "ncclDevKernel_AllReduce_Sum_bf16_RING_LL");
  for (const char* unchanged : {"nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "kernel()x", "(weird)", ""})
    EXPECT_EQ(short_kernel_name(unchanged), unchanged);
  EXPECT_EQ(short_kernel_name("f()"), "f");
}

TEST(ProfileAnalysis, LaunchCoverageFindsDeviceRecordsWithoutTheirLaunch) {
  RankActivity a;
  a.ranges = {range(0, 1000)};
  auto with_corr = [](auto record, std::uint32_t corr) {
    record.correlation = corr;
    return record;
  };
  a.kernels = {with_corr(kernel(0, 10, "aten"), 1), with_corr(kernel(20, 30, "nvjet_gemm"), 2),
               with_corr(kernel(40, 50, "nvjet_gemm"), 3), with_corr(kernel(60, 70, "cudnn_sdpa"), 4)};
  a.memcpys = {with_corr(memcpy_rec(80, 90), 5)};
  a.memsets = {with_corr(memset_rec(95, 99), 6)};
  // Launch records switched off: nothing counts as missing.
  LaunchCoverage off = launch_coverage(a);
  EXPECT_EQ(off.api_calls, 0u);
  EXPECT_EQ(off.device_events, 6u);
  EXPECT_EQ(off.without_launch, 0u);
  EXPECT_FALSE(contains(render_breakdown(analyze(a, opts())), "no launch record"));
  // Runtime launches only, as the in-process collector recorded before the driver kind was on.
  for (std::uint32_t corr : {1u, 5u}) a.api_calls.push_back({corr * 10, corr * 10 + 1, 1, corr, 211, false, "cudaLaunchKernel"});
  const LaunchCoverage some = launch_coverage(a);
  EXPECT_EQ(some.without_launch, 4u);
  using Counts = std::vector<std::pair<std::string, std::uint64_t>>;
  EXPECT_EQ(some.most_common_without_launch, (Counts{{"nvjet_gemm", 2}, {"Memset", 1}, {"cudnn_sdpa", 1}}));
  const auto b = analyze(a, opts());
  EXPECT_EQ(b.launches.without_launch, 4u);
  EXPECT_EQ(to_json(b)["launches"]["without_launch"], 4);
  EXPECT_EQ(to_json(b)["launches"]["most_common_without_launch"][0]["name"], "nvjet_gemm");
  const std::string text = render_breakdown(b);
  EXPECT_TRUE(contains(text, "WARNING: 4 of 6 kernels, memcpys and memsets have no launch record")) << text;
  EXPECT_TRUE(contains(text, "most often nvjet_gemm x2, Memset x1, cudnn_sdpa x1\n")) << text;
  // The driver's launches recorded too: every record has its launch.
  for (std::uint32_t corr : {2u, 3u, 4u, 6u})
    a.api_calls.push_back({corr * 10, corr * 10 + 1, 1, corr, 652, true, "cuLaunchKernelEx"});
  EXPECT_EQ(launch_coverage(a).without_launch, 0u);
  EXPECT_FALSE(contains(render_breakdown(analyze(a, opts())), "WARNING"));
  // And the trace says so too.
  EXPECT_EQ(chrome_trace(a)["ddpbench"]["device_events_without_launch"], 0);
}

TEST(ProfileAnalysis, MemoryPeakWithInterleavedAllocationsAndReleases) {
  RankActivity a;
  a.ranges = {range(0, 35), range(35, 100)};
  // Delivered out of order; the running sum follows timestamps: 100, 150, 50, 130, 80.
  a.memory = {mem(30, 100, false), mem(10, 100, true), mem(20, 50, true), mem(40, 80, true), mem(50, 50, false),
              // A second device, and one that only releases (memory allocated before tracing began).
              mem(15, 1000, true, 1), mem(25, 1000, false, 1), mem(26, 10, true, 1), mem(5, 64, false, 2)};
  const auto b = analyze(a);
  ASSERT_EQ(b.memory.size(), 3u);
  const auto& d0 = b.memory[0];
  EXPECT_EQ(d0.device, 0u);
  EXPECT_EQ(d0.peak_bytes, 150);
  ASSERT_TRUE(d0.peak_at.has_value());
  EXPECT_EQ(*d0.peak_at, 20u);
  EXPECT_EQ(d0.peak_step, 0);
  EXPECT_EQ(d0.final_bytes, 80);
  EXPECT_EQ(d0.allocations, 3u);
  EXPECT_EQ(d0.releases, 2u);
  const auto& d1 = b.memory[1];
  EXPECT_EQ(d1.peak_bytes, 1000);
  EXPECT_EQ(*d1.peak_at, 15u);
  EXPECT_EQ(d1.final_bytes, 10);
  const auto& d2 = b.memory[2];
  EXPECT_EQ(d2.peak_bytes, 0);
  EXPECT_FALSE(d2.peak_at.has_value());
  EXPECT_EQ(d2.peak_step, -1);
  EXPECT_EQ(d2.final_bytes, -64);
  const auto j = to_json(b);
  EXPECT_TRUE(j["memory"][2]["peak_at"].is_null());
  EXPECT_EQ(j["memory"][0]["peak_bytes"], 150);
  // A later, higher peak moves the peak and its step.
  a.memory.push_back(mem(60, 200, true));
  const auto later = analyze(a).memory[0];
  EXPECT_EQ(later.peak_bytes, 280);
  EXPECT_EQ(*later.peak_at, 60u);
  EXPECT_EQ(later.peak_step, 1);

  // Records of a kind CUPTI ties to no device arrive as device 0; they get a peak of their own, so
  // that another rank's "device 0" line does not read as memory on the first GPU.
  RankActivity kinds;
  kinds.ranges = {range(0, 10)};
  kinds.memory = {mem(1, 1 << 20, true, 1), mem(2, 16, true, 0), mem(3, 16, true, 0)};
  kinds.memory[1].kind = kinds.memory[2].kind = "unknown";
  const auto kb = analyze(kinds);
  ASSERT_EQ(kb.memory.size(), 2u);
  EXPECT_EQ(kb.memory[0].device, 0u);
  EXPECT_EQ(kb.memory[0].kind, "unknown");
  EXPECT_EQ(kb.memory[0].peak_bytes, 32);
  EXPECT_EQ(kb.memory[1].device, 1u);
  EXPECT_EQ(kb.memory[1].kind, "device");
  EXPECT_EQ(kb.memory[1].peak_bytes, 1 << 20);
  EXPECT_TRUE(contains(render_breakdown(kb), "device 0 (unknown memory): 32 B")) << render_breakdown(kb);
  EXPECT_EQ(to_json(kb)["memory"][0]["kind"], "unknown");
}

// ---------------------------------------------------------------------------------------------------
// Property: against a nanosecond-by-nanosecond count on random layouts.

struct Brute {
  std::uint64_t busy = 0, compute = 0, comm = 0, exposed = 0, other = 0, memops = 0, idle = 0, gaps = 0, gap_ns = 0,
                short_gaps = 0;
};

Brute brute_force(const RankActivity& a, std::uint64_t s, std::uint64_t e, std::uint64_t threshold) {
  Brute r;
  std::uint64_t run = 0;
  auto close_run = [&] {
    if (run > threshold) {
      ++r.gaps;
      r.gap_ns += run;
    } else if (run > 0) {
      ++r.short_gaps;
    }
    run = 0;
  };
  for (std::uint64_t t = s; t < e; ++t) {
    bool c = false, m = false, o = false;
    for (const auto& k : a.kernels)
      if (k.start <= t && t < k.end) (k.name.rfind("nccl", 0) == 0 ? m : c) = true;
    for (const auto& x : a.memcpys)
      if (x.start <= t && t < x.end) o = true;
    for (const auto& x : a.memsets)
      if (x.start <= t && t < x.end) o = true;
    r.compute += c;
    r.comm += m;
    r.exposed += m && !c;
    r.memops += o;
    r.other += o && !c && !m;
    const bool busy = c || m || o;
    r.busy += busy;
    r.idle += !busy;
    if (busy)
      close_run();
    else
      ++run;
  }
  close_run();
  return r;
}

TEST(ProfileProperty, RandomLayoutsMatchABruteForceCountAndAddUp) {
  std::mt19937_64 rng(20240611);
  auto uni = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  const char* names[] = {"gemm", "softmax", "ncclDevKernel_AllReduce", "ncclKernel_Broadcast", "Nccl_not_comm"};
  int checked_steps = 0;
  for (int layout = 0; layout < 400; ++layout) {
    RankActivity a;
    const auto n_kernels = uni(0, 14);
    for (std::uint64_t i = 0; i < n_kernels; ++i) {
      const auto s = uni(0, 300);
      const auto len = uni(0, 4) == 0 ? 0 : uni(1, 80);
      a.kernels.push_back(kernel(s, s + len, names[uni(0, 4)], static_cast<std::uint32_t>(uni(0, 3))));
    }
    for (std::uint64_t i = uni(0, 3); i > 0; --i) {
      const auto s = uni(0, 300);
      a.memcpys.push_back(memcpy_rec(s, s + uni(0, 40)));
    }
    for (std::uint64_t i = uni(0, 2); i > 0; --i) {
      const auto s = uni(0, 300);
      a.memsets.push_back(memset_rec(s, s + uni(0, 20)));
    }
    const bool with_ranges = uni(0, 5) != 0;
    if (with_ranges)
      for (std::uint64_t i = uni(1, 4); i > 0; --i) {
        const auto s = uni(0, 280);
        a.ranges.push_back(range(s, s + uni(0, 160)));
      }
    const std::uint64_t threshold = uni(0, 30);
    const auto b = analyze(a, opts(threshold, static_cast<int>(uni(0, 2))));
    for (const auto& st : b.steps) {
      const Brute r = brute_force(a, st.start, st.end, threshold);
      SCOPED_TRACE("layout " + std::to_string(layout) + " step " + std::to_string(st.index));
      EXPECT_EQ(st.busy_ns, r.busy);
      EXPECT_EQ(st.compute_ns, r.compute);
      EXPECT_EQ(st.comm_ns, r.comm);
      EXPECT_EQ(st.exposed_comm_ns, r.exposed);
      EXPECT_EQ(st.other_ns, r.other);
      EXPECT_EQ(st.memory_ops_ns, r.memops);
      EXPECT_EQ(st.idle_ns, r.idle);
      EXPECT_EQ(st.host_gaps, r.gaps);
      EXPECT_EQ(st.host_gap_ns, r.gap_ns);
      EXPECT_EQ(st.launch_gaps, r.short_gaps);
      expect_invariant(st);
      if (st.comm_ns > 0) {
        EXPECT_GE(st.overlap, 0.0);
        EXPECT_LE(st.overlap, 1.0);
      } else {
        EXPECT_TRUE(std::isnan(st.overlap));
      }
      ++checked_steps;
    }
    const auto& sum = b.summary;
    EXPECT_EQ(sum.total.compute_ns + sum.total.exposed_comm_ns + sum.total.other_ns + sum.total.idle_ns,
              sum.total.step_ns);
    if (sum.total.step_ns > 0) {
      EXPECT_NEAR(sum.compute_fraction + sum.exposed_comm_fraction + sum.other_fraction + sum.idle_fraction, 1.0,
                  1e-12);
    }
    if (!std::isnan(sum.overlap)) {
      EXPECT_GE(sum.overlap, 0.0);
      EXPECT_LE(sum.overlap, 1.0);
    }
  }
  EXPECT_GT(checked_steps, 800);
}

TEST(ProfileProperty, LargeTraceStaysLinearithmic) {
  // 400k kernels over 4000 steps: a per-step rescan of the kernels would be 1.6e9 visits.
  RankActivity a;
  const std::uint64_t steps = 4000, per_step = 100, step_len = 100'000;
  a.kernels.reserve(steps * per_step);
  for (std::uint64_t s = 0; s < steps; ++s) {
    a.ranges.push_back(range(s * step_len, (s + 1) * step_len));
    for (std::uint64_t k = 0; k < per_step; ++k) {
      const std::uint64_t t = s * step_len + k * 900;
      a.kernels.push_back(k % 10 == 9 ? nccl(t, t + 1500) : kernel(t, t + 700, k % 2 ? "gemm" : "add"));
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto b = analyze(a, opts(50'000, 2));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(b.steps.size(), steps);
  for (const auto& st : b.steps) expect_invariant(st);
  EXPECT_EQ(b.steps[5].kernels, per_step);
  EXPECT_LT(seconds, 20.0);
}

// ---------------------------------------------------------------------------------------------------
// Across ranks.

RankBreakdown rank_with_steps(int rank, const std::vector<std::uint64_t>& lengths, int warmup) {
  RankActivity a;
  a.rank = rank;
  a.world_size = 3;
  std::uint64_t t = 0;
  for (auto len : lengths) {
    a.ranges.push_back(range(t, t + len));
    t += len;
  }
  return analyze(a, opts(50, warmup));
}

TEST(ProfileStraggler, ThreeRanks) {
  const std::vector<RankBreakdown> ranks = {
      rank_with_steps(2, {800, 105, 130, 100, 140, 999}, 1),  // one step more than the others
      rank_with_steps(0, {1000, 100, 120, 100, 130}, 1),
      rank_with_steps(1, {900, 110, 100, 100, 150}, 1),
  };
  const auto j = straggler_view(ranks);
  EXPECT_EQ(j["ranks"], nlohmann::json({0, 1, 2}));
  ASSERT_EQ(j["steps"].size(), 4u);  // steps 1..4: warm-up step 0 left out, step 5 not on every rank
  const auto& s = j["steps"];
  EXPECT_EQ(s[0]["step"], 1);
  EXPECT_EQ(s[0]["max_ns"], 110);
  EXPECT_EQ(s[0]["min_ns"], 100);
  EXPECT_EQ(s[0]["spread_ns"], 10);
  EXPECT_EQ(s[0]["slowest_rank"], 1);
  EXPECT_EQ(s[0]["fastest_rank"], 0);
  EXPECT_EQ(s[1]["slowest_rank"], 2);
  EXPECT_EQ(s[1]["spread_ns"], 30);
  EXPECT_EQ(s[2]["spread_ns"], 0);
  EXPECT_EQ(s[2]["slowest_rank"], 0);  // a tie goes to the lowest rank
  EXPECT_EQ(s[3]["slowest_rank"], 1);
  EXPECT_EQ(s[3]["spread_ns"], 20);
  EXPECT_DOUBLE_EQ(j["median_spread_ns"].get<double>(), 15.0);
  EXPECT_DOUBLE_EQ(j["max_spread_ns"].get<double>(), 30.0);
  EXPECT_EQ(j["slowest_most_often"], 1);
  EXPECT_EQ(j["slowest_counts"][1]["times_slowest"], 2);

  const auto empty = straggler_view({});
  EXPECT_TRUE(empty["steps"].empty());
  EXPECT_TRUE(empty["median_spread_ns"].is_null());
  EXPECT_TRUE(empty["slowest_most_often"].is_null());
  EXPECT_TRUE(contains(message_of<UsageError>([&] { straggler_view({ranks[0], ranks[0]}); }), "rank 2"));
}

// A CPU run's activity: the trainer's phases as host ranges and no device records. The screen gives
// the phases per step, which is all the breakdown there is.
TEST(ProfileRender, PhasesOnTheHostClockArePrintedPerStep) {
  RankActivity a;
  a.device_name = "cpu";
  for (std::uint64_t s = 0; s < 2; ++s) {
    const std::uint64_t t = s * 10'000'000;
    a.ranges.push_back(range(t, t + 10'000'000));
    a.ranges.push_back(range(t + 1'000'000, t + 3'000'000, kForwardRange));
    a.ranges.push_back(range(t + 3'000'000, t + 8'000'000, kBackwardRange));
  }
  const std::string text = render_breakdown(analyze(a, opts(50, 0)));
  EXPECT_TRUE(contains(text, "phases (host)   forward 2.00 ms, backward 5.00 ms per step")) << text;
  // Without phase ranges (another trainer's NVTX steps only), no such line.
  RankActivity steps_only;
  steps_only.ranges.push_back(range(0, 1000));
  EXPECT_FALSE(contains(render_breakdown(analyze(steps_only, opts(50, 0))), "phases (host)"));
}

// Ranks whose collectives (communication kernels, in start order) last the given durations, step by
// step; steps are 1000 ns windows, the first a warm-up without collectives.
RankBreakdown rank_with_collectives(int rank, const std::vector<std::vector<std::uint64_t>>& per_step) {
  RankActivity a;
  a.rank = rank;
  a.world_size = 3;
  a.ranges.push_back(range(0, 1000));
  a.kernels.push_back(kernel(100, 900));
  for (std::size_t i = 0; i < per_step.size(); ++i) {
    const std::uint64_t s = 1000 * (i + 1);
    a.ranges.push_back(range(s, s + 1000));
    a.kernels.push_back(kernel(s + 10, s + 100));
    std::uint64_t t = s + 100;
    for (auto d : per_step[i]) {
      a.kernels.push_back(nccl(t, t + d));
      t += 100;
    }
  }
  return analyze(a, opts(50, 1));
}

TEST(ProfileStraggler, CollectiveWaitFindsTheRankTheOthersWaitFor) {
  // Step 1: rank 0 arrives last at both collectives (its kernels are the shortest), rank 2 waits most.
  // Step 2: rank 1 is last. Step 3: rank 0 ran one collective fewer, so the step cannot be matched.
  // Step 4: one collective, rank 0 last again.
  const std::vector<RankBreakdown> ranks = {
      rank_with_collectives(1, {{40, 25}, {10, 5}, {10, 10}, {25}}),
      rank_with_collectives(0, {{10, 20}, {50, 5}, {10}, {5}}),
      rank_with_collectives(2, {{10, 60}, {20, 5}, {10, 10}, {15}}),
  };
  EXPECT_EQ(ranks[0].steps[1].collective_ns, (std::vector<std::uint64_t>{40, 25}));
  EXPECT_TRUE(ranks[0].steps[0].collective_ns.empty());
  const auto view = straggler_view(ranks);
  const auto& w = view["collective_wait"];
  EXPECT_EQ(w["matched_steps"], 3);
  EXPECT_EQ(w["unmatched_steps"], nlohmann::json({3}));
  ASSERT_EQ(w["ranks"].size(), 3u);
  // Waits per matched step: rank 0 {0, 40, 0}, rank 1 {35, 0, 20}, rank 2 {40, 10, 10}.
  EXPECT_EQ(w["ranks"][0]["rank"], 0);
  EXPECT_DOUBLE_EQ(w["ranks"][0]["median_wait_ns"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(w["ranks"][0]["total_wait_ns"].get<double>(), 40.0);
  EXPECT_EQ(w["ranks"][0]["times_last"], 2);
  EXPECT_DOUBLE_EQ(w["ranks"][1]["median_wait_ns"].get<double>(), 20.0);
  EXPECT_EQ(w["ranks"][1]["times_last"], 1);
  EXPECT_DOUBLE_EQ(w["ranks"][2]["median_wait_ns"].get<double>(), 10.0);
  EXPECT_EQ(w["ranks"][2]["times_last"], 0);
  EXPECT_EQ(w["last_most_often"], 0);
  EXPECT_DOUBLE_EQ(w["median_longest_wait_ns"].get<double>(), 40.0);

  const std::string screen = render_straggler_view(view);
  EXPECT_TRUE(contains(screen, "3 steps matched, 1 with unequal collectives left out")) << screen;
  EXPECT_TRUE(contains(screen, "last to arrive in 2 of 3 steps")) << screen;
  EXPECT_TRUE(contains(screen, "straggler: rank 0")) << screen;
  EXPECT_TRUE(render_straggler_view(straggler_view({ranks[0]})).empty());

  // No collectives at all (one GPU, or a trainer without NCCL): nobody is last.
  const auto quiet = straggler_view({rank_with_collectives(0, {{}, {}}), rank_with_collectives(1, {{}, {}})});
  EXPECT_EQ(quiet["collective_wait"]["matched_steps"], 2);
  EXPECT_TRUE(quiet["collective_wait"]["last_most_often"].is_null());
  EXPECT_FALSE(contains(render_straggler_view(quiet), "straggler:"));
}

TEST(ProfileStraggler, CollectivesBelongToTheStepTheyStartIn) {
  RankActivity a;
  a.ranges = {range(0, 1000), range(1000, 2000)};
  a.kernels = {nccl(900, 1300), nccl(1400, 1500), nccl(2100, 2200)};  // the last starts after every step
  const auto b = analyze(a, opts());
  ASSERT_EQ(b.steps.size(), 2u);
  EXPECT_EQ(b.steps[0].collective_ns, (std::vector<std::uint64_t>{400}));
  EXPECT_EQ(b.steps[1].collective_ns, (std::vector<std::uint64_t>{100}));
}

// ---------------------------------------------------------------------------------------------------
// Formats.

RankActivity sample_activity() {
  RankActivity a;
  a.rank = 1;
  a.world_size = 2;
  a.device_name = "NVIDIA H100 80GB HBM3";
  a.dropped_records = 3;
  // Epoch-sized timestamps, to check that nothing passes through a double on the way.
  const std::uint64_t base = 1'733'000'000'123'456'789ull;
  auto k = kernel(base + 1000, base + 2500, "void at::native::vectorized_elementwise_kernel<4>(...)", 7);
  k.device = 1;
  k.correlation = 4242;
  k.grid[0] = 1024;
  k.grid[1] = 2;
  k.grid[2] = 1;
  k.block[0] = 128;
  k.block[1] = 1;
  k.block[2] = 1;
  auto c = nccl(base + 2000, base + 9000, 20);
  c.device = 1;
  a.kernels = {k, c};
  auto m = memcpy_rec(base + 10, base + 900, "HtoD");
  m.device = 1;
  m.correlation = 17;
  m.bytes = std::numeric_limits<std::uint64_t>::max();
  a.memcpys = {m};
  auto s = memset_rec(base + 9500, base + 9600);
  s.device = 1;
  a.memsets = {s};
  a.memory = {mem(base + 5, 1 << 20, true, 1), mem(base + 9700, 1 << 20, false, 1)};
  a.memory[1].kind = "managed";
  a.ranges = {range(base, base + 10'000, kStepRange, 140'000'000'000'001ull),
              range(base + 1, base + 900, kDataRange, 140'000'000'000'001ull)};
  // The memcpy's and the first kernel's launches inside `data`, the NCCL kernel's in the step only.
  a.api_calls = {{base + 2, base + 8, 140'000'000'000'001ull, 17, 41, false, "cudaMemcpyAsync"},
                 {base + 500, base + 700, 140'000'000'000'001ull, 4242, 211, false, "cudaLaunchKernel"},
                 {base + 1500, base + 1600, 140'000'000'000'001ull, 99, 652, true, "cuLaunchKernelEx"},
                 {base + 9800, base + 9900, 140'000'000'000'001ull, 100, 165, false, "cudaDeviceSynchronize"}};
  a.kernels[1].correlation = 99;
  return a;
}

TEST(ProfileFormats, ActivityJsonRoundTripIsExact) {
  const RankActivity a = sample_activity();
  const auto j = to_json(a);
  const RankActivity back = activity_from_json(nlohmann::json::parse(j.dump()));
  EXPECT_EQ(to_json(back), j);
  EXPECT_EQ(back.rank, 1);
  EXPECT_EQ(back.world_size, 2);
  EXPECT_EQ(back.device_name, a.device_name);
  EXPECT_EQ(back.dropped_records, 3u);
  ASSERT_EQ(back.kernels.size(), 2u);
  EXPECT_EQ(back.kernels[0].start, a.kernels[0].start);
  EXPECT_EQ(back.kernels[0].name, a.kernels[0].name);
  EXPECT_EQ(back.kernels[0].grid[0], 1024u);
  EXPECT_EQ(back.kernels[0].block[0], 128u);
  ASSERT_EQ(back.api_calls.size(), 4u);
  EXPECT_EQ(back.api_calls[2].start, a.api_calls[2].start);
  EXPECT_EQ(back.api_calls[2].thread, 140'000'000'000'001ull);
  EXPECT_EQ(back.api_calls[2].correlation, 99u);
  EXPECT_EQ(back.api_calls[2].cbid, 652u);
  EXPECT_TRUE(back.api_calls[2].driver);
  EXPECT_EQ(back.api_calls[2].name, "cuLaunchKernelEx");
  EXPECT_EQ(back.kernels[0].correlation, 4242u);
  EXPECT_EQ(back.memcpys.at(0).bytes, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(back.memcpys.at(0).kind, "HtoD");
  EXPECT_EQ(back.memsets.at(0).end, a.memsets[0].end);
  EXPECT_FALSE(back.memory.at(1).allocation);
  EXPECT_EQ(back.memory.at(1).kind, "managed");
  EXPECT_EQ(back.ranges.at(0).thread, 140'000'000'000'001ull);
  // A file written before memory records had a kind: device memory.
  auto older = j;
  older["memory"][0].erase("kind");
  EXPECT_EQ(activity_from_json(older).memory.at(0).kind, "device");
  // An empty activity too.
  EXPECT_EQ(to_json(activity_from_json(to_json(RankActivity{}))), to_json(RankActivity{}));
}

TEST(ProfileFormats, MalformedActivityIsAUsageErrorThatSaysWhere) {
  auto j = to_json(sample_activity());
  auto bad = j;
  bad["kernels"][1]["start"] = -5;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { activity_from_json(bad); }), "kernels[1].start"));
  bad = j;
  bad["kernels"][0].erase("name");
  EXPECT_TRUE(contains(message_of<UsageError>([&] { activity_from_json(bad); }), "kernels[0].name"));
  bad = j;
  bad["ranges"] = "nope";
  EXPECT_TRUE(contains(message_of<UsageError>([&] { activity_from_json(bad); }), "ranges"));
  bad = j;
  bad["kernels"][0]["grid"] = {1, 2};
  EXPECT_TRUE(contains(message_of<UsageError>([&] { activity_from_json(bad); }), "grid"));
  bad = j;
  bad["memory"][0]["allocation"] = 1;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { activity_from_json(bad); }), "memory[0].allocation"));
  bad = j;
  bad["rank"] = 2;  // world_size 2
  EXPECT_TRUE(contains(message_of<UsageError>([&] { activity_from_json(bad); }), "rank"));
  bad = j;
  bad["kernels"][0]["stream"] = 1ull << 40;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { activity_from_json(bad); }), "out of range"));
  message_of<UsageError>([&] { activity_from_json(nlohmann::json::array()); });
}

TEST(ProfileFormats, BreakdownJsonAndRendering) {
  RankActivity a;
  a.device_name = "NVIDIA H100 80GB HBM3";
  a.ranges = {range(0, 1'000'000), range(1'000'000, 2'000'000)};
  a.kernels = {kernel(0, 600'000, "ampere_bf16_s16816gemm"), nccl(500'000, 800'000),
               kernel(1'000'000, 1'500'000, "ampere_bf16_s16816gemm"), nccl(1'400'000, 1'900'000)};
  a.memcpys = {memcpy_rec(900'000, 950'000)};
  a.memory = {mem(10, 3ull << 30, true)};
  const auto b = analyze(a, opts());
  const auto j = to_json(b);
  for (const char* key : {"rank", "world_size", "device_name", "step_marker", "steps_from_ranges", "warmup",
                          "gap_threshold_ns", "dropped_records", "summary", "steps", "top_kernels", "memory"})
    EXPECT_TRUE(j.contains(key)) << key;
  const auto& st = j["steps"][0];
  for (const char* key : {"index", "warmup", "name", "start", "end", "step_ns", "busy_ns", "compute_ns", "comm_ns",
                          "exposed_comm_ns", "overlapped_comm_ns", "other_ns", "memory_ops_ns", "idle_ns", "host_gaps",
                          "host_gap_ns", "launch_gaps", "kernels", "overlap", "phases_ns"})
    EXPECT_TRUE(st.contains(key)) << key;
  EXPECT_EQ(st["exposed_comm_ns"], 200'000);
  EXPECT_DOUBLE_EQ(st["overlap"].get<double>(), 1.0 / 3.0);
  EXPECT_EQ(j["summary"]["total"]["step_ns"], 2'000'000);
  EXPECT_DOUBLE_EQ(j["summary"]["fractions"]["compute"].get<double>(), 0.55);
  EXPECT_EQ(j["top_kernels"][0]["name"], "ampere_bf16_s16816gemm");

  const std::string text = render_breakdown(b);
  for (const char* part : {"rank 0/1", "NVIDIA H100", "2 steps measured", "p50 1.00 ms", "compute", "0.55 ms/step",
                           "55.0%", "exposed comm", "idle", "overlapped with compute", "top kernels",
                           "ampere_bf16_s16816gemm", "peak memory", "3.00 GiB", "in step 0"})
    EXPECT_TRUE(contains(text, part)) << part << "\n" << text;
  EXPECT_LT(std::count(text.begin(), text.end(), '\n'), 25);
}

class ProfileTrace : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ddpbench_test_profile_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(ProfileTrace, ChromeTraceHasTheLayoutHtaReads) {
  const RankActivity a = sample_activity();
  const std::uint64_t base = 1'733'000'000'123'456'789ull;
  const std::uint64_t thread = 140'000'000'000'001ull;
  const auto t = chrome_trace(a);
  EXPECT_EQ(t["schemaVersion"], 1);
  EXPECT_EQ(t["distributedInfo"]["rank"], 1);
  EXPECT_EQ(t["distributedInfo"]["world_size"], 2);
  EXPECT_EQ(t["distributedInfo"]["backend"], "nccl");
  EXPECT_EQ(t["displayTimeUnit"], "ms");
  EXPECT_EQ(t["baseTimeNanoseconds"], base);  // the earliest record: the step range
  ASSERT_EQ(t["deviceProperties"].size(), 1u);
  EXPECT_EQ(t["deviceProperties"][0]["id"], 1);
  EXPECT_EQ(t["deviceProperties"][0]["name"], a.device_name);

  std::map<std::string, int> by_cat;
  std::set<std::string> meta_names;
  std::map<std::string, nlohmann::json> flows;  // "s<id>" / "f<id>"
  for (const auto& e : t["traceEvents"]) {
    ASSERT_TRUE(e.contains("ph"));
    if (e["ph"] == "M") {
      meta_names.insert(e["name"]);
      EXPECT_TRUE(e["args"].contains("name") || e["args"].contains("sort_index"));
      continue;
    }
    if (e["ph"] == "s" || e["ph"] == "f") {
      EXPECT_EQ(e["cat"], "ac2g");
      flows[e["ph"].get<std::string>() + e["id"].dump()] = e;
      continue;
    }
    ASSERT_EQ(e["ph"], "X");
    for (const char* key : {"ts", "dur", "pid", "tid", "name", "cat"}) ASSERT_TRUE(e.contains(key)) << key << e;
    EXPECT_GE(e["dur"].get<double>(), 0.0);
    // Microseconds from baseTimeNanoseconds, exact to the nanosecond.
    EXPECT_GE(e["ts"].get<double>(), 0.0);
    EXPECT_LE(e["ts"].get<double>(), 10.0) << e;
    const std::string cat = e["cat"];
    ++by_cat[cat];
    if (cat == "user_annotation" || cat == "cuda_runtime" || cat == "cuda_driver") {
      EXPECT_EQ(e["pid"], kHostPid + 1);
      EXPECT_EQ(e["tid"], thread);
      EXPECT_FALSE(e["args"].contains("stream")) << "HTA tells host events by their missing stream";
    } else if (cat != "gpu_user_annotation") {
      EXPECT_EQ(e["pid"], 1);  // the device
      EXPECT_EQ(e["tid"], e["args"]["stream"]);
      for (const char* key : {"device", "stream", "correlation"}) EXPECT_TRUE(e["args"].contains(key)) << key;
    }
    if (cat == "user_annotation") {
      EXPECT_NE(e["name"], kStepRange) << "the step range is written as ProfilerStep#N";
      if (e["name"] == "ProfilerStep#0") {
        EXPECT_EQ(e["args"]["range"], kStepRange);
        EXPECT_EQ(e["args"]["External id"], 1);
        EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 0.0);
        EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 10.0);
      } else {
        EXPECT_EQ(e["name"], kDataRange);
        EXPECT_EQ(e["args"]["External id"], 2);
        EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 0.001);
      }
    }
    if (cat == "cuda_runtime" || cat == "cuda_driver") {
      const auto corr = e["args"]["correlation"].get<int>();
      EXPECT_EQ(cat == "cuda_driver", corr == 99) << e;
      // The innermost range holding the call: data for the memcpy and the first kernel, the step else.
      EXPECT_EQ(e["args"]["External id"], corr == 17 || corr == 4242 ? 2 : 1) << e;
      if (corr == 4242) {
        EXPECT_EQ(e["name"], "cudaLaunchKernel");
        EXPECT_EQ(e["args"]["cbid"], 211);
        EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 0.5);
        EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 0.2);
      }
    }
    if (cat == "kernel" && e["args"]["correlation"] == 4242) {
      EXPECT_EQ(e["args"]["grid"], nlohmann::json({1024, 2, 1}));
      EXPECT_EQ(e["args"]["block"], nlohmann::json({128, 1, 1}));
      EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 1.0);
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 1.5);
      EXPECT_EQ(e["args"]["External id"], 2) << "a kernel carries its launch's External id";
    }
    if (cat == "gpu_memcpy") {
      EXPECT_EQ(e["name"], "Memcpy HtoD");
      EXPECT_EQ(e["args"]["kind"], "HtoD");
      EXPECT_TRUE(e["args"].contains("bytes"));
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 0.89);
      // bytes / ns = GB/s
      EXPECT_DOUBLE_EQ(e["args"]["memory bandwidth (GB/s)"].get<double>(),
                       static_cast<double>(std::numeric_limits<std::uint64_t>::max()) / 890.0);
    }
    if (cat == "gpu_memset") EXPECT_DOUBLE_EQ(e["args"]["memory bandwidth (GB/s)"].get<double>(), 64.0 / 100.0);
    if (cat == "gpu_user_annotation") {
      // `data` on the one stream its launches went to, from the memcpy's start to the kernel's end;
      // nothing for the step, which stays on the host as ProfilerStep#0.
      EXPECT_EQ(e["name"], kDataRange);
      EXPECT_EQ(e["pid"], 1);
      EXPECT_EQ(e["tid"], 7);
      EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 0.01);
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 2.49);
      EXPECT_EQ(e["args"]["External id"], 2);
    }
  }
  EXPECT_EQ(by_cat["kernel"], 2);
  EXPECT_EQ(by_cat["gpu_memcpy"], 1);
  EXPECT_EQ(by_cat["gpu_memset"], 1);
  EXPECT_EQ(by_cat["user_annotation"], 2);
  EXPECT_EQ(by_cat["cuda_runtime"], 3);
  EXPECT_EQ(by_cat["cuda_driver"], 1);
  EXPECT_EQ(by_cat["gpu_user_annotation"], 1);
  EXPECT_EQ(by_cat.size(), 7u);
  EXPECT_TRUE(meta_names.count("process_name"));
  EXPECT_TRUE(meta_names.count("thread_name"));
  // A flow from each launch to what it launched; none for the synchronize, which launched nothing.
  EXPECT_EQ(flows.size(), 6u);
  EXPECT_FALSE(flows.count("s100"));
  ASSERT_TRUE(flows.count("s4242") && flows.count("f4242"));
  EXPECT_EQ(flows["s4242"]["pid"], kHostPid + 1);
  EXPECT_EQ(flows["s4242"]["tid"], thread);
  EXPECT_DOUBLE_EQ(flows["s4242"]["ts"].get<double>(), 0.5);
  EXPECT_EQ(flows["f4242"]["pid"], 1);
  EXPECT_EQ(flows["f4242"]["tid"], 7);
  EXPECT_EQ(flows["f4242"]["bp"], "e");
  EXPECT_DOUBLE_EQ(flows["f4242"]["ts"].get<double>(), 1.0);
}

TEST_F(ProfileTrace, StepMarkerNamesTheProfilerSteps) {
  RankActivity a = sample_activity();
  a.ranges.push_back(range(a.ranges[0].start + 20'000, a.ranges[0].start + 30'000, kStepRange, 5));
  std::vector<std::string> steps;
  const auto trace = chrome_trace(a);
  for (const auto& e : trace["traceEvents"])
    if (e["cat"] == "user_annotation" && e["name"].get<std::string>().starts_with("ProfilerStep")) steps.push_back(e["name"]);
  EXPECT_EQ(steps, (std::vector<std::string>{"ProfilerStep#0", "ProfilerStep#1"}));
  // Another marker: `data` becomes the step, `step` stays itself.
  std::set<std::string> names;
  const auto by_data = chrome_trace(a, {kDataRange});
  for (const auto& e : by_data["traceEvents"])
    if (e["cat"] == "user_annotation") names.insert(e["name"]);
  EXPECT_EQ(names, (std::set<std::string>{"ProfilerStep#0", kStepRange}));
  EXPECT_THROW(chrome_trace(a, {"re:("}), UsageError);
  // Without launch records, the steps keep their name (HTA would drop every device event otherwise).
  a.api_calls.clear();
  std::set<std::string> plain;
  const auto no_launches = chrome_trace(a);
  for (const auto& e : no_launches["traceEvents"])
    if (e["cat"] == "user_annotation") plain.insert(e["name"]);
  EXPECT_EQ(plain, (std::set<std::string>{kStepRange, kDataRange}));
}

// The backward pass's launches come from the autograd engine's thread, whose only ranges are each
// bucket's allreduce: outside those they count for the range open on the trainer's thread, and
// `backward` on the GPU covers the allreduce launched within it too.
TEST_F(ProfileTrace, CallsOutsideTheirThreadsRangesCountForTheOpenRange) {
  RankActivity a;
  a.ranges = {range(0, 1000, kStepRange, 1), range(100, 900, kBackwardRange, 1), range(250, 260, kAllreduceRange, 2),
              range(0, 50, "loader", 3)};
  a.api_calls = {{200, 210, 2, 1, 211, false, "cudaLaunchKernel"},   // autograd thread, in backward
                 {255, 258, 2, 2, 652, true, "cuLaunchKernelEx"},    // autograd thread, in its allreduce
                 {950, 960, 2, 3, 211, false, "cudaLaunchKernel"},   // autograd thread, after backward
                 {500, 510, 3, 4, 211, false, "cudaLaunchKernel"}};  // loader thread, outside its range
  a.kernels = {kernel(300, 400, "bwd", 7), nccl(420, 800, 13), kernel(965, 990, "opt", 7), kernel(600, 700, "copy", 9)};
  for (std::uint32_t i = 0; i < 4; ++i) a.kernels[i].correlation = i + 1;
  std::map<int, nlohmann::json> calls;
  std::map<std::pair<std::string, int>, nlohmann::json> annotations;  // (name, stream)
  const auto t = chrome_trace(a);
  for (const auto& e : t["traceEvents"]) {
    const std::string cat = e.value("cat", "");
    if (cat == "cuda_runtime" || cat == "cuda_driver") calls[e["args"]["correlation"].get<int>()] = e["args"];
    if (cat == "gpu_user_annotation") annotations[{e["name"], e["tid"].get<int>()}] = e;
  }
  EXPECT_EQ(calls[1]["External id"], 2) << "backward";
  EXPECT_EQ(calls[2]["External id"], 3) << "its own allreduce";
  EXPECT_EQ(calls[3]["External id"], 1) << "the step";
  EXPECT_EQ(calls[4]["External id"], 2) << "backward, open when the loader thread's range was not";
  std::set<std::pair<std::string, int>> where;
  for (const auto& [key, e] : annotations) where.insert(key);
  EXPECT_EQ(where, (std::set<std::pair<std::string, int>>{{kBackwardRange, 7}, {kBackwardRange, 9}, {kBackwardRange, 13},
                                                           {kAllreduceRange, 13}}));
  const auto& bwd7 = annotations[std::make_pair(std::string(kBackwardRange), 7)];
  const auto& bwd13 = annotations[std::make_pair(std::string(kBackwardRange), 13)];
  const auto& allreduce13 = annotations[std::make_pair(std::string(kAllreduceRange), 13)];
  EXPECT_DOUBLE_EQ(bwd7["ts"].get<double>(), 0.3);
  EXPECT_DOUBLE_EQ(bwd7["dur"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(bwd13["dur"].get<double>(), 0.38);
  EXPECT_EQ(allreduce13["args"]["External id"], 3);
}

TEST_F(ProfileTrace, TextPutsTheRankWhereHtaSearchesForIt) {
  const auto t = chrome_trace(sample_activity());
  const std::string text = chrome_trace_text(t);
  EXPECT_EQ(nlohmann::json::parse(text), t);
  // HTA reads the file line by line and takes the first match of this pattern as the rank.
  const std::regex hta_rank(R"re("rank":\s+(\d+))re");
  std::istringstream lines(text);
  std::string line;
  int rank = -1, line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    std::smatch m;
    if (std::regex_search(line, m, hta_rank)) {
      rank = std::stoi(m[1]);
      break;
    }
  }
  EXPECT_EQ(rank, 1);
  EXPECT_LE(line_no, 3) << "the rank comes before the events";
  EXPECT_EQ(text.find("\"traceEvents\""), text.rfind("\"traceEvents\""));
  EXPECT_GT(text.find("\"traceEvents\""), text.find("\"baseTimeNanoseconds\": 1733000000123456789"));
}

TEST_F(ProfileTrace, WrittenAtomicallyAndReadable) {
  RankActivity a = sample_activity();
  a.kernels[0].name += "\xff";  // not UTF-8: replaced, not fatal
  const std::string path = (dir_ / "rank1.trace.json").string();
  write_chrome_trace(a, path);
  const std::string text = read_file(path);
  const auto t = nlohmann::json::parse(text);
  EXPECT_EQ(text, chrome_trace_text(t));
  EXPECT_EQ(t["distributedInfo"]["rank"], 1);
  EXPECT_FALSE(t["traceEvents"].empty());
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename(), "rank1.trace.json");  // no temporary left behind
  EXPECT_THROW(write_chrome_trace(a, (dir_ / "missing" / "t.json").string()), RunError);
}

TEST_F(ProfileTrace, EmptyActivityStillNamesItsRankAndDevice) {
  RankActivity a;
  a.rank = 0;
  a.device_name = "cpu";
  const auto t = chrome_trace(a);
  EXPECT_EQ(t["distributedInfo"]["rank"], 0);
  EXPECT_EQ(t["deviceProperties"][0]["id"], 0);
  for (const auto& e : t["traceEvents"]) EXPECT_EQ(e["ph"], "M");
}

}  // namespace
}  // namespace ddpbench
