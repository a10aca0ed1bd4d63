// The CUPTI collector's CPU side: CUPTI activity records built by hand, as libcupti would write
// them, turned into ddpbench's records; and the buffer pool. Nothing here calls into libcupti.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "profile/cupti_collector.h"

namespace ddpbench::profile {
namespace {

KernelActivity kernel(std::uint64_t start, std::uint64_t end, const char* name, std::uint32_t device = 0,
                      std::uint32_t stream = 7) {
  KernelActivity k{};
  k.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
  k.start = start;
  k.end = end;
  k.deviceId = device;
  k.streamId = stream;
  k.correlationId = 42;
  k.name = name;
  k.gridX = 128;
  k.gridY = 2;
  k.gridZ = 1;
  k.blockX = 256;
  k.blockY = 1;
  k.blockZ = 1;
  return k;
}

MemcpyActivity memcpy_activity(CUpti_ActivityMemcpyKind kind, std::uint64_t start, std::uint64_t end,
                               std::uint64_t bytes) {
  MemcpyActivity m{};
  m.kind = CUPTI_ACTIVITY_KIND_MEMCPY;
  m.copyKind = static_cast<std::uint8_t>(kind);
  m.start = start;
  m.end = end;
  m.bytes = bytes;
  m.deviceId = 1;
  m.streamId = 13;
  m.correlationId = 5;
  return m;
}

MemsetActivity memset_activity(std::uint64_t start, std::uint64_t end, std::uint64_t bytes, std::uint32_t correlation) {
  MemsetActivity m{};
  m.kind = CUPTI_ACTIVITY_KIND_MEMSET;
  m.start = start;
  m.end = end;
  m.bytes = bytes;
  m.deviceId = 4;
  m.streamId = 3;
  m.correlationId = correlation;
  return m;
}

MemoryActivity memory_activity(CUpti_ActivityMemoryOperationType op, CUpti_ActivityMemoryKind kind,
                               std::uint64_t timestamp, std::uint64_t address, std::uint64_t bytes) {
  MemoryActivity m{};
  m.kind = CUPTI_ACTIVITY_KIND_MEMORY2;
  m.memoryOperationType = op;
  m.memoryKind = kind;
  m.timestamp = timestamp;
  m.address = address;
  m.bytes = bytes;
  m.deviceId = 3;
  return m;
}

MarkerActivity marker(CUpti_ActivityFlag flag, std::uint32_t id, std::uint64_t timestamp, std::uint32_t thread,
                      const char* name = nullptr) {
  MarkerActivity m{};
  m.kind = CUPTI_ACTIVITY_KIND_MARKER;
  m.flags = flag;
  m.id = id;
  m.timestamp = timestamp;
  m.objectKind = CUPTI_ACTIVITY_OBJECT_THREAD;
  m.objectId.pt.processId = 1000;
  m.objectId.pt.threadId = thread;
  m.name = name;
  return m;
}

MarkerActivity start_marker(std::uint32_t id, std::uint64_t t, std::uint32_t thread, const char* name) {
  return marker(CUPTI_ACTIVITY_FLAG_MARKER_START, id, t, thread, name);
}
MarkerActivity end_marker(std::uint32_t id, std::uint64_t t, std::uint32_t thread) {
  // CUPTI leaves the name of an END record empty: the START carries it.
  return marker(CUPTI_ACTIVITY_FLAG_MARKER_END, id, t, thread);
}

template <typename Record>
const CUpti_Activity& as_activity(const Record& r) {
  return reinterpret_cast<const CUpti_Activity&>(r);
}

void expect_range(const RangeRecord& r, const std::string& name, std::uint64_t start, std::uint64_t end,
                  std::uint64_t thread) {
  EXPECT_EQ(r.name, name);
  EXPECT_EQ(r.start, start) << name;
  EXPECT_EQ(r.end, end) << name;
  EXPECT_EQ(r.thread, thread) << name;
}

// --- kernels ---------------------------------------------------------------------------------

TEST(CuptiDemangle, MangledNamesDemangledOthersUnchanged) {
  EXPECT_EQ(demangle("_Z6kernelPfi"), "kernel(float*, int)");
  EXPECT_EQ(demangle("_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_11FillFunctorIfEESt5arrayIPcLm1EEEEviT0_T1_"),
            "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >"
            "(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)");
  // extern "C" kernels keep their name; so do bare type encodings, which __cxa_demangle would
  // otherwise turn into "float".
  EXPECT_EQ(demangle("ncclDevKernel_Generic"), "ncclDevKernel_Generic");
  EXPECT_EQ(demangle("f"), "f");
  EXPECT_EQ(demangle("_Znot a symbol"), "_Znot a symbol");
  EXPECT_EQ(demangle(nullptr), "");
}

TEST(CuptiRecords, KernelFieldsAndDemangledName) {
  const KernelActivity k = kernel(1000, 2500, "_Z39ncclDevKernel_AllReduce_Sum_f32_RING_LL24ncclDevKernelArgsStorageILm4096EE",
                                  2, 9);
  const auto r = kernel_record(k);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->name, "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)");
  EXPECT_EQ(r->name.rfind("nccl", 0), 0u) << "communication is recognised by the prefix";
  EXPECT_EQ(r->start, 1000u);
  EXPECT_EQ(r->end, 2500u);
  EXPECT_EQ(r->device, 2u);
  EXPECT_EQ(r->stream, 9u);
  EXPECT_EQ(r->correlation, 42u);
  EXPECT_EQ(r->grid[0], 128u);
  EXPECT_EQ(r->grid[1], 2u);
  EXPECT_EQ(r->grid[2], 1u);
  EXPECT_EQ(r->block[0], 256u);
  EXPECT_EQ(r->block[1], 1u);
  EXPECT_EQ(r->block[2], 1u);
}

TEST(CuptiRecords, KernelWithoutTimestampsOrNameOrWithRawName) {
  EXPECT_FALSE(kernel_record(kernel(0, 0, "_Z1fv")).has_value());
  EXPECT_FALSE(kernel_record(kernel(200, 100, "_Z1fv")).has_value());
  EXPECT_EQ(kernel_record(kernel(1, 2, nullptr))->name, "unknown");
  EXPECT_EQ(kernel_record(kernel(1, 2, "cutlass_80_tensorop_gemm"))->name, "cutlass_80_tensorop_gemm");
}

TEST(CuptiRecords, DemanglerCachesEachName) {
  Demangler d;
  const std::string& first = d("_Z6kernelPfi");
  const std::string& again = d("_Z6kernelPfi");
  EXPECT_EQ(&first, &again);
  EXPECT_EQ(first, "kernel(float*, int)");
  EXPECT_EQ(d(nullptr), "");
}

// --- copies, sets, memory --------------------------------------------------------------------

TEST(CuptiRecords, MemcpyKindNames) {
  const std::vector<std::pair<CUpti_ActivityMemcpyKind, std::string>> names = {
      {CUPTI_ACTIVITY_MEMCPY_KIND_HTOD, "HtoD"}, {CUPTI_ACTIVITY_MEMCPY_KIND_DTOH, "DtoH"},
      {CUPTI_ACTIVITY_MEMCPY_KIND_HTOA, "HtoA"}, {CUPTI_ACTIVITY_MEMCPY_KIND_ATOH, "AtoH"},
      {CUPTI_ACTIVITY_MEMCPY_KIND_ATOA, "AtoA"}, {CUPTI_ACTIVITY_MEMCPY_KIND_ATOD, "AtoD"},
      {CUPTI_ACTIVITY_MEMCPY_KIND_DTOA, "DtoA"}, {CUPTI_ACTIVITY_MEMCPY_KIND_DTOD, "DtoD"},
      {CUPTI_ACTIVITY_MEMCPY_KIND_HTOH, "HtoH"}, {CUPTI_ACTIVITY_MEMCPY_KIND_PTOP, "PtoP"},
      {CUPTI_ACTIVITY_MEMCPY_KIND_UNKNOWN, "Unknown"},
  };
  for (const auto& [kind, name] : names) EXPECT_EQ(memcpy_kind_name(kind), name);
  EXPECT_STREQ(memcpy_kind_name(200), "Unknown");
}

TEST(CuptiRecords, MemcpyAndPeerMemcpy) {
  const auto h2d = memcpy_record(memcpy_activity(CUPTI_ACTIVITY_MEMCPY_KIND_HTOD, 10, 30, 4096));
  ASSERT_TRUE(h2d.has_value());
  EXPECT_EQ(h2d->kind, "HtoD");
  EXPECT_EQ(h2d->bytes, 4096u);
  EXPECT_EQ(h2d->start, 10u);
  EXPECT_EQ(h2d->end, 30u);
  EXPECT_EQ(h2d->device, 1u);
  EXPECT_EQ(h2d->stream, 13u);
  EXPECT_EQ(h2d->correlation, 5u);
  EXPECT_EQ(memcpy_record(memcpy_activity(CUPTI_ACTIVITY_MEMCPY_KIND_DTOH, 1, 2, 8))->kind, "DtoH");
  EXPECT_FALSE(memcpy_record(memcpy_activity(CUPTI_ACTIVITY_MEMCPY_KIND_DTOD, 0, 0, 8)).has_value());

  PeerMemcpyActivity p{};
  p.kind = CUPTI_ACTIVITY_KIND_MEMCPY2;
  p.copyKind = CUPTI_ACTIVITY_MEMCPY_KIND_PTOP;
  p.start = 100;
  p.end = 400;
  p.bytes = 1 << 20;
  p.deviceId = 0;
  p.srcDeviceId = 0;
  p.dstDeviceId = 1;
  p.streamId = 21;
  p.correlationId = 77;
  const auto peer = memcpy_record(p);
  ASSERT_TRUE(peer.has_value());
  EXPECT_EQ(peer->kind, "PtoP");
  EXPECT_EQ(peer->bytes, 1u << 20);
  EXPECT_EQ(peer->stream, 21u);
  EXPECT_EQ(peer->correlation, 77u);
}

TEST(CuptiRecords, Memset) {
  MemsetActivity m = memset_activity(5, 9, 512, 8);
  const auto r = memset_record(m);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->start, 5u);
  EXPECT_EQ(r->end, 9u);
  EXPECT_EQ(r->bytes, 512u);
  EXPECT_EQ(r->device, 4u);
  EXPECT_EQ(r->stream, 3u);
  EXPECT_EQ(r->correlation, 8u);
  m.start = m.end = 0;
  EXPECT_FALSE(memset_record(m).has_value());
}

TEST(CuptiRecords, MemoryAllocationAndRelease) {
  const auto alloc = memory_record(memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION,
                                                   CUPTI_ACTIVITY_MEMORY_KIND_DEVICE, 100, 0x7f0000, 2 << 20));
  ASSERT_TRUE(alloc.has_value());
  EXPECT_TRUE(alloc->allocation);
  EXPECT_EQ(alloc->timestamp, 100u);
  EXPECT_EQ(alloc->address, 0x7f0000u);
  EXPECT_EQ(alloc->bytes, 2u << 20);
  EXPECT_EQ(alloc->device, 3u);
  EXPECT_EQ(alloc->kind, "device");

  const auto release = memory_record(memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_RELEASE,
                                                     CUPTI_ACTIVITY_MEMORY_KIND_DEVICE, 200, 0x7f0000, 2 << 20));
  ASSERT_TRUE(release.has_value());
  EXPECT_FALSE(release->allocation);
  EXPECT_EQ(release->timestamp, 200u);

  // The timeline is of device memory: pinned and pageable host memory stay out, as does an
  // operation that is neither.
  EXPECT_FALSE(memory_record(memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION,
                                             CUPTI_ACTIVITY_MEMORY_KIND_PINNED, 1, 1, 1)));
  EXPECT_FALSE(memory_record(memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION,
                                             CUPTI_ACTIVITY_MEMORY_KIND_PAGEABLE, 1, 1, 1)));
  EXPECT_FALSE(memory_record(memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_INVALID,
                                             CUPTI_ACTIVITY_MEMORY_KIND_DEVICE, 1, 1, 1)));
  EXPECT_EQ(memory_record(memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION,
                                          CUPTI_ACTIVITY_MEMORY_KIND_MANAGED, 1, 1, 1))->kind, "managed");
  EXPECT_EQ(memory_record(memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION,
                                          CUPTI_ACTIVITY_MEMORY_KIND_UNKNOWN, 1, 1, 1))->kind, "unknown");
  EXPECT_EQ(memory_record(memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION,
                                          CUPTI_ACTIVITY_MEMORY_KIND_DEVICE_STATIC, 1, 1, 1))->kind, "device_static");
}

// --- launch and wait calls ------------------------------------------------------------------

ApiActivity api_activity(CUpti_ActivityKind kind, CUpti_CallbackId cbid, std::uint64_t start, std::uint64_t end,
                         std::uint32_t correlation, std::uint32_t thread = 4242) {
  ApiActivity a{};
  a.kind = kind;
  a.cbid = cbid;
  a.start = start;
  a.end = end;
  a.processId = 1000;
  a.threadId = thread;
  a.correlationId = correlation;
  return a;
}

TEST(CuptiRecords, RuntimeAndDriverLaunchCalls) {
  const auto launch = api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME,
                                                   CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000, 100, 180, 42));
  ASSERT_TRUE(launch.has_value());
  EXPECT_EQ(launch->name, "cudaLaunchKernel");
  EXPECT_EQ(launch->start, 100u);
  EXPECT_EQ(launch->end, 180u);
  EXPECT_EQ(launch->thread, 4242u);
  EXPECT_EQ(launch->correlation, 42u) << "the kernel record's correlation id: the link to the kernel";
  EXPECT_EQ(launch->cbid, static_cast<std::uint32_t>(CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000));
  EXPECT_FALSE(launch->driver);

  // Per-thread-stream variants and CUDA 13's <<<>>> entry point read as the documented function.
  for (auto cbid : {CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_ptsz_v7000, CUPTI_RUNTIME_TRACE_CBID___cudaLaunchKernel_v13000,
                    CUPTI_RUNTIME_TRACE_CBID___cudaLaunchKernel_ptsz_v13000})
    EXPECT_EQ(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, cbid, 1, 2, 1))->name, "cudaLaunchKernel") << cbid;
  EXPECT_EQ(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyAsync_ptsz_v7000, 1, 2, 1))->name,
            "cudaMemcpyAsync");
  EXPECT_EQ(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaMemsetAsync_v3020, 1, 2, 1))->name,
            "cudaMemsetAsync");
  EXPECT_EQ(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernelExC_v11060, 1, 2, 1))->name,
            "cudaLaunchKernelExC");
  EXPECT_EQ(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaStreamSynchronize_v3020, 1, 2, 1))->name,
            "cudaStreamSynchronize");

  const auto nccl = api_call_record(api_activity(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx, 5, 9, 7));
  ASSERT_TRUE(nccl.has_value());
  EXPECT_TRUE(nccl->driver);
  EXPECT_EQ(nccl->name, "cuLaunchKernelEx");
  EXPECT_EQ(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel, 5, 9, 7))->name,
            "cuLaunchKernel");

  // A call outside the list (someone enabled the whole kind) keeps its id; an untimed one is dropped.
  EXPECT_EQ(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaGetDevice_v3020, 1, 2, 1))->name,
            "runtime API " + std::to_string(CUPTI_RUNTIME_TRACE_CBID_cudaGetDevice_v3020));
  EXPECT_FALSE(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000, 0, 0, 1)));
  EXPECT_FALSE(api_call_record(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000, 9, 3, 1)));
}

TEST(CuptiParser, KeepsOnlyTracedApiCallsWhenTheWholeRuntimeKindIsOn) {
  // The fallback where CUPTI refuses the per-API switches: every runtime call arrives.
  ActivityParser parser;
  parser.add(as_activity(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaGetDevice_v3020, 1, 2, 1)));
  parser.add(as_activity(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000, 3, 4, 2)));
  parser.add(as_activity(api_activity(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuCtxGetDevice, 5, 6, 3)));
  EXPECT_EQ(parser.api_call_count(), 1u);
  const auto activity = parser.take();
  ASSERT_EQ(activity.api_calls.size(), 1u);
  EXPECT_EQ(activity.api_calls[0].name, "cudaLaunchKernel");
  EXPECT_EQ(activity.untimed_records, 0u) << "untraced calls are left out, not counted as untimed";
}

TEST(CuptiParser, WholeKindsLinkEveryKernelMemcpyAndMemsetToItsLaunch) {
  // The in-process collector's case (both whole kinds on), as one step of a LibTorch trainer records
  // it: PyTorch's own kernel through the runtime; cuBLASLt's GEMM and cuDNN's attention through
  // cuLaunchKernelEx; a memset by a library through the driver; and driver and runtime calls that
  // launch nothing, which must not reach the trace.
  ActivityParser parser;
  auto launch = [&](CUpti_ActivityKind kind, CUpti_CallbackId cbid, std::uint64_t t, std::uint32_t corr) {
    parser.add(as_activity(api_activity(kind, cbid, t, t + 5, corr)));
  };
  auto device_kernel = [&](const char* name, std::uint64_t t, std::uint32_t corr) {
    KernelActivity k = kernel(t, t + 100, name);
    k.correlationId = corr;
    parser.add(as_activity(k));
  };
  launch(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaGetDevice_v3020, 5, 1);
  launch(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID___cudaLaunchKernel_v13000, 10, 2);
  device_kernel("_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_11FillFunctorIfEESt5arrayIPcLm1EEEEviT0_T1_", 1000, 2);
  launch(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuCtxGetCurrent, 15, 3);
  launch(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx, 20, 4);
  device_kernel("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", 1100, 4);
  launch(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx_ptsz, 30, 5);
  device_kernel("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64_4x1x1_cga1x1x1_kernel0_0",
                1200, 5);
  launch(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuMemsetD32Async, 40, 6);
  parser.add(as_activity(memset_activity(1300, 1310, 4096, 6)));
  launch(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoDAsync_v2, 50, 7);
  MemcpyActivity copy = memcpy_activity(CUPTI_ACTIVITY_MEMCPY_KIND_HTOD, 1400, 1450, 64);
  copy.correlationId = 7;
  parser.add(as_activity(copy));
  // Should CUPTI also record the driver call inside a runtime launch, under the runtime call's id.
  launch(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel, 11, 2);

  const RankActivity a = parser.take();
  std::vector<std::string> names;
  for (const auto& c : a.api_calls) names.push_back(c.name);
  EXPECT_EQ(names, (std::vector<std::string>{"cudaLaunchKernel", "cuLaunchKernelEx", "cuLaunchKernelEx",
                                             "cuMemsetD32Async", "cuMemcpyHtoDAsync"}));
  std::set<std::uint32_t> launched;
  for (const auto& c : a.api_calls) EXPECT_TRUE(launched.insert(c.correlation).second) << "one record per launch";
  for (const auto& k : a.kernels) EXPECT_TRUE(launched.count(k.correlation)) << k.name;
  for (const auto& m : a.memcpys) EXPECT_TRUE(launched.count(m.correlation));
  for (const auto& m : a.memsets) EXPECT_TRUE(launched.count(m.correlation));
  EXPECT_EQ(a.kernels.size(), 3u);
  EXPECT_TRUE(a.api_calls[1].driver);
  EXPECT_FALSE(a.api_calls[0].driver) << "the runtime record stands for a launch both APIs recorded";
}

TEST(CuptiRecords, TracedApiListsCoverLaunchesCopiesAndWaitsOnly) {
  std::set<std::string> runtime, driver;
  std::set<CUpti_CallbackId> ids;
  for (const TracedApi& api : traced_runtime_apis()) {
    runtime.insert(api.name);
    EXPECT_TRUE(ids.insert(api.cbid).second) << "listed twice: " << api.name;
    const std::string n = api.name;
    EXPECT_TRUE(n.find("Launch") != std::string::npos || n.starts_with("cudaMemcpy") || n.starts_with("cudaMemset") ||
                n.find("Synchronize") != std::string::npos || n == "cudaStreamWaitEvent")
        << n;
    EXPECT_EQ(n.find("_v"), std::string::npos) << n;
    EXPECT_EQ(n.find("_pt"), std::string::npos) << n;
  }
  std::set<CUpti_CallbackId> driver_ids;
  for (const TracedApi& api : traced_driver_apis()) {
    driver.insert(api.name);
    EXPECT_TRUE(driver_ids.insert(api.cbid).second) << "listed twice: " << api.name;
    const std::string n = api.name;
    EXPECT_TRUE(n.starts_with("cuLaunch") || n == "cuGraphLaunch" || n.starts_with("cuMemcpy") ||
                n.starts_with("cuMemset"))
        << n;
    EXPECT_EQ(n.find("_v"), std::string::npos) << n;
    EXPECT_EQ(n.find("_pt"), std::string::npos) << n;
  }
  for (const char* n : {"cudaLaunchKernel", "cudaLaunchKernelExC", "cudaLaunchCooperativeKernel", "cudaGraphLaunch",
                        "cudaMemcpy", "cudaMemcpyAsync", "cudaMemcpyPeerAsync", "cudaMemset", "cudaMemsetAsync",
                        "cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaStreamWaitEvent"})
    EXPECT_TRUE(runtime.count(n)) << n;
  for (const char* n : {"cuLaunchKernel", "cuLaunchKernelEx", "cuLaunchCooperativeKernel", "cuGraphLaunch", "cuMemcpy",
                        "cuMemcpyAsync", "cuMemcpyHtoDAsync", "cuMemcpyDtoHAsync", "cuMemcpyDtoDAsync", "cuMemcpyPeerAsync",
                        "cuMemsetD8Async", "cuMemsetD32Async", "cuMemsetD2D32Async"})
    EXPECT_TRUE(driver.count(n)) << n;
  // The names as cuda.h spells the calls (cuMemcpyHtoDAsync is cuMemcpyHtoDAsync_v2 underneath).
  std::map<CUpti_CallbackId, std::string> by_id;
  for (const TracedApi& api : traced_driver_apis()) by_id[api.cbid] = api.name;
  EXPECT_EQ(by_id[CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoDAsync_v2_ptsz], "cuMemcpyHtoDAsync");
  EXPECT_EQ(by_id[CUPTI_DRIVER_TRACE_CBID_cuMemsetD32_v2], "cuMemsetD32");
  EXPECT_EQ(by_id.count(CUPTI_DRIVER_TRACE_CBID_cuMemcpyHtoDAsync), 0u) << "the pre-v2 entry point cuda.h no longer names";
}

TEST(CuptiRecords, LaunchSwitchFromTheEnvironment) {
  const char* name = "DDPBENCH_PROFILE_LAUNCHES";
  ::unsetenv(name);
  EXPECT_TRUE(CollectorOptions::from_env().api_calls) << "on by default";
  ::setenv(name, "0", 1);
  EXPECT_FALSE(CollectorOptions::from_env().api_calls);
  ::setenv(name, "1", 1);
  EXPECT_TRUE(CollectorOptions::from_env().api_calls);
  ::setenv(name, "off", 1);
  EXPECT_THROW(CollectorOptions::from_env(), UsageError);
  ::unsetenv(name);
}

// --- NVTX markers ----------------------------------------------------------------------------

TEST(CuptiMarkers, StartEndPairIntoARange) {
  MarkerPairer p;
  p.add(start_marker(1, 100, 11, "step"));
  EXPECT_TRUE(p.take().empty()) << "open until its END";
  EXPECT_EQ(p.open_ranges(), 1u);
  p.add(end_marker(1, 900, 11));
  const auto ranges = p.take();
  ASSERT_EQ(ranges.size(), 1u);
  expect_range(ranges[0], "step", 100, 900, 11);
  EXPECT_EQ(p.open_ranges(), 0u);
  EXPECT_TRUE(p.take().empty()) << "take moves the ranges out";
}

TEST(CuptiMarkers, NestedRangesOnOneThread) {
  MarkerPairer p;
  p.add(start_marker(1, 100, 11, "step"));
  p.add(start_marker(2, 110, 11, "forward"));
  p.add(end_marker(2, 300, 11));
  p.add(start_marker(3, 310, 11, "backward"));
  p.add(start_marker(4, 400, 11, "allreduce"));
  p.add(end_marker(4, 450, 11));
  p.add(end_marker(3, 600, 11));
  p.add(end_marker(1, 700, 11));
  const auto ranges = p.take();
  ASSERT_EQ(ranges.size(), 4u);
  // In order of completion: innermost first.
  expect_range(ranges[0], "forward", 110, 300, 11);
  expect_range(ranges[1], "allreduce", 400, 450, 11);
  expect_range(ranges[2], "backward", 310, 600, 11);
  expect_range(ranges[3], "step", 100, 700, 11);
}

TEST(CuptiMarkers, InterleavedThreadsKeepTheirOwnRanges) {
  MarkerPairer p;
  p.add(start_marker(1, 100, 11, "step"));
  p.add(start_marker(2, 120, 22, "data"));
  p.add(start_marker(3, 130, 11, "forward"));
  p.add(end_marker(2, 140, 22));
  p.add(start_marker(4, 150, 22, "data"));
  p.add(end_marker(3, 160, 11));
  p.add(end_marker(1, 170, 11));
  p.add(end_marker(4, 180, 22));
  const auto ranges = p.take();
  ASSERT_EQ(ranges.size(), 4u);
  expect_range(ranges[0], "data", 120, 140, 22);
  expect_range(ranges[1], "forward", 130, 160, 11);
  expect_range(ranges[2], "step", 100, 170, 11);
  expect_range(ranges[3], "data", 150, 180, 22);
}

TEST(CuptiMarkers, EndBeforeStartFromAnotherThreadsBuffer) {
  // A start/end range ended on another thread: that thread's buffer may be delivered first.
  MarkerPairer p;
  p.add(end_marker(9, 500, 33));
  EXPECT_EQ(p.unmatched_ends(), 1u);
  p.add(start_marker(9, 200, 11, "prefetch"));
  const auto ranges = p.take();
  ASSERT_EQ(ranges.size(), 1u);
  expect_range(ranges[0], "prefetch", 200, 500, 11);
  EXPECT_EQ(p.unmatched_ends(), 0u);
}

TEST(CuptiMarkers, UnmatchedEndAndPointMarkersIgnored) {
  MarkerPairer p;
  p.add(end_marker(77, 100, 11));
  p.add(marker(CUPTI_ACTIVITY_FLAG_MARKER_INSTANTANEOUS, 78, 150, 11, "checkpoint"));
  p.add(start_marker(79, 200, 11, "optimizer"));
  p.add(end_marker(79, 250, 11));
  const auto ranges = p.take();
  ASSERT_EQ(ranges.size(), 1u);
  expect_range(ranges[0], "optimizer", 200, 250, 11);
  EXPECT_EQ(p.unmatched_ends(), 1u);
  EXPECT_EQ(p.open_ranges(), 0u);
}

TEST(CuptiMarkers, ThreadOnlyFromThreadObjects) {
  MarkerPairer p;
  MarkerActivity s = start_marker(1, 10, 11, "x");
  s.objectKind = CUPTI_ACTIVITY_OBJECT_STREAM;
  s.objectId.dcs.deviceId = 0;
  s.objectId.dcs.contextId = 1;
  s.objectId.dcs.streamId = 2;
  p.add(s);
  p.add(end_marker(1, 20, 11));
  const auto ranges = p.take();
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(ranges[0].thread, 0u);
}

// --- the parser ------------------------------------------------------------------------------

TEST(CuptiParser, DispatchesEveryKindSortsAndCounts) {
  ActivityParser parser;
  // Out of order, as buffers of several threads arrive.
  const KernelActivity late = kernel(5000, 6000, "_Z6kernelPfi", 1);
  const KernelActivity early = kernel(1000, 2000, "ncclDevKernel_Generic", 1);
  const KernelActivity untimed = kernel(0, 0, "_Z6kernelPfi", 1);
  const MemcpyActivity copy = memcpy_activity(CUPTI_ACTIVITY_MEMCPY_KIND_HTOD, 300, 400, 64);
  const MemsetActivity set = memset_activity(50, 60, 16, 0);
  const MemoryActivity free_ = memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_RELEASE,
                                               CUPTI_ACTIVITY_MEMORY_KIND_DEVICE, 900, 0x10, 256);
  const MemoryActivity alloc = memory_activity(CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION,
                                               CUPTI_ACTIVITY_MEMORY_KIND_DEVICE, 100, 0x10, 256);
  OverheadActivity overhead{};
  overhead.kind = CUPTI_ACTIVITY_KIND_OVERHEAD;
  overhead.start = 10;
  overhead.end = 35;
  DeviceActivity dev0{};
  dev0.kind = CUPTI_ACTIVITY_KIND_DEVICE;
  dev0.id = 0;
  dev0.name = "NVIDIA A100-SXM4-40GB";
  DeviceActivity dev1{};
  dev1.kind = CUPTI_ACTIVITY_KIND_DEVICE;
  dev1.id = 1;
  dev1.name = "NVIDIA H100 80GB HBM3";
  CUpti_Activity unknown{};
  unknown.kind = CUPTI_ACTIVITY_KIND_CONTEXT;

  parser.add(as_activity(dev0));
  parser.add(as_activity(dev1));
  parser.add(as_activity(late));
  parser.add(as_activity(early));
  parser.add(as_activity(untimed));
  parser.add(as_activity(copy));
  parser.add(as_activity(set));
  parser.add(as_activity(free_));
  parser.add(as_activity(alloc));
  parser.add(as_activity(overhead));
  parser.add(as_activity(overhead));
  parser.add(unknown);
  parser.add(as_activity(start_marker(1, 700, 11, "step")));
  parser.add(as_activity(start_marker(2, 710, 11, "forward")));
  parser.add(as_activity(end_marker(2, 720, 11)));
  parser.add(as_activity(end_marker(1, 730, 11)));
  parser.add(as_activity(start_marker(3, 740, 11, "step")));  // still open at take
  parser.add(as_activity(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000, 4000, 4100, 42)));
  parser.add(as_activity(api_activity(CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx, 500, 600, 43)));
  parser.add(as_activity(api_activity(CUPTI_ACTIVITY_KIND_RUNTIME, CUPTI_RUNTIME_TRACE_CBID_cudaMemcpyAsync_v3020, 0, 0, 44)));
  parser.add_dropped(3);

  RankActivity a = parser.take();
  ASSERT_EQ(a.kernels.size(), 2u);
  EXPECT_EQ(a.kernels[0].name, "ncclDevKernel_Generic");
  EXPECT_EQ(a.kernels[1].name, "kernel(float*, int)");
  EXPECT_EQ(a.untimed_records, 2u) << "the untimed kernel and the untimed memcpy call";
  ASSERT_EQ(a.api_calls.size(), 2u);
  EXPECT_EQ(a.api_calls[0].name, "cuLaunchKernelEx");  // sorted by start
  EXPECT_TRUE(a.api_calls[0].driver);
  EXPECT_EQ(a.api_calls[1].name, "cudaLaunchKernel");
  EXPECT_EQ(a.api_calls[1].correlation, 42u);
  ASSERT_EQ(a.memcpys.size(), 1u);
  EXPECT_EQ(a.memcpys[0].kind, "HtoD");
  ASSERT_EQ(a.memsets.size(), 1u);
  EXPECT_EQ(a.memsets[0].bytes, 16u);
  ASSERT_EQ(a.memory.size(), 2u);
  EXPECT_TRUE(a.memory[0].allocation);
  EXPECT_FALSE(a.memory[1].allocation);
  EXPECT_EQ(a.overhead_records, 2u);
  EXPECT_EQ(a.overhead_ns, 50u);
  EXPECT_EQ(a.dropped_records, 3u);
  EXPECT_EQ(a.device_name, "NVIDIA H100 80GB HBM3") << "the device the kernels ran on";
  ASSERT_EQ(a.ranges.size(), 2u);
  expect_range(a.ranges[0], "step", 700, 730, 11);  // sorted by start: the parent first
  expect_range(a.ranges[1], "forward", 710, 720, 11);

  // The open range completes in a later take; everything else starts over.
  parser.add(as_activity(end_marker(3, 800, 11)));
  RankActivity b = parser.take();
  EXPECT_TRUE(b.kernels.empty());
  EXPECT_TRUE(b.api_calls.empty());
  EXPECT_EQ(b.dropped_records, 0u);
  EXPECT_EQ(b.overhead_records, 0u);
  ASSERT_EQ(b.ranges.size(), 1u);
  expect_range(b.ranges[0], "step", 740, 800, 11);
  EXPECT_EQ(b.device_name, "NVIDIA A100-SXM4-40GB") << "no kernels: the lowest device";
}

TEST(CuptiParser, SerialKernelKindReadsLikeConcurrent) {
  ActivityParser parser;
  KernelActivity k = kernel(1, 2, "_Z1fv");
  k.kind = CUPTI_ACTIVITY_KIND_KERNEL;
  parser.add(as_activity(k));
  const RankActivity a = parser.take();
  ASSERT_EQ(a.kernels.size(), 1u);
  EXPECT_EQ(a.kernels[0].name, "f()");
  EXPECT_TRUE(a.device_name.empty());
}

// --- buffers ---------------------------------------------------------------------------------

TEST(CuptiBufferPool, ReusesReturnedBuffersAndGrowsOnDemand) {
  BufferPool pool(4096);
  EXPECT_EQ(pool.buffer_bytes(), 4096u);
  std::uint8_t* a = pool.acquire();
  std::uint8_t* b = pool.acquire();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  EXPECT_EQ(pool.allocated(), 2u);
  EXPECT_EQ(pool.available(), 0u);
  pool.release(a);
  EXPECT_EQ(pool.available(), 1u);
  EXPECT_EQ(pool.acquire(), a) << "a returned buffer is handed out again";
  EXPECT_EQ(pool.allocated(), 2u) << "without allocating";
  std::uint8_t* c = pool.acquire();
  EXPECT_NE(c, a);
  EXPECT_NE(c, b);
  EXPECT_EQ(pool.allocated(), 3u);
  pool.release(a);
  pool.release(b);
  pool.release(c);
  EXPECT_EQ(pool.available(), 3u);
  std::set<std::uint8_t*> again = {pool.acquire(), pool.acquire(), pool.acquire()};
  EXPECT_EQ(again, (std::set<std::uint8_t*>{a, b, c}));
  EXPECT_EQ(pool.allocated(), 3u);
}

TEST(CuptiBufferPool, AlignedWritableAndDefaultSize) {
  BufferPool pool;
  EXPECT_EQ(pool.buffer_bytes(), std::size_t{8} << 20);
  for (int i = 0; i < 4; ++i) {
    std::uint8_t* buffer = pool.acquire();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer) % BufferPool::kAlignment, 0u);
    buffer[0] = 1;
    buffer[pool.buffer_bytes() - 1] = 2;
  }
  BufferPool odd(1001);
  EXPECT_EQ(odd.buffer_bytes() % BufferPool::kAlignment, 0u);
  EXPECT_GE(odd.buffer_bytes(), 1001u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(odd.acquire()) % BufferPool::kAlignment, 0u);
}

TEST(CuptiBufferPool, ForeignAndRepeatedReleasesIgnored) {
  BufferPool pool(64);
  std::uint8_t* a = pool.acquire();
  std::uint64_t foreign[8];
  pool.release(reinterpret_cast<std::uint8_t*>(foreign));
  pool.release(nullptr);
  EXPECT_EQ(pool.available(), 0u);
  pool.release(a);
  pool.release(a);
  EXPECT_EQ(pool.available(), 1u) << "one buffer must never go to CUPTI twice";
}

// --- the collector, idle (no CUPTI call is made on these paths) --------------------------------

TEST(CuptiCollectorIdle, NothingRecordedBeforeStart) {
  CuptiCollector& c = CuptiCollector::instance();
  EXPECT_EQ(&c, &CuptiCollector::instance());
  EXPECT_FALSE(c.running());
  EXPECT_FALSE(c.started_in_this_process());
  c.push_range("step");
  c.pop_range();
  c.stop();
  const RankActivity a = c.take();
  EXPECT_TRUE(a.ranges.empty());
  EXPECT_TRUE(a.kernels.empty());
}

}  // namespace
}  // namespace ddpbench::profile
