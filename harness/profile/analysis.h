// Interval analysis of one rank's activity, per step: where the step's time went on the GPU.
//
// Inside a step window [s, e), every record clipped to the window, with
//   C = union of compute kernels (name not starting with "nccl"; case-sensitive),
//   M = union of communication kernels (name starting with "nccl"),
//   B = union of all kernels, memcpys and memsets on every stream (GPU busy):
//     compute_ns         = |C|
//     comm_ns            = |M|
//     exposed_comm_ns    = |M \ C|       communicating while no compute kernel runs
//     overlapped_comm_ns = |M ∩ C|       = comm_ns - exposed_comm_ns
//     other_ns           = |B| - |C ∪ M| memcpy/memset with no kernel running
//     idle_ns            = (e - s) - |B|
//     overlap            = |M ∩ C| / |M| (Holistic Trace Analysis's ratio; NaN when |M| = 0)
// and, since |C ∪ M| = |C| + |M \ C|, exactly (integer nanoseconds, no rounding):
//     compute_ns + exposed_comm_ns + other_ns + idle_ns == step_ns.
// memory_ops_ns (= |memcpy ∪ memset|) is reported beside it and is not part of that sum: copies that
// run under a kernel are already in compute or communication time.
//
// Cost: each class of interval is sorted and merged once, O(n log n); a window's figures are then
// binary searches over running sums, so many steps do not multiply the work.
#pragma once
#include <cstdint>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "profile/activity.h"

namespace ddpbench::profile {

// A step: [start, end) in ns on the collector's clock; name is the range's (empty for the whole-trace
// window).
struct Window {
  std::uint64_t start = 0, end = 0;
  std::string name;
};

// Step windows, sorted by start: the ranges named marker, or, where marker starts with "re:", those whose
// name the ECMAScript regex after it finds a match in (std::regex_search: anchor with ^...$ for a whole
// name). An activity with no ranges at all (a trainer without NVTX) gets one window from its first to
// its last GPU record; none when it has no GPU record either. UsageError for an empty marker, a bad
// regex, or ranges of which none matches (the message lists names seen, since that is a wrong marker,
// not a trace without steps).
std::vector<Window> step_windows(const RankActivity& activity, const std::string& marker = kStepRange);

// Indices into activity.ranges of the ranges the marker names, in step_windows' order; empty where none
// matches (no error: the caller decides whether that is one). UsageError for an empty marker or a bad regex.
std::vector<std::size_t> step_ranges(const RankActivity& activity, const std::string& marker = kStepRange);

// The trainer's phases whose host time is reported per step, in this order.
inline constexpr const char* kPhaseNames[] = {kDataRange, kForwardRange, kBackwardRange, kAllreduceRange,
                                              kOptimizerRange};

// Per-step quantities; the same layout holds one step (integers), a sum over steps, or medians (double).
template <typename T>
struct StepQuantities {
  T step_ns{};
  T busy_ns{};
  T compute_ns{};
  T comm_ns{};
  T exposed_comm_ns{};
  T overlapped_comm_ns{};
  T other_ns{};
  T memory_ops_ns{};
  T idle_ns{};
  T host_gaps{};    // idle stretches longer than the gap threshold (the GPU waiting for the host)
  T host_gap_ns{};  // their total length
  // The other idle stretches (idle_ns - host_gap_ns in total): the GPU between two pieces of work the
  // host had already queued, a few microseconds each. Many of them mean launch latency between many
  // small kernels, which fusion or CUDA graphs remove and no host-side fix does.
  T launch_gaps{};
  T kernels{};      // kernels that start in the window
};

// Calls f(name, member) for each quantity, in declaration order; names are the JSON keys.
template <typename Q, typename F>
void for_each_quantity(Q& q, F&& f) {
  f("step_ns", q.step_ns);
  f("busy_ns", q.busy_ns);
  f("compute_ns", q.compute_ns);
  f("comm_ns", q.comm_ns);
  f("exposed_comm_ns", q.exposed_comm_ns);
  f("overlapped_comm_ns", q.overlapped_comm_ns);
  f("other_ns", q.other_ns);
  f("memory_ops_ns", q.memory_ops_ns);
  f("idle_ns", q.idle_ns);
  f("host_gaps", q.host_gaps);
  f("host_gap_ns", q.host_gap_ns);
  f("launch_gaps", q.launch_gaps);
  f("kernels", q.kernels);
}

struct StepBreakdown : StepQuantities<std::uint64_t> {
  int index = 0;        // position among the windows, warm-up included
  bool warmup = false;  // left out of the summary, the top kernels and the straggler view
  std::string name;
  std::uint64_t start = 0, end = 0;
  double overlap = std::numeric_limits<double>::quiet_NaN();
  // Host time of each phase in kPhaseNames inside the window: the union of that name's ranges, so
  // that nested ranges of one name (per-bucket allreduce inside the step's allreduce) count once.
  std::map<std::string, std::uint64_t> phases_ns;
  // Durations of the communication kernels that start in the window, in start order: one per
  // collective, which the straggler view matches across ranks by position.
  std::vector<std::uint64_t> collective_ns;
};

struct StepSummary {
  int measured_steps = 0;
  int warmup_steps = 0;
  StepQuantities<double> median;                                     // NaN everywhere when nothing was measured
  double median_overlap = std::numeric_limits<double>::quiet_NaN();  // over steps that communicate
  std::map<std::string, double> median_phases_ns;
  double step_ns_mean = std::numeric_limits<double>::quiet_NaN();
  double step_ns_p90 = std::numeric_limits<double>::quiet_NaN();
  StepQuantities<std::uint64_t> total;
  std::map<std::string, std::uint64_t> total_phases_ns;
  // Of total step time; compute + exposed_comm + other + idle = 1. NaN when no time was measured.
  double compute_fraction = std::numeric_limits<double>::quiet_NaN();
  double exposed_comm_fraction = std::numeric_limits<double>::quiet_NaN();
  double other_fraction = std::numeric_limits<double>::quiet_NaN();
  double idle_fraction = std::numeric_limits<double>::quiet_NaN();
  double busy_fraction = std::numeric_limits<double>::quiet_NaN();
  double overlap = std::numeric_limits<double>::quiet_NaN();  // total overlapped / total comm
};

// One kernel (by its full name) over the measured steps (their union, so that a kernel counts
// once), time clipped to the steps: what nsys's cuda_gpu_kern_sum gives, per step.
struct KernelStat {
  std::string name;        // as recorded (demangled)
  std::string short_name;  // short_kernel_name(name)
  std::uint64_t count = 0;
  std::uint64_t total_ns = 0;
  double count_per_step = 0;  // over the measured steps
  double ns_per_step = 0;
  // total_ns / the kernel time of the measured steps (KernelTime::total_ns): the shares of all
  // kernels add up to 1 whether kernels run concurrently or not.
  double share = 0;
};

// All kernels over the measured steps, each kernel's clipped time summed (not their union: two
// concurrent kernels count twice, as in nsys's summary).
struct KernelTime {
  std::uint64_t total_ns = 0;
  std::uint64_t launches = 0;
  std::uint64_t distinct = 0;  // kernel names
};

// A kernel's demangled name without what makes it long and says little: the return type ("void "),
// the parameter list, "(anonymous namespace)::". Template arguments stay (cutlass::Kernel2<...> is
// told apart by them). Names that are not C++ signatures (nvjet_..., sm80_xmma_...) are unchanged.
std::string short_kernel_name(const std::string& name);

// The device records against the launch calls recorded with them, matched by correlation id. A
// kernel, memcpy or memset with no call of its id was launched through an API the collector did not
// record; HTA drops such events from every analysis once a trace has ProfilerStep ranges.
struct LaunchCoverage {
  std::uint64_t api_calls = 0;      // none: launch records were switched off, nothing is missing
  std::uint64_t device_events = 0;  // kernels, memcpys and memsets
  std::uint64_t without_launch = 0;
  std::vector<std::pair<std::string, std::uint64_t>> most_common_without_launch;  // up to 5, by count
};
LaunchCoverage launch_coverage(const RankActivity& activity);

// Running sum of the allocation records of one device since tracing began (releases of memory
// allocated before that can take it below zero).
struct MemoryPeak {
  std::uint32_t device = 0;
  std::string kind = "device";  // MemoryRecord::kind; one peak per device and kind
  std::int64_t peak_bytes = 0;
  std::optional<std::uint64_t> peak_at;  // first time the peak was reached; none when never above 0
  int peak_step = -1;                    // index of the window holding peak_at, -1 outside any
  std::int64_t final_bytes = 0;
  std::uint64_t allocations = 0, releases = 0;
};

struct AnalysisOptions {
  std::string step_marker = kStepRange;
  int warmup = 0;                           // leading windows left out of summary and top kernels
  std::uint64_t gap_threshold_ns = 50'000;  // idle longer than this is a host-bound gap
  int top_n = 15;
};

struct RankBreakdown {
  int rank = 0;
  int world_size = 1;
  std::string device_name;
  std::string step_marker;
  bool steps_from_ranges = true;  // false: one window over all GPU activity
  int warmup = 0;
  std::uint64_t gap_threshold_ns = 0;
  std::uint64_t dropped_records = 0;
  std::vector<StepBreakdown> steps;
  StepSummary summary;
  KernelTime kernel_time;
  std::vector<KernelStat> top_kernels;  // by total_ns, descending
  LaunchCoverage launches;
  std::vector<MemoryPeak> memory;       // by device, then kind
};

// UsageError for negative warmup or top_n, and as step_windows says.
RankBreakdown analyze(const RankActivity& activity, const AnalysisOptions& options = {});

nlohmann::json to_json(const RankBreakdown& b);  // NaN is written as null

// Across ranks, for each measured step index that every rank has:
//  - step time: max, min, spread and the slowest rank; with the median spread and the rank slowest
//    most often. Collectives end a step on every rank at nearly the same time, so this spread stays
//    small even when one rank holds the others back; the collective wait below finds that rank.
//  - collective wait ("collective_wait"): a collective's kernel runs on each rank from the moment that
//    rank reaches it until the last rank has arrived and the data has moved, so on the i-th collective
//    of a step, rank r waited wait = duration(r) - min over ranks of duration (no clock is compared
//    across ranks). Per step and rank the waits add up; the rank that waited least arrived last.
//    Steps whose ranks ran different numbers of collectives are left out and counted as unmatched.
//    Per rank: median wait per step and the steps it arrived last in; overall: the rank last most
//    often (the straggler) and the median, over steps, of the longest wait a peer spent on the last.
// UsageError on a repeated rank.
nlohmann::json straggler_view(const std::vector<RankBreakdown>& ranks);

// The straggler view on a few lines (empty for fewer than two ranks).
std::string render_straggler_view(const nlohmann::json& view);

// One screen: step time, the four-way split in ms per step and %, overlap, the top kernels (15 at
// most), peak memory, and a warning where device records lack their launch.
std::string render_breakdown(const RankBreakdown& b);

}  // namespace ddpbench::profile
