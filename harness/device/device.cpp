#include "device/device.h"

#include <sys/resource.h>

#include <chrono>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include "common/error.h"
#ifdef DDPBENCH_WITH_CUDA
#include "device/cuda_device.h"
#endif

namespace ddpbench::device {

namespace {

std::int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::int64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

[[noreturn]] void no_cuda() { throw RunError("this ddpbench was built without a CUDA toolkit"); }

}  // namespace

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.libtorch = TORCH_VERSION;
  info.cuda_available = at::hasCUDA();
  if (info.cuda_available) {
    const auto& hooks = at::detail::getCUDAHooks();
    info.cuda_device_count = hooks.deviceCount();
    const long cudnn = hooks.versionCuDNN();
    if (cudnn > 0) info.cudnn = std::to_string(cudnn);
#ifdef DDPBENCH_WITH_CUDA
    info.cuda_runtime = cuda::runtime_version();
    info.nccl = cuda::nccl_version();
#endif
  }
  return info;
}

void synchronize(const std::string& device, int index) {
  if (device == "cpu") return;
#ifdef DDPBENCH_WITH_CUDA
  cuda::synchronize(index);
#else
  (void)index;
  no_cuda();
#endif
}

void set_cuda_device(int index) {
#ifdef DDPBENCH_WITH_CUDA
  cuda::set_device(index);
#else
  (void)index;
  no_cuda();
#endif
}

MemoryPeaks memory_peaks(const std::string& device, int index) {
  if (device == "cpu") return {peak_rss_bytes(), peak_rss_bytes()};
#ifdef DDPBENCH_WITH_CUDA
  return {cuda::peak_allocated(index), cuda::peak_reserved(index)};
#else
  (void)index;
  no_cuda();
#endif
}

void reset_memory_peaks(const std::string& device, int index) {
  if (device == "cpu") return;  // the kernel keeps no resettable RSS peak; CPU peaks cover the run
#ifdef DDPBENCH_WITH_CUDA
  cuda::reset_peaks(index);
#else
  (void)index;
  no_cuda();
#endif
}

#ifdef DDPBENCH_WITH_CUDA
struct IntervalTimer::Events : cuda::EventPair {
  using cuda::EventPair::EventPair;
};
#else
struct IntervalTimer::Events {};
#endif

IntervalTimer::IntervalTimer(const std::string& device, int index) {
  if (device == "cpu") return;
#ifdef DDPBENCH_WITH_CUDA
  events_ = std::make_unique<Events>(index);
#else
  (void)index;
  no_cuda();
#endif
}

IntervalTimer::~IntervalTimer() = default;

void IntervalTimer::start() {
#ifdef DDPBENCH_WITH_CUDA
  if (events_) return events_->record_start();
#endif
  t0_ = std::chrono::steady_clock::now();
}

double IntervalTimer::stop_seconds() {
#ifdef DDPBENCH_WITH_CUDA
  if (events_) return events_->record_stop_and_wait();
#endif
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

double measure_bf16_matmul_flops(const std::string& device, int index) {
  if (device == "cpu") return 0;
#ifdef DDPBENCH_WITH_CUDA
  constexpr std::int64_t n = 8192;
  constexpr int warmup = 3, reps = 10;
  double seconds = 0;
  {
    const auto options = at::TensorOptions().device(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index))).dtype(at::kBFloat16);
    const auto a = at::randn({n, n}, options), b = at::randn({n, n}, options);
    auto c = at::empty({n, n}, options);
    for (int i = 0; i < warmup; ++i) at::mm_out(c, a, b);
    cuda::synchronize(index);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) at::mm_out(c, a, b);
    cuda::synchronize(index);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  cuda::release_cached_memory();
  return seconds > 0 ? 2.0 * n * n * n * reps / seconds : 0;
#else
  (void)index;
  no_cuda();
#endif
}

}  // namespace ddpbench::device
