// SwiGLU activation launchers (torch-free): out = silu(gate) * up over n contiguous elements.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace ddpbench::kernels {

void swiglu_forward(DType dtype, const void* gate, const void* up, void* out, std::int64_t n, cudaStream_t stream);

// d_gate = d_out * up * silu'(gate), d_up = d_out * silu(gate); silu recomputed, nothing saved.
void swiglu_backward(DType dtype, const void* d_out, const void* gate, const void* up, void* d_gate, void* d_up,
                     std::int64_t n, cudaStream_t stream);

}  // namespace ddpbench::kernels
