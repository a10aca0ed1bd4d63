// LoRA linear with a frozen base weight as one autograd function: the same arithmetic as PEFT's
// (adapters in their own dtype, fp32 for a bf16 model), but backward recomputes the rank-r
// intermediate x A^T and the adapter-dtype copy of x from the saved x instead of keeping them:
// stock autograd saves an fp32 copy of every adapted linear's input, twice the size of the input
// itself in a bf16 model. GEMMs through ATen (cuBLAS); nothing here needs a kernel of its own.
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

struct LoraLinear : public torch::autograd::Function<LoraLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& lora_a,
                            const at::Tensor& lora_b, double scale) {
    ctx->save_for_backward({x, weight, lora_a, lora_b});
    ctx->saved_data["scale"] = scale;
    return lora_linear_reference(x, x.to(lora_a.scalar_type()), weight, lora_a, lora_b, scale);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &lora_a = saved[2], &lora_b = saved[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto& grad_y = grads[0];
    const auto adapter_dtype = lora_a.scalar_type();
    // Flattened to [tokens, features]: the GEMMs below contract over tokens.
    const auto x2 = x.reshape({-1, x.size(-1)});
    const auto x_adapter = x2.to(adapter_dtype);
    const auto gy_adapter = grad_y.reshape({-1, grad_y.size(-1)}).to(adapter_dtype);
    const auto xa = at::mm(x_adapter, lora_a.t());                // recomputed [tokens, r]
    const auto grad_xa = at::mm(gy_adapter, lora_b).mul_(scale);  // [tokens, r]
    at::Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      grad_x = at::matmul(grad_y, weight);
      grad_x.add_(at::mm(grad_xa, lora_a).view(grad_x.sizes()).to(grad_x.scalar_type()));
    }
    const auto grad_b = ctx->needs_input_grad(3) ? at::mm(gy_adapter.t(), xa).mul_(scale) : at::Tensor();
    const auto grad_a = ctx->needs_input_grad(2) ? at::mm(grad_xa.t(), x_adapter) : at::Tensor();
    return {grad_x, at::Tensor(), grad_a, grad_b, at::Tensor()};
  }
};

}  // namespace

at::Tensor lora_linear_reference(const at::Tensor& x, const at::Tensor& x_adapter, const at::Tensor& weight,
                                 const at::Tensor& lora_a, const at::Tensor& lora_b, double scale) {
  const auto y = at::linear(x, weight);
  const auto update = at::linear(at::linear(x_adapter, lora_a), lora_b) * scale;
  return y + update.to(y.scalar_type());
}

at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& lora_a, const at::Tensor& lora_b,
                       double scale) {
  if (weight.requires_grad())
    throw RunError("lora_linear: the base weight must be frozen (it has requires_grad set)");
  if (x.size(-1) != weight.size(1) || lora_a.size(1) != weight.size(1) || lora_b.size(0) != weight.size(0) ||
      lora_b.size(1) != lora_a.size(0))
    throw RunError("lora_linear: shapes do not chain: x " + c10::str(x.sizes()) + ", weight " +
                   c10::str(weight.sizes()) + ", lora_a " + c10::str(lora_a.sizes()) + ", lora_b " +
                   c10::str(lora_b.sizes()));
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
    // x ~ N(0, 1); weight ~ N(0, 0.02^2) as initialised; A ~ N(0, 1/hidden), about PEFT's
    // kaiming-uniform scale; B non-zero (unlike at initialisation), so every gradient path carries something.
    OpInputs in;
    // The adapters stay fp32 as the trainer keeps them; x and the frozen weight take `dtype`.
    in.inputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen),
                 (random_tensor({s.intermediate, s.hidden}, at::kFloat, device, gen) * 0.02).to(dtype),
                 random_tensor({s.lora_rank, s.hidden}, at::kFloat, device, gen) / std::sqrt(static_cast<double>(s.hidden)),
                 random_tensor({s.intermediate, s.lora_rank}, at::kFloat, device, gen) * 0.02};
    in.differentiable = {true, false, true, true};
    in.grad_outputs = {random_tensor({s.tokens, s.intermediate}, dtype, device, gen)};
    return in;
  };
  constexpr double kScale = 2.0;  // alpha 32 / rank 16, the suites' setting
  op.reference = [](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{lora_linear_reference(in[0], in[0].to(in[2].scalar_type()), in[1], in[2], in[3], kScale)};
  };
  op.fused = [](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{lora_linear(in[0], in[1], in[2], in[3], kScale)};
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
