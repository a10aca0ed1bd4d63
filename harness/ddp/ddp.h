// The DDP engine: a c10d process group (Gloo on the CPU, NCCL on GPUs) and a gradient reducer that
// all-reduces bucketed gradients while the backward pass is still running, skipping the
// accumulation micro-steps. Included only by LibTorch translation units.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include "device/phases.h"

namespace ddpbench::ddp {

struct Rendezvous {
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  int rank = 0;
  int world_size = 1;
  std::chrono::seconds timeout{300};
};

// One process group. shutdown() must run before the process exits: an NCCL group that is
// destroyed without it hangs the exit.
class Communicator {
 public:
  // backend "gloo" or "nccl"; cuda_device is the local GPU for NCCL, ignored for Gloo.
  static std::unique_ptr<Communicator> connect(const std::string& backend, const Rendezvous& rv, int cuda_device);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const std::string& backend_name() const { return backend_name_; }

  c10::intrusive_ptr<c10d::Work> allreduce_sum_async(at::Tensor& t);
  void allreduce_sum(at::Tensor& t);
  c10::intrusive_ptr<c10d::Work> broadcast_async(at::Tensor& t, int root);
  void broadcast(at::Tensor& t, int root);
  // Flat buffers, as NCCL takes them: `in` holds world_size() x out.numel() elements, rank k keeps
  // the sum of block k. In place when `out` is rank k's block of `in`.
  c10::intrusive_ptr<c10d::Work> reduce_scatter_sum_async(at::Tensor& out, at::Tensor& in);
  // `out` holds world_size() x in.numel() elements, block k from rank k. In place when `in` is
  // this rank's block of `out`.
  c10::intrusive_ptr<c10d::Work> all_gather_async(at::Tensor& out, at::Tensor& in);
  void barrier();
  void shutdown();

 private:
  Communicator(c10::intrusive_ptr<c10d::Backend> backend, int rank, int world_size, std::string name);
  c10::intrusive_ptr<c10d::Backend> backend_;
  int rank_;
  int world_size_;
  std::string backend_name_;
  bool shut_down_ = false;
};

// Gradients live as views into flat per-bucket buffers (as torch DDP's gradient_as_bucket_view),
// so accumulation writes straight into what is all-reduced and no copies are made. Buckets hold
// parameters in reverse registration order, the order their gradients become ready in backward,
// and are launched strictly in bucket order so every rank issues the same collective sequence.
//
// With shard (ZeRO-1), each bucket's flat buffer is padded to a multiple of the world and
// reduce-scattered instead of all-reduced: rank k receives the average of block k, the block its
// optimizer owns. param_shards() hands out this rank's blocks of the parameters as tensors of their
// own whose gradients are those averaged blocks; gather_params() all-gathers the updated blocks back
// into every rank's parameters.
class GradReducer {
 public:
  GradReducer(Communicator& comm, std::vector<at::Tensor> params, std::int64_t bucket_cap_bytes, bool shard = false);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  void zero_grad();           // zero every bucket; parameters keep their gradient views
  // Marks each bucket's all-reduce launch as an "allreduce" range (NVTX, and the collector's).
  void set_phases(const device::Phases* phases) { phases_ = phases; }
  void set_sync(bool sync);   // false on accumulation micro-steps: no communication at all
  void finish();              // launch buckets not launched yet, wait for all: grads are averaged
  int bucket_count() const { return static_cast<int>(buckets_.size()); }
  std::int64_t bucket_bytes(int i) const;  // the gradients in it, padding left out
  // shard only: one tensor per bucket, copied from the parameters now; keep them and step them.
  std::vector<at::Tensor> param_shards() const;
  void gather_params(const std::vector<at::Tensor>& shards);

 private:
  struct Bucket {
    at::Tensor flat;               // the gradients, then zeros up to a multiple of the world (shard)
    at::Tensor shard;              // shard: this rank's averaged block of flat
    std::int64_t numel = 0;        // gradient elements, padding left out
    std::vector<std::size_t> params;
    std::size_t pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
    bool launched = false;
  };
  void on_grad_ready(std::size_t param_index);
  void launch_ready_buckets();

  Communicator& comm_;
  std::vector<at::Tensor> params_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<std::uintptr_t> hook_keys_;
  std::vector<Bucket> buckets_;
  std::vector<std::size_t> bucket_of_param_;
  std::size_t next_to_launch_ = 0;
  bool sync_ = true;
  bool shard_ = false;
  const device::Phases* phases_ = nullptr;
};

}  // namespace ddpbench::ddp
