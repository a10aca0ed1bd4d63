// One rank's activity as Chrome trace JSON in the layout PyTorch's profiler (Kineto) writes, so that
// Perfetto opens it and Holistic Trace Analysis (HTA) reads it completely: the rank from
// distributedInfo, iterations, host-side launches linked to what they launched, user annotations on
// the GPU timeline.
//
// Layout:
//  - GPU records are complete events ("ph": "X") on pid = device, tid = stream: cat "kernel",
//    "gpu_memcpy", "gpu_memset", with args device, stream, correlation (and bytes and
//    "memory bandwidth (GB/s)" on copies and sets).
//  - Host-side ranges are "user_annotation" events on pid = kHostPid + rank (above any device id),
//    tid = host thread. The step ranges (TraceOptions::step_marker) are named ProfilerStep#N,
//    N = 0, 1, ... in time order, which is what HTA takes as iterations; their own name stays in
//    args.range. Not so in a trace without launch records: HTA keeps only the device work whose
//    launch lies before the last ProfilerStep, and would keep none.
//  - Launch and wait calls (ApiCallRecord) are "cuda_runtime" / "cuda_driver" events on the host
//    thread with args cbid and correlation, and each launch is tied to what it launched by an "ac2g"
//    flow (ph s on the call, ph f with bp e on the device event, id = correlation).
//  - A call is made in the innermost range of its thread that holds it, or, where none of its thread
//    does, in the innermost range open on any thread at that moment (PyTorch's autograd engine
//    launches the backward pass from a worker thread).
//  - Every other range also appears as a "gpu_user_annotation" on each stream that ran work launched
//    in it or in a range lying within it (on any thread), spanning the first start to the last end of
//    that work, as Kineto draws them. Step ranges do not: HTA takes any event named ProfilerStep as
//    an iteration boundary, wherever it lies.
//  - "External id" as Kineto uses it: a range's own id; on a call, the id of the range it was made in;
//    on a device event, that of the call that launched it.
// Timestamps: baseTimeNanoseconds is the earliest record (or TraceOptions::base_ns); ts and dur are
// microseconds from it with three decimals (exact nanoseconds: a double holds them exactly far beyond
// any trace's length).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "profile/activity.h"

namespace ddpbench::profile {

inline constexpr int kHostPid = 1'000'000;

struct TraceOptions {
  // The ranges that become ProfilerStep#N, as AnalysisOptions::step_marker (re:REGEX for a pattern).
  std::string step_marker = kStepRange;
  // One base for all ranks of a run (the earliest record among them): HTA lines ranks up by their
  // ts alone, and the ranks of one host share CUPTI's clock. Ignored when later than this rank's
  // earliest record.
  std::optional<std::uint64_t> base_ns;
};

// The earliest start among ranges, API calls, kernels, memcpys and memsets; none for an empty activity.
std::optional<std::uint64_t> earliest_record(const RankActivity& activity);

// UsageError for an empty marker or a bad regex; a marker that names no range makes no steps.
nlohmann::json chrome_trace(const RankActivity& activity, const TraceOptions& options = {});
// The document as written: metadata first, one key a line with a space after each colon (HTA finds
// the rank by searching the text for `"rank":` and whitespace), then one event a line.
std::string chrome_trace_text(const nlohmann::json& trace);
// Atomic: a reader never sees half a trace. RunError naming the path when it cannot be written.
void write_chrome_trace(const RankActivity& activity, const std::string& path, const TraceOptions& options = {});

}  // namespace ddpbench::profile
