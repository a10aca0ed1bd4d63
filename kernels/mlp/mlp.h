// The fused SwiGLU MLP: residual + down(silu(gate(x)) * up(x)) as one autograd function that keeps
// x and the two projections' outputs but not the activation between them, recomputing it in
// backward (one elementwise pass; the activation is tokens x intermediate, the largest tensor a
// decoder layer would otherwise keep: 2 GiB of lora-1b's peak). The residual add rides in the down
// projection's GEMM epilogue in full fine-tuning, and follows the adapters' update under LoRA. Each
// projection is full (trainable weight) or LoRA (frozen weight with adapters), as kernels/lora/lora.h
// computes them. LibTorch units only.
#pragma once
#include <ATen/ATen.h>

#include "kernels/lora/lora.h"
#include "kernels/ops.h"

namespace ddpbench::kernels {

// x [..., hidden], residual [..., hidden] (or undefined: no residual). Works on CPU tensors too
// (the activation through ATen there), so that the CPU tests check the recomputation.
at::Tensor swiglu_mlp(const at::Tensor& x, const at::Tensor& residual, const Projection& gate, const Projection& up,
                      const Projection& down);

// The stock composition: what the built-in trainer's baseline computes (LoRA as PEFT does it).
at::Tensor swiglu_mlp_reference(const at::Tensor& x, const at::Tensor& residual, const Projection& gate,
                                const Projection& up, const Projection& down);

OpSpec swiglu_mlp_op();       // full fine-tuning: trainable weights
OpSpec swiglu_mlp_lora_op();  // LoRA on all three projections, frozen weights

}  // namespace ddpbench::kernels
