// The phases of a training step as named ranges: NVTX ranges for any tool that listens (Nsight, a
// CUPTI collector through NVTX injection), and, when the in-process collector runs, ranges on its
// clock. Header-only NVTX3: nothing to link, and no cost beyond a branch when no tool is attached.
#pragma once
#include <functional>
#include <utility>

#if __has_include(<nvtx3/nvToolsExt.h>)
#include <nvtx3/nvToolsExt.h>
#define DDPBENCH_HAVE_NVTX 1
#endif

namespace ddpbench::device {

// Stable names: reports and tests key on them.
inline constexpr const char* kStepRange = "step";
inline constexpr const char* kDataRange = "data";
inline constexpr const char* kForwardRange = "forward";
inline constexpr const char* kBackwardRange = "backward";
inline constexpr const char* kAllreduceRange = "allreduce";
inline constexpr const char* kOptimizerRange = "optimizer";

class Phases {
 public:
  // Called with (name, true) on entry and (name, false) on exit; empty: NVTX only.
  using Sink = std::function<void(const char* name, bool begin)>;
  Phases() = default;
  explicit Phases(Sink sink) : sink_(std::move(sink)) {}

  void push(const char* name) const {
#ifdef DDPBENCH_HAVE_NVTX
    nvtxRangePushA(name);
#endif
    if (sink_) sink_(name, true);
  }
  void pop(const char* name) const {
    if (sink_) sink_(name, false);
#ifdef DDPBENCH_HAVE_NVTX
    nvtxRangePop();
#endif
  }

  class Scope {
   public:
    Scope(const Phases& phases, const char* name) : phases_(phases), name_(name) { phases_.push(name_); }
    ~Scope() { phases_.pop(name_); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    const Phases& phases_;
    const char* name_;
  };
  Scope scope(const char* name) const { return Scope(*this, name); }

 private:
  Sink sink_;
};

}  // namespace ddpbench::device
