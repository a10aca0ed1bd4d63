// The fused SwiGLU MLP (kernels/mlp/mlp.h): autograd binding and the registry entries swiglu_mlp and
// swiglu_mlp_lora. GEMMs through ATen (cuBLAS); the activation through kernels/swiglu.
#include "kernels/mlp/mlp.h"

#include <array>

#include <torch/csrc/autograd/custom_function.h>

#include "common/error.h"
#include "kernels/op_helpers.h"
#include "kernels/swiglu/activation.h"

namespace ddpbench::kernels {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autograd's apply takes defined tensors only: an absent residual or adapter travels as an empty
// tensor and is undefined again inside.
at::Tensor absent_as_empty(const at::Tensor& t, const at::Tensor& like) { return t.defined() ? t : at::empty({0}, like.options()); }
at::Tensor empty_as_absent(const at::Tensor& t) { return t.numel() == 0 ? at::Tensor() : t; }

struct SwigluMlp : public torch::autograd::Function<SwigluMlp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& residual,
                            const at::Tensor& gate_w, const at::Tensor& gate_a, const at::Tensor& gate_b,
                            const at::Tensor& up_w, const at::Tensor& up_a, const at::Tensor& up_b,
                            const at::Tensor& down_w, const at::Tensor& down_a, const at::Tensor& down_b,
                            double gate_scale, double up_scale, double down_scale) {
    const auto x2 = as_rows(x);
    const auto a = empty_as_absent;
    const auto g = project({gate_w, a(gate_a), a(gate_b), gate_scale}, x2);
    const auto u = project({up_w, a(up_a), a(up_b), up_scale}, x2);
    const auto d = project({down_w, a(down_a), a(down_b), down_scale}, swiglu_values(g.y, u.y), as_rows(a(residual)));
    ctx->save_for_backward({x, g.y, u.y, g.xa, u.xa, d.xa, gate_w, a(gate_a), a(gate_b), up_w, a(up_a), a(up_b), down_w,
                            a(down_a), a(down_b)});
    ctx->saved_data["gate_scale"] = gate_scale;
    ctx->saved_data["up_scale"] = up_scale;
    ctx->saved_data["down_scale"] = down_scale;
    return with_leading_dims_of(d.y, x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto &x = s[0], &g = s[1], &u = s[2];
    const Projection gate{s[6], s[7], s[8], ctx->saved_data["gate_scale"].toDouble()};
    const Projection up{s[9], s[10], s[11], ctx->saved_data["up_scale"].toDouble()};
    const Projection down{s[12], s[13], s[14], ctx->saved_data["down_scale"].toDouble()};
    const auto gy = as_rows(grads[0]);
    at::Tensor grad_act;
    const auto gd = project_backward(down, swiglu_values(g, u), s[5], gy, grad_act, true);
    auto [d_gate, d_up] = swiglu_grads(grad_act, g, u);
    grad_act.reset();
    const auto x2 = as_rows(x);
    at::Tensor grad_x;
    const auto gg = project_backward(gate, x2, s[3], d_gate, grad_x, ctx->needs_input_grad(0));
    d_gate.reset();
    const auto gu = project_backward(up, x2, s[4], d_up, grad_x, ctx->needs_input_grad(0));
    return {grad_x.defined() ? grad_x.view(x.sizes()) : grad_x,
            ctx->needs_input_grad(1) ? grads[0] : at::Tensor(),
            gg.weight, gg.lora_a, gg.lora_b, gu.weight, gu.lora_a, gu.lora_b, gd.weight, gd.lora_a, gd.lora_b,
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void check_chain(const at::Tensor& x, const at::Tensor& residual, const Projection& gate, const Projection& up,
                 const Projection& down) {
  const auto hidden = x.size(-1), inter = gate.weight.size(0);
  if (gate.weight.size(1) != hidden || up.weight.sizes() != gate.weight.sizes() || down.weight.size(1) != inter ||
      (residual.defined() && (residual.size(-1) != down.weight.size(0) || residual.numel() / residual.size(-1) != x.numel() / hidden)))
    throw RunError("swiglu_mlp: shapes do not chain: x " + c10::str(x.sizes()) + ", gate " + c10::str(gate.weight.sizes()) +
                   ", up " + c10::str(up.weight.sizes()) + ", down " + c10::str(down.weight.sizes()) +
                   (residual.defined() ? ", residual " + c10::str(residual.sizes()) : ""));
  for (const auto* p : {&gate, &up, &down}) check_projection(*p, "swiglu_mlp");
}

// x and residual ~ N(0, 1), then each projection's weight and adapters (append_projection_inputs).
OpInputs mlp_inputs(const OpShape& s, at::ScalarType dtype, at::Device device, at::Generator& gen, bool lora) {
  OpInputs in;
  in.inputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen), random_tensor({s.tokens, s.hidden}, dtype, device, gen)};
  in.differentiable = {true, true};
  const std::int64_t shapes[3][2] = {{s.intermediate, s.hidden}, {s.intermediate, s.hidden}, {s.hidden, s.intermediate}};
  for (const auto& [out, inp] : shapes) append_projection_inputs(in, out, inp, s.lora_rank, lora, dtype, device, gen);
  in.grad_outputs = {random_tensor({s.tokens, s.hidden}, dtype, device, gen)};
  return in;
}

// The three projections from a registry input list: x, residual, then weight (+ A, B) per projection.
std::array<Projection, 3> projections_of(const std::vector<at::Tensor>& in, bool lora) {
  std::array<Projection, 3> p;
  std::size_t i = 2;
  for (auto& proj : p) {
    proj.weight = in[i++];
    if (!lora) continue;
    proj.lora_a = in[i++];
    proj.lora_b = in[i++];
    proj.scale = kRegistryLoraScale;
  }
  return p;
}

OpSpec mlp_op(bool lora) {
  OpSpec op;
  op.name = lora ? "swiglu_mlp_lora" : "swiglu_mlp";
  op.liger_name = "";  // Liger fuses the activation only (swiglu), not the projections around it
  op.memory_bound = false;
  op.make_inputs = [lora](const OpShape& s, at::ScalarType dtype, at::Device device, at::Generator& gen) {
    return mlp_inputs(s, dtype, device, gen, lora);
  };
  op.reference = [lora](const std::vector<at::Tensor>& in) {
    const auto p = projections_of(in, lora);
    return std::vector<at::Tensor>{swiglu_mlp_reference(in[0], in[1], p[0], p[1], p[2])};
  };
  op.fused = [lora](const std::vector<at::Tensor>& in) {
    const auto p = projections_of(in, lora);
    return std::vector<at::Tensor>{swiglu_mlp(in[0], in[1], p[0], p[1], p[2])};
  };
  // The three weights and x, residual, y in forward; backward reads them again with grad_y and the
  // saved gate/up outputs, writes grad_x (and, full, the weights' gradients).
  op.forward_bytes = [](const OpShape& s, at::ScalarType t) {
    return elem_bytes(t) * (3.0 * s.hidden * s.intermediate + 3.0 * s.tokens * s.hidden + 2.0 * s.tokens * s.intermediate);
  };
  op.backward_bytes = [lora](const OpShape& s, at::ScalarType t) {
    return elem_bytes(t) * ((lora ? 3.0 : 6.0) * s.hidden * s.intermediate + 3.0 * s.tokens * s.hidden +
                            2.0 * s.tokens * s.intermediate);
  };
  op.forward_flops = [](const OpShape& s) { return 6.0 * s.tokens * s.hidden * s.intermediate; };
  // grad_x through all three weights; full fine-tuning adds the three weight gradients.
  op.backward_flops = [lora](const OpShape& s) { return (lora ? 6.0 : 12.0) * s.tokens * s.hidden * s.intermediate; };
  return op;
}

}  // namespace

at::Tensor swiglu_mlp(const at::Tensor& x, const at::Tensor& residual, const Projection& gate, const Projection& up,
                      const Projection& down) {
  check_chain(x, residual, gate, up, down);
  const auto e = [&x](const at::Tensor& t) { return absent_as_empty(t, x); };
  return SwigluMlp::apply(x, e(residual), gate.weight, e(gate.lora_a), e(gate.lora_b), up.weight, e(up.lora_a),
                          e(up.lora_b), down.weight, e(down.lora_a), e(down.lora_b), gate.scale, up.scale, down.scale);
}

at::Tensor swiglu_mlp_reference(const at::Tensor& x, const at::Tensor& residual, const Projection& gate,
                                const Projection& up, const Projection& down) {
  const auto y = project_reference(down, at::silu(project_reference(gate, x)) * project_reference(up, x));
  return residual.defined() ? residual + y : y;
}

OpSpec swiglu_mlp_op() { return mlp_op(false); }
OpSpec swiglu_mlp_lora_op() { return mlp_op(true); }

}  // namespace ddpbench::kernels
