#include "kernels/common/cuda_check.h"

namespace ddpbench::kernels {

int multiprocessor_count() {
  int device = 0;
  DDPBENCH_CUDA_CHECK(cudaGetDevice(&device));
  int count = 0;
  DDPBENCH_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

int max_shared_bytes_per_block() {
  int device = 0;
  DDPBENCH_CUDA_CHECK(cudaGetDevice(&device));
  int bytes = 0;
  DDPBENCH_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return bytes;
}

}  // namespace ddpbench::kernels
