// The stock ATen compositions the fused ops replace, one piece of code for the built-in trainer's
// `--impl baseline` and for the registry's references (run there also in fp32/fp64 on copies of
// the inputs). The LoRA linear's is in kernels/lora/lora.h. Included by LibTorch units only.
#pragma once
#include <cstdint>
#include <utility>

#include <ATen/ATen.h>

namespace ddpbench::kernels {

// Hugging Face's LlamaRMSNorm: normalise in fp32 (or wider, for an fp64 reference), scale in the
// input dtype.
at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// a [B, T, H, D] rotated by the leading T rows of the tables [>= T, D] (broadcast over heads):
// a * cos + rotate_half(a) * sin, Hugging Face's convention.
at::Tensor reference_rope(const at::Tensor& a, const at::Tensor& cos, const at::Tensor& sin);

// The rotary tables of positions 0..seq_len-1: angle t / theta^(2i / D), repeated over both halves
// of the head dimension; cos and sin [seq_len, head_dim] in options' dtype and device.
std::pair<at::Tensor, at::Tensor> rope_tables(std::int64_t seq_len, std::int64_t head_dim, double theta,
                                              at::TensorOptions options);

}  // namespace ddpbench::kernels
