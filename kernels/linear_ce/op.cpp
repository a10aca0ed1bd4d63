// Fused linear + cross-entropy: per chunk of tokens, the logits by one GEMM (cuBLAS through ATen),
// the row kernel (softmax_ce.cu) turning them into their gradient in place, and the two gradient
// GEMMs, all in forward; backward only scales the stored gradients by the incoming one. Peak extra
// memory: one chunk of logits, grad_hidden, and for a trainable weight its gradient.
#include "kernels/linear_ce/linear_ce.h"

#include <algorithm>

#include <torch/csrc/autograd/custom_function.h>

#include "common/error.h"
#include "kernels/fused.h"
#include "kernels/op_helpers.h"

#ifdef DDPBENCH_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "kernels/common/binding.h"
#include "kernels/linear_ce/softmax_ce.h"
#endif

namespace ddpbench::kernels {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The row step on the CPU, as ATen ops: what softmax_ce.cu does on the GPU, in fp32 or wider.
void row_step_cpu(at::Tensor& logits, const at::Tensor& labels, std::int64_t ignore_index, at::Tensor row_loss) {
  const auto x = logits.to(row_loss.scalar_type());
  const auto ignored = labels.eq(ignore_index);
  const auto safe = labels.masked_fill(ignored, 0).unsqueeze(1);
  const auto lse = at::logsumexp(x, {1}, true);
  row_loss.copy_((lse - x.gather(1, safe)).squeeze(1).masked_fill(ignored, 0));
  auto grad = at::exp(x - lse);
  grad.scatter_add_(1, safe, at::full_like(safe, -1, grad.options()));
  grad.masked_fill_(ignored.unsqueeze(1), 0);
  logits.copy_(grad);
}

void row_step(at::Tensor& logits, const at::Tensor& labels, std::int64_t ignore_index, at::Tensor row_loss) {
  if (!logits.is_cuda()) return row_step_cpu(logits, labels, ignore_index, std::move(row_loss));
#ifdef DDPBENCH_WITH_KERNELS
  const c10::cuda::CUDAGuard guard(logits.device());
  softmax_cross_entropy_grad(logits.data_ptr(), kernel_dtype(logits, "linear_cross_entropy"), logits.size(0),
                             logits.size(1), logits.stride(0), labels.data_ptr<std::int64_t>(), ignore_index,
                             row_loss.data_ptr<float>(), current_stream(logits));
#else
  throw_not_built("linear_cross_entropy");
#endif
}

// Outputs and workspaces: on the GPU through the bindings' allocator, which fills them with NaN
// under the kernel tests (DDPBENCH_KERNELS_POISON=1), so that a row the kernel skips shows.
at::Tensor new_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
#ifdef DDPBENCH_WITH_KERNELS
  if (options.device().is_cuda()) return new_output(sizes, options);
#endif
  return at::empty(sizes, options);
}

// grad_weight accumulated over chunks. In the weight's dtype by default: each chunk's product is
// added by one GEMM (cuBLAS with beta = 1, accumulating in fp32) and rounded once per chunk, as
// Liger-Kernel's accumulation does; that keeps the extra memory at one gradient (8b: an fp32
// accumulator and its final bf16 copy took 3.2 GB, 31% of the unfused path's peak). In fp32 when
// asked (in_fp32): the rounding happens once, at the end, as in the unfused path.
void accumulate_weight_grad(at::Tensor& acc, const at::Tensor& dlogits, const at::Tensor& hidden, bool in_fp32) {
  const bool mixed = in_fp32 && at::isReducedFloatingType(dlogits.scalar_type());
  if (!acc.defined()) {
    acc = mixed ? mm_fp32_out(dlogits.t(), hidden) : at::mm(dlogits.t(), hidden);
  } else if (!mixed) {
    acc.addmm_(dlogits.t(), hidden);
  } else if (dlogits.is_cuda()) {
    at::addmm_out(acc, acc, dlogits.t(), hidden, at::kFloat);
  } else {
    acc.addmm_(dlogits.t().to(at::kFloat), hidden.to(at::kFloat));
  }
}

struct LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
  // Which gradients to form is decided by the caller (grad mode and requires_grad at the call):
  // inside forward the node has no edges yet where no input requires a gradient.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& labels, std::int64_t ignore_index, std::int64_t chunk_rows,
                            bool grad_hidden_needed, bool grad_weight_needed, bool fp32_weight_grad) {
    const auto tokens = hidden.size(0), vocab = weight.size(0);
    auto row_loss = new_buffer({tokens}, hidden.options().dtype(at::promote_types(hidden.scalar_type(), at::kFloat)));
    const auto grad_hidden = grad_hidden_needed ? new_buffer(hidden.sizes(), hidden.options()) : at::Tensor();
    at::Tensor grad_weight_acc;
    // One chunk buffer for all chunks; the last one uses its leading rows.
    auto logits_buffer = new_buffer({std::min(chunk_rows, tokens), vocab}, hidden.options());
    for (std::int64_t start = 0; start < tokens; start += chunk_rows) {
      const auto rows = std::min(chunk_rows, tokens - start);
      const auto h = hidden.narrow(0, start, rows);
      auto logits = logits_buffer.narrow(0, 0, rows);
      at::mm_out(logits, h, weight.t());
      row_step(logits, labels.narrow(0, start, rows), ignore_index, row_loss.narrow(0, start, rows));
      if (grad_hidden_needed) {
        auto gh = grad_hidden.narrow(0, start, rows);
        at::mm_out(gh, logits, weight);
      }
      if (grad_weight_needed) accumulate_weight_grad(grad_weight_acc, logits, h, fp32_weight_grad);
    }
    logits_buffer.reset();
    // Kept as plain saved data (not save_for_backward): backward scales them in place, once.
    ctx->saved_data["grad_hidden"] = grad_hidden;
    ctx->saved_data["grad_weight"] = grad_weight_needed ? grad_weight_acc.to(weight.scalar_type()) : at::Tensor();
    return row_loss.sum();
  }

  // Out of place, so that a graph kept for a second backward (retain_graph) gives the same
  // gradients again; the extra pass over the gradients is small beside the forward's GEMMs.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = [&](const char* key) {
      const auto& v = ctx->saved_data[key];
      return v.isTensor() ? v.toTensor() : at::Tensor();  // an undefined tensor is saved as None
    };
    const auto grad_hidden = saved("grad_hidden"), grad_weight = saved("grad_weight");
    const auto& grad_loss = grads[0];
    return {grad_hidden.defined() ? grad_hidden * grad_loss : at::Tensor(),
            grad_weight.defined() ? grad_weight * grad_loss : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void check_inputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels) {
  if (hidden.dim() != 2 || weight.dim() != 2 || labels.dim() != 1 || hidden.size(1) != weight.size(1) ||
      labels.size(0) != hidden.size(0))
    throw RunError("linear_cross_entropy: expected hidden [N, H], weight [V, H], labels [N]; got " +
                   c10::str(hidden.sizes()) + ", " + c10::str(weight.sizes()) + ", " + c10::str(labels.sizes()));
  if (hidden.scalar_type() != weight.scalar_type() || labels.scalar_type() != at::kLong)
    throw RunError("linear_cross_entropy: hidden and weight must share a dtype and labels be int64");
  if (hidden.device() != weight.device() || labels.device() != hidden.device())
    throw RunError("linear_cross_entropy: hidden, weight and labels must be on one device");
  if (hidden.is_cuda() && hidden.scalar_type() != at::kBFloat16 && hidden.scalar_type() != at::kFloat)
    throw RunError(std::string("linear_cross_entropy: the CUDA kernel takes bf16 or fp32, not ") +
                   c10::toString(hidden.scalar_type()));
}

}  // namespace

std::int64_t linear_ce_chunk_rows(std::int64_t tokens, std::int64_t vocab, std::int64_t element_size,
                                  std::int64_t budget_bytes) {
  constexpr std::int64_t kTile = 128;
  const auto fit = budget_bytes / std::max<std::int64_t>(1, vocab * element_size);
  return std::clamp(fit / kTile * kTile, std::min(kTile, tokens), std::max<std::int64_t>(tokens, 1));
}

at::Tensor linear_cross_entropy_sum_chunked(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                            std::int64_t ignore_index, std::int64_t chunk_rows, bool fp32_weight_grad) {
  check_inputs(hidden, weight, labels);
  if (chunk_rows < 1) throw RunError("linear_cross_entropy: chunk_rows must be at least 1");
  const bool grad_mode = at::GradMode::is_enabled();
  return LinearCrossEntropy::apply(hidden.contiguous(), weight.contiguous(), labels.contiguous(), ignore_index,
                                   chunk_rows, grad_mode && hidden.requires_grad(), grad_mode && weight.requires_grad(),
                                   fp32_weight_grad);
}

at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                    std::int64_t ignore_index) {
  const auto rows = linear_ce_chunk_rows(hidden.size(0), weight.size(0), static_cast<std::int64_t>(hidden.element_size()));
  return linear_cross_entropy_sum_chunked(hidden, weight, labels, ignore_index, rows);
}

OpSpec linear_cross_entropy_op() {
  OpSpec op;
  op.name = "linear_cross_entropy";
  op.liger_name = "fused_linear_cross_entropy";
  op.memory_bound = false;
  op.make_inputs = [](const OpShape& s, at::ScalarType dtype, at::Device device, at::Generator& gen) {
    // Logits of unit scale: hidden ~ N(0, 1), weight ~ N(0, 1/H); a tenth of the labels ignored.
    // A shape without a vocabulary (the kernel tests' odd shapes) takes intermediate + 1 words.
    const std::int64_t vocab = s.vocab > 0 ? s.vocab : s.intermediate + 1;
    const auto on_gen = at::TensorOptions().device(gen.device());
    auto weight = random_tensor({vocab, s.hidden}, at::kFloat, device, gen) / std::sqrt(static_cast<double>(s.hidden));
    auto labels = at::randint(0, vocab, {s.tokens}, gen, on_gen.dtype(at::kLong));
    labels.masked_fill_(at::rand({s.tokens}, gen, on_gen.dtype(at::kFloat)) < 0.1, -100);
    OpInputs in;
    in.inputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen), weight.to(dtype), labels.to(device)};
    in.differentiable = {true, true, false};
    in.grad_outputs = {random_tensor({}, at::kFloat, device, gen)};
    return in;
  };
  op.reference = [](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{at::cross_entropy_loss(at::linear(in[0], in[1]).to(at::kFloat), in[2], {},
                                                          at::Reduction::Sum, -100)};
  };
  op.fused = [](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{linear_cross_entropy_sum(in[0], in[1], in[2])};
  };
  // At least: hidden, weight and labels read, their gradients written (all in forward); backward
  // reads and writes the two gradients once to scale them.
  op.forward_bytes = [](const OpShape& s, at::ScalarType dtype) {
    return 2.0 * elem_bytes(dtype) * static_cast<double>(s.tokens * s.hidden + s.vocab * s.hidden) + 8.0 * static_cast<double>(s.tokens);
  };
  op.backward_bytes = [](const OpShape& s, at::ScalarType dtype) {
    return 2.0 * elem_bytes(dtype) * static_cast<double>(s.tokens * s.hidden + s.vocab * s.hidden);
  };
  // Three GEMMs of 2 N H V each: logits, grad_hidden, grad_weight.
  op.forward_flops = [](const OpShape& s) { return 6.0 * static_cast<double>(s.tokens) * s.hidden * s.vocab; };
  op.backward_flops = [](const OpShape& s) { return static_cast<double>(s.tokens * s.hidden + s.vocab * s.hidden); };
  return op;
}

}  // namespace ddpbench::kernels
