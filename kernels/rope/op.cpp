// RoPE on q and k in one launch: autograd binding (kernels/fused.h) and the registry entry rope_qk
// (reference: q * cos + rotate_half(q) * sin for q and k, as harness/train/model.cpp).
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/fused.h"
#include "kernels/op_helpers.h"
#include "kernels/ops.h"
#include "kernels/reference.h"

#ifdef DDPBENCH_WITH_KERNELS
#include <c10/cuda/CUDAGuard.h>

#include "kernels/common/binding.h"
#include "kernels/rope/rope.h"
#endif

namespace ddpbench::kernels {

namespace {

at::Tensor rotate_half(const at::Tensor& x) {
  const auto half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor reference_rope(const at::Tensor& a, const at::Tensor& cos, const at::Tensor& sin) {
  const auto c = cos.narrow(0, 0, a.size(1)).unsqueeze(1);
  const auto s = sin.narrow(0, 0, a.size(1)).unsqueeze(1);
  return a * c + rotate_half(a) * s;
}

std::pair<at::Tensor, at::Tensor> rope_tables(std::int64_t seq_len, std::int64_t head_dim, double theta,
                                              at::TensorOptions options) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(options.device());
  const auto exponents = at::arange(0, head_dim, 2, f32.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(head_dim);
  const auto inv_freq = at::pow(theta, exponents).reciprocal();
  const auto freqs = at::outer(at::arange(seq_len, f32), inv_freq);
  const auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(options.dtype()), emb.sin().to(options.dtype())};
}

namespace {

#ifdef DDPBENCH_WITH_KERNELS
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

RopeShape rope_shape(const at::Tensor& q, const at::Tensor& k) {
  RopeShape s;
  s.tokens = q.size(0) * q.size(1);
  s.seq_len = q.size(1);
  s.q_heads = q.size(2);
  s.kv_heads = k.size(2);
  s.head_dim = q.size(3);
  return s;
}

std::pair<at::Tensor, at::Tensor> rotate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                         const at::Tensor& sin, bool backward) {
  const c10::cuda::CUDAGuard guard(q.device());
  auto q_out = new_output(q.sizes(), q.options());
  auto k_out = new_output(k.sizes(), k.options());
  rope_qk(kernel_dtype(q, "rope_qk"), rope_shape(q, k), q.data_ptr(), k.data_ptr(), cos.data_ptr(), sin.data_ptr(),
          q_out.data_ptr(), k_out.data_ptr(), backward, current_stream(q));
  return {q_out, k_out};
}

struct RopeFunction : public torch::autograd::Function<RopeFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in,
                               const at::Tensor& cos_in, const at::Tensor& sin_in) {
    const char* op = "rope_qk";
    check_cuda(q_in, op, "q");
    check_cuda(k_in, op, "k");
    check_cuda(cos_in, op, "cos");
    check_cuda(sin_in, op, "sin");
    kernel_dtype(q_in, op);
    if (q_in.dim() != 4 || k_in.dim() != 4 || k_in.size(0) != q_in.size(0) || k_in.size(1) != q_in.size(1) ||
        k_in.size(3) != q_in.size(3) || k_in.scalar_type() != q_in.scalar_type())
      throw std::invalid_argument("rope_qk: q [B, T, Hq, D] and k [B, T, Hk, D] of one dtype expected");
    const auto D = q_in.size(3), T = q_in.size(1);
    if (D % 2 != 0) throw std::invalid_argument("rope_qk: head_dim must be even");
    auto table = [&](const at::Tensor& t, const char* name) {
      const auto flat = t.reshape({-1, t.size(-1)});
      if (flat.size(1) != D || flat.size(0) < T)
        throw std::invalid_argument(std::string("rope_qk: ") + name + " must be [>= T, head_dim]");
      return flat.narrow(0, 0, T).to(q_in.scalar_type()).contiguous();
    };
    const auto cos = table(cos_in, "cos"), sin = table(sin_in, "sin");
    auto [q_out, k_out] = rotate(q_in.contiguous(), k_in.contiguous(), cos, sin, false);
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["q_sizes"] = q_in.sizes().vec();
    ctx->saved_data["k_sizes"] = k_in.sizes().vec();
    return {q_out, k_out};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    // An output that got no gradient has a zero one (its rotation is zero too).
    auto grad_or_zeros = [&](const at::Tensor& g, const char* sizes) {
      return g.defined() ? g.contiguous() : at::zeros(ctx->saved_data[sizes].toIntVector(), saved[0].options());
    };
    const auto dq = grad_or_zeros(grads[0], "q_sizes");
    const auto dk = grad_or_zeros(grads[1], "k_sizes");
    auto [gq, gk] = rotate(dq, dk, saved[0], saved[1], true);
    return {gq, gk, at::Tensor(), at::Tensor()};
  }
};
#endif

}  // namespace

std::pair<at::Tensor, at::Tensor> rope_qk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                          const at::Tensor& sin) {
#ifdef DDPBENCH_WITH_KERNELS
  auto out = RopeFunction::apply(q, k, cos, sin);
  return {out[0], out[1]};
#else
  (void)q, (void)k, (void)cos, (void)sin;
  throw_not_built("rope_qk");
#endif
}

OpSpec rope_qk_op() {
  OpSpec op;
  op.name = "rope_qk";
  op.liger_name = "liger_rotary_pos_emb";
  op.make_inputs = [](const OpShape& s, at::ScalarType dtype, at::Device device, at::Generator& gen) {
    // Sequences of seq_len where the tokens allow, else one sequence of all of them.
    const std::int64_t T = (s.seq_len > 0 && s.tokens % s.seq_len == 0) ? s.seq_len : s.tokens;
    const std::int64_t B = s.tokens / T;
    // The model's tables (the presets' rope_theta, 10000).
    const auto [cos, sin] = rope_tables(T, s.head_dim, 10000.0, at::TensorOptions().dtype(dtype).device(device));
    OpInputs in;
    in.inputs = {random_tensor({B, T, s.heads, s.head_dim}, dtype, device, gen),
                 random_tensor({B, T, s.kv_heads, s.head_dim}, dtype, device, gen), cos, sin};
    in.differentiable = {true, true, false, false};
    in.grad_outputs = {random_tensor({B, T, s.heads, s.head_dim}, dtype, device, gen),
                       random_tensor({B, T, s.kv_heads, s.head_dim}, dtype, device, gen)};
    return in;
  };
  op.reference = [](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{reference_rope(in[0], in[2], in[3]), reference_rope(in[1], in[2], in[3])};
  };
  op.fused = [](const std::vector<at::Tensor>& in) {
    auto [q, k] = rope_qk(in[0], in[1], in[2], in[3]);
    return std::vector<at::Tensor>{q, k};
  };
  // Either pass reads q and k (or their gradients) and writes as much, plus the two tables once.
  auto bytes = [](const OpShape& s, at::ScalarType t) {
    const double qk = static_cast<double>(s.tokens) * (s.heads + s.kv_heads) * s.head_dim;
    return elem_bytes(t) * (2.0 * qk + 2.0 * std::min(s.tokens, s.seq_len) * s.head_dim);
  };
  op.forward_bytes = bytes;
  op.backward_bytes = bytes;
  auto flops = [](const OpShape& s) { return 3.0 * s.tokens * (s.heads + s.kv_heads) * s.head_dim; };
  op.forward_flops = flops;
  op.backward_flops = flops;
  return op;
}

}  // namespace ddpbench::kernels
