// Calls that need CUDA headers, kept in one translation unit built only with a CUDA toolkit.
#pragma once
#include <cstdint>
#include <string>

namespace ddpbench::device::cuda {

void synchronize(int index);
void set_device(int index);
std::int64_t peak_allocated(int index);
std::int64_t peak_reserved(int index);
void reset_peaks(int index);
void release_cached_memory();  // the caching allocator's unused blocks back to the driver
// A pair of CUDA events recorded on the current stream of a device.
class EventPair {
 public:
  explicit EventPair(int index);
  ~EventPair();
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  void record_start();
  double record_stop_and_wait();  // seconds between the two events
  // The two halves of record_stop_and_wait, for pairs recorded back to back and read afterwards.
  void record_stop();
  double wait_seconds();

 private:
  int index_;
  void* start_;  // cudaEvent_t, kept opaque so that this header needs no CUDA headers
  void* stop_;
};
std::int64_t l2_cache_bytes(int index);
std::string nccl_version();  // "2.28.9" of the NCCL LibTorch loaded; empty if none
std::string runtime_version();
std::string device_name(int index);  // "NVIDIA H100 80GB HBM3"; empty if the runtime cannot say

}  // namespace ddpbench::device::cuda
