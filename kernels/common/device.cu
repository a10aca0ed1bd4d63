#include "kernels/common/cuda_check.h"

namespace ddpbench::kernels {

namespace {

int current_device_attribute(cudaDeviceAttr attribute) {
  int device = 0;
  DDPBENCH_CUDA_CHECK(cudaGetDevice(&device));
  int value = 0;
  DDPBENCH_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

}  // namespace

int multiprocessor_count() { return current_device_attribute(cudaDevAttrMultiProcessorCount); }

int max_shared_bytes_per_block() { return current_device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin); }

}  // namespace ddpbench::kernels
