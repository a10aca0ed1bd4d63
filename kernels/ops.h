// The face of kernels/: every fused op, with its ATen reference, its shapes at the presets and its
// cost models, in one registry that the GPU tests (tests/kernels), the Google Benchmark program
// (bench/kernels) and `ddpbench bench kernels` iterate. Each op lives in its own folder: a .cu file
// with the kernels and a torch-free header declaring their launchers (compiled by nvcc apart from
// LibTorch's CUDA configuration), and op.cpp with the autograd binding and the op's OpSpec.
// Included by LibTorch units only.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace ddpbench::kernels {

// The sizes an op runs at: a preset's model shape at a number of tokens (micro-batch x sequence).
struct OpShape {
  std::string preset;  // tiny, 350m, 1b, 8b, or a test's own name
  std::int64_t tokens = 0;
  std::int64_t hidden = 0;
  std::int64_t intermediate = 0;
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t vocab = 0;
  std::int64_t lora_rank = 16;
  std::int64_t seq_len = 2048;  // tokens = batch x seq_len (RoPE's positions)
};

// A preset's shape at `tokens` tokens of sequences of `seq_len` (the benches use 4 x 2048).
OpShape preset_op_shape(const std::string& preset, std::int64_t tokens = 8192, std::int64_t seq_len = 2048);

// One op's inputs: what forward takes, which of them get gradients, and the gradient of each
// output that backward is fed (random, drawn with the inputs).
struct OpInputs {
  std::vector<at::Tensor> inputs;
  std::vector<bool> differentiable;       // per input: whether backward computes its gradient
  std::vector<at::Tensor> grad_outputs;   // per output of forward
};

struct OpSpec {
  std::string name;         // rms_norm, rope_qk, swiglu, linear_cross_entropy, lora_linear, ...
  std::string liger_name;   // the same op in Liger-Kernel (bench/kernels/liger_ops.py), "" if none
  bool memory_bound = true; // judged by GB/s against the copy bandwidth; else by FLOP/s
  // Fresh random inputs of `dtype` on `device` for `shape`, drawn from `gen`.
  std::function<OpInputs(const OpShape& shape, at::ScalarType dtype, at::Device device, at::Generator& gen)> make_inputs;
  // Stock ATen composition: the baseline that is timed, and, run on fp32/fp64 copies of the
  // inputs, the reference that the fused op is checked against.
  std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>& inputs)> reference;
  // The fused op through its autograd binding (CUDA only).
  std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>& inputs)> fused;
  // Bytes the op must move at least (read once + written once), and its FLOPs, for forward and
  // for backward: the denominators of the benches' GB/s and TFLOP/s.
  std::function<double(const OpShape& shape, at::ScalarType dtype)> forward_bytes, backward_bytes;
  std::function<double(const OpShape& shape)> forward_flops, backward_flops;
};

// Every op, in a fixed order; one line each in registry.cpp.
const std::vector<OpSpec>& registry();
const OpSpec& find_op(const std::string& name);  // UsageError naming the ops on an unknown name

// A generator for make_inputs on `device` (its own, seeded; the global one is left alone), so
// that inputs are drawn where they live.
at::Generator make_generator(at::Device device, std::uint64_t seed);

// Whether this binary has the fused kernels (built with a CUDA toolkit).
bool fused_kernels_built();

}  // namespace ddpbench::kernels
