// Launch-configuration sweep of the memory-bound kernels (RMSNorm with and without the residual,
// RoPE on q and k, SwiGLU; forward and backward) at the 1b and 8b shapes: every configuration the
// launchers can take (packs per thread, threads per block, heads per thread, blocks per
// multiprocessor) is checked against the launchers' default configuration on the same inputs
// (outputs poisoned with NaN first) and then timed L2-cold, as bench_kernels times (a buffer of
// twice the L2 written before each call, outside the CUDA events; median of the calls). The
// device-to-device copy of the same bytes, timed the same way, is the yardstick. The kernels'
// sources are included, not linked, so that their launch internals can be called: this program
// needs nvcc and the CUDA runtime only, no LibTorch (see bench/kernels's README for the command).
// It chooses nothing: the defaults in the .cu files are changed by hand, from its output.
#include "kernels/common/device.cu"
#include "kernels/rms_norm/rms_norm.cu"
#include "kernels/rope/rope.cu"
#include "kernels/swiglu/swiglu.cu"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace ddpbench::kernels::sweep {
namespace {

using bf16 = __nv_bfloat16;

struct Shape {
  const char* preset;
  std::int64_t tokens, seq_len, hidden, q_heads, kv_heads, head_dim, ffn;
};
// DESIGN.md's presets (harness/train/config.cpp) at batch 4 x 2048.
constexpr Shape kShapes[] = {{"1b", 8192, 2048, 2048, 32, 8, 64, 8192}, {"8b", 8192, 2048, 4096, 32, 8, 128, 14336}};

// Uniform values in [-scale, scale) from a hash of the index and seed: fresh inputs per tensor.
__global__ void fill_kernel(bf16* p, std::int64_t n, unsigned seed, float scale) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed * 2246822519u;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    p[i] = __float2bfloat16(scale * (static_cast<float>(h) / 4294967296.f * 2.f - 1.f));
  }
}

// Largest |a - b| and |b| over n bf16 values, and the count of NaN in a (atomics on the bits of
// non-negative floats, which order as their values).
__global__ void compare_kernel(const bf16* a, const bf16* b, std::int64_t n, unsigned* out) {
  unsigned diff = 0, mag = 0, nans = 0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float x = __bfloat162float(a[i]), y = __bfloat162float(b[i]);
    if (isnan(x)) ++nans;
    else diff = max(diff, __float_as_uint(fabsf(x - y)));
    mag = max(mag, __float_as_uint(fabsf(y)));
  }
  atomicMax(out, diff), atomicMax(out + 1, mag), atomicAdd(out + 2, nans);
}

struct Tensor {
  bf16* p = nullptr;
  std::int64_t n = 0;
};

class Device {
 public:
  Device() {
    int l2 = 0;
    DDPBENCH_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    flush_bytes_ = std::max<std::size_t>(2 * static_cast<std::size_t>(l2), 256u << 20);
    DDPBENCH_CUDA_CHECK(cudaMalloc(&flush_, flush_bytes_));
    DDPBENCH_CUDA_CHECK(cudaMalloc(&stats_, 3 * sizeof(unsigned)));
    DDPBENCH_CUDA_CHECK(cudaEventCreate(&start_));
    DDPBENCH_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Device() {
    for (void* p : owned_) cudaFree(p);
    cudaFree(flush_), cudaFree(stats_), cudaEventDestroy(start_), cudaEventDestroy(stop_);
  }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  Tensor random(std::int64_t n, float scale = 1.f) {
    Tensor t = empty(n);
    fill_kernel<<<1024, 256>>>(t.p, n, ++seed_, scale);
    DDPBENCH_LAUNCH_CHECK("fill_kernel");
    return t;
  }
  Tensor empty(std::int64_t n) { return {static_cast<bf16*>(alloc(n * sizeof(bf16))), n}; }
  void* alloc(std::size_t bytes) {
    void* p = nullptr;
    DDPBENCH_CUDA_CHECK(cudaMalloc(&p, bytes));
    owned_.push_back(p);
    return p;
  }
  void poison(const Tensor& t) { DDPBENCH_CUDA_CHECK(cudaMemset(t.p, 0xff, t.n * sizeof(bf16))); }  // bf16 NaN

  // Relative error of `got` against `want` (largest |difference| over largest |want|), or a
  // negative value where `got` holds a NaN (an element the kernel did not write).
  double relative_error(const Tensor& got, const Tensor& want) {
    DDPBENCH_CUDA_CHECK(cudaMemset(stats_, 0, 3 * sizeof(unsigned)));
    compare_kernel<<<1024, 256>>>(got.p, want.p, got.n, stats_);
    unsigned host[3];
    DDPBENCH_CUDA_CHECK(cudaMemcpy(host, stats_, sizeof host, cudaMemcpyDeviceToHost));
    if (host[2] > 0) return -1;
    float diff, mag;
    std::memcpy(&diff, &host[0], 4), std::memcpy(&mag, &host[1], 4);
    return mag > 0 ? diff / mag : diff;
  }

  // Median over `calls` L2-cold calls of f, in milliseconds.
  double time_ms(const std::function<void()>& f, int calls = 25) {
    f();  // warm-up (and first-launch costs)
    std::vector<float> ms;
    for (int i = 0; i < calls; ++i) {
      DDPBENCH_CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_));
      DDPBENCH_CUDA_CHECK(cudaEventRecord(start_));
      f();
      DDPBENCH_CUDA_CHECK(cudaEventRecord(stop_));
      DDPBENCH_CUDA_CHECK(cudaEventSynchronize(stop_));
      float t = 0;
      DDPBENCH_CUDA_CHECK(cudaEventElapsedTime(&t, start_, stop_));
      ms.push_back(t);
    }
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    return ms[ms.size() / 2];
  }

  void count_failed_check() { ++failed_checks_; }
  int failed_checks() const { return failed_checks_; }

  // A device-to-device copy moving `bytes` (read + written), timed as the kernels are.
  double copy_ms(std::size_t bytes) {
    const std::size_t half = bytes / 2;
    char* src = static_cast<char*>(alloc(half));
    char* dst = static_cast<char*>(alloc(half));
    DDPBENCH_CUDA_CHECK(cudaMemset(src, 1, half));
    return time_ms([&] { DDPBENCH_CUDA_CHECK(cudaMemcpyAsync(dst, src, half, cudaMemcpyDeviceToDevice)); });
  }

 private:
  void* flush_ = nullptr;
  std::size_t flush_bytes_ = 0;
  unsigned* stats_ = nullptr;
  unsigned seed_ = 0;
  int failed_checks_ = 0;
  cudaEvent_t start_{}, stop_{};
  std::vector<void*> owned_;
};

// A configuration's outputs against the default's: the relative error of bf16 results whose
// reductions may run in another order (the tests' bf16 tolerance).
constexpr double kCheckTolerance = 1e-2;

// One row per configuration: its time, bandwidth, share of the copy and check against the default.
struct Case {
  std::string op;  // op/preset/pass
  double bytes;
  double copy_ms;
};

// `check`: ok, MISMATCH, NaN-LEFT, or what a row timed without a check is.
void print_row(const Case& c, const std::string& config, bool is_default, double ms, const char* check) {
  const double gbps = c.bytes / (ms * 1e-3) / 1e9;
  std::printf("%-22s %-66s %s %9.4f %8.0f %7.1f %10s\n", c.op.c_str(), config.c_str(), is_default ? "*" : " ", ms, gbps,
              100.0 * c.copy_ms / ms, check);
  std::fflush(stdout);
}

const char* check_text(double error) { return error < 0 ? "NaN-LEFT" : (error > kCheckTolerance ? "MISMATCH" : "ok"); }

// Runs the default first (its outputs are the reference), then each configuration: poison, run,
// compare every output, time.
void sweep(Device& dev, const Case& c, const std::vector<Tensor>& outputs,
           const std::vector<std::pair<std::string, std::function<void()>>>& configs, const std::string& default_config) {
  std::vector<Tensor> reference;
  for (const auto& o : outputs) reference.push_back(dev.empty(o.n));
  const auto run_default = std::find_if(configs.begin(), configs.end(), [&](const auto& x) { return x.first == default_config; });
  if (run_default == configs.end()) throw std::logic_error(c.op + ": the default configuration " + default_config + " is not swept");
  for (const auto& o : outputs) dev.poison(o);
  run_default->second();
  for (std::size_t i = 0; i < outputs.size(); ++i)
    DDPBENCH_CUDA_CHECK(cudaMemcpy(reference[i].p, outputs[i].p, outputs[i].n * sizeof(bf16), cudaMemcpyDeviceToDevice));
  for (const auto& [name, run] : configs) {
    for (const auto& o : outputs) dev.poison(o);
    run();
    double error = 0;
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      const double e = dev.relative_error(outputs[i], reference[i]);
      error = e < 0 || error < 0 ? -1 : std::max(error, e);
    }
    if (error < 0 || error > kCheckTolerance) dev.count_failed_check();
    print_row(c, name, name == default_config, dev.time_ms(run), check_text(error));
  }
}

std::string config_name(std::initializer_list<std::pair<const char*, int>> fields) {
  std::string s;
  for (const auto& [k, v] : fields) s += (s.empty() ? "" : " ") + std::string(k) + "=" + std::to_string(v);
  return s;
}

// Named by the layout a request resolves to (layout_for may widen packs or threads), so that
// requests that resolve alike are swept once.
std::string rms_config(std::int64_t hidden, int packs, int threads) {
  const Layout l = layout_for(hidden, kPackElems<bf16>, packs, threads);
  return config_name({{"packs", l.ppt}, {"threads/row", l.tpr}, {"rows/block", l.rows_per_block}});
}

// Backward requests also by the ring depth they resolve to (backward_stages) and whether the weight
// is held in registers (only compiled for some: launch_backward).
std::string rms_backward_config(std::int64_t hidden, const BackwardConfig& b, bool with_dh) {
  const Layout l = layout_for(hidden, kPackElems<bf16>, b.packs, b.block_threads);
  const int stages = backward_stages(l, sizeof(bf16), with_dh, b.stages, max_shared_bytes_per_block());
  const bool wreg =
      backward_weight_in_registers(b.weight_in_registers, l.ppt, l.vec * static_cast<int>(sizeof(bf16)), stages);
  return rms_config(hidden, b.packs, b.block_threads) + " " +
         config_name({{"blocks/SM", b.blocks_per_multiprocessor}, {"stages", stages}, {"weight-in-regs", wreg}});
}

void add_unique(std::vector<std::pair<std::string, std::function<void()>>>& configs, const std::string& name,
                std::function<void()> run) {
  if (std::none_of(configs.begin(), configs.end(), [&](const auto& c) { return c.first == name; }))
    configs.emplace_back(name, std::move(run));
}

void sweep_rms_norm(Device& dev, const Shape& s) {
  const std::int64_t rows = s.tokens, hidden = s.hidden, n = rows * hidden;
  const Tensor x = dev.random(n), residual = dev.random(n), w = dev.random(hidden, 2.f), dy = dev.random(n),
               dh = dev.random(n);
  const Tensor y = dev.empty(n), h_out = dev.empty(n), dx = dev.empty(n), dw = dev.empty(hidden);
  float* rstd = static_cast<float*>(dev.alloc(rows * sizeof(float)));
  float* partials = static_cast<float*>(dev.alloc(4 * static_cast<std::size_t>(multiprocessor_count()) * hidden * 4));
  const double row_bytes = 2.0 * n;
  for (const bool with_residual : {false, true}) {
    const std::string op = std::string(with_residual ? "add_rms_norm/" : "rms_norm/") + s.preset;
    // Forward: x (and the residual) read, y (and h) written, the weight and rstd.
    const double fwd_bytes = row_bytes * (with_residual ? 4 : 2) + 2.0 * hidden + 4.0 * rows;
    std::vector<std::pair<std::string, std::function<void()>>> configs;
    for (int packs : {1, 2, 4, 8, 16})
      for (int threads : {64, 128, 256})
        add_unique(configs, rms_config(hidden, packs, threads), [=] {
          launch_forward(DType::bf16, x.p, with_residual ? residual.p : nullptr, w.p, h_out.p, y.p, rstd, rows, hidden,
                         1e-5f, packs, threads, nullptr);
        });
    std::vector<Tensor> fwd_outputs{y};
    if (with_residual) fwd_outputs.push_back(h_out);
    const int default_packs = with_residual ? kForwardResidualPacks : forward_packs(hidden, kPackElems<bf16>);
    sweep(dev, {op + "/fwd", fwd_bytes, dev.copy_ms(static_cast<std::size_t>(fwd_bytes))}, fwd_outputs, configs,
          rms_config(hidden, default_packs, kBlockThreads));
    // Backward: dy, h (and dh) read, dx written, rstd and the weight; its gradient's partial rows.
    rms_norm_forward(DType::bf16, x.p, nullptr, w.p, nullptr, y.p, rstd, rows, hidden, 1e-5f, nullptr);
    const double bwd_bytes = row_bytes * (with_residual ? 4 : 3) + 4.0 * hidden + 4.0 * rows;
    configs.clear();
    const void* dh_or_null = with_residual ? dh.p : nullptr;
    for (int packs : {1, 2, 4, 8})
      for (int threads : {256, 512})
        for (int per_sm : {1, 2, 4})
          for (int stages : {0, 2, 3, 4})
            for (bool wreg : {false, true}) {
              const BackwardConfig b{packs, threads, per_sm, stages, wreg};
              add_unique(configs, rms_backward_config(hidden, b, with_residual), [=] {
                launch_backward(DType::bf16, dy.p, dh_or_null, x.p, w.p, rstd, dx.p, partials, dw.p, rows, hidden, b, nullptr);
              });
            }
    const Case bwd{op + "/bwd", bwd_bytes, dev.copy_ms(static_cast<std::size_t>(bwd_bytes))};
    sweep(dev, bwd, {dx, dw}, configs, rms_backward_config(hidden, kBackwardDefault, with_residual));
    // What the second kernel (the partial sums' reduction) costs: the default's first kernel alone.
    print_row(bwd, "the default without the partials' reduction", false, dev.time_ms([=] {
      launch_backward(DType::bf16, dy.p, dh_or_null, x.p, w.p, rstd, dx.p, partials, dw.p, rows, hidden, kBackwardDefault,
                      nullptr, /*reduce_partials=*/false);
    }), "timing");
  }
}

template <int HEADS, int THREADS>
void add_rope_config(std::vector<std::pair<std::string, std::function<void()>>>& configs, const RopeShape& shape,
                     const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin, const Tensor& q_out,
                     const Tensor& k_out, bool backward) {
  configs.emplace_back(config_name({{"heads/thread", HEADS}, {"block", THREADS}}), [=] {
    launch_rope_qk<HEADS, THREADS>(DType::bf16, shape, q.p, k.p, cos.p, sin.p, q_out.p, k_out.p, backward, nullptr);
  });
}

template <int HEADS>
void add_rope_configs(std::vector<std::pair<std::string, std::function<void()>>>& configs, const RopeShape& shape,
                      const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin, const Tensor& q_out,
                      const Tensor& k_out, bool backward) {
  add_rope_config<HEADS, 128>(configs, shape, q, k, cos, sin, q_out, k_out, backward);
  add_rope_config<HEADS, 256>(configs, shape, q, k, cos, sin, q_out, k_out, backward);
  add_rope_config<HEADS, 512>(configs, shape, q, k, cos, sin, q_out, k_out, backward);
}

void sweep_rope(Device& dev, const Shape& s) {
  const RopeShape shape{s.tokens, s.seq_len, s.q_heads, s.kv_heads, s.head_dim};
  const Tensor q = dev.random(s.tokens * s.q_heads * s.head_dim), k = dev.random(s.tokens * s.kv_heads * s.head_dim),
               cos = dev.random(s.seq_len * s.head_dim), sin = dev.random(s.seq_len * s.head_dim);
  const Tensor q_out = dev.empty(q.n), k_out = dev.empty(k.n);
  const double bytes = 2.0 * 2.0 * static_cast<double>(q.n + k.n) + 2.0 * 2.0 * static_cast<double>(cos.n);
  for (const bool backward : {false, true}) {
    std::vector<std::pair<std::string, std::function<void()>>> configs;
    add_rope_configs<1>(configs, shape, q, k, cos, sin, q_out, k_out, backward);
    add_rope_configs<2>(configs, shape, q, k, cos, sin, q_out, k_out, backward);
    add_rope_configs<4>(configs, shape, q, k, cos, sin, q_out, k_out, backward);
    add_rope_configs<8>(configs, shape, q, k, cos, sin, q_out, k_out, backward);
    sweep(dev, {std::string("rope_qk/") + s.preset + (backward ? "/bwd" : "/fwd"), bytes, dev.copy_ms(static_cast<std::size_t>(bytes))},
          {q_out, k_out}, configs, config_name({{"heads/thread", kRopeHeadsPerThread}, {"block", kRopeThreads}}));
  }
}

template <int PACKS>
void add_swiglu_configs(std::vector<std::pair<std::string, std::function<void()>>>& fwd,
                        std::vector<std::pair<std::string, std::function<void()>>>& bwd, const Tensor& gate,
                        const Tensor& up, const Tensor& d_out, const Tensor& out, const Tensor& d_gate, const Tensor& d_up) {
  for (int threads : {128, 256, 512}) {
    const auto name = config_name({{"packs", PACKS}, {"block", threads}});
    fwd.emplace_back(name, [=] { launch_swiglu_forward<PACKS>(DType::bf16, gate.p, up.p, out.p, gate.n, threads, nullptr); });
    bwd.emplace_back(name, [=] {
      launch_swiglu_backward<PACKS>(DType::bf16, d_out.p, gate.p, up.p, d_gate.p, d_up.p, gate.n, threads, nullptr);
    });
  }
}

void sweep_swiglu(Device& dev, const Shape& s) {
  const std::int64_t n = s.tokens * s.ffn;
  const Tensor gate = dev.random(n, 4.f), up = dev.random(n), d_out = dev.random(n);
  const Tensor out = dev.empty(n), d_gate = dev.empty(n), d_up = dev.empty(n);
  std::vector<std::pair<std::string, std::function<void()>>> fwd, bwd;
  add_swiglu_configs<1>(fwd, bwd, gate, up, d_out, out, d_gate, d_up);
  add_swiglu_configs<2>(fwd, bwd, gate, up, d_out, out, d_gate, d_up);
  add_swiglu_configs<4>(fwd, bwd, gate, up, d_out, out, d_gate, d_up);
  const double fwd_bytes = 3.0 * 2.0 * n, bwd_bytes = 5.0 * 2.0 * n;
  sweep(dev, {std::string("swiglu/") + s.preset + "/fwd", fwd_bytes, dev.copy_ms(static_cast<std::size_t>(fwd_bytes))}, {out}, fwd,
        config_name({{"packs", kSwigluForwardPacks}, {"block", kSwigluForwardThreads}}));
  sweep(dev, {std::string("swiglu/") + s.preset + "/bwd", bwd_bytes, dev.copy_ms(static_cast<std::size_t>(bwd_bytes))},
        {d_gate, d_up}, bwd, config_name({{"packs", kSwigluBackwardPacks}, {"block", kSwigluBackwardThreads}}));
}

}  // namespace
}  // namespace ddpbench::kernels::sweep

int main(int argc, char** argv) {
  using namespace ddpbench::kernels::sweep;
  const std::string only = argc > 1 ? argv[1] : "";  // a preset (1b, 8b) or an op (rms_norm, rope, swiglu)
  const bool preset_filter = std::any_of(std::begin(kShapes), std::end(kShapes), [&](const Shape& s) { return only == s.preset; });
  if (!only.empty() && !preset_filter && only != "rms_norm" && only != "rope" && only != "swiglu") {
    std::fprintf(stderr, "launch_sweep: unknown filter '%s' (a preset: 1b, 8b; or an op: rms_norm, rope, swiglu)\n", only.c_str());
    return 2;
  }
  // Every op of a shape runs unless one op is named.
  const auto runs = [&](const char* op) { return only.empty() || preset_filter || only == op; };
  int failed = 0;
  try {
    cudaDeviceProp prop{};
    DDPBENCH_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device %s, %d multiprocessors, L2 %d MiB; L2-cold median of 25 calls; * = the launchers' default\n",
                prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    std::printf("%-22s %-58s %s %9s %8s %7s %10s\n", "op/preset/pass", "configuration", " ", "ms", "GB/s", "% copy", "check");
    for (const auto& s : kShapes) {
      if (preset_filter && only != s.preset) continue;
      Device dev;  // one per shape: its buffers are freed before the next shape's
      if (runs("rms_norm")) sweep_rms_norm(dev, s);
      if (runs("rope")) sweep_rope(dev, s);
      if (runs("swiglu")) sweep_swiglu(dev, s);
      failed += dev.failed_checks();
    }
    if (failed > 0) {
      std::fprintf(stderr, "launch_sweep: %d configuration(s) failed their check (MISMATCH or NaN-LEFT above)\n", failed);
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "launch_sweep: %s\n", e.what());
    return 1;
  }
  return 0;
}
