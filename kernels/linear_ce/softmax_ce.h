// Torch-free launcher of the row step of the fused linear + cross-entropy (softmax_ce.cu): compiled
// by nvcc apart from LibTorch, called by op.cpp with the current stream.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace ddpbench::kernels {

// For each of `rows` rows of `logits` (`vocab` values, rows `row_stride` elements apart), in one
// launch: row_loss[r] = logsumexp(row) - row[labels[r]] in fp32, and the row overwritten in place
// with d row_loss[r] / d row = softmax(row) - onehot(labels[r]). Rows whose label is ignore_index
// get loss 0 and a zero gradient; a label outside [0, vocab) gets loss NaN (so that the trainer's
// non-finite check names the step rather than training on garbage).
void softmax_cross_entropy_grad(void* logits, DType type, std::int64_t rows, std::int64_t vocab,
                                std::int64_t row_stride, const std::int64_t* labels, std::int64_t ignore_index,
                                float* row_loss, cudaStream_t stream);

}  // namespace ddpbench::kernels
