// One rank's activity as Chrome trace JSON in the layout the PyTorch profiler writes: Perfetto opens it,
// and Holistic Trace Analysis reads it (distributedInfo.rank names the rank; "cat" tells kernels,
// memcpys and memsets apart; args carry stream and correlation).
//
// Layout: GPU records are complete events ("ph": "X") on pid = device, tid = stream; host ranges are
// "user_annotation" events on pid = kHostPid + rank (above any device id), tid = host thread.
// ts and dur are microseconds as doubles, ts absolute on the collector's clock as PyTorch writes it.
// At epoch-sized ns timestamps a double resolves ts to about 0.25 us; dur is computed from the ns
// difference, so it keeps full resolution.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "profile/activity.h"

namespace ddpbench::profile {

inline constexpr int kHostPid = 1'000'000;

nlohmann::json chrome_trace(const RankActivity& activity);
// Atomic: a reader never sees half a trace. RunError naming the path when it cannot be written.
void write_chrome_trace(const RankActivity& activity, const std::string& path);

}  // namespace ddpbench::profile
