// Device helpers shared by the .cu files: 16-byte packs (bf16 x8, fp32 x4) for vectorised loads
// and stores, conversions to and from the fp32 the kernels accumulate in, block reductions, and
// the dispatch from DType to the element type.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>

#include "kernels/common/dtype.h"

namespace ddpbench::kernels {

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements per 16-byte pack.
template <typename T>
constexpr int kPackElems = 16 / sizeof(T);

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// x rounded to T and back: what an ATen op in T would have stored between two steps.
template <typename T>
__device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }

template <typename T, int N>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[N]) {
  const Pack<T, N> pack = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_float(pack.v[i]);
}

template <typename T, int N>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[N]) {
  Pack<T, N> pack;
#pragma unroll
  for (int i = 0; i < N; ++i) pack.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pack;
}

// 16 bytes as loaded, kept in four 32-bit registers until the values are needed (a Pack<bf16, 8>
// held across other work is split by the compiler into eight 16-bit values of a register each), or
// one element where rows allow no packs (N = 1). widen() gives fp32 values (one instruction each),
// narrow() rounds fp32 values back into a pack. Loads go through the read-only path: only for
// tensors that no thread writes during the kernel.
template <typename T, int N>
struct RawPack {
  static_assert(sizeof(T) * N == 16, "a raw pack is 16 bytes, or one element");
  unsigned w[4];
};
template <typename T>
struct RawPack<T, 1> {
  T v;
};

// 16 bytes as read (from global or shared memory) kept as a raw pack.
template <typename T, int N>
__device__ __forceinline__ RawPack<T, N> raw_pack(const uint4& u) {
  static_assert(N > 1, "a 16-byte pack");
  RawPack<T, N> r;
  r.w[0] = u.x, r.w[1] = u.y, r.w[2] = u.z, r.w[3] = u.w;
  return r;
}

template <typename T, int N>
__device__ __forceinline__ RawPack<T, N> load_raw(const T* p) {
  if constexpr (N == 1) {
    RawPack<T, N> r;
    r.v = *p;
    return r;
  } else {
    return raw_pack<T, N>(__ldg(reinterpret_cast<const uint4*>(p)));
  }
}

template <typename T, int N>
__device__ __forceinline__ void store_raw(T* p, const RawPack<T, N>& r) {
  if constexpr (N == 1) *p = r.v;
  else *reinterpret_cast<uint4*>(p) = make_uint4(r.w[0], r.w[1], r.w[2], r.w[3]);
}

template <typename T, int N>
__device__ __forceinline__ void widen(const RawPack<T, N>& r, float (&out)[N]) {
  if constexpr (N == 1) {
    out[0] = to_float(r.v);
  } else if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = __uint_as_float(r.w[i]);
  } else {  // bf16: element 2i in the low half of word i; its fp32 value is its bits shifted up
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __uint_as_float(r.w[i] << 16);
      out[2 * i + 1] = __uint_as_float(r.w[i] & 0xffff0000u);
    }
  }
}

template <typename T, int N>
__device__ __forceinline__ RawPack<T, N> narrow(const float (&in)[N]) {
  RawPack<T, N> r;
  if constexpr (N == 1) {
    r.v = from_float<T>(in[0]);
  } else if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) r.w[i] = __float_as_uint(in[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __nv_bfloat162 pair = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);  // .x, the low half, first
      r.w[i] = *reinterpret_cast<const unsigned*>(&pair);
    }
  }
  return r;
}

// Makes the compiler treat the pack's registers as rewritten here, so that fp32 values widened from
// it before this point are widened again after it (one instruction per element) rather than kept
// alive across whatever lies between: half the registers for bf16, which buys rows in flight.
template <typename T, int N>
__device__ __forceinline__ void forget_widened(RawPack<T, N>& r) {
  if constexpr (N > 1) {
#pragma unroll
    for (int i = 0; i < 4; ++i) asm volatile("" : "+r"(r.w[i]));
  }
}

// Copies of 16 bytes from global to shared memory that bypass the registers (cp.async, sm_80 on;
// earlier architectures copy through registers). A thread's copies complete in the order of its
// commit groups: wait_copies<N> returns once at most N of its groups are still in flight, and the
// thread may then read what it copied (other threads' copies only after a barrier). Shared memory
// is addressed by its 32-bit shared-window address (shared_address, taken once): a generic pointer
// would be converted again at every access.
__device__ __forceinline__ unsigned shared_address(const void* shared) {
  return static_cast<unsigned>(__cvta_generic_to_shared(shared));
}

__device__ __forceinline__ void copy_async_16(unsigned shared, const void* global) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared), "l"(global) : "memory");
#else
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(shared), "r"(static_cast<const uint4*>(global)->x),
               "r"(static_cast<const uint4*>(global)->y), "r"(static_cast<const uint4*>(global)->z),
               "r"(static_cast<const uint4*>(global)->w)
               : "memory");
#endif
}

__device__ __forceinline__ uint4 load_shared_16(unsigned shared) {
  uint4 u;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w) : "r"(shared) : "memory");
  return u;
}

__device__ __forceinline__ void commit_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void wait_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

inline bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Calls f with a value of the element type (only its type matters).
template <typename F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(__nv_bfloat16{}); return;
  }
  throw std::invalid_argument("kernels: unknown dtype");
}

}  // namespace ddpbench::kernels
