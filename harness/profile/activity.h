// What the CUPTI collector records and the analysis reads: GPU activity of one rank as plain
// records, timestamps in nanoseconds on CUPTI's clock (cuptiGetTimestamp), so host-side ranges and
// device activity line up. Torch-free and CUPTI-free, so that the analysis is tested on the CPU with
// hand-built records.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "device/phases.h"

namespace ddpbench::profile {

struct KernelRecord {
  std::uint64_t start = 0, end = 0;  // ns
  std::uint32_t device = 0;
  std::uint32_t stream = 0;
  std::uint32_t correlation = 0;
  std::string name;                  // demangled where possible
  std::uint32_t grid[3] = {0, 0, 0};
  std::uint32_t block[3] = {0, 0, 0};
};

struct MemcpyRecord {
  std::uint64_t start = 0, end = 0;
  std::uint32_t device = 0, stream = 0, correlation = 0;
  std::uint64_t bytes = 0;
  std::string kind;  // "HtoD", "DtoH", "DtoD", "PtoP", ...
};

struct MemsetRecord {
  std::uint64_t start = 0, end = 0;
  std::uint32_t device = 0, stream = 0, correlation = 0;
  std::uint64_t bytes = 0;
};

// A device memory allocation or release seen by CUPTI (activity kind MEMORY2).
struct MemoryRecord {
  std::uint64_t timestamp = 0;
  std::uint32_t device = 0;
  std::uint64_t address = 0;
  std::uint64_t bytes = 0;
  bool allocation = true;  // false: release
  // CUPTI's memory kind: device, device_static, managed, managed_static, array or unknown. Records of
  // a kind CUPTI does not tie to a device carry device 0, so peaks are kept apart by kind.
  std::string kind = "device";
};

// A host-side range: the trainer's phases (step, data, forward, backward, allreduce, optimizer) or
// an NVTX push/pop range of another program. thread identifies the host thread.
struct RangeRecord {
  std::uint64_t start = 0, end = 0;
  std::uint64_t thread = 0;
  std::string name;
};

// A CUDA API call on the host that puts work on the device (a kernel launch, a memcpy or memset, a
// graph launch) or waits for it (a synchronize): CUPTI's RUNTIME and DRIVER activity. correlation
// is the one its kernel, memcpy or memset record carries, which links a launch to what it launched.
struct ApiCallRecord {
  std::uint64_t start = 0, end = 0;  // ns
  std::uint64_t thread = 0;          // as RangeRecord::thread
  std::uint32_t correlation = 0;
  std::uint32_t cbid = 0;  // CUPTI's callback id of the function, within its API
  bool driver = false;     // a driver API call (cuLaunchKernel), else a runtime one (cudaLaunchKernel)
  std::string name;        // "cudaLaunchKernel", "cudaMemcpyAsync", "cuLaunchKernelEx", ...
};

struct RankActivity {
  int rank = 0;
  int world_size = 1;
  std::string device_name;  // "NVIDIA H100 80GB HBM3"
  std::vector<KernelRecord> kernels;
  std::vector<MemcpyRecord> memcpys;
  std::vector<MemsetRecord> memsets;
  std::vector<MemoryRecord> memory;
  std::vector<RangeRecord> ranges;
  std::vector<ApiCallRecord> api_calls;  // empty where launch records were switched off
  std::uint64_t dropped_records = 0;  // CUPTI buffers that overflowed
  // Device records CUPTI delivered without timestamps (it ran short of device memory for them):
  // left out of the vectors above, counted so that a thin trace is not mistaken for an idle GPU.
  std::uint64_t untimed_records = 0;
  // CUPTI_ACTIVITY_KIND_OVERHEAD: time CUPTI and the driver spent on tracing itself (buffer flushes,
  // instrumentation), the part of the tracing overhead that the collector can see.
  std::uint64_t overhead_records = 0;
  std::uint64_t overhead_ns = 0;
};

// The phase ranges' names (device/phases.h), as the profile reads them back.
using device::kStepRange;
using device::kDataRange;
using device::kForwardRange;
using device::kBackwardRange;
using device::kAllreduceRange;
using device::kOptimizerRange;

nlohmann::json to_json(const RankActivity& a);
RankActivity activity_from_json(const nlohmann::json& j);  // UsageError on a malformed document

}  // namespace ddpbench::profile
