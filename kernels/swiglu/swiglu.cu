// SwiGLU forward and backward: element-wise, 16-byte packs where every pointer allows (the tail
// past the last whole pack done element by element), fp32 arithmetic, rounded as ATen's silu then
// mul would round between the two.
#include "kernels/swiglu/swiglu.h"

#include <algorithm>
#include <type_traits>

#include "kernels/common/cuda_check.h"
#include "kernels/common/vec.cuh"

namespace ddpbench::kernels {

namespace {

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

template <typename T, int VEC>
__device__ __forceinline__ void forward_at(const T* gate, const T* up, T* out, std::int64_t i) {
  float g[VEC], u[VEC], o[VEC];
  load_floats<T, VEC>(gate + i, g);
  load_floats<T, VEC>(up + i, u);
#pragma unroll
  for (int e = 0; e < VEC; ++e) o[e] = round_to<T>(g[e] * sigmoid(g[e])) * u[e];
  store_floats<T, VEC>(out + i, o);
}

template <typename T, int VEC>
__device__ __forceinline__ void backward_at(const T* d_out, const T* gate, const T* up, T* d_gate, T* d_up, std::int64_t i) {
  float d[VEC], g[VEC], u[VEC], dg[VEC], du[VEC];
  load_floats<T, VEC>(d_out + i, d);
  load_floats<T, VEC>(gate + i, g);
  load_floats<T, VEC>(up + i, u);
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    const float sg = sigmoid(g[e]);
    const float silu = g[e] * sg;
    du[e] = d[e] * round_to<T>(silu);
    dg[e] = d[e] * u[e] * sg * (1.f + g[e] * (1.f - sg));
  }
  store_floats<T, VEC>(d_gate + i, dg);
  store_floats<T, VEC>(d_up + i, du);
}

template <typename T, int VEC>
__global__ void swiglu_forward_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out,
                                      std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t packs = n / VEC;
  for (std::int64_t p = first; p < packs; p += stride) forward_at<T, VEC>(gate, up, out, p * VEC);
  for (std::int64_t i = packs * VEC + first; i < n; i += stride) forward_at<T, 1>(gate, up, out, i);
}

template <typename T, int VEC>
__global__ void swiglu_backward_kernel(const T* __restrict__ d_out, const T* __restrict__ gate, const T* __restrict__ up,
                                       T* __restrict__ d_gate, T* __restrict__ d_up, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t packs = n / VEC;
  for (std::int64_t p = first; p < packs; p += stride) backward_at<T, VEC>(d_out, gate, up, d_gate, d_up, p * VEC);
  for (std::int64_t i = packs * VEC + first; i < n; i += stride) backward_at<T, 1>(d_out, gate, up, d_gate, d_up, i);
}

// One pack per thread where the tensor is large enough, so each thread issues its loads once.
unsigned grid_for(std::int64_t n, int vec, int threads) {
  const std::int64_t packs = std::max<std::int64_t>(1, n / vec);
  return static_cast<unsigned>(std::min<std::int64_t>((packs + threads - 1) / threads, 1 << 30));
}

}  // namespace

void swiglu_forward(DType dtype, const void* gate, const void* up, void* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int threads = 256;
    if (aligned16(gate) && aligned16(up) && aligned16(out)) {
      swiglu_forward_kernel<T, kPackElems<T>><<<grid_for(n, kPackElems<T>, threads), threads, 0, stream>>>(
          static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), n);
    } else {
      swiglu_forward_kernel<T, 1><<<grid_for(n, 1, threads), threads, 0, stream>>>(
          static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), n);
    }
    DDPBENCH_LAUNCH_CHECK("swiglu_forward_kernel");
  });
}

void swiglu_backward(DType dtype, const void* d_out, const void* gate, const void* up, void* d_gate, void* d_up,
                     std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int threads = 256;
    if (aligned16(d_out) && aligned16(gate) && aligned16(up) && aligned16(d_gate) && aligned16(d_up)) {
      swiglu_backward_kernel<T, kPackElems<T>><<<grid_for(n, kPackElems<T>, threads), threads, 0, stream>>>(
          static_cast<const T*>(d_out), static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(d_gate),
          static_cast<T*>(d_up), n);
    } else {
      swiglu_backward_kernel<T, 1><<<grid_for(n, 1, threads), threads, 0, stream>>>(
          static_cast<const T*>(d_out), static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(d_gate),
          static_cast<T*>(d_up), n);
    }
    DDPBENCH_LAUNCH_CHECK("swiglu_backward_kernel");
  });
}

}  // namespace ddpbench::kernels
