#include "ddp/nccl_group.h"

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

namespace ddpbench::ddp {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                    int world_size, int cuda_device, std::chrono::seconds timeout) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
  // Binding the group to its device lets NCCL create the communicator now, at rendezvous, instead
  // of inside the first timed step.
  const at::Device device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device));
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, opts);
  pg->setBoundDeviceId(device);
  pg->eagerConnectSingleDevice(device);
  return pg;
}

}  // namespace ddpbench::ddp
