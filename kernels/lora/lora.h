// The LoRA linear's LibTorch face beyond kernels/fused.h: the stock composition it is checked
// against (the built-in trainer's baseline) and its registry entry. Included by LibTorch units only.
#pragma once
#include <ATen/ATen.h>

#include "kernels/ops.h"

namespace ddpbench::kernels {

// x @ weight^T + (scale * (x_adapter @ lora_a^T) @ lora_b^T) cast to x's dtype, where x_adapter is x
// in the adapters' dtype: PEFT's computation for a bf16 model with fp32 adapters. The caller may
// pass one x_adapter to all linears reading the same x (one fp32 copy saved instead of several).
at::Tensor lora_linear_reference(const at::Tensor& x, const at::Tensor& x_adapter, const at::Tensor& weight,
                                 const at::Tensor& lora_a, const at::Tensor& lora_b, double scale);

OpSpec lora_linear_op();

}  // namespace ddpbench::kernels
