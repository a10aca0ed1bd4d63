// The row step of the fused linear + cross-entropy: one block per row of a chunk's logits computes
// the log-sum-exp online in fp32 (one read), the label's loss, and writes softmax - onehot over the
// logits in place. The second read of the row comes from L2: a 1b/8b row (128256 bf16 values) is
// 256 KB, the size of a multiprocessor's whole register file, so it cannot stay on chip, but the
// rows in flight (one or two per multiprocessor) fit in the H100/H200's 50 MB L2.
#include <cmath>
#include <cstdint>

#include "kernels/common/cuda_check.h"
#include "kernels/common/vec.cuh"
#include "kernels/linear_ce/softmax_ce.h"

namespace ddpbench::kernels {
namespace {

constexpr int kThreads = 1024;
constexpr int kUnroll = 4;  // independent loads in flight per thread

// Merges a partial (max, sum of exp(x - max)) into another; an empty partial has max -inf.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
  m = mx;
}

// Every thread ends with the block's (max, sum): warps reduce by shuffles, then each warp reduces
// the warps' partials itself, which saves a second barrier and a broadcast.
__device__ __forceinline__ void block_max_sum(float& m, float& s) {
  __shared__ float warp_m[kThreads / 32], warp_s[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1)
    merge(m, s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warp_m[warp] = m;
    warp_s[warp] = s;
  }
  __syncthreads();
  const int warps = blockDim.x / 32;
  m = lane < warps ? warp_m[lane] : -INFINITY;
  s = lane < warps ? warp_s[lane] : 0.f;
  for (int offset = 16; offset > 0; offset >>= 1)
    merge(m, s, __shfl_xor_sync(0xffffffffu, m, offset), __shfl_xor_sync(0xffffffffu, s, offset));
}

template <typename T, int N>
__device__ __forceinline__ void accumulate(const Pack<T, N>& p, float& m, float& s) {
  float x[N];
  float pm = -INFINITY;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    x[j] = to_float(p.v[j]);
    pm = fmaxf(pm, x[j]);
  }
  const float mx = fmaxf(m, pm);
  float ps = 0.f;
#pragma unroll
  for (int j = 0; j < N; ++j) ps += __expf(x[j] - mx);
  s = (m == -INFINITY ? 0.f : s * __expf(m - mx)) + ps;
  m = mx;
}

// vocab is a multiple of N (the launcher picks N = 1 otherwise).
template <typename T, int N>
__global__ void __launch_bounds__(kThreads) softmax_ce_grad_kernel(T* __restrict__ logits, std::int64_t vocab,
                                                                   std::int64_t row_stride,
                                                                   const std::int64_t* __restrict__ labels,
                                                                   std::int64_t ignore_index, float* __restrict__ row_loss) {
  using P = Pack<T, N>;
  const std::int64_t r = blockIdx.x;
  T* row = logits + r * row_stride;
  P* packs = reinterpret_cast<P*>(row);
  const std::int64_t n_packs = vocab / N;
  const std::int64_t label = labels[r];
  if (label == ignore_index) {
    P zero;
#pragma unroll
    for (int j = 0; j < N; ++j) zero.v[j] = from_float<T>(0.f);
    for (std::int64_t i = threadIdx.x; i < n_packs; i += kThreads) packs[i] = zero;
    if (threadIdx.x == 0) row_loss[r] = 0.f;
    return;
  }
  const bool valid = label >= 0 && label < vocab;
  // The label's logit, read before the barrier in block_max_sum, after which the row is overwritten.
  float target = 0.f;
  if (threadIdx.x == 0 && valid) target = to_float(row[label]);

  float m = -INFINITY, s = 0.f;
  std::int64_t i = threadIdx.x;
  for (; i + (kUnroll - 1) * kThreads < n_packs; i += kUnroll * kThreads) {
    P p[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) p[u] = packs[i + u * kThreads];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) accumulate(p[u], m, s);
  }
  for (; i < n_packs; i += kThreads) accumulate(packs[i], m, s);
  block_max_sum(m, s);
  const float lse = m + __logf(s);
  if (threadIdx.x == 0) row_loss[r] = valid ? lse - target : NAN;

  for (std::int64_t k = threadIdx.x; k < n_packs; k += kThreads) {
    P p = packs[k];
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float g = __expf(to_float(p.v[j]) - lse);
      if (k * N + j == label) g -= 1.f;
      p.v[j] = from_float<T>(g);
    }
    packs[k] = p;
  }
}

template <typename T>
void launch(T* logits, std::int64_t rows, std::int64_t vocab, std::int64_t row_stride, const std::int64_t* labels,
            std::int64_t ignore_index, float* row_loss, cudaStream_t stream) {
  if (rows == 0) return;
  constexpr int kVec = kPackElems<T>;
  const dim3 grid(static_cast<unsigned>(rows));
  if (aligned16(logits) && vocab % kVec == 0 && row_stride % kVec == 0)
    softmax_ce_grad_kernel<T, kVec><<<grid, kThreads, 0, stream>>>(logits, vocab, row_stride, labels, ignore_index, row_loss);
  else
    softmax_ce_grad_kernel<T, 1><<<grid, kThreads, 0, stream>>>(logits, vocab, row_stride, labels, ignore_index, row_loss);
  DDPBENCH_LAUNCH_CHECK("softmax_ce_grad_kernel");
}

}  // namespace

void softmax_cross_entropy_grad(void* logits, DType type, std::int64_t rows, std::int64_t vocab,
                                std::int64_t row_stride, const std::int64_t* labels, std::int64_t ignore_index,
                                float* row_loss, cudaStream_t stream) {
  dispatch_dtype(type, [&](auto element) {
    using T = decltype(element);
    launch(static_cast<T*>(logits), rows, vocab, row_stride, labels, ignore_index, row_loss, stream);
  });
}

}  // namespace ddpbench::kernels
