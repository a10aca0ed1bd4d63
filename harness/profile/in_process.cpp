#include "profile/in_process.h"

#include "common/error.h"

#ifdef DDPBENCH_WITH_CUDA
#include "device/cuda_device.h"
#include "device/device.h"
#include "profile/cupti_collector.h"
#endif

namespace ddpbench::profile {

#ifdef DDPBENCH_WITH_CUDA

struct InProcessProfiler::State {
  CuptiCollector& collector = CuptiCollector::instance();
};

InProcessProfiler::InProcessProfiler() : state_(std::make_unique<State>()) {
  state_->collector.start(CollectorOptions::from_env());
}

InProcessProfiler::~InProcessProfiler() {
  if (state_ && state_->collector.running()) {
    try {
      state_->collector.stop();
    } catch (...) {
      // Already unwinding or finished without finish(): nothing left to report to.
    }
  }
}

device::Phases::Sink InProcessProfiler::sink() {
  CuptiCollector* c = &state_->collector;
  return [c](const char* name, bool begin) {
    if (begin) c->push_range(name);
    else c->pop_range();
  };
}

RankActivity InProcessProfiler::finish(int rank, int world_size) {
  // Records of unfinished device work come without end times: let the device drain first.
  device::synchronize("cuda", 0);
  state_->collector.stop();
  auto activity = state_->collector.take();
  activity.rank = rank;
  activity.world_size = world_size;
  // CUPTI's DEVICE records come only where the kind was enabled before the context existed, which
  // is never the case here: ask the runtime for the name instead.
  if (activity.device_name.empty()) {
    const int device = activity.kernels.empty() ? 0 : static_cast<int>(activity.kernels.front().device);
    activity.device_name = device::cuda::device_name(device);
  }
  return activity;
}

#else

struct InProcessProfiler::State {};

InProcessProfiler::InProcessProfiler() {
  throw RunError("--profile: this ddpbench was built without a CUDA toolkit, so it has no CUPTI collector");
}
InProcessProfiler::~InProcessProfiler() = default;
device::Phases::Sink InProcessProfiler::sink() { return {}; }
RankActivity InProcessProfiler::finish(int, int) { return {}; }

#endif

}  // namespace ddpbench::profile
