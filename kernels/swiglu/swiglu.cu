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

template <typename T>
__device__ __forceinline__ float forward_value(float g, float u) { return round_to<T>(g * sigmoid(g)) * u; }

template <typename T, int VEC>
__device__ __forceinline__ void forward_at(const T* gate, const T* up, T* out, std::int64_t i) {
  float g[VEC], u[VEC], o[VEC];
  load_floats<T, VEC>(gate + i, g);
  load_floats<T, VEC>(up + i, u);
#pragma unroll
  for (int e = 0; e < VEC; ++e) o[e] = forward_value<T>(g[e], u[e]);
  store_floats<T, VEC>(out + i, o);
}

template <typename T>
__device__ __forceinline__ void backward_values(float d, float g, float u, float& dg, float& du) {
  const float sg = sigmoid(g);
  du = d * round_to<T>(g * sg);
  dg = d * u * sg * (1.f + g * (1.f - sg));
}

template <typename T, int VEC>
__device__ __forceinline__ void backward_at(const T* d_out, const T* gate, const T* up, T* d_gate, T* d_up, std::int64_t i) {
  float d[VEC], g[VEC], u[VEC], dg[VEC], du[VEC];
  load_floats<T, VEC>(d_out + i, d);
  load_floats<T, VEC>(gate + i, g);
  load_floats<T, VEC>(up + i, u);
#pragma unroll
  for (int e = 0; e < VEC; ++e) backward_values<T>(d[e], g[e], u[e], dg[e], du[e]);
  store_floats<T, VEC>(d_gate + i, dg);
  store_floats<T, VEC>(d_up + i, du);
}

// The launch configurations: threads per block, and packs per thread in one pass (their loads
// issued together). bench/kernels/launch_sweep.cu times the alternatives; on an H200, L2-cold, at
// the 1b and 8b shapes (bench/results/2026-11-29-h200x1-launch-sweep): forward, two packs a thread
// in blocks of 128 beat one pack in blocks of 256 by 8-9% (two loads of each input in flight per
// thread); backward, which reads three tensors, gains nothing from a second pack.
constexpr int kSwigluForwardThreads = 128;
constexpr int kSwigluForwardPacks = 2;
constexpr int kSwigluBackwardThreads = 256;
constexpr int kSwigluBackwardPacks = 1;

// Packs [0, whole) go in groups of PACKS packs a block apart, grid-stride: a thread loads all of
// its group's packs before it uses any (so it waits on memory once per group); the packs past the
// last whole group one by one, then the elements past the last pack.
struct PackSpan {
  std::int64_t whole, packs, stride, group_first, first;
};
template <int VEC, int PACKS>
__device__ __forceinline__ PackSpan pack_span(std::int64_t n) {
  const std::int64_t per_group = static_cast<std::int64_t>(blockDim.x) * PACKS;
  const std::int64_t packs = n / VEC;
  return {packs / per_group * per_group, packs, static_cast<std::int64_t>(gridDim.x) * blockDim.x,
          static_cast<std::int64_t>(blockIdx.x) * per_group + threadIdx.x,
          static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x};
}

template <typename T, int VEC, int PACKS>
__global__ void swiglu_forward_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out,
                                      std::int64_t n) {
  const PackSpan s = pack_span<VEC, PACKS>(n);
  for (std::int64_t p = s.group_first; p < s.whole; p += s.stride * PACKS) {
    RawPack<T, VEC> g[PACKS], u[PACKS];
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const std::int64_t i = (p + static_cast<std::int64_t>(j) * blockDim.x) * VEC;
      g[j] = load_raw<T, VEC>(gate + i);
      u[j] = load_raw<T, VEC>(up + i);
    }
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      float gf[VEC], uf[VEC], o[VEC];
      widen(g[j], gf);
      widen(u[j], uf);
#pragma unroll
      for (int e = 0; e < VEC; ++e) o[e] = forward_value<T>(gf[e], uf[e]);
      store_raw(out + (p + static_cast<std::int64_t>(j) * blockDim.x) * VEC, narrow<T, VEC>(o));
    }
  }
  for (std::int64_t p = s.whole + s.first; p < s.packs; p += s.stride) forward_at<T, VEC>(gate, up, out, p * VEC);
  for (std::int64_t i = s.packs * VEC + s.first; i < n; i += s.stride) forward_at<T, 1>(gate, up, out, i);
}

template <typename T, int VEC, int PACKS>
__global__ void swiglu_backward_kernel(const T* __restrict__ d_out, const T* __restrict__ gate, const T* __restrict__ up,
                                       T* __restrict__ d_gate, T* __restrict__ d_up, std::int64_t n) {
  const PackSpan s = pack_span<VEC, PACKS>(n);
  for (std::int64_t p = s.group_first; p < s.whole; p += s.stride * PACKS) {
    RawPack<T, VEC> d[PACKS], g[PACKS], u[PACKS];
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const std::int64_t i = (p + static_cast<std::int64_t>(j) * blockDim.x) * VEC;
      d[j] = load_raw<T, VEC>(d_out + i);
      g[j] = load_raw<T, VEC>(gate + i);
      u[j] = load_raw<T, VEC>(up + i);
    }
#pragma unroll
    for (int j = 0; j < PACKS; ++j) {
      const std::int64_t i = (p + static_cast<std::int64_t>(j) * blockDim.x) * VEC;
      float df[VEC], gf[VEC], uf[VEC], dg[VEC], du[VEC];
      widen(d[j], df);
      widen(g[j], gf);
      widen(u[j], uf);
#pragma unroll
      for (int e = 0; e < VEC; ++e) backward_values<T>(df[e], gf[e], uf[e], dg[e], du[e]);
      store_raw(d_gate + i, narrow<T, VEC>(dg));
      store_raw(d_up + i, narrow<T, VEC>(du));
    }
  }
  for (std::int64_t p = s.whole + s.first; p < s.packs; p += s.stride)
    backward_at<T, VEC>(d_out, gate, up, d_gate, d_up, p * VEC);
  for (std::int64_t i = s.packs * VEC + s.first; i < n; i += s.stride) backward_at<T, 1>(d_out, gate, up, d_gate, d_up, i);
}

// PACKS packs per thread where the tensor is large enough, so each thread passes once.
unsigned grid_for(std::int64_t n, int vec, int threads, int packs_per_thread) {
  const std::int64_t packs = std::max<std::int64_t>(1, n / vec);
  const std::int64_t per_block = static_cast<std::int64_t>(threads) * packs_per_thread;
  return static_cast<unsigned>(std::min<std::int64_t>((packs + per_block - 1) / per_block, 1 << 30));
}

// The launchers at a given configuration (the public ones below use the defaults above).
template <int PACKS>
void launch_swiglu_forward(DType dtype, const void* gate, const void* up, void* out, std::int64_t n, int threads,
                           cudaStream_t stream) {
  if (n == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (aligned16(gate) && aligned16(up) && aligned16(out)) {
      swiglu_forward_kernel<T, kPackElems<T>, PACKS><<<grid_for(n, kPackElems<T>, threads, PACKS), threads, 0, stream>>>(
          static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), n);
    } else {
      swiglu_forward_kernel<T, 1, PACKS><<<grid_for(n, 1, threads, PACKS), threads, 0, stream>>>(
          static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), n);
    }
    DDPBENCH_LAUNCH_CHECK("swiglu_forward_kernel");
  });
}

template <int PACKS>
void launch_swiglu_backward(DType dtype, const void* d_out, const void* gate, const void* up, void* d_gate, void* d_up,
                            std::int64_t n, int threads, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (aligned16(d_out) && aligned16(gate) && aligned16(up) && aligned16(d_gate) && aligned16(d_up)) {
      swiglu_backward_kernel<T, kPackElems<T>, PACKS><<<grid_for(n, kPackElems<T>, threads, PACKS), threads, 0, stream>>>(
          static_cast<const T*>(d_out), static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(d_gate),
          static_cast<T*>(d_up), n);
    } else {
      swiglu_backward_kernel<T, 1, PACKS><<<grid_for(n, 1, threads, PACKS), threads, 0, stream>>>(
          static_cast<const T*>(d_out), static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(d_gate),
          static_cast<T*>(d_up), n);
    }
    DDPBENCH_LAUNCH_CHECK("swiglu_backward_kernel");
  });
}

}  // namespace

void swiglu_forward(DType dtype, const void* gate, const void* up, void* out, std::int64_t n, cudaStream_t stream) {
  launch_swiglu_forward<kSwigluForwardPacks>(dtype, gate, up, out, n, kSwigluForwardThreads, stream);
}

void swiglu_backward(DType dtype, const void* d_out, const void* gate, const void* up, void* d_gate, void* d_up,
                     std::int64_t n, cudaStream_t stream) {
  launch_swiglu_backward<kSwigluBackwardPacks>(dtype, d_out, gate, up, d_gate, d_up, n, kSwigluBackwardThreads, stream);
}

}  // namespace ddpbench::kernels
