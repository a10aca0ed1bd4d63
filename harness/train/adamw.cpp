#include "train/adamw.h"

#include <algorithm>


namespace ddpbench::train {

namespace {
constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;

void fused_adamw(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                 at::TensorList steps, double lr, double weight_decay) {
  // The kernel reads the step count for bias correction but leaves counting to the caller.
  at::_foreach_add_(steps, 1);
  at::_fused_adamw_(params, grads, exp_avg, exp_avg_sq, {}, steps, lr, kBeta1, kBeta2, weight_decay, kEps,
                    /*amsgrad=*/false, /*maximize=*/false);
}

at::Tensor step_count(const at::Tensor& like) {
  return at::zeros({}, like.options().dtype(at::kFloat).requires_grad(false));
}
}  // namespace

AdamW::AdamW(std::vector<at::Tensor> params, double weight_decay, OptimState state, std::int64_t scratch_elems)
    : params_(std::move(params)), weight_decay_(weight_decay) {
  at::NoGradGuard no_grad;
  std::int64_t chunk_fill = scratch_elems;  // forces a new chunk for the first piece
  std::int64_t widest = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    TORCH_CHECK(p.is_contiguous(), "AdamW: parameter ", i, " is not contiguous");
    const bool master = state == OptimState::fp32 && p.scalar_type() != at::kFloat && p.scalar_type() != at::kDouble;
    master_.push_back(master ? p.detach().to(at::kFloat) : p);
    const auto opts = master_.back().options().requires_grad(false);
    exp_avg_.push_back(at::zeros_like(master_.back(), opts));
    exp_avg_sq_.push_back(at::zeros_like(master_.back(), opts));
    if (!master) {
      direct_.push_back(i);
      steps_.push_back(step_count(p));
      continue;
    }
    // AdamW is elementwise: a parameter may be cut anywhere, so one scratch buffer serves all.
    for (std::int64_t offset = 0; offset < p.numel();) {
      if (chunk_fill >= scratch_elems) {
        chunks_.emplace_back();
        chunk_fill = 0;
      }
      const std::int64_t length = std::min(p.numel() - offset, scratch_elems - chunk_fill);
      chunks_.back().push_back({i, offset, length});
      piece_steps_.push_back(step_count(p));
      offset += length;
      chunk_fill += length;
      widest = std::max(widest, chunk_fill);
    }
  }
  if (widest > 0) scratch_ = at::empty({widest}, params_.front().options().dtype(at::kFloat).requires_grad(false));
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  if (!direct_.empty()) {
    std::vector<at::Tensor> ps, gs, ms, vs;
    for (auto i : direct_) {
      ps.push_back(params_[i]);
      gs.push_back(params_[i].grad());
      ms.push_back(exp_avg_[i]);
      vs.push_back(exp_avg_sq_[i]);
    }
    fused_adamw(ps, gs, ms, vs, steps_, lr, weight_decay_);
  }
  std::size_t piece_index = 0;
  for (const auto& chunk : chunks_) {
    std::vector<at::Tensor> weights, masters, grads, grads32, ms, vs, steps;
    std::int64_t fill = 0;
    for (const auto& piece : chunk) {
      const auto slice = [&](const at::Tensor& t) { return t.view({-1}).narrow(0, piece.offset, piece.length); };
      weights.push_back(slice(params_[piece.param]));
      masters.push_back(slice(master_[piece.param]));
      grads.push_back(slice(params_[piece.param].grad()));
      grads32.push_back(scratch_.narrow(0, fill, piece.length));
      ms.push_back(slice(exp_avg_[piece.param]));
      vs.push_back(slice(exp_avg_sq_[piece.param]));
      steps.push_back(piece_steps_[piece_index++]);
      fill += piece.length;
    }
    at::_foreach_copy_(grads32, grads);
    fused_adamw(masters, grads32, ms, vs, steps, lr, weight_decay_);
    at::_foreach_copy_(weights, masters);  // round to nearest, as Tensor.copy_ does
  }
}

std::int64_t AdamW::state_bytes() const {
  std::int64_t bytes = scratch_.defined() ? scratch_.nbytes() : 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    bytes += exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes();
    if (!master_[i].is_same(params_[i])) bytes += master_[i].nbytes();
  }
  return bytes;
}

}  // namespace ddpbench::train
