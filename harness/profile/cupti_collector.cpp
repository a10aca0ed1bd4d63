#include "profile/cupti_collector.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <new>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>

#include <unistd.h>

#include "common/error.h"
#include "common/strings.h"

namespace ddpbench::profile {

namespace {

const char* kind_name(CUpti_ActivityKind kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: return "CONCURRENT_KERNEL";
    case CUPTI_ACTIVITY_KIND_MEMCPY: return "MEMCPY";
    case CUPTI_ACTIVITY_KIND_MEMCPY2: return "MEMCPY2";
    case CUPTI_ACTIVITY_KIND_MEMSET: return "MEMSET";
    case CUPTI_ACTIVITY_KIND_MEMORY2: return "MEMORY2";
    case CUPTI_ACTIVITY_KIND_MARKER: return "MARKER";
    case CUPTI_ACTIVITY_KIND_OVERHEAD: return "OVERHEAD";
    case CUPTI_ACTIVITY_KIND_DEVICE: return "DEVICE";
    case CUPTI_ACTIVITY_KIND_RUNTIME: return "RUNTIME";
    case CUPTI_ACTIVITY_KIND_DRIVER: return "DRIVER";
    default: return "?";
  }
}

std::string cupti_message(CUptiResult result, const std::string& call) {
  const char* text = nullptr;
  if (cuptiGetResultString(result, &text) != CUPTI_SUCCESS || text == nullptr) text = "unknown CUPTI result";
  return "CUPTI " + call + " failed: " + text + " (" + std::to_string(static_cast<int>(result)) + ")";
}

void check(CUptiResult result, const std::string& call) {
  if (result != CUPTI_SUCCESS) throw RunError(cupti_message(result, call));
}

// What the analysis needs; start() fails without any of them.
constexpr CUpti_ActivityKind kRequiredKinds[] = {
    CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET,
    CUPTI_ACTIVITY_KIND_MEMORY2,           CUPTI_ACTIVITY_KIND_MARKER,
};
// Extras that a trace is still complete without. DEVICE (for device_name) yields records only
// where it is enabled before the context exists, which the in-process collector is not; a refusal
// of any of these is not worth failing a profiled run over.
constexpr CUpti_ActivityKind kOptionalKinds[] = {
    CUPTI_ACTIVITY_KIND_MEMCPY2,
    CUPTI_ACTIVITY_KIND_OVERHEAD,
    CUPTI_ACTIVITY_KIND_DEVICE,
};

// Listed from cupti_runtime_cbid.h and cupti_driver_cbid.h of CUDA 13.0: every kernel, cooperative
// kernel and graph launch, every cudaMemcpy* and cudaMemset* (sync and async), and the calls that
// wait for the device.
constexpr TracedApi kRuntimeApis[] = {
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy_v3020, "cudaMemcpy"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2D_v3020, "cudaMemcpy2D"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyToArray_v3020, "cudaMemcpyToArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DToArray_v3020, "cudaMemcpy2DToArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyFromArray_v3020, "cudaMemcpyFromArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DFromArray_v3020, "cudaMemcpy2DFromArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyArrayToArray_v3020, "cudaMemcpyArrayToArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DArrayToArray_v3020, "cudaMemcpy2DArrayToArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyToSymbol_v3020, "cudaMemcpyToSymbol"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyFromSymbol_v3020, "cudaMemcpyFromSymbol"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyAsync_v3020, "cudaMemcpyAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyToArrayAsync_v3020, "cudaMemcpyToArrayAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyFromArrayAsync_v3020, "cudaMemcpyFromArrayAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DAsync_v3020, "cudaMemcpy2DAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DToArrayAsync_v3020, "cudaMemcpy2DToArrayAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DFromArrayAsync_v3020, "cudaMemcpy2DFromArrayAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyToSymbolAsync_v3020, "cudaMemcpyToSymbolAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyFromSymbolAsync_v3020, "cudaMemcpyFromSymbolAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset_v3020, "cudaMemset"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset2D_v3020, "cudaMemset2D"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemsetAsync_v3020, "cudaMemsetAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset2DAsync_v3020, "cudaMemset2DAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaStreamSynchronize_v3020, "cudaStreamSynchronize"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaEventSynchronize_v3020, "cudaEventSynchronize"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset3D_v3020, "cudaMemset3D"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset3DAsync_v3020, "cudaMemset3DAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3D_v3020, "cudaMemcpy3D"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DAsync_v3020, "cudaMemcpy3DAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaStreamWaitEvent_v3020, "cudaStreamWaitEvent"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyPeer_v4000, "cudaMemcpyPeer"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyPeerAsync_v4000, "cudaMemcpyPeerAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DPeer_v4000, "cudaMemcpy3DPeer"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DPeerAsync_v4000, "cudaMemcpy3DPeerAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaDeviceSynchronize_v3020, "cudaDeviceSynchronize"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000, "cudaLaunchKernel"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_ptsz_v7000, "cudaLaunchKernel"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy_ptds_v7000, "cudaMemcpy"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2D_ptds_v7000, "cudaMemcpy2D"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyToArray_ptds_v7000, "cudaMemcpyToArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DToArray_ptds_v7000, "cudaMemcpy2DToArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyFromArray_ptds_v7000, "cudaMemcpyFromArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DFromArray_ptds_v7000, "cudaMemcpy2DFromArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyArrayToArray_ptds_v7000, "cudaMemcpyArrayToArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DArrayToArray_ptds_v7000, "cudaMemcpy2DArrayToArray"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyToSymbol_ptds_v7000, "cudaMemcpyToSymbol"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyFromSymbol_ptds_v7000, "cudaMemcpyFromSymbol"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyAsync_ptsz_v7000, "cudaMemcpyAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyToArrayAsync_ptsz_v7000, "cudaMemcpyToArrayAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyFromArrayAsync_ptsz_v7000, "cudaMemcpyFromArrayAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DAsync_ptsz_v7000, "cudaMemcpy2DAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DToArrayAsync_ptsz_v7000, "cudaMemcpy2DToArrayAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy2DFromArrayAsync_ptsz_v7000, "cudaMemcpy2DFromArrayAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyToSymbolAsync_ptsz_v7000, "cudaMemcpyToSymbolAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyFromSymbolAsync_ptsz_v7000, "cudaMemcpyFromSymbolAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset_ptds_v7000, "cudaMemset"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset2D_ptds_v7000, "cudaMemset2D"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemsetAsync_ptsz_v7000, "cudaMemsetAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset2DAsync_ptsz_v7000, "cudaMemset2DAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaStreamSynchronize_ptsz_v7000, "cudaStreamSynchronize"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset3D_ptds_v7000, "cudaMemset3D"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemset3DAsync_ptsz_v7000, "cudaMemset3DAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3D_ptds_v7000, "cudaMemcpy3D"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DAsync_ptsz_v7000, "cudaMemcpy3DAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaStreamWaitEvent_ptsz_v7000, "cudaStreamWaitEvent"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DPeer_ptds_v7000, "cudaMemcpy3DPeer"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DPeerAsync_ptsz_v7000, "cudaMemcpy3DPeerAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaLaunchCooperativeKernel_v9000, "cudaLaunchCooperativeKernel"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaLaunchCooperativeKernel_ptsz_v9000, "cudaLaunchCooperativeKernel"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaLaunchCooperativeKernelMultiDevice_v9000, "cudaLaunchCooperativeKernelMultiDevice"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaGraphLaunch_v10000, "cudaGraphLaunch"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaGraphLaunch_ptsz_v10000, "cudaGraphLaunch"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernelExC_v11060, "cudaLaunchKernelExC"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernelExC_ptsz_v11060, "cudaLaunchKernelExC"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyBatchAsync_v12080, "cudaMemcpyBatchAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyBatchAsync_ptsz_v12080, "cudaMemcpyBatchAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DBatchAsync_v12080, "cudaMemcpy3DBatchAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DBatchAsync_ptsz_v12080, "cudaMemcpy3DBatchAsync"},
    {CUPTI_RUNTIME_TRACE_CBID___cudaLaunchKernel_v13000, "cudaLaunchKernel"},
    {CUPTI_RUNTIME_TRACE_CBID___cudaLaunchKernel_ptsz_v13000, "cudaLaunchKernel"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyBatchAsync_v13000, "cudaMemcpyBatchAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyBatchAsync_ptsz_v13000, "cudaMemcpyBatchAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DBatchAsync_v13000, "cudaMemcpy3DBatchAsync"},
    {CUPTI_RUNTIME_TRACE_CBID_cudaMemcpy3DBatchAsync_ptsz_v13000, "cudaMemcpy3DBatchAsync"},
};
// The driver's launches, and its copies and fills as cuda.h names them today (cuMemcpyHtoD is
// cuMemcpyHtoD_v2, etc.): what libraries that bypass the runtime (cuBLASLt, cuDNN, NCCL) call.
constexpr TracedApi kDriverApis[] = {
    {CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel, "cuLaunchKernel"},
    {CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel_ptsz, "cuLaunchKernel"},
    {CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel, "cuLaunchCooperativeKernel"},
    {CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel_ptsz, "cuLaunchCooperativeKernel"},
    {CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernelMultiDevice, "cuLaunchCooperativeKernelMultiDevice"},
    {CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch, "cuGraphLaunch"},
    {CUPTI_DRIVER_TRACE_CBID_cuGraphLaunch_ptsz, "cuGraphLaunch"},
    {CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx, "cuLaunchKernelEx"},
    {CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx_ptsz, "cuLaunchKernelEx"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy, "cuMemcpy"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy_ptds, "cuMemcpy"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyAsync, "cuMemcpyAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyAsync_ptsz, "cuMemcpyAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyPeer, "cuMemcpyPeer"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyPeer_ptds, "cuMemcpyPeer"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyPeerAsync, "cuMemcpyPeerAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyPeerAsync_ptsz, "cuMemcpyPeerAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoD_v2, "cuMemcpyHtoD"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoD_v2_ptds, "cuMemcpyHtoD"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoDAsync_v2, "cuMemcpyHtoDAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoDAsync_v2_ptsz, "cuMemcpyHtoDAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoH_v2, "cuMemcpyDtoH"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoH_v2_ptds, "cuMemcpyDtoH"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoHAsync_v2, "cuMemcpyDtoHAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoHAsync_v2_ptsz, "cuMemcpyDtoHAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoD_v2, "cuMemcpyDtoD"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoD_v2_ptds, "cuMemcpyDtoD"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoDAsync_v2, "cuMemcpyDtoDAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyDtoDAsync_v2_ptsz, "cuMemcpyDtoDAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy2D_v2, "cuMemcpy2D"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy2D_v2_ptds, "cuMemcpy2D"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy2DAsync_v2, "cuMemcpy2DAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy2DAsync_v2_ptsz, "cuMemcpy2DAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy3D_v2, "cuMemcpy3D"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy3D_v2_ptds, "cuMemcpy3D"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy3DAsync_v2, "cuMemcpy3DAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpy3DAsync_v2_ptsz, "cuMemcpy3DAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyBatchAsync_v2, "cuMemcpyBatchAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemcpyBatchAsync_v2_ptsz, "cuMemcpyBatchAsync"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD8_v2, "cuMemsetD8"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD8_v2_ptds, "cuMemsetD8"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD8Async, "cuMemsetD8Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD8Async_ptsz, "cuMemsetD8Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD16_v2, "cuMemsetD16"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD16_v2_ptds, "cuMemsetD16"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD16Async, "cuMemsetD16Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD16Async_ptsz, "cuMemsetD16Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD32_v2, "cuMemsetD32"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD32_v2_ptds, "cuMemsetD32"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD32Async, "cuMemsetD32Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD32Async_ptsz, "cuMemsetD32Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D8_v2, "cuMemsetD2D8"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D8_v2_ptds, "cuMemsetD2D8"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D8Async, "cuMemsetD2D8Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D8Async_ptsz, "cuMemsetD2D8Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D16_v2, "cuMemsetD2D16"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D16_v2_ptds, "cuMemsetD2D16"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D16Async, "cuMemsetD2D16Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D16Async_ptsz, "cuMemsetD2D16Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D32_v2, "cuMemsetD2D32"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D32_v2_ptds, "cuMemsetD2D32"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D32Async, "cuMemsetD2D32Async"},
    {CUPTI_DRIVER_TRACE_CBID_cuMemsetD2D32Async_ptsz, "cuMemsetD2D32Async"},
};

const char* traced_name(std::span<const TracedApi> apis, CUpti_CallbackId cbid) {
  for (const TracedApi& api : apis)
    if (api.cbid == cbid) return api.name;
  return nullptr;
}

bool untimed(std::uint64_t start, std::uint64_t end) { return (start == 0 && end == 0) || end < start; }

std::uint64_t marker_thread(const MarkerActivity& m) {
  if (m.objectKind == CUPTI_ACTIVITY_OBJECT_THREAD || m.objectKind == CUPTI_ACTIVITY_OBJECT_PROCESS)
    return m.objectId.pt.threadId;
  return 0;
}

// See ActivityParser::take.
void drop_nested_driver_calls(std::vector<ApiCallRecord>& calls) {
  std::unordered_set<std::uint32_t> runtime;
  for (const ApiCallRecord& c : calls)
    if (!c.driver) runtime.insert(c.correlation);
  std::erase_if(calls, [&](const ApiCallRecord& c) { return c.driver && runtime.count(c.correlation); });
}

template <typename Record>
void sort_by_start(std::vector<Record>& v) {
  std::stable_sort(v.begin(), v.end(), [](const Record& a, const Record& b) { return a.start < b.start; });
}

}  // namespace

// --- conversion ------------------------------------------------------------------------------

std::span<const TracedApi> traced_runtime_apis() { return kRuntimeApis; }
std::span<const TracedApi> traced_driver_apis() { return kDriverApis; }

CollectorOptions CollectorOptions::from_env() {
  CollectorOptions o;
  const std::string launches = getenv_or("DDPBENCH_PROFILE_LAUNCHES", "");
  if (launches == "0") o.api_calls = false;
  else if (!launches.empty() && launches != "1")
    throw UsageError("DDPBENCH_PROFILE_LAUNCHES=" + launches + ": expected 0 (no launch records) or 1");
  return o;
}

std::string demangle(const char* name) {
  if (name == nullptr) return {};
  // Only real symbols: __cxa_demangle also decodes bare type encodings, so "f" would become "float".
  if (std::string_view(name).substr(0, 2) != "_Z") return name;
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || out == nullptr) {
    std::free(out);
    return name;
  }
  std::string result(out);
  std::free(out);
  return result;
}

const std::string& Demangler::operator()(const char* name) {
  const std::string raw = name ? name : "";
  auto it = cache_.find(raw);
  if (it == cache_.end()) it = cache_.emplace(raw, demangle(raw.c_str())).first;
  return it->second;
}

const char* memcpy_kind_name(std::uint32_t copy_kind) {
  switch (copy_kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOA: return "HtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOH: return "AtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOA: return "AtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOD: return "AtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOA: return "DtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return "HtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "PtoP";
    default: return "Unknown";
  }
}

std::optional<KernelRecord> kernel_record(const KernelActivity& k, Demangler& demangler) {
  if (untimed(k.start, k.end)) return std::nullopt;
  KernelRecord r;
  r.start = k.start;
  r.end = k.end;
  r.device = k.deviceId;
  r.stream = k.streamId;
  r.correlation = k.correlationId;
  r.name = k.name ? demangler(k.name) : std::string("unknown");
  r.grid[0] = static_cast<std::uint32_t>(k.gridX);
  r.grid[1] = static_cast<std::uint32_t>(k.gridY);
  r.grid[2] = static_cast<std::uint32_t>(k.gridZ);
  r.block[0] = static_cast<std::uint32_t>(k.blockX);
  r.block[1] = static_cast<std::uint32_t>(k.blockY);
  r.block[2] = static_cast<std::uint32_t>(k.blockZ);
  return r;
}

std::optional<KernelRecord> kernel_record(const KernelActivity& k) {
  Demangler demangler;
  return kernel_record(k, demangler);
}

namespace {
// Memcpy, peer memcpy and memset records share these fields under the same names.
template <typename Out, typename In>
std::optional<Out> copy_like_record(const In& m) {
  if (untimed(m.start, m.end)) return std::nullopt;
  Out r;
  r.start = m.start;
  r.end = m.end;
  r.device = m.deviceId;
  r.stream = m.streamId;
  r.correlation = m.correlationId;
  r.bytes = m.bytes;
  if constexpr (std::is_same_v<Out, MemcpyRecord>) r.kind = memcpy_kind_name(m.copyKind);
  return r;
}
}  // namespace

std::optional<MemcpyRecord> memcpy_record(const MemcpyActivity& m) { return copy_like_record<MemcpyRecord>(m); }

std::optional<MemcpyRecord> memcpy_record(const PeerMemcpyActivity& m) { return copy_like_record<MemcpyRecord>(m); }

std::optional<MemsetRecord> memset_record(const MemsetActivity& m) { return copy_like_record<MemsetRecord>(m); }

std::optional<MemoryRecord> memory_record(const MemoryActivity& m) {
  const CUpti_ActivityMemoryOperationType op = m.memoryOperationType;
  const CUpti_ActivityMemoryKind kind = m.memoryKind;
  if (op != CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION && op != CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_RELEASE)
    return std::nullopt;
  if (kind == CUPTI_ACTIVITY_MEMORY_KIND_PAGEABLE || kind == CUPTI_ACTIVITY_MEMORY_KIND_PINNED) return std::nullopt;
  MemoryRecord r;
  r.timestamp = m.timestamp;
  r.device = m.deviceId;
  r.address = m.address;
  r.bytes = m.bytes;
  r.allocation = op == CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION;
  switch (kind) {
    case CUPTI_ACTIVITY_MEMORY_KIND_DEVICE: r.kind = "device"; break;
    case CUPTI_ACTIVITY_MEMORY_KIND_DEVICE_STATIC: r.kind = "device_static"; break;
    case CUPTI_ACTIVITY_MEMORY_KIND_MANAGED: r.kind = "managed"; break;
    case CUPTI_ACTIVITY_MEMORY_KIND_MANAGED_STATIC: r.kind = "managed_static"; break;
    case CUPTI_ACTIVITY_MEMORY_KIND_ARRAY: r.kind = "array"; break;
    default: r.kind = "unknown"; break;
  }
  return r;
}

std::optional<ApiCallRecord> api_call_record(const ApiActivity& a) {
  if (untimed(a.start, a.end)) return std::nullopt;
  ApiCallRecord r;
  r.start = a.start;
  r.end = a.end;
  r.thread = a.threadId;
  r.correlation = a.correlationId;
  r.cbid = a.cbid;
  r.driver = a.kind == CUPTI_ACTIVITY_KIND_DRIVER;
  const char* name = traced_name(r.driver ? traced_driver_apis() : traced_runtime_apis(), a.cbid);
  r.name = name ? name : std::string(r.driver ? "driver API " : "runtime API ") + std::to_string(a.cbid);
  return r;
}

// --- NVTX markers ----------------------------------------------------------------------------

void MarkerPairer::add(const MarkerActivity& m) {
  const auto flags = static_cast<std::uint32_t>(m.flags);
  const std::uint32_t id = m.id;
  const std::uint64_t timestamp = m.timestamp;
  if (flags & CUPTI_ACTIVITY_FLAG_MARKER_START) {
    Open range{timestamp, marker_thread(m), m.name ? m.name : ""};
    if (auto end = early_ends_.find(id); end != early_ends_.end()) {
      done_.push_back({range.start, end->second, range.thread, std::move(range.name)});
      early_ends_.erase(end);
    } else {
      open_[id] = std::move(range);
    }
  } else if (flags & CUPTI_ACTIVITY_FLAG_MARKER_END) {
    if (auto start = open_.find(id); start != open_.end()) {
      done_.push_back({start->second.start, timestamp, start->second.thread, std::move(start->second.name)});
      open_.erase(start);
    } else {
      early_ends_[id] = timestamp;
    }
  }
  // Instantaneous and synchronization markers are points, not ranges.
}

std::vector<RangeRecord> MarkerPairer::take() { return std::exchange(done_, {}); }

// --- parsing ---------------------------------------------------------------------------------

void ActivityParser::add(const CUpti_Activity& record) {
  // Each kind names its record type; the cast is how CUPTI's API is meant to be read.
  switch (record.kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
      if (auto r = kernel_record(reinterpret_cast<const KernelActivity&>(record), demangler_))
        activity_.kernels.push_back(std::move(*r));
      else
        ++activity_.untimed_records;
      break;
    case CUPTI_ACTIVITY_KIND_MEMCPY:
      if (auto r = memcpy_record(reinterpret_cast<const MemcpyActivity&>(record)))
        activity_.memcpys.push_back(std::move(*r));
      else
        ++activity_.untimed_records;
      break;
    case CUPTI_ACTIVITY_KIND_MEMCPY2:
      if (auto r = memcpy_record(reinterpret_cast<const PeerMemcpyActivity&>(record)))
        activity_.memcpys.push_back(std::move(*r));
      else
        ++activity_.untimed_records;
      break;
    case CUPTI_ACTIVITY_KIND_MEMSET:
      if (auto r = memset_record(reinterpret_cast<const MemsetActivity&>(record)))
        activity_.memsets.push_back(*r);
      else
        ++activity_.untimed_records;
      break;
    case CUPTI_ACTIVITY_KIND_MEMORY2:
      if (auto r = memory_record(reinterpret_cast<const MemoryActivity&>(record))) activity_.memory.push_back(*r);
      break;
    case CUPTI_ACTIVITY_KIND_RUNTIME:
    case CUPTI_ACTIVITY_KIND_DRIVER: {
      // Where the whole kinds stand in for the per-API switches (start()), every runtime and driver
      // call arrives: only the traced ones belong in the trace.
      const auto& api = reinterpret_cast<const ApiActivity&>(record);
      const bool driver = record.kind == CUPTI_ACTIVITY_KIND_DRIVER;
      if (!traced_name(driver ? traced_driver_apis() : traced_runtime_apis(), api.cbid)) break;
      if (auto r = api_call_record(api))
        activity_.api_calls.push_back(std::move(*r));
      else
        ++activity_.untimed_records;
      break;
    }
    case CUPTI_ACTIVITY_KIND_MARKER:
      markers_.add(reinterpret_cast<const MarkerActivity&>(record));
      break;
    case CUPTI_ACTIVITY_KIND_OVERHEAD: {
      const auto& o = reinterpret_cast<const OverheadActivity&>(record);
      const std::uint64_t start = o.start, end = o.end;
      ++activity_.overhead_records;
      if (end > start) activity_.overhead_ns += end - start;
      break;
    }
    case CUPTI_ACTIVITY_KIND_DEVICE: {
      const auto& d = reinterpret_cast<const DeviceActivity&>(record);
      device_names_[d.id] = d.name ? d.name : "";
      break;
    }
    default:
      break;
  }
}

RankActivity ActivityParser::take() {
  RankActivity out = std::exchange(activity_, RankActivity{});
  for (auto& r : markers_.take()) out.ranges.push_back(std::move(r));
  sort_by_start(out.kernels);
  sort_by_start(out.memcpys);
  sort_by_start(out.memsets);
  sort_by_start(out.ranges);
  drop_nested_driver_calls(out.api_calls);
  sort_by_start(out.api_calls);
  std::stable_sort(out.memory.begin(), out.memory.end(),
                   [](const MemoryRecord& a, const MemoryRecord& b) { return a.timestamp < b.timestamp; });
  if (!out.kernels.empty()) {
    if (auto it = device_names_.find(out.kernels.front().device); it != device_names_.end())
      out.device_name = it->second;
  }
  if (out.device_name.empty() && !device_names_.empty()) {
    auto lowest = std::min_element(device_names_.begin(), device_names_.end(),
                                   [](const auto& a, const auto& b) { return a.first < b.first; });
    out.device_name = lowest->second;
  }
  return out;
}

// --- buffers ---------------------------------------------------------------------------------

BufferPool::BufferPool(std::size_t buffer_bytes)
    : buffer_bytes_((std::max<std::size_t>(buffer_bytes, kAlignment) + kAlignment - 1) / kAlignment * kAlignment) {}

std::uint8_t* BufferPool::acquire() {
  {
    std::lock_guard lock(mutex_);
    if (!free_.empty()) {
      std::uint8_t* buffer = free_.back();
      free_.pop_back();
      return buffer;
    }
  }
  // Outside the lock: a first-touch 8 MiB allocation need not hold up another thread's release.
  auto storage = std::make_unique_for_overwrite<std::uint64_t[]>(buffer_bytes_ / sizeof(std::uint64_t));
  auto* buffer = reinterpret_cast<std::uint8_t*>(storage.get());
  std::lock_guard lock(mutex_);
  owned_.push_back(std::move(storage));
  return buffer;
}

void BufferPool::release(std::uint8_t* buffer) {
  if (buffer == nullptr) return;
  std::lock_guard lock(mutex_);
  // A handful of buffers: linear scans are cheaper than the bookkeeping to avoid them, and keep a
  // stray or repeated release from handing one buffer to CUPTI twice.
  const bool ours = std::any_of(owned_.begin(), owned_.end(), [&](const auto& p) {
    return reinterpret_cast<std::uint8_t*>(p.get()) == buffer;
  });
  if (!ours || std::find(free_.begin(), free_.end(), buffer) != free_.end()) return;
  free_.push_back(buffer);
}

std::size_t BufferPool::allocated() const {
  std::lock_guard lock(mutex_);
  return owned_.size();
}

std::size_t BufferPool::available() const {
  std::lock_guard lock(mutex_);
  return free_.size();
}

// --- the collector ---------------------------------------------------------------------------

CuptiCollector& CuptiCollector::instance() {
  // CUPTI's buffer callbacks are plain function pointers with no user-data argument, so they can
  // reach a collector only through something process-wide, and this is that one thing. It is never
  // destroyed: CUPTI may still hand back buffers while the process exits (its own flush at context
  // teardown, its worker thread), after static destructors would have run.
  static CuptiCollector* const collector = new CuptiCollector();
  return *collector;
}

void CuptiCollector::start(const CollectorOptions& options) {
  std::lock_guard lock(control_mutex_);
  if (running()) throw RunError("CUPTI collector: already running");
  // The layout of each record is the one the loaded libcupti writes, and its versions change
  // between CUDA releases (13.2 has a Device6 where 13.0 has Device5): reading another release's
  // records with these structs misreads them. Same CUDA major.minor (xxyy of xxyyzz) is required.
  std::uint32_t version = 0;
  check(cuptiGetVersion(&version), "cuptiGetVersion");
  if (version / 100 != CUPTI_API_VERSION / 100)
    throw RunError("CUPTI: built against CUPTI API version " + std::to_string(CUPTI_API_VERSION) +
                   ", but the libcupti in this process is version " + std::to_string(version) +
                   " (another libcupti, e.g. one bundled with PyTorch, was loaded first); its activity "
                   "records have other layouts");
  // gettid rather than pthread_self, so that NVTX marker records and push_range agree on threads.
  check(cuptiSetThreadIdType(CUPTI_ACTIVITY_THREAD_ID_TYPE_SYSTEM), "cuptiSetThreadIdType(SYSTEM)");
  check(cuptiActivityRegisterCallbacks(&CuptiCollector::on_buffer_requested, &CuptiCollector::on_buffer_completed),
        "cuptiActivityRegisterCallbacks");
  for (CUpti_ActivityKind kind : kRequiredKinds) {
    const CUptiResult result = cuptiActivityEnable(kind);
    if (result != CUPTI_SUCCESS) {
      disable_enabled(nullptr);
      throw RunError(cupti_message(result, std::string("cuptiActivityEnable(") + kind_name(kind) + ")"));
    }
    enabled_.push_back(kind);
  }
  for (CUpti_ActivityKind kind : kOptionalKinds)
    if (cuptiActivityEnable(kind) == CUPTI_SUCCESS) enabled_.push_back(kind);
  // Launch and wait records: the per-API switches where they are wanted and CUPTI takes the launch
  // calls (each API it accepts; a call this CUPTI no longer knows is refused alone), otherwise the
  // whole RUNTIME and DRIVER kinds, filtered to the traced calls when parsed, so that kernels keep
  // their launches whichever API launched them.
  api_calls_enabled_.store(false);
  api_calls_mode_ = "off";
  if (options.api_calls) {
    if (!options.whole_api_kinds && enable_api_calls(1)) {
      api_calls_enabled_.store(true);
      api_calls_mode_ = "per-API";
    } else {
      if (!options.whole_api_kinds) enable_api_calls(0);  // the switches this CUPTI did take
      std::string taken;
      for (CUpti_ActivityKind kind : {CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_ACTIVITY_KIND_DRIVER}) {
        if (cuptiActivityEnable(kind) != CUPTI_SUCCESS) continue;
        enabled_.push_back(kind);
        taken += std::string(taken.empty() ? "" : " and ") + kind_name(kind);
      }
      api_calls_mode_ = taken.empty() ? "refused by CUPTI" : "whole " + taken + " kinds";
    }
  }
  {
    std::lock_guard parse_lock(parse_mutex_);
    callback_error_.clear();
  }
  {
    // Ranges left open by an earlier session would otherwise swallow this session's first pops.
    std::lock_guard ranges_lock(ranges_mutex_);
    open_ranges_.clear();
  }
  pid_.store(getpid());
  running_.store(true);
}

// True when CUPTI took the kernel launch calls (cudaLaunchKernel and CUDA 13's __cudaLaunchKernel).
bool CuptiCollector::enable_api_calls(std::uint8_t enable) {
  bool launches = true;
  for (const TracedApi& api : kRuntimeApis) {
    const bool taken = cuptiActivityEnableRuntimeApi(api.cbid, enable) == CUPTI_SUCCESS;
    if (api.cbid == CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000 ||
        api.cbid == CUPTI_RUNTIME_TRACE_CBID___cudaLaunchKernel_v13000)
      launches = launches && taken;
  }
  for (const TracedApi& api : kDriverApis) cuptiActivityEnableDriverApi(api.cbid, enable);
  return launches;
}

void CuptiCollector::disable_enabled(std::string* first_error) {
  if (api_calls_enabled_.exchange(false) && !enable_api_calls(0) && first_error && first_error->empty())
    *first_error = "CUPTI cuptiActivityEnableRuntimeApi(cudaLaunchKernel, disable) failed";
  for (CUpti_ActivityKind kind : enabled_) {
    const CUptiResult result = cuptiActivityDisable(kind);
    if (result != CUPTI_SUCCESS && first_error && first_error->empty())
      *first_error = cupti_message(result, std::string("cuptiActivityDisable(") + kind_name(kind) + ")");
  }
  enabled_.clear();
}

void CuptiCollector::stop() {
  std::lock_guard lock(control_mutex_);
  if (!running()) return;
  running_.store(false);
  std::string error;
  auto note = [&](CUptiResult result, const char* call) {
    if (result != CUPTI_SUCCESS && error.empty()) error = cupti_message(result, call);
  };
  note(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll(FORCED)");
  disable_enabled(&error);
  // Records written between the first flush and the disabling.
  note(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll(FORCED)");
  {
    std::lock_guard parse_lock(parse_mutex_);
    if (error.empty()) error = callback_error_;
    callback_error_.clear();
    // Kernels without a single launch call make traces that Holistic Trace Analysis reads as
    // launch-less (no launch statistics, no ProfilerStep, no critical path): say so, and how.
    if (api_calls_mode_ != "off" && parser_.kernel_count() > 0 && parser_.api_call_count() == 0)
      std::fprintf(stderr, "ddpbench profile: CUPTI recorded %zu kernels but no launch calls (API records: %s)\n",
                   parser_.kernel_count(), api_calls_mode_.c_str());
  }
  if (!error.empty()) throw RunError(error);
}

bool CuptiCollector::started_in_this_process() const {
  const pid_t pid = pid_.load();
  return pid != 0 && pid == getpid();
}

RankActivity CuptiCollector::take() {
  RankActivity out;
  {
    std::lock_guard lock(parse_mutex_);
    out = parser_.take();
  }
  std::vector<RangeRecord> host;
  {
    std::lock_guard lock(ranges_mutex_);
    host = std::exchange(host_ranges_, {});
  }
  if (!host.empty()) {
    out.ranges.insert(out.ranges.end(), std::make_move_iterator(host.begin()), std::make_move_iterator(host.end()));
    sort_by_start(out.ranges);
  }
  return out;
}

std::uint64_t CuptiCollector::timestamp() {
  std::uint64_t ts = 0;
  check(cuptiGetTimestamp(&ts), "cuptiGetTimestamp");
  return ts;
}

void CuptiCollector::push_range(const char* name) {
  if (!running()) return;
  const std::uint64_t start = timestamp();
  const auto thread = static_cast<std::uint64_t>(gettid());
  std::lock_guard lock(ranges_mutex_);
  open_ranges_[thread].push_back({name ? name : "", start});
}

void CuptiCollector::pop_range() {
  const auto thread = static_cast<std::uint64_t>(gettid());
  std::lock_guard lock(ranges_mutex_);
  auto it = open_ranges_.find(thread);
  if (it == open_ranges_.end() || it->second.empty()) return;
  auto& open = it->second.back();
  host_ranges_.push_back({open.start, timestamp(), thread, std::move(open.name)});
  it->second.pop_back();
}

void CUPTIAPI CuptiCollector::on_buffer_requested(std::uint8_t** buffer, std::size_t* size, std::size_t* max_records) {
  *max_records = 0;  // as many as fit
  try {
    CuptiCollector& self = instance();
    *buffer = self.pool_.acquire();
    *size = self.pool_.buffer_bytes();
  } catch (...) {
    // Out of memory: CUPTI drops the records it cannot place and counts them.
    *buffer = nullptr;
    *size = 0;
  }
}

void CUPTIAPI CuptiCollector::on_buffer_completed(CUcontext, std::uint32_t, std::uint8_t* buffer, std::size_t,
                                                  std::size_t valid_size) {
  CuptiCollector& self = instance();
  try {
    if (buffer != nullptr && valid_size > 0) self.parse_buffer(buffer, valid_size);
  } catch (const std::exception& e) {
    // Nothing may propagate into CUPTI's C code; stop() reports it.
    std::lock_guard lock(self.parse_mutex_);
    if (self.callback_error_.empty()) self.callback_error_ = std::string("parsing a CUPTI buffer: ") + e.what();
  }
  self.pool_.release(buffer);
}

void CuptiCollector::parse_buffer(std::uint8_t* buffer, std::size_t valid_size) {
  std::size_t dropped = 0;
  const CUptiResult dropped_result = cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
  std::lock_guard lock(parse_mutex_);
  if (dropped_result != CUPTI_SUCCESS && callback_error_.empty())
    callback_error_ = cupti_message(dropped_result, "cuptiActivityGetNumDroppedRecords");
  parser_.add_dropped(dropped);
  CUpti_Activity* record = nullptr;
  while (true) {
    const CUptiResult result = cuptiActivityGetNextRecord(buffer, valid_size, &record);
    if (result == CUPTI_ERROR_MAX_LIMIT_REACHED) break;
    if (result != CUPTI_SUCCESS) {
      // An incomplete or unreadable record ends this buffer (CUPTI gives no way past it).
      parser_.add_dropped(1);
      if (callback_error_.empty()) callback_error_ = cupti_message(result, "cuptiActivityGetNextRecord");
      break;
    }
    parser_.add(*record);
  }
}

}  // namespace ddpbench::profile
