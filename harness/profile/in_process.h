// The built-in trainer's profiler (`--profile`), behind a header free of CUPTI and CUDA includes: on
// a GPU the CUPTI collector linked in (built only with a CUDA toolkit; elsewhere constructing it
// says so), on the CPU the trainer's phases alone as host ranges, which the analysis breaks steps
// down by (no device activity to record there).
#pragma once
#include <memory>
#include <string>

#include "profile/activity.h"
#include "device/phases.h"

namespace ddpbench::profile {

class InProcessProfiler {
 public:
  // Starts recording for device "cuda" or "cpu"; RunError for "cuda" where ddpbench was built without CUDA.
  explicit InProcessProfiler(const std::string& device);
  ~InProcessProfiler();
  InProcessProfiler(const InProcessProfiler&) = delete;
  InProcessProfiler& operator=(const InProcessProfiler&) = delete;

  // Records the trainer's phases as ranges on the collector's clock (the CPU: the steady clock).
  device::Phases::Sink sink();
  // Flushes and stops; the activity of this rank since construction.
  RankActivity finish(int rank, int world_size);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace ddpbench::profile
