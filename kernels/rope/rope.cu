// RoPE on q and k in one launch. A thread takes one pack (16 bytes where the half head allows) of
// the low half of a head and the matching pack of the high half, for a group of heads of one token:
// the cos/sin packs of its position are loaded once and reused across the group's heads.
#include "kernels/rope/rope.h"

#include <algorithm>
#include <stdexcept>
#include <type_traits>

#include "kernels/common/cuda_check.h"
#include "kernels/common/vec.cuh"

namespace ddpbench::kernels {

namespace {

constexpr int kHeadsPerThread = 4;

template <typename T, int VEC, bool BACKWARD>
__global__ void rope_qk_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ cos,
                               const T* __restrict__ sin, T* __restrict__ q_out, T* __restrict__ k_out, RopeShape s) {
  const int half = static_cast<int>(s.head_dim / 2);
  const int packs = half / VEC;
  const int heads = static_cast<int>(s.q_heads + s.kv_heads);
  const int groups = (heads + kHeadsPerThread - 1) / kHeadsPerThread;
  const std::int64_t units = s.tokens * groups * packs;
  for (std::int64_t u = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
       u += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(u % packs) * VEC;
    const int group = static_cast<int>((u / packs) % groups);
    const std::int64_t token = u / (static_cast<std::int64_t>(packs) * groups);
    const std::int64_t table = (token % s.seq_len) * s.head_dim;
    float c_lo[VEC], c_hi[VEC], s_lo[VEC], s_hi[VEC];
    load_floats<T, VEC>(cos + table + d, c_lo);
    load_floats<T, VEC>(cos + table + half + d, c_hi);
    load_floats<T, VEC>(sin + table + d, s_lo);
    load_floats<T, VEC>(sin + table + half + d, s_hi);
#pragma unroll
    for (int i = 0; i < kHeadsPerThread; ++i) {
      const int head = group * kHeadsPerThread + i;
      if (head >= heads) break;
      const bool is_q = head < s.q_heads;
      const std::int64_t offset = is_q ? (token * s.q_heads + head) * s.head_dim
                                       : (token * s.kv_heads + (head - s.q_heads)) * s.head_dim;
      const T* in = (is_q ? q : k) + offset;
      T* out = (is_q ? q_out : k_out) + offset;
      float lo[VEC], hi[VEC], out_lo[VEC], out_hi[VEC];
      load_floats<T, VEC>(in + d, lo);
      load_floats<T, VEC>(in + half + d, hi);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        if constexpr (BACKWARD) {
          // The transpose of [c_lo, -s_lo; s_hi, c_hi].
          out_lo[e] = lo[e] * c_lo[e] + hi[e] * s_hi[e];
          out_hi[e] = hi[e] * c_hi[e] - lo[e] * s_lo[e];
        } else {
          out_lo[e] = lo[e] * c_lo[e] - hi[e] * s_lo[e];
          out_hi[e] = hi[e] * c_hi[e] + lo[e] * s_hi[e];
        }
      }
      store_floats<T, VEC>(out + d, out_lo);
      store_floats<T, VEC>(out + half + d, out_hi);
    }
  }
}

}  // namespace

void rope_qk(DType dtype, const RopeShape& shape, const void* q, const void* k, const void* cos, const void* sin,
             void* q_out, void* k_out, bool backward, cudaStream_t stream) {
  if (shape.head_dim < 2 || shape.head_dim % 2 != 0) throw std::invalid_argument("rope_qk: head_dim must be even");
  if (shape.seq_len < 1) throw std::invalid_argument("rope_qk: seq_len must be positive");
  if (shape.tokens == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const std::int64_t half = shape.head_dim / 2;
    const bool packed = half % kPackElems<T> == 0 && aligned16(q) && aligned16(k) && aligned16(cos) && aligned16(sin) &&
                        aligned16(q_out) && aligned16(k_out);
    auto launch = [&](auto vec, auto bwd) {
      const std::int64_t heads = shape.q_heads + shape.kv_heads;
      const std::int64_t units = shape.tokens * ((heads + kHeadsPerThread - 1) / kHeadsPerThread) * (half / vec.value);
      const int threads = 256;
      const auto blocks = static_cast<unsigned>(std::min<std::int64_t>((units + threads - 1) / threads, 1 << 30));
      rope_qk_kernel<T, vec.value, bwd.value><<<blocks, threads, 0, stream>>>(
          static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(cos), static_cast<const T*>(sin),
          static_cast<T*>(q_out), static_cast<T*>(k_out), shape);
      DDPBENCH_LAUNCH_CHECK("rope_qk_kernel");
    };
    using Fwd = std::false_type;
    using Bwd = std::true_type;
    using Packed = std::integral_constant<int, kPackElems<T>>;
    using Single = std::integral_constant<int, 1>;
    if (packed) backward ? launch(Packed{}, Bwd{}) : launch(Packed{}, Fwd{});
    else backward ? launch(Single{}, Bwd{}) : launch(Single{}, Fwd{});
  });
}

}  // namespace ddpbench::kernels
