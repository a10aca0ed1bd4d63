// RMSNorm launchers (torch-free): Hugging Face's LlamaRMSNorm, with the residual add that precedes
// it optionally fused in. Rows of `hidden` contiguous elements; fp32 statistics and accumulation.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace ddpbench::kernels {

// y = weight * to_dtype(h * rstd), rstd = 1 / sqrt(mean(h^2) + eps), with h = x, or, when
// `residual` is given, h = to_dtype(x + residual), written to h_out. rstd [rows] in fp32 is kept
// for the backward pass.
void rms_norm_forward(DType dtype, const void* x, const void* residual, const void* weight, void* h_out, void* y,
                      float* rstd, std::int64_t rows, std::int64_t hidden, float eps, cudaStream_t stream);

// Rows of fp32 partial sums of the weight gradient that rms_norm_backward needs as workspace
// ([rows x hidden] floats); a second kernel reduces them, so no atomics touch the gradient.
std::int64_t rms_norm_backward_partials(std::int64_t rows, std::int64_t hidden);

// dx = d(y)/d(h)^T dy (+ dh, the gradient reaching h_out directly, when given), dweight = sum over
// rows of dy * to_dtype(h * rstd). `h` is the normalised input (x, or x + residual).
void rms_norm_backward(DType dtype, const void* dy, const void* dh, const void* h, const void* weight,
                       const float* rstd, void* dx, float* dw_partials, void* dweight, std::int64_t rows,
                       std::int64_t hidden, cudaStream_t stream);

}  // namespace ddpbench::kernels
