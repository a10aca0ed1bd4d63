// Rotary position embedding launchers (torch-free): q [tokens, q_heads, head_dim] and
// k [tokens, kv_heads, head_dim] rotated in one launch, Hugging Face's rotate_half convention:
// out = a * cos + rotate_half(a) * sin, cos/sin [seq_len, head_dim], token t at position t % seq_len.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace ddpbench::kernels {

struct RopeShape {
  std::int64_t tokens = 0;  // batch x seq_len
  std::int64_t seq_len = 0;
  std::int64_t q_heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;  // even
};

// backward = false: q_out, k_out = rope(q), rope(k). backward = true: q, k are the gradients of the
// outputs and q_out, k_out receive the gradients of the inputs (the transposed rotation).
void rope_qk(DType dtype, const RopeShape& shape, const void* q, const void* k, const void* cos, const void* sin,
             void* q_out, void* k_out, bool backward, cudaStream_t stream);

}  // namespace ddpbench::kernels
