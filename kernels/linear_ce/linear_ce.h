// The fused linear + cross-entropy's LibTorch face beyond kernels/fused.h: the chunk size rule and
// the op at a chosen chunk size (tests use awkward ones). Included by LibTorch units only.
#pragma once
#include <cstdint>

#include <ATen/ATen.h>

#include "kernels/ops.h"

namespace ddpbench::kernels {

// Tokens per chunk: as many rows of [rows, vocab] logits of `element_size` bytes as fit in
// `budget_bytes`, in whole multiples of 128 rows (GEMM tiles), at least 128, at most `tokens`.
std::int64_t linear_ce_chunk_rows(std::int64_t tokens, std::int64_t vocab, std::int64_t element_size,
                                  std::int64_t budget_bytes = std::int64_t{512} << 20);

// linear_cross_entropy_sum with chunks of `chunk_rows` tokens. CUDA tensors run the row kernel of
// softmax_ce.cu; CPU tensors an ATen composition of the same step, so that the chunking, the
// gradient accumulation and the ignore index are testable without a GPU. The weight's gradient is
// accumulated over chunks in the weight's dtype (rounded once per chunk), or in fp32 with
// fp32_weight_grad (rounded once; an fp32 accumulator more of memory, and a copy at the end).
at::Tensor linear_cross_entropy_sum_chunked(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                            std::int64_t ignore_index, std::int64_t chunk_rows,
                                            bool fp32_weight_grad = false);

OpSpec linear_cross_entropy_op();

}  // namespace ddpbench::kernels
