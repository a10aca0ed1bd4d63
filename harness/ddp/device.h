// The device side as the rest of the harness sees it, free of LibTorch and CUDA headers: what the
// runtime offers, synchronisation for timing, and memory peaks.
#pragma once
#include <cstdint>
#include <string>

#include "results/fingerprint.h"

namespace ddpbench::ddp {

results::RuntimeInfo runtime_info();

// Blocks until all work queued on the device is done ("cpu": returns at once).
void synchronize(const std::string& device, int index);
void set_cuda_device(int index);

struct MemoryPeaks {
  std::int64_t allocated = 0;  // the caching allocator's peak of allocated bytes; CPU: peak RSS
  std::int64_t reserved = 0;   // the caching allocator's peak of reserved bytes; CPU: peak RSS
};
MemoryPeaks memory_peaks(const std::string& device, int index);
void reset_memory_peaks(const std::string& device, int index);

// The bf16 matrix rate of this GPU as measured now (FLOP/s): 8192^3 products through ATen, timed
// after warm-up, the rate MFU divides by (DESIGN.md). The operands go back to the driver afterwards
// so that they do not count in the run's reserved memory. 0 on the CPU.
double measure_bf16_matmul_flops(const std::string& device, int index);

}  // namespace ddpbench::ddp
