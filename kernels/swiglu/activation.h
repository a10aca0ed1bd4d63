// The SwiGLU activation as plain tensor functions, without autograd: the fused MLP (kernels/mlp)
// computes it in forward and recomputes it in backward instead of saving it. CUDA tensors go through
// this folder's kernels, CPU tensors through the same formula in ATen (so that the CPU tests check
// the callers' arithmetic). LibTorch units only.
#pragma once
#include <utility>

#include <ATen/ATen.h>

namespace ddpbench::kernels {

// silu(gate) * up, gate and up of one shape and dtype.
at::Tensor swiglu_values(const at::Tensor& gate, const at::Tensor& up);

// {d_gate, d_up} = {d_out * up * silu'(gate), d_out * silu(gate)}.
std::pair<at::Tensor, at::Tensor> swiglu_grads(const at::Tensor& d_out, const at::Tensor& gate, const at::Tensor& up);

}  // namespace ddpbench::kernels
