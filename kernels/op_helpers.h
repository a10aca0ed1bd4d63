// Small helpers the ops' registry entries share (LibTorch units only).
#pragma once
#include <string>

#include <ATen/ATen.h>

#include "common/error.h"

namespace ddpbench::kernels {

// Standard normal values of `dtype` on `device`, drawn in fp32 from `gen` on its own device
// (make_generator), then moved and cast.
inline at::Tensor random_tensor(at::IntArrayRef sizes, at::ScalarType dtype, at::Device device, at::Generator& gen) {
  return at::randn(sizes, gen, at::TensorOptions().dtype(at::kFloat).device(gen.device())).to(device, dtype);
}

// a @ b with an fp32 result: for bf16/fp16 CUDA inputs cuBLAS's mixed GEMM (fp32 accumulation and
// output, rounded nowhere), for reduced-precision CPU inputs a widened copy, else plain mm. The
// gradients of fp32 parameters (adapters, the LM head's accumulation) are formed this way.
inline at::Tensor mm_fp32_out(const at::Tensor& a, const at::Tensor& b) {
  if (!at::isReducedFloatingType(a.scalar_type())) return at::mm(a, b);
  if (a.is_cuda()) return at::mm(a, b, at::kFloat);
  return at::mm(a.to(at::kFloat), b.to(at::kFloat));
}

inline double elem_bytes(at::ScalarType t) { return static_cast<double>(c10::elementSize(t)); }

[[noreturn]] inline void throw_not_built(const std::string& op) {
  throw RunError("kernels::" + op + ": this binary was built without the fused kernels (no CUDA compiler at build time)");
}

}  // namespace ddpbench::kernels
