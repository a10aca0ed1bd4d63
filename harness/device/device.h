// The device side as the rest of the harness sees it, free of LibTorch and CUDA headers: what the
// runtime offers, synchronisation for timing, and memory peaks.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace ddpbench::device {

// What the runtime LibTorch loaded offers; the fingerprint (results/fingerprint.h) records it.
struct RuntimeInfo {
  std::string libtorch;       // "2.11.0"
  std::string cuda_runtime;   // "13.0", empty without CUDA
  std::string nccl;           // "2.28.9", empty without NCCL
  std::string cudnn;
  int cuda_device_count = 0;
  bool cuda_available = false;
};

RuntimeInfo runtime_info();

// Blocks until all work queued on the device is done ("cpu": returns at once).
void synchronize(const std::string& device, int index);
void set_cuda_device(int index);

struct MemoryPeaks {
  std::int64_t allocated = 0;  // the caching allocator's peak of allocated bytes; CPU: peak RSS
  std::int64_t reserved = 0;   // the caching allocator's peak of reserved bytes; CPU: peak RSS
};
MemoryPeaks memory_peaks(const std::string& device, int index);
void reset_memory_peaks(const std::string& device, int index);

// Times the device work queued between start() and stop(): on a GPU with CUDA events on the current
// stream, so that only device time counts and the host never waits inside the interval; on the CPU
// with the wall clock.
class IntervalTimer {
 public:
  IntervalTimer(const std::string& device, int index);
  ~IntervalTimer();
  IntervalTimer(const IntervalTimer&) = delete;
  IntervalTimer& operator=(const IntervalTimer&) = delete;
  void start();
  double stop_seconds();  // waits for the work to end, returns the seconds since start()

 private:
  struct Events;
  std::unique_ptr<Events> events_;  // null on the CPU
  std::chrono::steady_clock::time_point t0_;
};

// The bf16 matrix rate of this GPU as measured now (FLOP/s): 8192^3 products through ATen, timed
// after warm-up, the rate MFU divides by (DESIGN.md). The operands go back to the driver afterwards
// so that they do not count in the run's reserved memory. 0 on the CPU.
double measure_bf16_matmul_flops(const std::string& device, int index);

}  // namespace ddpbench::device
