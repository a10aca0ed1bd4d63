// SwiGLU activation: autograd binding (kernels/fused.h) and the registry entry swiglu
// (reference: at::silu(gate) * up, as harness/train/model.cpp).
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/fused.h"
#include "kernels/op_helpers.h"
#include "kernels/ops.h"
#include "kernels/swiglu/activation.h"

#ifdef DDPBENCH_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "kernels/common/binding.h"
#include "kernels/swiglu/swiglu.h"
#endif

namespace ddpbench::kernels {

namespace {

void check_pair(const at::Tensor& gate, const at::Tensor& up) {
  if (gate.sizes() != up.sizes() || gate.scalar_type() != up.scalar_type())
    throw std::invalid_argument("swiglu: gate " + c10::str(gate.sizes()) + " " + c10::toString(gate.scalar_type()) +
                                " and up " + c10::str(up.sizes()) + " " + c10::toString(up.scalar_type()) +
                                " must match in shape and dtype");
}

struct SwigluFunction : public torch::autograd::Function<SwigluFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate_in, const at::Tensor& up_in) {
    const auto gate = gate_in.contiguous(), up = up_in.contiguous();
    ctx->save_for_backward({gate, up});
    return swiglu_values(gate, up);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto d_out = grads[0].defined() ? grads[0] : at::zeros_like(saved[0]);
    auto [d_gate, d_up] = swiglu_grads(d_out, saved[0], saved[1]);
    return {d_gate, d_up};
  }
};

}  // namespace

at::Tensor swiglu_values(const at::Tensor& gate_in, const at::Tensor& up_in) {
  check_pair(gate_in, up_in);
  if (!gate_in.is_cuda()) return at::silu(gate_in) * up_in;
#ifdef DDPBENCH_WITH_KERNELS
  const char* op = "swiglu";
  check_cuda(up_in, op, "up");
  const auto gate = gate_in.contiguous(), up = up_in.contiguous();
  const c10::cuda::CUDAGuard guard(gate.device());
  auto out = new_output(gate.sizes(), gate.options());
  swiglu_forward(kernel_dtype(gate, op), gate.data_ptr(), up.data_ptr(), out.data_ptr(), gate.numel(), current_stream(gate));
  return out;
#else
  throw_not_built("swiglu");
#endif
}

std::pair<at::Tensor, at::Tensor> swiglu_grads(const at::Tensor& d_out_in, const at::Tensor& gate_in, const at::Tensor& up_in) {
  check_pair(gate_in, up_in);
  if (!gate_in.is_cuda()) {
    const auto sig = at::sigmoid(gate_in);
    const auto silu = gate_in * sig;
    return {d_out_in * up_in * (sig * (1 + gate_in * (1 - sig))), d_out_in * silu};
  }
#ifdef DDPBENCH_WITH_KERNELS
  const char* op = "swiglu";
  check_cuda(d_out_in, op, "d_out");
  const auto gate = gate_in.contiguous(), up = up_in.contiguous(), d_out = d_out_in.contiguous();
  const c10::cuda::CUDAGuard guard(gate.device());
  auto d_gate = new_output(gate.sizes(), gate.options());
  auto d_up = new_output(gate.sizes(), gate.options());
  swiglu_backward(kernel_dtype(gate, op), d_out.data_ptr(), gate.data_ptr(), up.data_ptr(), d_gate.data_ptr(),
                  d_up.data_ptr(), gate.numel(), current_stream(gate));
  return {d_gate, d_up};
#else
  throw_not_built("swiglu");
#endif
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  if (!gate.is_cuda()) throw std::invalid_argument("swiglu: the fused op takes CUDA tensors (gate is on " + gate.device().str() + ")");
  return SwigluFunction::apply(gate, up);
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
