// SwiGLU activation: autograd binding (kernels/fused.h) and the registry entry swiglu
// (reference: at::silu(gate) * up, as harness/train/model.cpp).
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/fused.h"
#include "kernels/op_helpers.h"
#include "kernels/ops.h"

#ifdef DDPBENCH_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "kernels/common/binding.h"
#include "kernels/swiglu/swiglu.h"
#endif

namespace ddpbench::kernels {

namespace {

#ifdef DDPBENCH_WITH_KERNELS
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SwigluFunction : public torch::autograd::Function<SwigluFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& gate_in, const at::Tensor& up_in) {
    const char* op = "swiglu";
    check_cuda(gate_in, op, "gate");
    check_cuda(up_in, op, "up");
    if (gate_in.sizes() != up_in.sizes() || gate_in.scalar_type() != up_in.scalar_type())
      throw std::invalid_argument("swiglu: gate and up must match in shape and dtype");
    const auto gate = gate_in.contiguous(), up = up_in.contiguous();
    const c10::cuda::CUDAGuard guard(gate.device());
    auto out = new_output(gate.sizes(), gate.options());
    swiglu_forward(kernel_dtype(gate, op), gate.data_ptr(), up.data_ptr(), out.data_ptr(), gate.numel(), current_stream(gate));
    ctx->save_for_backward({gate, up});
    return {out};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& gate = saved[0];
    const auto& up = saved[1];
    const c10::cuda::CUDAGuard guard(gate.device());
    const auto d_out = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(gate);
    auto d_gate = new_output(gate.sizes(), gate.options());
    auto d_up = new_output(gate.sizes(), gate.options());
    swiglu_backward(kernel_dtype(gate, "swiglu"), d_out.data_ptr(), gate.data_ptr(), up.data_ptr(), d_gate.data_ptr(),
                    d_up.data_ptr(), gate.numel(), current_stream(gate));
    return {d_gate, d_up};
  }
};
#endif

}  // namespace

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
#ifdef DDPBENCH_WITH_KERNELS
  return SwigluFunction::apply(gate, up)[0];
#else
  (void)gate, (void)up;
  throw_not_built("swiglu");
#endif
}

OpSpec swiglu_op() {
  OpSpec op;
  op.name = "swiglu";
  op.liger_name = "LigerSiLUMulFunction";
  op.make_inputs = [](const OpShape& s, at::ScalarType dtype, at::Device device, at::Generator& gen) {
    OpInputs in;
    in.inputs = {random_tensor({s.tokens, s.intermediate}, dtype, device, gen),
                 random_tensor({s.tokens, s.intermediate}, dtype, device, gen)};
    in.differentiable = {true, true};
    in.grad_outputs = {random_tensor({s.tokens, s.intermediate}, dtype, device, gen)};
    return in;
  };
  op.reference = [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{at::silu(in[0]) * in[1]}; };
  op.fused = [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{swiglu(in[0], in[1])}; };
  // Forward reads gate and up and writes the product; backward reads d_out, gate and up and writes
  // the two gradients.
  op.forward_bytes = [](const OpShape& s, at::ScalarType t) { return elem_bytes(t) * 3.0 * s.tokens * s.intermediate; };
  op.backward_bytes = [](const OpShape& s, at::ScalarType t) { return elem_bytes(t) * 5.0 * s.tokens * s.intermediate; };
  op.forward_flops = [](const OpShape& s) { return 6.0 * s.tokens * s.intermediate; };
  op.backward_flops = [](const OpShape& s) { return 12.0 * s.tokens * s.intermediate; };
  return op;
}

}  // namespace ddpbench::kernels
