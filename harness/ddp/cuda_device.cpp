#include "ddp/cuda_device.h"

#include <dlfcn.h>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>

namespace ddpbench::ddp::cuda {

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

}  // namespace ddpbench::ddp::cuda
