#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>

#include "common/error.h"
#include "ddp/ddp.h"
#include "ddp/nccl_group.h"

namespace ddpbench::ddp {

namespace {

c10::intrusive_ptr<c10d::Store> make_store(const Rendezvous& rv) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(rv.master_port);
  // Rank 0 hosts the store unless the launcher already does (a run over several nodes, ddp/store.h).
  opts.isServer = rv.rank == 0 && !rv.store_hosted;
  opts.numWorkers = rv.world_size;
  opts.waitWorkers = false;
  opts.timeout = rv.timeout;
  auto store = c10::make_intrusive<c10d::TCPStore>(rv.master_addr, opts);
  // A prefix per group keeps the keys of this group apart from any other store user.
  return c10::make_intrusive<c10d::PrefixStore>("ddpbench/default_pg", store);
}

c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, const Rendezvous& rv) {
  auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::duration_cast<std::chrono::milliseconds>(rv.timeout));
  // As torch.distributed does: GLOO_SOCKET_IFNAME names the interface; else a single-node world on
  // the loopback stays on it (the host name may not resolve inside containers); else the address
  // this host's name resolves to.
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (rv.master_addr == "127.0.0.1" || rv.master_addr == "localhost") {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rv.rank, rv.world_size, opts);
}

}  // namespace

std::unique_ptr<Communicator> Communicator::connect(const std::string& backend, const Rendezvous& rv, int cuda_device) {
  try {
    auto store = make_store(rv);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == "gloo") {
      pg = make_gloo(store, rv);
    } else if (backend == "nccl") {
      pg = make_nccl_backend(store, rv.rank, rv.world_size, cuda_device, rv.timeout);
    } else {
      throw UsageError("unknown process group backend '" + backend + "' (gloo or nccl)");
    }
    return std::unique_ptr<Communicator>(new Communicator(std::move(pg), rv.rank, rv.world_size, backend));
  } catch (...) {
    rethrow_with_context("connecting rank " + std::to_string(rv.rank) + " of " + std::to_string(rv.world_size) +
                         " to " + rv.master_addr + ":" + std::to_string(rv.master_port) + " (" + backend + ")");
  }
}

Communicator::Communicator(c10::intrusive_ptr<c10d::Backend> backend, int rank, int world_size, std::string name)
    : backend_(std::move(backend)), rank_(rank), world_size_(world_size), backend_name_(std::move(name)) {}

Communicator::~Communicator() {
  try {
    shutdown();
  } catch (...) {
    // Destructors must not throw; a failed shutdown at exit has nothing left to report to.
  }
}

c10::intrusive_ptr<c10d::Work> Communicator::allreduce_sum_async(at::Tensor& t) {
  std::vector<at::Tensor> ts{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  return backend_->allreduce(ts, opts);
}

void Communicator::allreduce_sum(at::Tensor& t) { allreduce_sum_async(t)->wait(); }

c10::intrusive_ptr<c10d::Work> Communicator::broadcast_async(at::Tensor& t, int root) {
  std::vector<at::Tensor> ts{t};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  return backend_->broadcast(ts, opts);
}

void Communicator::broadcast(at::Tensor& t, int root) { broadcast_async(t, root)->wait(); }

c10::intrusive_ptr<c10d::Work> Communicator::reduce_scatter_sum_async(at::Tensor& out, at::Tensor& in) {
  c10d::ReduceScatterOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  return backend_->_reduce_scatter_base(out, in, opts);
}

c10::intrusive_ptr<c10d::Work> Communicator::all_gather_async(at::Tensor& out, at::Tensor& in) {
  return backend_->_allgather_base(out, in, c10d::AllgatherOptions());
}

void Communicator::barrier() { backend_->barrier(c10d::BarrierOptions())->wait(); }

void Communicator::shutdown() {
  if (shut_down_ || !backend_) return;
  shut_down_ = true;
  backend_->shutdown();
}

}  // namespace ddpbench::ddp

#ifndef DDPBENCH_WITH_CUDA
namespace ddpbench::ddp {
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>&, int, int, int,
                                                    std::chrono::seconds) {
  throw RunError("this ddpbench was built without a CUDA toolkit, so it has no NCCL process group");
}
}  // namespace ddpbench::ddp
#endif
