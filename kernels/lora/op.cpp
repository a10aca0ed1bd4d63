// LoRA linear with a frozen base weight as one autograd function. Forward keeps the input and the
// rank-r x A^T (not the fp32 input copy that stock autograd saves for PEFT's computation); the
// arithmetic (kernels/lora/lora.h's Projection) multiplies the adapters in the activations' dtype.
// GEMMs through ATen (cuBLAS); nothing here needs a kernel of its own.
#include "kernels/lora/lora.h"

#include <cmath>

#include <torch/csrc/autograd/custom_function.h>

#include "common/error.h"
#include "kernels/fused.h"
#include "kernels/op_helpers.h"

namespace ddpbench::kernels {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The adapters in the dtype of the activations they multiply (a cast of r x (in + out) elements).
at::Tensor in_dtype_of(const at::Tensor& adapter, const at::Tensor& x) { return adapter.to(x.scalar_type()); }

struct LoraLinear : public torch::autograd::Function<LoraLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& lora_a,
                            const at::Tensor& lora_b, double scale) {
    auto out = project({weight, lora_a, lora_b, scale}, as_rows(x));
    ctx->save_for_backward({x, weight, lora_a, lora_b, out.xa});
    ctx->saved_data["scale"] = scale;
    return with_leading_dims_of(out.y, x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const Projection p{saved[1], saved[2], saved[3], ctx->saved_data["scale"].toDouble()};
    at::Tensor grad_x;
    const auto g = project_backward(p, as_rows(x), saved[4], as_rows(grads[0]), grad_x, ctx->needs_input_grad(0));
    return {grad_x.defined() ? grad_x.view(x.sizes()) : grad_x, at::Tensor(), ctx->needs_input_grad(2) ? g.lora_a : at::Tensor(),
            ctx->needs_input_grad(3) ? g.lora_b : at::Tensor(), at::Tensor()};
  }
};

}  // namespace

ProjectionOutput project(const Projection& p, const at::Tensor& x, const at::Tensor& residual) {
  ProjectionOutput out;
  if (!p.has_lora()) {
    out.y = residual.defined() ? at::addmm(residual, x, p.weight.t()) : at::mm(x, p.weight.t());
    return out;
  }
  // The adapters' update goes onto the projection's output before the residual, as the unfused
  // model adds them: early in training the update is far below the bf16 spacing of the residual
  // stream, and added after the residual it is rounded away (measured: the 350m LoRA loss curve
  // strayed 0.0086 from the baseline's that way, 0.00045 this way, against an A/A floor of 0.00024).
  out.y = at::mm(x, p.weight.t());
  out.xa = at::mm(x, in_dtype_of(p.lora_a, x).t());
  out.y.addmm_(out.xa, in_dtype_of(p.lora_b, x).t(), /*beta=*/1, /*alpha=*/p.scale);
  if (residual.defined()) out.y.add_(residual);
  return out;
}

ProjectionGrads project_backward(const Projection& p, const at::Tensor& x, const at::Tensor& xa, const at::Tensor& grad_y,
                                 at::Tensor& grad_x, bool want_grad_x) {
  ProjectionGrads g;
  at::Tensor gy_b;  // grad_y B [tokens, r], unscaled
  if (p.has_lora()) gy_b = at::mm(grad_y, in_dtype_of(p.lora_b, grad_y));
  if (grad_x.defined()) grad_x.addmm_(grad_y, p.weight);
  else if (want_grad_x) grad_x = at::mm(grad_y, p.weight);
  if (grad_x.defined() && p.has_lora()) grad_x.addmm_(gy_b, in_dtype_of(p.lora_a, grad_y), /*beta=*/1, /*alpha=*/p.scale);
  if (p.weight.requires_grad()) g.weight = at::mm(grad_y.t(), x);
  if (p.has_lora()) {
    g.lora_b = mm_fp32_out(grad_y.t(), xa).mul_(p.scale).to(p.lora_b.scalar_type());
    g.lora_a = mm_fp32_out(gy_b.t(), x).mul_(p.scale).to(p.lora_a.scalar_type());
  }
  return g;
}

at::Tensor lora_linear_reference(const at::Tensor& x, const at::Tensor& x_adapter, const at::Tensor& weight,
                                 const at::Tensor& lora_a, const at::Tensor& lora_b, double scale) {
  const auto y = at::linear(x, weight);
  const auto update = at::linear(at::linear(x_adapter, lora_a), lora_b) * scale;
  return y + update.to(y.scalar_type());
}

void check_projection(const Projection& p, const std::string& op) {
  if (!p.has_lora()) return;
  if (p.weight.requires_grad())
    throw RunError(op + ": the base weight " + c10::str(p.weight.sizes()) + " must be frozen under adapters (it has requires_grad set)");
  if (p.lora_a.size(1) != p.weight.size(1) || p.lora_b.size(0) != p.weight.size(0) || p.lora_b.size(1) != p.lora_a.size(0))
    throw RunError(op + ": adapters lora_a " + c10::str(p.lora_a.sizes()) + ", lora_b " + c10::str(p.lora_b.sizes()) +
                   " do not fit weight " + c10::str(p.weight.sizes()));
}

at::Tensor project_reference(const Projection& p, const at::Tensor& x) {
  if (!p.has_lora()) return at::linear(x, p.weight);
  return lora_linear_reference(x, x.to(p.lora_a.scalar_type()), p.weight, p.lora_a, p.lora_b, p.scale);
}

void append_projection_inputs(OpInputs& in, std::int64_t out, std::int64_t inp, std::int64_t rank, bool lora,
                              at::ScalarType dtype, at::Device device, at::Generator& gen) {
  in.inputs.push_back((random_tensor({out, inp}, at::kFloat, device, gen) * 0.02).to(dtype));
  in.differentiable.push_back(!lora);
  if (!lora) return;
  in.inputs.push_back(random_tensor({rank, inp}, at::kFloat, device, gen) / std::sqrt(static_cast<double>(inp)));
  in.inputs.push_back(random_tensor({out, rank}, at::kFloat, device, gen) * 0.02);
  in.differentiable.insert(in.differentiable.end(), {true, true});
}

at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& lora_a, const at::Tensor& lora_b,
                       double scale) {
  if (x.size(-1) != weight.size(1))
    throw RunError("lora_linear: x " + c10::str(x.sizes()) + " does not fit weight " + c10::str(weight.sizes()));
  check_projection({weight, lora_a, lora_b, scale}, "lora_linear");
  return LoraLinear::apply(x, weight, lora_a, lora_b, scale);
}

OpSpec lora_linear_op() {
  OpSpec op;
  op.name = "lora_linear";
  op.liger_name = "";  // Liger has no LoRA layer
  op.memory_bound = false;
  // The gate/up projection: x [tokens, hidden] to [tokens, intermediate], the widest adapted input
  // being the down projection's, the widest output these.
  op.make_inputs = [](const OpShape& s, at::ScalarType dtype, at::Device device, at::Generator& gen) {
    OpInputs in;  // x ~ N(0, 1), then the projection's weight and adapters
    in.inputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen)};
    in.differentiable = {true};
    append_projection_inputs(in, s.intermediate, s.hidden, s.lora_rank, /*lora=*/true, dtype, device, gen);
    in.grad_outputs = {random_tensor({s.tokens, s.intermediate}, dtype, device, gen)};
    return in;
  };
  op.reference = [](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{project_reference({in[1], in[2], in[3], kRegistryLoraScale}, in[0])};
  };
  op.fused = [](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{lora_linear(in[0], in[1], in[2], in[3], kRegistryLoraScale)};
  };
  // x, weight, adapters read and y written in forward; backward reads grad_y, x, weight and writes
  // grad_x (the adapters' gradients are r/hidden of that).
  op.forward_bytes = [](const OpShape& s, at::ScalarType dtype) {
    const double e = elem_bytes(dtype);
    return e * static_cast<double>(s.tokens * s.hidden + s.intermediate * s.hidden + s.tokens * s.intermediate) +
           4.0 * static_cast<double>(s.lora_rank * (s.hidden + s.intermediate));
  };
  op.backward_bytes = [](const OpShape& s, at::ScalarType dtype) {
    const double e = elem_bytes(dtype);
    return e * static_cast<double>(s.tokens * s.intermediate + 2 * s.tokens * s.hidden + s.intermediate * s.hidden) +
           8.0 * static_cast<double>(s.lora_rank * (s.hidden + s.intermediate));
  };
  // Forward: the base GEMM and the two rank-r GEMMs. Backward: grad_x through the base weight, the
  // recomputed x A^T, and the three rank-r GEMMs of grad_x's update, grad_A and grad_B (plus grad_y B).
  op.forward_flops = [](const OpShape& s) {
    const double n = static_cast<double>(s.tokens);
    return 2.0 * n * s.hidden * s.intermediate + 2.0 * n * s.lora_rank * (s.hidden + s.intermediate);
  };
  op.backward_flops = [](const OpShape& s) {
    const double n = static_cast<double>(s.tokens);
    return 2.0 * n * s.hidden * s.intermediate + 2.0 * n * s.lora_rank * (3.0 * s.hidden + 2.0 * s.intermediate);
  };
  return op;
}

}  // namespace ddpbench::kernels
