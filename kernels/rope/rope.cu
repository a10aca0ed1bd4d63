// RoPE on q and k in one launch. A thread takes one pack (16 bytes where the half head allows) of
// the low half of a head and the matching pack of the high half, for up to kRopeHeadsPerThread heads
// of one token (heads lane, lane + lanes, lane + 2 lanes, ...: the threads of a token cover
// neighbouring heads, so a warp's loads are whole 32-byte sectors): all of its loads are issued
// before the first value is used, so a thread waits on memory once, and the cos/sin packs of its
// position are read once for all its heads. Packs are held as loaded (32-bit words) until used.
#include "kernels/rope/rope.h"

#include <algorithm>
#include <stdexcept>
#include <type_traits>

#include "kernels/common/cuda_check.h"
#include "kernels/common/vec.cuh"

namespace ddpbench::kernels {

namespace {

// The launch configuration: heads per thread and threads per block. bench/kernels/launch_sweep.cu
// times the alternatives: 2 heads a thread in blocks of 128 was the fastest at the 1b and 8b shapes
// on an H200, L2-cold (8% under 8 heads in blocks of 256 at 1b, 2-3% at 8b; bench/results/
// 2026-11-29-h200x1-launch-sweep): more threads per token, fewer loads per thread.
constexpr int kRopeHeadsPerThread = 2;
constexpr int kRopeThreads = 128;

// Threads per (token, pack) position: the fewest that leave each at most `per_thread` heads
// (20 for the Llama presets' 32 + 8 heads at 2: 2 heads each, none idle).
std::int64_t head_lanes_for(std::int64_t heads, int per_thread) {
  return (heads + per_thread - 1) / per_thread;
}

template <typename T, int VEC, bool BACKWARD, int HEADS = kRopeHeadsPerThread, int THREADS = kRopeThreads>
__global__ void __launch_bounds__(THREADS) rope_qk_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                          const T* __restrict__ cos, const T* __restrict__ sin,
                                                          T* __restrict__ q_out, T* __restrict__ k_out, RopeShape s,
                                                          int head_lanes) {
  using P = RawPack<T, VEC>;
  const int half = static_cast<int>(s.head_dim / 2);
  const int packs = half / VEC;
  const int heads = static_cast<int>(s.q_heads + s.kv_heads);
  const std::int64_t per_token = static_cast<std::int64_t>(packs) * head_lanes;
  const std::int64_t units = s.tokens * per_token;
  for (std::int64_t u = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
       u += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(u % packs) * VEC;
    const int lane = static_cast<int>((u / packs) % head_lanes);
    const std::int64_t token = u / per_token;
    // Offsets of this thread's heads in q or k (the first s.q_heads heads are q's).
    auto offset_of = [&](int head) {
      return head < s.q_heads ? (token * s.q_heads + head) * s.head_dim
                              : (token * s.kv_heads + (head - s.q_heads)) * s.head_dim;
    };
    P lo[HEADS], hi[HEADS];
#pragma unroll
    for (int i = 0; i < HEADS; ++i) {
      const int head = lane + i * head_lanes;
      if (head < heads) {
        const T* in = (head < s.q_heads ? q : k) + offset_of(head);
        lo[i] = load_raw<T, VEC>(in + d);
        hi[i] = load_raw<T, VEC>(in + half + d);
      }
    }
    const std::int64_t table = (token % s.seq_len) * s.head_dim;
    float c_lo[VEC], c_hi[VEC], s_lo[VEC], s_hi[VEC];
    widen(load_raw<T, VEC>(cos + table + d), c_lo);
    widen(load_raw<T, VEC>(cos + table + half + d), c_hi);
    widen(load_raw<T, VEC>(sin + table + d), s_lo);
    widen(load_raw<T, VEC>(sin + table + half + d), s_hi);
#pragma unroll
    for (int i = 0; i < HEADS; ++i) {
      const int head = lane + i * head_lanes;
      if (head < heads) {
        float a[VEC], b[VEC], out_lo[VEC], out_hi[VEC];
        widen(lo[i], a);
        widen(hi[i], b);
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          if constexpr (BACKWARD) {
            // The transpose of [c_lo, -s_lo; s_hi, c_hi].
            out_lo[e] = a[e] * c_lo[e] + b[e] * s_hi[e];
            out_hi[e] = b[e] * c_hi[e] - a[e] * s_lo[e];
          } else {
            out_lo[e] = a[e] * c_lo[e] - b[e] * s_lo[e];
            out_hi[e] = b[e] * c_hi[e] + a[e] * s_hi[e];
          }
        }
        T* out = (head < s.q_heads ? q_out : k_out) + offset_of(head);
        store_floats<T, VEC>(out + d, out_lo);
        store_floats<T, VEC>(out + half + d, out_hi);
      }
    }
  }
}

// The launcher at a given configuration (rope_qk below uses the defaults above).
template <int HEADS, int THREADS>
void launch_rope_qk(DType dtype, const RopeShape& shape, const void* q, const void* k, const void* cos, const void* sin,
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
      const std::int64_t lanes = head_lanes_for(shape.q_heads + shape.kv_heads, HEADS);
      const std::int64_t units = shape.tokens * lanes * (half / vec.value);
      const auto blocks = static_cast<unsigned>(std::min<std::int64_t>((units + THREADS - 1) / THREADS, 1 << 30));
      rope_qk_kernel<T, vec.value, bwd.value, HEADS, THREADS><<<blocks, THREADS, 0, stream>>>(
          static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(cos), static_cast<const T*>(sin),
          static_cast<T*>(q_out), static_cast<T*>(k_out), shape, static_cast<int>(lanes));
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

}  // namespace

void rope_qk(DType dtype, const RopeShape& shape, const void* q, const void* k, const void* cos, const void* sin,
             void* q_out, void* k_out, bool backward, cudaStream_t stream) {
  launch_rope_qk<kRopeHeadsPerThread, kRopeThreads>(dtype, shape, q, k, cos, sin, q_out, k_out, backward, stream);
}

}  // namespace ddpbench::kernels
