#include "profile/in_process.h"

#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "common/error.h"

#ifdef DDPBENCH_WITH_CUDA
#include "device/cuda_device.h"
#include "device/device.h"
#include "profile/cupti_collector.h"
#endif

namespace ddpbench::profile {

// On the CPU: the phases as ranges on the steady clock, each thread's closed in the reverse order
// they were opened (the gradient reducer's ranges come from autograd's hooks).
struct HostRanges {
  std::mutex mu;
  std::vector<RangeRecord> done;
  std::map<std::uint64_t, std::vector<RangeRecord>> open;  // by thread
  static std::uint64_t this_thread() { return std::hash<std::thread::id>{}(std::this_thread::get_id()); }
  static std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
  }
  void push(const char* name) {
    std::lock_guard<std::mutex> lock(mu);
    RangeRecord r;
    r.start = now_ns();
    r.thread = this_thread();
    r.name = name;
    open[r.thread].push_back(std::move(r));
  }
  void pop() {
    std::lock_guard<std::mutex> lock(mu);
    auto& stack = open[this_thread()];
    if (stack.empty()) return;
    stack.back().end = now_ns();
    done.push_back(std::move(stack.back()));
    stack.pop_back();
  }
};

struct InProcessProfiler::State {
  std::unique_ptr<HostRanges> host;  // the CPU
#ifdef DDPBENCH_WITH_CUDA
  CuptiCollector* collector = nullptr;  // a GPU
#endif
};

InProcessProfiler::InProcessProfiler(const std::string& device) : state_(std::make_unique<State>()) {
  if (device == "cpu") {
    state_->host = std::make_unique<HostRanges>();
    return;
  }
#ifdef DDPBENCH_WITH_CUDA
  state_->collector = &CuptiCollector::instance();
  auto options = CollectorOptions::from_env();
  options.whole_api_kinds = true;  // see CollectorOptions: the per-API switches record nothing here
  state_->collector->start(options);
#else
  throw RunError("--profile: this ddpbench was built without a CUDA toolkit, so it has no CUPTI collector");
#endif
}

InProcessProfiler::~InProcessProfiler() {
#ifdef DDPBENCH_WITH_CUDA
  if (state_ && state_->collector && state_->collector->running()) {
    try {
      state_->collector->stop();
    } catch (...) {
      // Already unwinding or finished without finish(): nothing left to report to.
    }
  }
#endif
}

device::Phases::Sink InProcessProfiler::sink() {
  if (HostRanges* h = state_->host.get()) {
    return [h](const char* name, bool begin) {
      if (begin) h->push(name);
      else h->pop();
    };
  }
#ifdef DDPBENCH_WITH_CUDA
  CuptiCollector* c = state_->collector;
  return [c](const char* name, bool begin) {
    if (begin) c->push_range(name);
    else c->pop_range();
  };
#else
  return {};
#endif
}

RankActivity InProcessProfiler::finish(int rank, int world_size) {
  RankActivity activity;
  if (HostRanges* h = state_->host.get()) {
    std::lock_guard<std::mutex> lock(h->mu);
    activity.ranges = std::move(h->done);
    activity.device_name = "cpu";
  }
#ifdef DDPBENCH_WITH_CUDA
  else {
    // Records of unfinished device work come without end times: let the device drain first.
    device::synchronize("cuda", 0);
    state_->collector->stop();
    activity = state_->collector->take();
    // CUPTI's DEVICE records come only where the kind was enabled before the context existed, which
    // is never the case here: ask the runtime for the name instead.
    if (activity.device_name.empty()) {
      const int device = activity.kernels.empty() ? 0 : static_cast<int>(activity.kernels.front().device);
      activity.device_name = device::cuda::device_name(device);
    }
  }
#endif
  activity.rank = rank;
  activity.world_size = world_size;
  return activity;
}

}  // namespace ddpbench::profile
