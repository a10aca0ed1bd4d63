// RMSNorm forward and backward. A block is R rows x TPR threads (at most 512 in all, so that up to
// 128 registers per thread hold the row without spilling); each thread owns VPT packs of VEC
// elements of its row (16-byte packs where the row allows, else single elements), held in registers
// between the statistics and the output, so every tensor is read and written once. The backward
// blocks stride over rows keeping the weight gradient of their columns in registers; per-block
// fp32 partial sums are then reduced by a second small kernel.
#include "kernels/rms_norm/rms_norm.h"

#include <algorithm>
#include <initializer_list>
#include <type_traits>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/common/vec.cuh"

namespace ddpbench::kernels {

namespace {

constexpr int kBlockThreads = 512;

struct Layout {
  int vec = 1;   // elements per pack
  int vpt = 1;   // packs per thread
  int tpr = 32;  // threads per row
  int rows_per_block = 1;
};

Layout layout_for(std::int64_t hidden, int vec) {
  if (hidden < 1) throw std::invalid_argument("rms_norm: hidden size must be positive");
  Layout l;
  l.vec = vec;
  const std::int64_t packs = (hidden + vec - 1) / vec;
  // One pack per thread up to rows of 512 packs (8b's 4096 bf16): more packs per thread cost
  // registers, and with them the second block per multiprocessor that the backward pass counts on.
  while ((packs + l.vpt - 1) / l.vpt > kBlockThreads && l.vpt < 16) l.vpt *= 2;
  const std::int64_t threads = ((packs + l.vpt - 1) / l.vpt + 31) / 32 * 32;
  if (threads > kBlockThreads)
    throw std::invalid_argument("rms_norm: hidden size " + std::to_string(hidden) + " is larger than the kernels support (" +
                                std::to_string(16 * kBlockThreads * vec) + ")");
  l.tpr = static_cast<int>(threads);
  l.rows_per_block = std::max(1, kBlockThreads / l.tpr);
  return l;
}

// Sum of v over the TPR threads of a row (threadIdx.y), broadcast to all of them. Every thread of
// the block calls it (it synchronises the block).
__device__ __forceinline__ float row_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int warps_per_row = blockDim.x / 32;
  if (warps_per_row == 1) return v;
  const int warp = threadIdx.x / 32;
  __syncthreads();  // scratch may still be read by the previous call
  if (threadIdx.x % 32 == 0) scratch[threadIdx.y * warps_per_row + warp] = v;
  __syncthreads();
  float s = 0;
  for (int w = 0; w < warps_per_row; ++w) s += scratch[threadIdx.y * warps_per_row + w];
  return s;
}

template <typename T, int VEC, int VPT>
__global__ void __launch_bounds__(kBlockThreads) rms_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ residual,
                                                                const T* __restrict__ weight, T* __restrict__ h_out,
                                                                T* __restrict__ y, float* __restrict__ rstd_out,
                                                                std::int64_t rows, int hidden, float eps) {
  __shared__ float scratch[32];
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool live = row < rows;
  const std::int64_t base = row * hidden;
  float h[VPT][VEC];
  float sumsq = 0;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (j * blockDim.x + threadIdx.x) * VEC;
    if (live && col < hidden) {
      load_floats<T, VEC>(x + base + col, h[j]);
      if (residual) {
        float r[VEC];
        load_floats<T, VEC>(residual + base + col, r);
#pragma unroll
        for (int e = 0; e < VEC; ++e) h[j][e] = round_to<T>(h[j][e] + r[e]);
        store_floats<T, VEC>(h_out + base + col, h[j]);
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) sumsq += h[j][e] * h[j][e];
    }
  }
  const float rstd = rsqrtf(row_sum(sumsq, scratch) / static_cast<float>(hidden) + eps);
  if (!live) return;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (j * blockDim.x + threadIdx.x) * VEC;
    if (col < hidden) {
      float w[VEC], out[VEC];
      load_floats<T, VEC>(weight + col, w);
#pragma unroll
      for (int e = 0; e < VEC; ++e) out[e] = w[e] * round_to<T>(h[j][e] * rstd);
      store_floats<T, VEC>(y + base + col, out);
    }
  }
  if (threadIdx.x == 0) rstd_out[row] = rstd;
}

template <typename T, int VEC, int VPT>
__global__ void __launch_bounds__(kBlockThreads) rms_norm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ dh,
                                                                 const T* __restrict__ h, const T* __restrict__ weight,
                                                                 const float* __restrict__ rstd, T* __restrict__ dx,
                                                                 float* __restrict__ dw_partials, std::int64_t rows,
                                                                 int hidden) {
  __shared__ float scratch[32];
  __shared__ float dw_rows[kBlockThreads * 16 / sizeof(T) > 4096 ? 4096 : kBlockThreads * 16 / sizeof(T)];
  float dw[VPT][VEC];
  float w[VPT][VEC];
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (j * blockDim.x + threadIdx.x) * VEC;
#pragma unroll
    for (int e = 0; e < VEC; ++e) dw[j][e] = 0.f, w[j][e] = 0.f;
    if (col < hidden) load_floats<T, VEC>(weight + col, w[j]);
  }
  const float inv_hidden = 1.f / static_cast<float>(hidden);
  for (std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * blockDim.y; row0 < rows;
       row0 += static_cast<std::int64_t>(gridDim.x) * blockDim.y) {
    const std::int64_t row = row0 + threadIdx.y;
    const bool live = row < rows;
    const std::int64_t base = row * hidden;
    const float r = live ? rstd[row] : 0.f;
    float n[VPT][VEC], g[VPT][VEC];
    float dot = 0;
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (j * blockDim.x + threadIdx.x) * VEC;
      if (live && col < hidden) {
        float d[VEC];
        load_floats<T, VEC>(h + base + col, n[j]);
        load_floats<T, VEC>(dy + base + col, d);
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          n[j][e] *= r;
          g[j][e] = d[e] * w[j][e];
          dot += g[j][e] * n[j][e];
          dw[j][e] += d[e] * round_to<T>(n[j][e]);
        }
      }
    }
    const float mean_dot = row_sum(dot, scratch) * inv_hidden;
    if (!live) continue;
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (j * blockDim.x + threadIdx.x) * VEC;
      if (col < hidden) {
        float out[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) out[e] = r * (g[j][e] - n[j][e] * mean_dot);
        if (dh) {
          float extra[VEC];
          load_floats<T, VEC>(dh + base + col, extra);
#pragma unroll
          for (int e = 0; e < VEC; ++e) out[e] += extra[e];
        }
        store_floats<T, VEC>(dx + base + col, out);
      }
    }
  }
  // The block's rows summed into one partial row: pack by pack through shared memory (sized for one
  // pack of every thread of a row, times the rows of a block).
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (j * blockDim.x + threadIdx.x) * VEC;
    if (blockDim.y == 1) {
      if (col < hidden)
#pragma unroll
        for (int e = 0; e < VEC; ++e)
          if (col + e < hidden) dw_partials[static_cast<std::int64_t>(blockIdx.x) * hidden + col + e] = dw[j][e];
      continue;
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < VEC; ++e) dw_rows[(threadIdx.y * blockDim.x + threadIdx.x) * VEC + e] = dw[j][e];
    __syncthreads();
    if (threadIdx.y == 0 && col < hidden) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        float s = 0;
        for (int y = 0; y < static_cast<int>(blockDim.y); ++y) s += dw_rows[(y * blockDim.x + threadIdx.x) * VEC + e];
        dw_partials[static_cast<std::int64_t>(blockIdx.x) * hidden + col + e] = s;
      }
    }
  }
}

// dweight[c] = sum over p of partials[p][c]: 32 columns x 32 partial rows per block.
template <typename T>
__global__ void reduce_partials_kernel(const float* __restrict__ partials, T* __restrict__ out, int parts, int hidden) {
  __shared__ float sums[32][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  float s = 0;
  if (col < hidden)
    for (int p = threadIdx.y; p < parts; p += 32) s += partials[static_cast<std::int64_t>(p) * hidden + col];
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < hidden) {
    float total = 0;
    for (int y = 0; y < 32; ++y) total += sums[y][threadIdx.x];
    out[col] = from_float<T>(total);
  }
}

// Calls f(integral_constant VEC, integral_constant VPT) for the layout's values.
template <int VEC, typename F>
void dispatch_vpt(int vpt, F&& f) {
  switch (vpt) {
    case 1: return f(std::integral_constant<int, VEC>{}, std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, VEC>{}, std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, VEC>{}, std::integral_constant<int, 4>{});
    case 8: return f(std::integral_constant<int, VEC>{}, std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, VEC>{}, std::integral_constant<int, 16>{});
  }
  throw std::logic_error("rms_norm: packs per thread " + std::to_string(vpt));
}

template <typename T, typename F>
void dispatch_layout(const Layout& l, F&& f) {
  if (l.vec == 1) dispatch_vpt<1>(l.vpt, f);
  else dispatch_vpt<kPackElems<T>>(l.vpt, f);
}

template <typename T>
int pack_width(std::int64_t hidden, std::initializer_list<const void*> pointers) {
  bool ok = hidden % kPackElems<T> == 0;
  for (const void* p : pointers) ok = ok && aligned16(p);
  return ok ? kPackElems<T> : 1;
}

std::int64_t backward_blocks(std::int64_t rows, std::int64_t hidden) {
  // Two blocks per multiprocessor keep enough loads in flight; more would add partial rows.
  (void)hidden;
  return std::max<std::int64_t>(1, std::min<std::int64_t>(rows, 2 * multiprocessor_count()));
}

}  // namespace

void rms_norm_forward(DType dtype, const void* x, const void* residual, const void* weight, void* h_out, void* y,
                      float* rstd, std::int64_t rows, std::int64_t hidden, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const Layout l = layout_for(hidden, pack_width<T>(hidden, {x, residual, weight, h_out, y}));
    dispatch_layout<T>(l, [&](auto vec, auto vpt) {
      const dim3 block(l.tpr, l.rows_per_block);
      const auto grid = static_cast<unsigned>((rows + l.rows_per_block - 1) / l.rows_per_block);
      rms_norm_forward_kernel<T, vec.value, vpt.value><<<grid, block, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<const T*>(weight), static_cast<T*>(h_out),
          static_cast<T*>(y), rstd, rows, static_cast<int>(hidden), eps);
      DDPBENCH_LAUNCH_CHECK("rms_norm_forward_kernel");
    });
  });
}

std::int64_t rms_norm_backward_partials(std::int64_t rows, std::int64_t hidden) { return backward_blocks(rows, hidden); }

void rms_norm_backward(DType dtype, const void* dy, const void* dh, const void* h, const void* weight,
                       const float* rstd, void* dx, float* dw_partials, void* dweight, std::int64_t rows,
                       std::int64_t hidden, cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const std::int64_t parts = rows == 0 ? 0 : backward_blocks(rows, hidden);
    if (parts > 0) {
      const Layout l = layout_for(hidden, pack_width<T>(hidden, {dy, dh, h, weight, dx}));
      dispatch_layout<T>(l, [&](auto vec, auto vpt) {
        const dim3 block(l.tpr, l.rows_per_block);
        rms_norm_backward_kernel<T, vec.value, vpt.value><<<static_cast<unsigned>(parts), block, 0, stream>>>(
            static_cast<const T*>(dy), static_cast<const T*>(dh), static_cast<const T*>(h), static_cast<const T*>(weight),
            rstd, static_cast<T*>(dx), dw_partials, rows, static_cast<int>(hidden));
        DDPBENCH_LAUNCH_CHECK("rms_norm_backward_kernel");
      });
    }
    if (parts == 0) {
      DDPBENCH_CUDA_CHECK(cudaMemsetAsync(dweight, 0, hidden * sizeof(T), stream));
      return;
    }
    const dim3 block(32, 32);
    reduce_partials_kernel<T><<<static_cast<unsigned>((hidden + 31) / 32), block, 0, stream>>>(
        dw_partials, static_cast<T*>(dweight), static_cast<int>(parts), static_cast<int>(hidden));
    DDPBENCH_LAUNCH_CHECK("rms_norm reduce_partials_kernel");
  });
}

}  // namespace ddpbench::kernels
