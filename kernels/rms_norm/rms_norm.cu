// RMSNorm forward and backward. A row is handled by a row group of TPR threads (4 warps for the
// forward pass without the residual, else one warp wherever the row allows), each thread owning PPT packs of VEC elements (16-byte packs where the row and the
// pointers allow, else single elements). Every load of a row is issued before the first of its
// values is used, and the packs are held as loaded (bf16 stays bf16 in registers) between the
// statistics and the output, so every tensor is read and written once and a thread waits on memory
// once per row with up to 16 x 16 bytes in flight. Row groups of a block share no barrier: a group
// wider than a warp sums across its warps through shared memory and its own named barrier, so the
// groups of a multiprocessor drift apart and keep its loads in flight while others compute.
// The backward blocks stride over rows, keeping the weight gradient of their columns in registers
// and (by default) the next rows' inputs in a ring of shared memory filled by cp.async; per-block
// fp32 partial sums are then reduced by a second small kernel.
#include "kernels/rms_norm/rms_norm.h"

#include <algorithm>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/common/cuda_check.h"
#include "kernels/common/vec.cuh"

namespace ddpbench::kernels {

namespace {

// Threads of a block: rows narrower than this share a block (up to 8 row groups of a warp). A row
// of 16-byte packs takes at most this many threads.
constexpr int kBlockThreads = 256;
// The backward pass's blocks, one per multiprocessor: each writes one row of fp32 partial sums of
// the weight gradient, so fewer, larger blocks leave less for the second kernel to reduce. 512
// threads is also the most a backward block may have (its launch bounds and shared memory).
constexpr int kBackwardBlockThreads = 512;
constexpr int kBackwardBlocksPerMultiprocessor = 1;
// Rows of a backward row group in flight at once: a ring of cp.async copies in shared memory this
// deep (0: each row loaded into registers and waited for before it is worked on). On an H200,
// L2-cold, two rows (the next one copied while this one is worked on) with 2 packs a thread were
// the fastest (82-90% of the copy bandwidth at the 1b and 8b shapes with the weight in registers;
// 65-79% without the ring); deeper rings were no faster (bench/results/2026-11-29-h200x1-rms-norm-
// backward, -backward-2). Holding the next row in registers instead (2x the registers) was 1-3%
// slower than no ring.
constexpr int kBackwardStages = 2;
constexpr int kMaxBackwardStages = 4;
// A row of single elements (sizes not a multiple of the pack) may take up to this many threads.
constexpr int kMaxScalarRowThreads = 1024;
// Packs per thread the launchers prefer at most: forward with the residual keeps two tensors' packs
// in registers; backward h's (and dh's) packs plus fp32 dy * w and weight-gradient sums for its
// columns, so it takes few packs per thread and more threads per row (2: 128 threads a row at the
// 1b shape, 256 at 8b; 119 registers, 127 with dh, no spills on sm_90). bench/kernels/launch_sweep.cu found no forward
// configuration more than 2% faster at the 1b and 8b shapes.
constexpr int kForwardResidualPacks = 4;
// Without the residual, a row is spread over this many threads (4 warps): 2 packs a thread at the
// 1b shape, 4 at 8b, 13-18% faster than a warp a row on an H200, L2-cold (bench/kernels/
// launch_sweep.cu; bench/results/2026-11-29-h200x1-launch-sweep): more threads per row shorten the
// wait of a row's loads, and two rows a block of 256 keep as many loads in flight.
constexpr int kForwardThreadsPerRow = 128;
constexpr int kBackwardPacks = 2;

// A backward launch: the public launcher uses kBackwardDefault; bench/kernels/launch_sweep.cu
// times the alternatives.
struct BackwardConfig {
  int packs = kBackwardPacks;
  int block_threads = kBackwardBlockThreads;
  int blocks_per_multiprocessor = kBackwardBlocksPerMultiprocessor;
  int stages = kBackwardStages;
  // WREG, and EXACT where the row allows (compiled for the default ring and 16-byte packs of up to
  // 2 a thread): 5-12% faster than neither at the 1b and 8b shapes (the same sweep).
  bool weight_in_registers = true;
};
constexpr BackwardConfig kBackwardDefault{};

struct Layout {
  int vec = 1;   // elements per pack
  int ppt = 1;   // packs per thread
  int tpr = 32;  // threads per row (a multiple of 32)
  int rows_per_block = 1;
};

// The fewest threads per row (at least a warp) that hold the row with at most `preferred` packs
// each; more packs per thread (up to 16) where the row would otherwise take more threads than a
// block has. Rows narrower than `block_threads` share a block.
Layout layout_for(std::int64_t hidden, int vec, int preferred, int block_threads) {
  if (hidden < 1) throw std::invalid_argument("rms_norm: hidden size must be positive");
  Layout l;
  l.vec = vec;
  const int max_threads = vec == 1 ? kMaxScalarRowThreads : kBlockThreads;
  const std::int64_t packs = (hidden + vec - 1) / vec;
  auto threads_for = [&](int ppt) { return ((packs + ppt - 1) / ppt + 31) / 32 * 32; };
  if (vec == 1) {
    l.ppt = threads_for(4) <= max_threads ? 4 : 16;  // the scalar fallback: two widths, for odd sizes only
  } else {
    while (l.ppt < preferred && 32 * l.ppt < packs) l.ppt *= 2;
    while (threads_for(l.ppt) > max_threads && l.ppt < 16) l.ppt *= 2;
  }
  const std::int64_t threads = threads_for(l.ppt);
  if (threads > max_threads)
    throw std::invalid_argument("rms_norm: hidden size " + std::to_string(hidden) + " is larger than the kernels support (" +
                                std::to_string(16 * max_threads * vec) + ")");
  l.tpr = static_cast<int>(threads);
  l.rows_per_block = std::max(1, block_threads / l.tpr);
  return l;
}

// Waits for the threads of this row group only: named barrier 1 + group (0 is __syncthreads). The
// ids are immediates so that ptxas counts 9 barriers rather than all 16 (a multiprocessor holds
// 64, so 16 per block would cap it at 4 blocks); groups of a block that share barriers are at
// most 8 (layout_for: a row wider than a warp leaves room for at most 8 in a block).
// ANY_ID: the id in a register, one instruction instead of a switch, at the cost of ptxas counting
// all 16 barriers for the kernel (4 blocks a multiprocessor at most): for the backward kernel, which
// runs one.
template <bool ANY_ID>
__device__ __forceinline__ void sync_row_group() {
  const int threads = static_cast<int>(blockDim.x);
  if constexpr (ANY_ID) {
    asm volatile("bar.sync %0, %1;" ::"r"(1 + static_cast<int>(threadIdx.y)), "r"(threads) : "memory");
    return;
  }
  switch (threadIdx.y) {
    case 0: asm volatile("bar.sync 1, %0;" ::"r"(threads) : "memory"); break;
    case 1: asm volatile("bar.sync 2, %0;" ::"r"(threads) : "memory"); break;
    case 2: asm volatile("bar.sync 3, %0;" ::"r"(threads) : "memory"); break;
    case 3: asm volatile("bar.sync 4, %0;" ::"r"(threads) : "memory"); break;
    case 4: asm volatile("bar.sync 5, %0;" ::"r"(threads) : "memory"); break;
    case 5: asm volatile("bar.sync 6, %0;" ::"r"(threads) : "memory"); break;
    case 6: asm volatile("bar.sync 7, %0;" ::"r"(threads) : "memory"); break;
    default: asm volatile("bar.sync 8, %0;" ::"r"(threads) : "memory"); break;
  }
}

// Sum of v over the TPR threads of a row group (threadIdx.y), broadcast to all of them. Every thread
// of the group calls it; groups of one warp never touch shared memory. `slot` alternates between
// two halves of the scratch (16-byte aligned) on successive calls of a group: a warp writing call
// n + 2's value has passed call n + 1's barrier, which every warp of its group reached after reading
// call n's. Groups of 4 or 8 warps (the 16-byte packs' rows) read their warps' sums as float4s.
template <bool ANY_BARRIER_ID = false>
__device__ __forceinline__ float row_sum(float v, float* scratch, int slot) {
  v = warp_sum(v);
  const int warps_per_row = blockDim.x / 32;
  if (warps_per_row == 1) return v;
  float* mine = scratch + slot * 32 + threadIdx.y * warps_per_row;
  if (threadIdx.x % 32 == 0) mine[threadIdx.x / 32] = v;
  sync_row_group<ANY_BARRIER_ID>();
  if (warps_per_row == 4 || warps_per_row == 8) {
    const float4 a = *reinterpret_cast<const float4*>(mine);
    float s = (a.x + a.y) + (a.z + a.w);
    if (warps_per_row == 8) {
      const float4 b = *reinterpret_cast<const float4*>(mine + 4);
      s += (b.x + b.y) + (b.z + b.w);
    }
    return s;
  }
  float s = 0;
  for (int w = 0; w < warps_per_row; ++w) s += mine[w];
  return s;
}

// N fp32 values to p, as float4 stores where N allows (p then 16-byte aligned).
template <int N>
__device__ __forceinline__ void store_f32(float* p, const float (&v)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) *reinterpret_cast<float4*>(p + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = v[i];
  }
}

template <typename T, int VEC, int PPT>
constexpr int max_threads_of() {
  return VEC == 1 ? kMaxScalarRowThreads : kBlockThreads;
}

template <typename T, int VEC, int PPT, bool RESIDUAL>
__global__ void __launch_bounds__(max_threads_of<T, VEC, PPT>()) rms_norm_forward_kernel(
    const T* __restrict__ x, const T* __restrict__ residual, const T* __restrict__ weight, T* __restrict__ h_out,
    T* __restrict__ y, float* __restrict__ rstd_out, std::int64_t rows, int hidden, float eps) {
  using P = RawPack<T, VEC>;
  __shared__ __align__(16) float scratch[64];
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (row >= rows) return;  // the whole row group: its barrier is its own
  const std::int64_t base = row * hidden;
  P hs[PPT];
  [[maybe_unused]] P rs[RESIDUAL ? PPT : 1];
#pragma unroll
  for (int j = 0; j < PPT; ++j) {
    const int col = (j * blockDim.x + threadIdx.x) * VEC;
    if (col < hidden) {
      hs[j] = load_raw<T, VEC>(x + base + col);
      if constexpr (RESIDUAL) rs[j] = load_raw<T, VEC>(residual + base + col);
    }
  }
  float sumsq = 0;
#pragma unroll
  for (int j = 0; j < PPT; ++j) {
    const int col = (j * blockDim.x + threadIdx.x) * VEC;
    if (col < hidden) {
      float h[VEC];
      widen(hs[j], h);
      if constexpr (RESIDUAL) {
        float r[VEC];
        widen(rs[j], r);
#pragma unroll
        for (int e = 0; e < VEC; ++e) h[e] += r[e];
        hs[j] = narrow<T, VEC>(h);  // h = to_dtype(x + residual), as the ATen add stores it
        widen(hs[j], h);
        store_raw(h_out + base + col, hs[j]);
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) sumsq += h[e] * h[e];
    }
  }
  const float rstd = rsqrtf(row_sum(sumsq, scratch, 0) / static_cast<float>(hidden) + eps);
#pragma unroll
  for (int j = 0; j < PPT; ++j) forget_widened(hs[j]);
  // Outputs are formed into packs (in the registers of the input's packs) before any is stored:
  // the weight's loads (2-8 KiB, from L1 after the first row) are then issued together rather than
  // each behind the previous pack's store, which the compiler may not reorder.
#pragma unroll
  for (int j = 0; j < PPT; ++j) {
    const int col = (j * blockDim.x + threadIdx.x) * VEC;
    if (col < hidden) {
      float h[VEC], w[VEC], out[VEC];
      widen(hs[j], h);
      widen(load_raw<T, VEC>(weight + col), w);
#pragma unroll
      for (int e = 0; e < VEC; ++e) out[e] = w[e] * round_to<T>(h[e] * rstd);
      hs[j] = narrow<T, VEC>(out);
    }
  }
#pragma unroll
  for (int j = 0; j < PPT; ++j) {
    const int col = (j * blockDim.x + threadIdx.x) * VEC;
    if (col < hidden) store_raw(y + base + col, hs[j]);
  }
  if (threadIdx.x == 0) rstd_out[row] = rstd;
}

// STAGES = 0: a row group loads each row into registers and waits for it before working on it.
// STAGES >= 2 (16-byte packs only): each thread keeps a ring of STAGES rows of its own packs in
// shared memory, filled by cp.async STAGES - 1 rows ahead of the row it works on, so that its next
// rows' loads are in flight while it computes and stores (without the registers that holding them
// would take). The ring is the block's dynamic shared memory; it is reused at the end for the
// weight-gradient sums (which alone is what STAGES = 0 asks of it).
// WREG: the weight of the thread's columns is read once, into fp32 registers, instead of from L1
// and widened again for every row. EXACT: the row groups' packs cover the row exactly (hidden =
// PPT x threads x VEC), so no pack needs a bounds check. Pointers and ring addresses are advanced
// from row to row rather than recomputed: Nsight Compute found the kernel as much issue-bound as
// memory-bound, and the per-row index arithmetic was a third of its instructions.
template <typename T, int VEC, int PPT, bool DH, int STAGES, bool WREG, bool EXACT>
__global__ void __launch_bounds__(VEC == 1 ? kMaxScalarRowThreads : kBackwardBlockThreads, 1) rms_norm_backward_kernel(
    const T* __restrict__ dy, const T* __restrict__ dh, const T* __restrict__ h, const T* __restrict__ weight,
    const float* __restrict__ rstd, T* __restrict__ dx, float* __restrict__ dw_partials, std::int64_t rows, int hidden) {
  using P = RawPack<T, VEC>;
  static_assert(STAGES == 0 || (STAGES >= 2 && sizeof(T) * VEC == 16), "a ring of 16-byte packs, two rows or more");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Lets the partial sums' reduction launch now (programmatic dependent launch): its blocks take
  // the places this grid's blocks leave and wait there for this grid's completion, so the second
  // kernel's launch and ramp overlap this one's tail. Its reads still wait for everything below.
  cudaTriggerProgrammaticLaunchCompletion();
#endif
  // The static shared memory stays at 256 bytes, so that the ring (the dynamic shared memory after
  // it) starts on a 256-byte boundary: a 16-byte flag beside the scratch (272 bytes) made the row
  // loop 10-15% slower on an H200, with the same instructions (bench/results/2026-11-29-h200x1-
  // rms-norm-cluster-dw).
  __shared__ __align__(16) float scratch[64];
  extern __shared__ uint4 dynamic_shared[];
  constexpr int kTensors = DH ? 3 : 2;
  const int pack_cols = blockDim.x * VEC;  // columns between a thread's consecutive packs
  const int col0 = threadIdx.x * VEC;
  auto in_row = [&](int j) { return EXACT || col0 + j * pack_cols < hidden; };
  float dw[PPT][VEC];
#pragma unroll
  for (int j = 0; j < PPT; ++j)
#pragma unroll
    for (int e = 0; e < VEC; ++e) dw[j][e] = 0.f;
  [[maybe_unused]] float wreg[WREG ? PPT : 1][VEC];
  if constexpr (WREG) {
#pragma unroll
    for (int j = 0; j < PPT; ++j)
      if (in_row(j)) widen(load_raw<T, VEC>(weight + col0 + j * pack_cols), wreg[j]);
  }
  const float inv_hidden = 1.f / static_cast<float>(hidden);
  int slot = 0;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.y;
  const std::int64_t step = stride * hidden;  // elements from one of the group's rows to its next
  std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const std::int64_t first = row * hidden + col0;
  T* dx_at = dx + first;
  // The row being loaded: the ring's, STAGES - 1 ahead of `row`; without a ring, `row`'s.
  std::int64_t load_row = row;
  const T* h_at = h + first;
  const T* dy_at = dy + first;
  [[maybe_unused]] const T* dh_at = DH ? dh + first : nullptr;
  // This thread's packs of the ring: [stage][tensor][pack j], blockDim.x x 16 bytes apart (conflict-free).
  const unsigned pack_bytes = blockDim.x * 16u;
  const unsigned stage_bytes = kTensors * PPT * pack_bytes;
  const unsigned ring = shared_address(dynamic_shared) + threadIdx.y * STAGES * stage_bytes + threadIdx.x * 16u;
  auto next_load = [&] {
    load_row += stride;
    h_at += step, dy_at += step;
    if constexpr (DH) dh_at += step;
  };
  auto issue_row = [&](int stage) {
    if (load_row < rows) {
      const unsigned at = ring + stage * stage_bytes;
#pragma unroll
      for (int j = 0; j < PPT; ++j) {
        if (in_row(j)) {
          copy_async_16(at + j * pack_bytes, h_at + j * pack_cols);
          copy_async_16(at + (PPT + j) * pack_bytes, dy_at + j * pack_cols);
          if constexpr (DH) copy_async_16(at + (2 * PPT + j) * pack_bytes, dh_at + j * pack_cols);
        }
      }
    }
    commit_copies();  // a group every time, empty past the last row, so that the waits count rows
    next_load();
  };
  P hs[PPT], ds[PPT];
  [[maybe_unused]] P extra[DH ? PPT : 1];
  [[maybe_unused]] float next_rstd = 0.f;
  [[maybe_unused]] int stage = 0;
  if constexpr (STAGES > 0) {
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) issue_row(s);
    if (row < rows) next_rstd = rstd[row];
  }
  for (; row < rows; row += stride, dx_at += step) {
    float r;
    if constexpr (STAGES == 0) {
      r = rstd[row];
#pragma unroll
      for (int j = 0; j < PPT; ++j) {
        if (in_row(j)) {
          hs[j] = load_raw<T, VEC>(h_at + j * pack_cols);
          ds[j] = load_raw<T, VEC>(dy_at + j * pack_cols);
          if constexpr (DH) extra[j] = load_raw<T, VEC>(dh_at + j * pack_cols);
        }
      }
      next_load();
    } else {
      // The stage refilled is the one the previous row was read from (into registers, below).
      issue_row(stage == 0 ? STAGES - 1 : stage - 1);
      r = next_rstd;
      if (row + stride < rows) next_rstd = rstd[row + stride];
      wait_copies<STAGES - 1>();
      const unsigned at = ring + stage * stage_bytes;
#pragma unroll
      for (int j = 0; j < PPT; ++j) {
        if (in_row(j)) {
          hs[j] = raw_pack<T, VEC>(load_shared_16(at + j * pack_bytes));
          ds[j] = raw_pack<T, VEC>(load_shared_16(at + (PPT + j) * pack_bytes));
          if constexpr (DH) extra[j] = raw_pack<T, VEC>(load_shared_16(at + (2 * PPT + j) * pack_bytes));
        }
      }
      stage = stage + 1 == STAGES ? 0 : stage + 1;
    }
    // With n = h * r and p = dy * w, a row needs dot = r * sum(p h) and, per element, the sums
    // dw += dy * to_dtype(n) and dx = r p - h (r^2 mean(dot)): p is kept from the first pass to the
    // second (in fp32, the registers dy's packs free), so the second reads neither dy nor the
    // weight, and r multiplies the row's sum once rather than every element.
    float p[PPT][VEC];
    float dot = 0;
#pragma unroll
    for (int j = 0; j < PPT; ++j) {
      if (in_row(j)) {
        float hv[VEC], d[VEC], n[VEC];
        widen(hs[j], hv);
        widen(ds[j], d);
        float w_l1[VEC];
        const float* w = w_l1;
        if constexpr (WREG) w = wreg[j];
        else widen(load_raw<T, VEC>(weight + col0 + j * pack_cols), w_l1);  // from L1 after the first row
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          p[j][e] = d[e] * w[e];
          dot = fmaf(p[j][e], hv[e], dot);
          n[e] = hv[e] * r;
        }
        widen(narrow<T, VEC>(n), n);  // n rounded to T (bf16: one conversion per pair)
#pragma unroll
        for (int e = 0; e < VEC; ++e) dw[j][e] = fmaf(d[e], n[e], dw[j][e]);
      }
    }
    const float c = r * r * r * row_sum<true>(dot, scratch, slot) * inv_hidden;
    slot ^= 1;
#pragma unroll
    for (int j = 0; j < PPT; ++j) forget_widened(hs[j]);
#pragma unroll
    for (int j = 0; j < PPT; ++j) {
      if (in_row(j)) {
        float hv[VEC], out[VEC];
        widen(hs[j], hv);
#pragma unroll
        for (int e = 0; e < VEC; ++e) out[e] = fmaf(p[j][e], r, -hv[e] * c);
        if constexpr (DH) {
          float g[VEC];
          widen(extra[j], g);
#pragma unroll
          for (int e = 0; e < VEC; ++e) out[e] += g[e];
        }
        hs[j] = narrow<T, VEC>(out);
      }
    }
#pragma unroll
    for (int j = 0; j < PPT; ++j)
      if (in_row(j)) store_raw(dx_at + j * pack_cols, hs[j]);
  }
  // The block's rows summed into one partial row, pack by pack through shared memory: every
  // thread of the block then sums and writes a share of the pack's columns (coalesced).
  if constexpr (STAGES > 0) wait_copies<0>();  // (only empty groups are left) before the ring is reused
  float* const dw_rows = reinterpret_cast<float*>(dynamic_shared);
  float* const partial = dw_partials + static_cast<std::int64_t>(blockIdx.x) * hidden;
  const int block_threads = blockDim.x * blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
  for (int j = 0; j < PPT; ++j) {
    if (blockDim.y == 1) {
      if (in_row(j)) store_f32(partial + col0 + j * pack_cols, dw[j]);
      continue;
    }
    __syncthreads();  // the previous pack's sums read (for the first, every group's ring)
    store_f32(dw_rows + threadIdx.y * pack_cols + col0, dw[j]);
    __syncthreads();
    for (int o = tid; o < pack_cols && j * pack_cols + o < hidden; o += block_threads) {
      float sum = 0;
      for (int y = 0; y < static_cast<int>(blockDim.y); ++y) sum += dw_rows[y * pack_cols + o];
      partial[j * pack_cols + o] = sum;
    }
  }
}

// dweight[c] = sum over p of partials[p][c]: 32 columns x 32 partial rows per block, the loads of
// a thread's partial rows unrolled so that several are in flight (they come from L2). (Blocks of
// 4 x 32 threads, which fit beside a backward block and so wait resident for its grid's end, were
// no faster: bench/results/2026-11-29-h200x1-rms-norm-backward-2.)
template <typename T>
__global__ void reduce_partials_kernel(const float* __restrict__ partials, T* __restrict__ out, int parts, int hidden) {
  constexpr int Y = 32;
  __shared__ float sums[Y][33];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaGridDependencySynchronize();  // the backward kernel has completed and its partials are visible
#endif
  const int col = blockIdx.x * 32 + threadIdx.x;
  float s = 0;
  if (col < hidden) {
#pragma unroll 8
    for (int p = threadIdx.y; p < parts; p += Y) s += partials[static_cast<std::int64_t>(p) * hidden + col];
  }
  sums[threadIdx.y][threadIdx.x] = s;
  // A tree over the Y partial sums of each column (log2 Y barriers rather than one thread's Y
  // dependent loads).
#pragma unroll
  for (int half = Y / 2; half > 0; half /= 2) {
    __syncthreads();
    if (threadIdx.y < half) sums[threadIdx.y][threadIdx.x] += sums[threadIdx.y + half][threadIdx.x];
  }
  if (threadIdx.y == 0 && col < hidden) out[col] = from_float<T>(sums[0][threadIdx.x]);
}

// Calls f(integral_constant VEC, integral_constant PPT) for the layout's values: 16-byte packs at
// 1-16 per thread, single elements (odd sizes) at 4 or 16.
template <typename T, typename F>
void dispatch_layout(const Layout& l, F&& f) {
  constexpr int V = kPackElems<T>;
  auto call = [&](auto vec, auto ppt) { f(vec, ppt); };
  using std::integral_constant;
  if (l.vec == 1) {
    if (l.ppt == 4) return call(integral_constant<int, 1>{}, integral_constant<int, 4>{});
    if (l.ppt == 16) return call(integral_constant<int, 1>{}, integral_constant<int, 16>{});
  } else {
    switch (l.ppt) {
      case 1: return call(integral_constant<int, V>{}, integral_constant<int, 1>{});
      case 2: return call(integral_constant<int, V>{}, integral_constant<int, 2>{});
      case 4: return call(integral_constant<int, V>{}, integral_constant<int, 4>{});
      case 8: return call(integral_constant<int, V>{}, integral_constant<int, 8>{});
      case 16: return call(integral_constant<int, V>{}, integral_constant<int, 16>{});
    }
  }
  throw std::logic_error("rms_norm: no kernel for " + std::to_string(l.ppt) + " packs of " + std::to_string(l.vec));
}

template <typename T>
int pack_width(std::int64_t hidden, std::initializer_list<const void*> pointers) {
  bool ok = hidden % kPackElems<T> == 0;
  for (const void* p : pointers) ok = ok && aligned16(p);
  return ok ? kPackElems<T> : 1;
}

// The packs per thread that spread a row of `hidden` over kForwardThreadsPerRow threads (at most 16).
int forward_packs(std::int64_t hidden, int vec) {
  const std::int64_t packs = (hidden + vec - 1) / vec;
  int ppt = 1;
  while (ppt < 16 && static_cast<std::int64_t>(ppt) * kForwardThreadsPerRow < packs) ppt *= 2;
  return ppt;
}

std::int64_t backward_blocks(std::int64_t rows, int blocks_per_multiprocessor) {
  return std::max<std::int64_t>(1, std::min<std::int64_t>(rows, static_cast<std::int64_t>(blocks_per_multiprocessor) *
                                                                     multiprocessor_count()));
}

// The launchers at a given configuration: packs per thread preferred, threads per block and, for
// backward, blocks per multiprocessor and the ring's depth (the public launchers below use the defaults above;
// bench/kernels/launch_sweep.cu times the alternatives).
void launch_forward(DType dtype, const void* x, const void* residual, const void* weight, void* h_out, void* y,
                    float* rstd, std::int64_t rows, std::int64_t hidden, float eps, int packs, int block_threads,
                    cudaStream_t stream) {
  if (rows == 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const Layout l = layout_for(hidden, pack_width<T>(hidden, {x, residual, weight, h_out, y}), packs, block_threads);
    dispatch_layout<T>(l, [&](auto vec, auto ppt) {
      const dim3 block(l.tpr, l.rows_per_block);
      const auto grid = static_cast<unsigned>((rows + l.rows_per_block - 1) / l.rows_per_block);
      auto launch = [&](auto kernel) {
        kernel<<<grid, block, 0, stream>>>(static_cast<const T*>(x), static_cast<const T*>(residual),
                                           static_cast<const T*>(weight), static_cast<T*>(h_out), static_cast<T*>(y), rstd,
                                           rows, static_cast<int>(hidden), eps);
      };
      if (residual) launch(rms_norm_forward_kernel<T, vec.value, ppt.value, true>);
      else launch(rms_norm_forward_kernel<T, vec.value, ppt.value, false>);
      DDPBENCH_LAUNCH_CHECK("rms_norm_forward_kernel");
    });
  });
}

// Whether a backward launch holds the weight in registers (WREG): where asked, and compiled, which
// is for the default ring depth and 16-byte packs of up to 2 a thread (the registers it takes would
// spill more). The launcher's dispatch and launch_sweep's names both go by it.
constexpr bool backward_weight_in_registers(bool requested, int ppt, int pack_bytes, int ring) {
  return requested && ppt <= 2 && pack_bytes == 16 && ring == kBackwardStages;
}

// The ring depth a backward launch gets for a requested one: 0 (loads into registers) for rows of
// single elements, else the deepest of 2..requested whose ring fits the block's shared memory (0
// where not even 2 does).
int backward_stages(const Layout& l, int element_size, bool with_dh, int requested, int max_shared_bytes) {
  if (requested < 2 || l.vec * element_size != 16) return 0;
  const std::int64_t stage_bytes = std::int64_t{16} * l.ppt * l.tpr * l.rows_per_block * (with_dh ? 3 : 2);
  const int reserved = 64 * static_cast<int>(sizeof(float));  // the row sums' scratch (static)
  for (int stages = std::min(requested, kMaxBackwardStages); stages >= 2; --stages)
    if (stages * stage_bytes + reserved <= max_shared_bytes) return stages;
  return 0;
}

// dw_partials holds backward_blocks(rows, config.blocks_per_multiprocessor) rows of `hidden` floats.
// reduce_partials = false leaves them unreduced (launch_sweep times the first kernel alone).
void launch_backward(DType dtype, const void* dy, const void* dh, const void* h, const void* weight, const float* rstd,
                     void* dx, float* dw_partials, void* dweight, std::int64_t rows, std::int64_t hidden,
                     const BackwardConfig& config, cudaStream_t stream, bool reduce_partials = true) {
  const bool weight_in_registers = config.weight_in_registers;  // (nvcc captures no reference parameter in the nested lambdas)
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const std::int64_t parts = rows == 0 ? 0 : backward_blocks(rows, config.blocks_per_multiprocessor);
    if (parts == 0) {
      DDPBENCH_CUDA_CHECK(cudaMemsetAsync(dweight, 0, hidden * sizeof(T), stream));
      return;
    }
    const Layout l =
        layout_for(hidden, pack_width<T>(hidden, {dy, dh, h, weight, dx}), config.packs, config.block_threads);
    const int ring = backward_stages(l, sizeof(T), dh != nullptr, config.stages, max_shared_bytes_per_block());
    // The ring, or (with none) the weight-gradient sums of the block's end alone.
    const std::size_t shared = std::max<std::size_t>(
        std::size_t{16} * ring * l.ppt * l.tpr * l.rows_per_block * (dh ? 3 : 2),
        sizeof(float) * l.vec * l.tpr * l.rows_per_block);
    const bool exact = hidden == static_cast<std::int64_t>(l.ppt) * l.tpr * l.vec;
    dispatch_layout<T>(l, [&](auto vec, auto ppt) {
      const dim3 block(l.tpr, l.rows_per_block);
      auto launch = [&](auto kernel) {
        // Always: 48 KiB without it is the limit of dynamic and static shared memory together.
        DDPBENCH_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
        kernel<<<static_cast<unsigned>(parts), block, shared, stream>>>(
            static_cast<const T*>(dy), static_cast<const T*>(dh), static_cast<const T*>(h), static_cast<const T*>(weight),
            rstd, static_cast<T*>(dx), dw_partials, rows, static_cast<int>(hidden));
      };
      // The weight in registers (with or without the exact cover) is compiled only where it may be used.
      constexpr bool kWregCompiled =
          backward_weight_in_registers(true, ppt.value, static_cast<int>(sizeof(T)) * vec.value, kBackwardStages);
      auto with_stages = [&](auto depth) {
        if constexpr (depth.value == 0 || sizeof(T) * vec.value == 16) {
          auto with = [&](auto wreg, auto exact) {
            if (dh) launch(rms_norm_backward_kernel<T, vec.value, ppt.value, true, depth.value, wreg.value, exact.value>);
            else launch(rms_norm_backward_kernel<T, vec.value, ppt.value, false, depth.value, wreg.value, exact.value>);
          };
          if constexpr (kWregCompiled && depth.value == kBackwardStages) {
            if (weight_in_registers && exact) return with(std::true_type{}, std::true_type{});
            if (weight_in_registers) return with(std::true_type{}, std::false_type{});
          }
          with(std::false_type{}, std::false_type{});
        }
      };
      using std::integral_constant;
      switch (ring) {
        case 0: with_stages(integral_constant<int, 0>{}); break;
        case 2: with_stages(integral_constant<int, 2>{}); break;
        case 3: with_stages(integral_constant<int, 3>{}); break;
        default: with_stages(integral_constant<int, 4>{}); break;
      }
      DDPBENCH_LAUNCH_CHECK("rms_norm_backward_kernel");
    });
    if (!reduce_partials) return;
    // Launched as a programmatic dependent of the backward kernel (sm_90; elsewhere the attribute
    // is ignored and this is an ordinary launch in stream order).
    cudaLaunchConfig_t launch_config{};
    launch_config.gridDim = dim3(static_cast<unsigned>((hidden + 31) / 32));
    launch_config.blockDim = dim3(32, 32);
    launch_config.stream = stream;
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    launch_config.attrs = &attribute;
    launch_config.numAttrs = 1;
    DDPBENCH_CUDA_CHECK(cudaLaunchKernelEx(&launch_config, reduce_partials_kernel<T>, static_cast<const float*>(dw_partials),
                                           static_cast<T*>(dweight), static_cast<int>(parts), static_cast<int>(hidden)));
  });
}

}  // namespace

void rms_norm_forward(DType dtype, const void* x, const void* residual, const void* weight, void* h_out, void* y,
                      float* rstd, std::int64_t rows, std::int64_t hidden, float eps, cudaStream_t stream) {
  const int vec = dtype == DType::bf16 ? kPackElems<__nv_bfloat16> : kPackElems<float>;
  launch_forward(dtype, x, residual, weight, h_out, y, rstd, rows, hidden, eps,
                 residual ? kForwardResidualPacks : forward_packs(hidden, vec), kBlockThreads, stream);
}

std::int64_t rms_norm_backward_partials(std::int64_t rows, std::int64_t /*hidden*/) {
  return backward_blocks(rows, kBackwardDefault.blocks_per_multiprocessor);
}

void rms_norm_backward(DType dtype, const void* dy, const void* dh, const void* h, const void* weight,
                       const float* rstd, void* dx, float* dw_partials, void* dweight, std::int64_t rows,
                       std::int64_t hidden, cudaStream_t stream) {
  launch_backward(dtype, dy, dh, h, weight, rstd, dx, dw_partials, dweight, rows, hidden, kBackwardDefault, stream);
}

}  // namespace ddpbench::kernels
