// The CUPTI collector linked into the built-in trainer (`--profile`), behind a header free of CUPTI
// and CUDA includes. Built only with a CUDA toolkit; elsewhere constructing it says so.
#pragma once
#include <memory>

#include "profile/activity.h"
#include "device/phases.h"

namespace ddpbench::profile {

class InProcessProfiler {
 public:
  InProcessProfiler();  // starts recording; RunError where ddpbench was built without CUDA
  ~InProcessProfiler();
  InProcessProfiler(const InProcessProfiler&) = delete;
  InProcessProfiler& operator=(const InProcessProfiler&) = delete;

  // Records the trainer's phases as ranges on the collector's clock.
  device::Phases::Sink sink();
  // Flushes and stops; the activity of this rank since construction.
  RankActivity finish(int rank, int world_size);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace ddpbench::profile
