// ProcessGroupNCCL behind a header free of CUDA includes. Built only where a CUDA toolkit is found;
// elsewhere asking for it fails with a message saying so.
#pragma once
#include <chrono>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace ddpbench::ddp {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                    int world_size, int cuda_device, std::chrono::seconds timeout);

}  // namespace ddpbench::ddp
