// What the autograd bindings (each op's op.cpp) share: the kernels' dtype of a tensor, the current
// stream, and the one helper through which they allocate every output and workspace. With the
// environment variable DDPBENCH_KERNELS_POISON=1 (the GPU tests set it) that helper fills each new
// buffer with NaN, so that an element a kernel fails to write shows up in the comparison.
// Included by LibTorch units built with the kernels only.
#pragma once
#include <cuda_runtime.h>

#include <ATen/ATen.h>

#include "kernels/common/dtype.h"

namespace ddpbench::kernels {

DType kernel_dtype(const at::Tensor& t, const char* op);  // bf16 or fp32; else an error naming op
void check_cuda(const at::Tensor& t, const char* op, const char* name);
cudaStream_t current_stream(const at::Tensor& on);
at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options);
bool poison_outputs();  // DDPBENCH_KERNELS_POISON=1

}  // namespace ddpbench::kernels
