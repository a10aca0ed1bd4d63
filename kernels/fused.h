// The fused ops as the built-in trainer's `--impl fused` calls them: autograd-aware functions on
// CUDA tensors (bf16, or fp32), each backed by the kernels of its folder and listed, with its ATen
// reference, in the registry (ops.h). Calling one in a binary built without the kernels throws.
// Included by LibTorch units only.
#pragma once
#include <cstdint>
#include <utility>

#include <ATen/ATen.h>

namespace ddpbench::kernels {

// Hugging Face's LlamaRMSNorm: x normalised in fp32 over the last dimension, times weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The residual add fused into the norm that follows it: returns {h, rms_norm(h)} with
// h = x + residual, reading x and residual once.
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                                               double eps);

// Rotary embedding of q [B, T, Hq, D] and k [B, T, Hk, D] (the projections' outputs viewed per
// head) in one launch, with cos/sin [T, D] as the model's tables (rotate_half convention).
std::pair<at::Tensor, at::Tensor> rope_qk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                          const at::Tensor& sin);

// silu(gate) * up.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// Sum over the tokens whose label is not ignore_index of cross_entropy(hidden @ weight^T, label),
// in fp32, computed in chunks of tokens so that the [tokens, vocab] logits never exist at once;
// the gradient of each chunk's logits is formed in the forward pass. hidden [N, H], weight [V, H],
// labels [N]. The caller divides by the global token count (the loss rule, DESIGN.md).
at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                    std::int64_t ignore_index = -100);

// x @ weight^T + scale * (x @ lora_a^T) @ lora_b^T with weight frozen, the adapters (fp32 masters)
// multiplied in x's dtype on the tensor cores; saves x and the rank-r x A^T (kernels/lora/lora.h).
at::Tensor lora_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& lora_a,
                       const at::Tensor& lora_b, double scale);

}  // namespace ddpbench::kernels
