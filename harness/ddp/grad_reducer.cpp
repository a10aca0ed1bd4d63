#include <torch/csrc/autograd/function_hook.h>

#include "common/error.h"
#include "ddp/ddp.h"
#include "device/phases.h"

namespace ddpbench::ddp {

namespace {

// Runs after AccumulateGrad has added this step's contribution into param.grad, which is when the
// gradient of a leaf is final for the micro-step.
class GradReadyHook : public torch::autograd::FunctionPostHook {
 public:
  explicit GradReadyHook(std::function<void()> fn) : fn_(std::move(fn)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    fn_();
    return outputs;
  }

 private:
  std::function<void()> fn_;
};

}  // namespace

GradReducer::GradReducer(Communicator& comm, std::vector<at::Tensor> params, std::int64_t bucket_cap_bytes, bool shard)
    : comm_(comm), params_(std::move(params)), bucket_of_param_(params_.size()), shard_(shard) {
  // Reverse registration order approximates the order in which backward produces gradients.
  Bucket current;
  std::int64_t current_bytes = 0;
  auto close_bucket = [&] {
    if (!current.params.empty()) buckets_.push_back(std::move(current));
    current = Bucket{};
    current_bytes = 0;
  };
  for (std::size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    TORCH_CHECK(p.requires_grad() && p.is_leaf(), "GradReducer: parameter ", k, " is not a trainable leaf");
    TORCH_CHECK(p.is_contiguous(), "GradReducer: parameter ", k, " is not contiguous");
    // Mixed dtypes or devices cannot share one flat buffer.
    if (!current.params.empty() && (params_[current.params.front()].scalar_type() != p.scalar_type() ||
                                    params_[current.params.front()].device() != p.device()))
      close_bucket();
    current.params.push_back(k);
    current_bytes += static_cast<std::int64_t>(p.numel() * p.element_size());
    if (current_bytes >= bucket_cap_bytes) close_bucket();
  }
  close_bucket();

  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    auto& bucket = buckets_[b];
    std::int64_t numel = 0;
    for (auto k : bucket.params) numel += params_[k].numel();
    const auto& first = params_[bucket.params.front()];
    bucket.numel = numel;
    const std::int64_t world = comm_.world_size();
    const std::int64_t padded = shard_ ? (numel + world - 1) / world * world : numel;
    bucket.flat = at::zeros({padded}, first.options().requires_grad(false));
    if (shard_) bucket.shard = at::zeros({padded / world}, first.options().requires_grad(false));
    std::int64_t offset = 0;
    for (auto k : bucket.params) {
      auto& p = params_[k];
      p.mutable_grad() = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      bucket_of_param_[k] = b;
    }
  }

  accumulators_.reserve(params_.size());
  hook_keys_.reserve(params_.size());
  for (std::size_t k = 0; k < params_.size(); ++k) {
    // The accumulator must be kept alive: a variable holds it only weakly, and a new one (without
    // our hook) would be made for the next backward.
    auto acc = torch::autograd::impl::grad_accumulator(params_[k]);
    hook_keys_.push_back(acc->add_post_hook(std::make_unique<GradReadyHook>([this, k] { on_grad_ready(k); })));
    accumulators_.push_back(std::move(acc));
  }
  zero_grad();
}

GradReducer::~GradReducer() {
  for (std::size_t k = 0; k < accumulators_.size(); ++k) accumulators_[k]->del_post_hook(hook_keys_[k]);
}

std::int64_t GradReducer::bucket_bytes(int i) const {
  const auto& b = buckets_.at(static_cast<std::size_t>(i));
  return static_cast<std::int64_t>(b.numel * b.flat.element_size());
}

std::vector<at::Tensor> GradReducer::param_shards() const {
  TORCH_CHECK(shard_, "GradReducer::param_shards without shard");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (const auto& b : buckets_) {
    auto flat = at::zeros_like(b.flat);
    std::int64_t offset = 0;
    for (auto k : b.params) {
      flat.narrow(0, offset, params_[k].numel()).copy_(params_[k].detach().view(-1));
      offset += params_[k].numel();
    }
    const auto n = b.shard.numel();
    auto mine = flat.narrow(0, n * comm_.rank(), n).clone().set_requires_grad(true);
    mine.mutable_grad() = b.shard;  // the optimizer reads the averaged block through .grad()
    out.push_back(mine);
  }
  return out;
}

void GradReducer::gather_params(const std::vector<at::Tensor>& shards) {
  TORCH_CHECK(shard_ && shards.size() == buckets_.size(), "GradReducer::gather_params: one shard per bucket");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> full;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    full.push_back(at::empty_like(buckets_[b].flat));
    auto in = shards[b].detach();
    works.push_back(comm_.all_gather_async(full.back(), in));
  }
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    works[b]->wait();
    std::int64_t offset = 0;
    for (auto k : buckets_[b].params) {
      params_[k].detach().view(-1).copy_(full[b].narrow(0, offset, params_[k].numel()));
      offset += params_[k].numel();
    }
  }
}

void GradReducer::zero_grad() {
  for (auto& b : buckets_) {
    TORCH_CHECK(!b.launched || !b.work, "GradReducer::zero_grad while an all-reduce is in flight");
    b.flat.zero_();
    b.pending = b.params.size();
    b.launched = false;
    b.work.reset();
  }
  for (std::size_t k = 0; k < params_.size(); ++k) {
    // The optimizer or a user may have replaced a gradient; the views are what makes the all-reduce
    // see the accumulated values.
    TORCH_CHECK(params_[k].grad().defined() && params_[k].grad().data_ptr() != nullptr,
                "GradReducer: gradient of parameter ", k, " was reset; keep gradients as bucket views");
  }
  next_to_launch_ = 0;
}

void GradReducer::set_sync(bool sync) { sync_ = sync; }

void GradReducer::on_grad_ready(std::size_t param_index) {
  if (!sync_) return;
  auto& bucket = buckets_[bucket_of_param_[param_index]];
  TORCH_CHECK(bucket.pending > 0, "GradReducer: gradient of parameter ", param_index,
              " became ready twice in one step (is a parameter used twice with reentrant backward?)");
  --bucket.pending;
  launch_ready_buckets();
}

void GradReducer::launch_ready_buckets() {
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_].pending == 0) {
    auto& bucket = buckets_[next_to_launch_];
    if (phases_) phases_->push(device::kAllreduceRange);
    // Average, as torch DDP does: divide before summing so large worlds cannot overflow bf16.
    bucket.flat.div_(comm_.world_size());
    bucket.work = shard_ ? comm_.reduce_scatter_sum_async(bucket.shard, bucket.flat) : comm_.allreduce_sum_async(bucket.flat);
    bucket.launched = true;
    if (phases_) phases_->pop(device::kAllreduceRange);
    ++next_to_launch_;
  }
}

void GradReducer::finish() {
  if (!sync_) return;
  // Parameters that received no gradient this step leave their bucket pending; launch the rest in
  // order anyway so that every rank issues the same collectives and none waits forever.
  for (auto& b : buckets_) b.pending = 0;
  launch_ready_buckets();
  for (auto& b : buckets_) {
    if (b.work) b.work->wait();
    b.work.reset();
  }
}

}  // namespace ddpbench::ddp
