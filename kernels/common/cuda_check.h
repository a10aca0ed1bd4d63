// Torch-free helpers shared by the .cu files: a launch or runtime error becomes an exception that
// names the call, the file and the line; grids are sized from the device's multiprocessor count.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace ddpbench::kernels {

inline void cuda_check(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string(what) + " failed at " + file + ":" + std::to_string(line) + ": " +
                             cudaGetErrorString(status));
}

// Multiprocessors of the current device (cached per device by the CUDA runtime's attribute query).
int multiprocessor_count();
// The shared memory a block may have on the current device once it opts in (dynamic + static).
int max_shared_bytes_per_block();

}  // namespace ddpbench::kernels

#define DDPBENCH_CUDA_CHECK(call) ::ddpbench::kernels::cuda_check((call), #call, __FILE__, __LINE__)
// After a <<<...>>> launch: configuration errors surface here rather than at the next sync.
#define DDPBENCH_LAUNCH_CHECK(name) ::ddpbench::kernels::cuda_check(cudaGetLastError(), name, __FILE__, __LINE__)
