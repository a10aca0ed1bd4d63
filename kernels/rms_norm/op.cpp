// RMSNorm and the residual add fused into it: autograd bindings (kernels/fused.h) and the registry
// entries rms_norm and add_rms_norm (reference: Hugging Face's LlamaRMSNorm, as harness/train/model.cpp).
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/fused.h"
#include "kernels/op_helpers.h"
#include "kernels/ops.h"
#include "kernels/reference.h"

#ifdef DDPBENCH_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "kernels/common/binding.h"
#include "kernels/rms_norm/rms_norm.h"
#endif

namespace ddpbench::kernels {

at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const auto xf = x.to(at::promote_types(x.scalar_type(), at::kFloat));
  const auto normed = xf * at::rsqrt(xf.pow(2).mean({-1}, true) + eps);
  return weight * normed.to(x.scalar_type());
}

namespace {

constexpr double kEps = 1e-5;

#ifdef DDPBENCH_WITH_KERNELS
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Checked {
  at::Tensor x, residual, weight;
  std::int64_t rows = 0, hidden = 0;
};

Checked checked_inputs(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, const char* op) {
  check_cuda(x, op, "x");
  check_cuda(weight, op, "weight");
  kernel_dtype(x, op);
  if (weight.scalar_type() != x.scalar_type() || weight.dim() != 1 || weight.size(0) != x.size(-1))
    throw std::invalid_argument(std::string(op) + ": weight must be [hidden] of x's dtype");
  Checked c;
  c.hidden = x.size(-1);
  c.rows = c.hidden == 0 ? 0 : x.numel() / c.hidden;
  c.x = x.contiguous();
  c.weight = weight.contiguous();
  if (residual.defined()) {
    check_cuda(residual, op, "residual");
    if (residual.sizes() != x.sizes() || residual.scalar_type() != x.scalar_type())
      throw std::invalid_argument(std::string(op) + ": residual must match x in shape and dtype");
    c.residual = residual.contiguous();
  }
  return c;
}

// Forward of both variants: returns {y} or, with a residual, {h, y}; saves h (or x), weight, rstd.
variable_list norm_forward(AutogradContext* ctx, const Checked& c, double eps, const char* op) {
  const c10::cuda::CUDAGuard guard(c.x.device());
  auto y = new_output(c.x.sizes(), c.x.options());
  at::Tensor h = c.residual.defined() ? new_output(c.x.sizes(), c.x.options()) : c.x;
  auto rstd = new_output({c.rows}, c.x.options().dtype(at::kFloat));
  rms_norm_forward(kernel_dtype(c.x, op), c.x.data_ptr(), c.residual.defined() ? c.residual.data_ptr() : nullptr,
                   c.weight.data_ptr(), c.residual.defined() ? h.data_ptr() : nullptr, y.data_ptr(),
                   rstd.data_ptr<float>(), c.rows, c.hidden, static_cast<float>(eps), current_stream(c.x));
  ctx->save_for_backward({h, c.weight, rstd});
  if (c.residual.defined()) return {h, y};
  return {y};
}

// Gradients of h (through the norm, plus dh where h was an output) and of the weight.
std::pair<at::Tensor, at::Tensor> norm_backward(AutogradContext* ctx, const at::Tensor& dy_in, const at::Tensor& dh_in,
                                                const char* op) {
  const auto saved = ctx->get_saved_variables();
  const auto& h = saved[0];
  const auto& weight = saved[1];
  const auto& rstd = saved[2];
  const c10::cuda::CUDAGuard guard(h.device());
  const std::int64_t hidden = h.size(-1);
  const std::int64_t rows = hidden == 0 ? 0 : h.numel() / hidden;
  const auto dy = dy_in.defined() ? dy_in.contiguous() : at::zeros_like(h);
  const auto dh = dh_in.defined() ? dh_in.contiguous() : at::Tensor();
  auto dx = new_output(h.sizes(), h.options());
  auto dw = new_output({hidden}, weight.options());
  auto partials = new_output({rms_norm_backward_partials(rows, hidden), hidden}, h.options().dtype(at::kFloat));
  rms_norm_backward(kernel_dtype(h, op), dy.data_ptr(), dh.defined() ? dh.data_ptr() : nullptr, h.data_ptr(),
                    weight.data_ptr(), rstd.data_ptr<float>(), dx.data_ptr(), partials.data_ptr<float>(), dw.data_ptr(),
                    rows, hidden, current_stream(h));
  return {dx, dw};
}

struct RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    return norm_forward(ctx, checked_inputs(x, at::Tensor(), weight, "rms_norm"), eps, "rms_norm");
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [dx, dw] = norm_backward(ctx, grads[0], at::Tensor(), "rms_norm");
    return {dx, dw, at::Tensor()};
  }
};

struct AddRmsNormFunction : public torch::autograd::Function<AddRmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& residual,
                               const at::Tensor& weight, double eps) {
    return norm_forward(ctx, checked_inputs(x, residual, weight, "add_rms_norm"), eps, "add_rms_norm");
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [dx, dw] = norm_backward(ctx, grads[1], grads[0], "add_rms_norm");
    return {dx, dx, dw, at::Tensor()};
  }
};
#endif

}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#ifdef DDPBENCH_WITH_KERNELS
  return RmsNormFunction::apply(x, weight, eps)[0];
#else
  (void)x, (void)weight, (void)eps;
  throw_not_built("rms_norm");
#endif
}

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                                               double eps) {
#ifdef DDPBENCH_WITH_KERNELS
  auto out = AddRmsNormFunction::apply(x, residual, weight, eps);
  return {out[0], out[1]};
#else
  (void)x, (void)residual, (void)weight, (void)eps;
  throw_not_built("add_rms_norm");
#endif
}

OpSpec rms_norm_op() {
  OpSpec op;
  op.name = "rms_norm";
  op.liger_name = "LigerRMSNorm";
  op.make_inputs = [](const OpShape& s, at::ScalarType dtype, at::Device device, at::Generator& gen) {
    OpInputs in;
    in.inputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen),
                 1.0 + 0.1 * random_tensor({s.hidden}, dtype, device, gen)};
    in.differentiable = {true, true};
    in.grad_outputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen)};
    return in;
  };
  op.reference = [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{reference_rms_norm(in[0], in[1], kEps)}; };
  op.fused = [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{rms_norm(in[0], in[1], kEps)}; };
  // Forward reads x and the weight and writes y; backward reads dy, x and the weight and writes dx
  // and the weight's gradient.
  op.forward_bytes = [](const OpShape& s, at::ScalarType t) { return elem_bytes(t) * (2.0 * s.tokens * s.hidden + s.hidden); };
  op.backward_bytes = [](const OpShape& s, at::ScalarType t) { return elem_bytes(t) * (3.0 * s.tokens * s.hidden + 2.0 * s.hidden); };
  op.forward_flops = [](const OpShape& s) { return 4.0 * s.tokens * s.hidden; };
  op.backward_flops = [](const OpShape& s) { return 8.0 * s.tokens * s.hidden; };
  return op;
}

OpSpec add_rms_norm_op() {
  OpSpec op;
  op.name = "add_rms_norm";
  op.make_inputs = [](const OpShape& s, at::ScalarType dtype, at::Device device, at::Generator& gen) {
    OpInputs in;
    in.inputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen), random_tensor({s.tokens, s.hidden}, dtype, device, gen),
                 1.0 + 0.1 * random_tensor({s.hidden}, dtype, device, gen)};
    in.differentiable = {true, true, true};
    in.grad_outputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen), random_tensor({s.tokens, s.hidden}, dtype, device, gen)};
    return in;
  };
  op.reference = [](const std::vector<at::Tensor>& in) {
    const auto h = in[0] + in[1];
    return std::vector<at::Tensor>{h, reference_rms_norm(h, in[2], kEps)};
  };
  op.fused = [](const std::vector<at::Tensor>& in) {
    auto [h, y] = add_rms_norm(in[0], in[1], in[2], kEps);
    return std::vector<at::Tensor>{h, y};
  };
  // Forward reads x, residual and the weight and writes h and y; backward reads dy, dh, h and the
  // weight and writes one gradient shared by x and residual, and the weight's.
  op.forward_bytes = [](const OpShape& s, at::ScalarType t) { return elem_bytes(t) * (4.0 * s.tokens * s.hidden + s.hidden); };
  op.backward_bytes = [](const OpShape& s, at::ScalarType t) { return elem_bytes(t) * (4.0 * s.tokens * s.hidden + 2.0 * s.hidden); };
  op.forward_flops = [](const OpShape& s) { return 5.0 * s.tokens * s.hidden; };
  op.backward_flops = [](const OpShape& s) { return 9.0 * s.tokens * s.hidden; };
  return op;
}

}  // namespace ddpbench::kernels
