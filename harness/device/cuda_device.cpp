#include "device/cuda_device.h"

#include <dlfcn.h>

#include <stdexcept>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

namespace ddpbench::device::cuda {

namespace {
const c10::CachingDeviceAllocator::Stat& aggregate(const c10::CachingDeviceAllocator::StatArray& a) {
  return a[static_cast<std::size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE)];
}
}  // namespace

void synchronize(int index) { c10::cuda::device_synchronize(); (void)index; }

void set_device(int index) { c10::cuda::set_device(static_cast<c10::DeviceIndex>(index)); }

std::int64_t peak_allocated(int index) {
  return aggregate(c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(index)).allocated_bytes).peak;
}

std::int64_t peak_reserved(int index) {
  return aggregate(c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(index)).reserved_bytes).peak;
}

void release_cached_memory() { c10::cuda::CUDACachingAllocator::emptyCache(); }

void reset_peaks(int index) { c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(index)); }

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
cudaStream_t current_stream(int index) {
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(index)).stream();
}
}  // namespace

EventPair::EventPair(int index) : index_(index) {
  cudaEvent_t a = nullptr, b = nullptr;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  start_ = a;
  stop_ = b;
}

EventPair::~EventPair() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}

void EventPair::record_start() { check(cudaEventRecord(static_cast<cudaEvent_t>(start_), current_stream(index_)), "cudaEventRecord"); }

double EventPair::record_stop_and_wait() {
  record_stop();
  return wait_seconds();
}

void EventPair::record_stop() { check(cudaEventRecord(static_cast<cudaEvent_t>(stop_), current_stream(index_)), "cudaEventRecord"); }

double EventPair::wait_seconds() {
  check(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)), "cudaEventElapsedTime");
  return ms * 1e-3;
}

std::int64_t l2_cache_bytes(int index) {
  int bytes = 0;
  check(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, index), "cudaDeviceGetAttribute(L2 cache size)");
  return bytes;
}

std::string nccl_version() {
  // The NCCL that counts is the one LibTorch loaded, whatever its path: look the symbol up in the
  // process rather than opening a library of our own choosing.
  using GetVersion = int (*)(int*);
  auto fn = reinterpret_cast<GetVersion>(dlsym(RTLD_DEFAULT, "ncclGetVersion"));
  int v = 0;
  if (!fn || fn(&v) != 0) return "";
  // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
  return std::to_string(v / 10000) + "." + std::to_string((v % 10000) / 100) + "." + std::to_string(v % 100);
}

std::string runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return "";
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::string device_name(int index) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) return "";
  return prop.name;
}

}  // namespace ddpbench::device::cuda
