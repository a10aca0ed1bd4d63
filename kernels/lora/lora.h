// The LoRA linear's LibTorch face beyond kernels/fused.h: the projection arithmetic that the fused
// LoRA linear and the fused MLP (kernels/mlp) share, the stock composition the fused ops are checked
// against (the built-in trainer's baseline), and the registry entry. Included by LibTorch units only.
#pragma once
#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "kernels/ops.h"

namespace ddpbench::kernels {

// x @ weight^T + (scale * (x_adapter @ lora_a^T) @ lora_b^T) cast to x's dtype, where x_adapter is x
// in the adapters' dtype: PEFT's computation for a bf16 model with fp32 adapters. The caller may
// pass one x_adapter to all linears reading the same x (one fp32 copy saved instead of several).
at::Tensor lora_linear_reference(const at::Tensor& x, const at::Tensor& x_adapter, const at::Tensor& weight,
                                 const at::Tensor& lora_a, const at::Tensor& lora_b, double scale);

// One linear layer of the fused ops: y = x W^T, plus scale (x A^T) B^T where it has adapters. The
// weight is frozen when there are adapters (LoRA) and may be trainable when there are none (full
// fine-tuning). The adapters are kept in their own dtype (fp32 masters for the optimizer) but
// multiplied in the activations' dtype, on the tensor cores, as Unsloth does: PEFT's fp32 path
// runs them on CUDA cores and casts every adapted activation to fp32 and back, which on lora-1b
// cost more time than the frozen GEMMs themselves (bench/results/2026-11-29-h200x1-fused-mlp).
struct Projection {
  at::Tensor weight;          // [out, in]
  at::Tensor lora_a, lora_b;  // [r, in], [out, r], or undefined
  double scale = 0;
  bool has_lora() const { return lora_a.defined(); }
};

// Refuses, naming `op`, adapters that do not fit the weight and a trainable weight under adapters.
void check_projection(const Projection& p, const std::string& op);

// The stock composition of one projection: at::linear, or PEFT's LoRA arithmetic
// (lora_linear_reference with x cast to the adapters' dtype).
at::Tensor project_reference(const Projection& p, const at::Tensor& x);

// Forward of a projection on x [tokens, in]. `residual` [tokens, out], when given, is added in the
// GEMM's epilogue without adapters (y = residual + x W^T), and after the adapters' update with them.
// Returns y and x A^T [tokens, r] in x's dtype (undefined without adapters): the one intermediate
// that backward keeps rather than recomputes (r columns).
struct ProjectionOutput {
  at::Tensor y, xa;
};
ProjectionOutput project(const Projection& p, const at::Tensor& x, const at::Tensor& residual = {});

// Backward of `project` for grad_y [tokens, out]. grad_x is added into `grad_x` where it is defined
// (the MLP's gate and up read one x), else formed when `want_grad_x`. The weight's gradient is formed
// when the weight requires one; the adapters' in fp32 (their dtype), never rounded to bf16 on the way.
struct ProjectionGrads {
  at::Tensor weight, lora_a, lora_b;
};
ProjectionGrads project_backward(const Projection& p, const at::Tensor& x, const at::Tensor& xa, const at::Tensor& grad_y,
                                 at::Tensor& grad_x, bool want_grad_x);

// x [..., features] as rows [tokens, features]; undefined stays undefined.
inline at::Tensor as_rows(const at::Tensor& x) { return x.defined() ? x.reshape({-1, x.size(-1)}) : x; }

// y [tokens, out] viewed with the leading dimensions of x [..., in]: [..., out].
inline at::Tensor with_leading_dims_of(const at::Tensor& y, const at::Tensor& x) {
  auto sizes = x.sizes().vec();
  sizes.back() = y.size(-1);
  return y.view(sizes);
}

// The registry's LoRA scale: alpha 32 / rank 16, the suites' setting.
constexpr double kRegistryLoraScale = 2.0;

// A registry op's inputs for one projection [out, in], appended to `in`: the weight ~ N(0, 0.02^2)
// as initialised, in `dtype` (differentiable in full fine-tuning); with `lora`, then A ~ N(0, 1/in),
// about PEFT's kaiming-uniform scale, and B ~ N(0, 0.02^2), non-zero unlike at initialisation so
// that every gradient path carries something, both fp32 as the trainer keeps them.
void append_projection_inputs(OpInputs& in, std::int64_t out, std::int64_t inp, std::int64_t rank, bool lora,
                              at::ScalarType dtype, at::Device device, at::Generator& gen);

OpSpec lora_linear_op();

}  // namespace ddpbench::kernels
