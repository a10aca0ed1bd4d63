// The CUPTI Activity API collector: kernels, memcpy, memset, device memory allocations and NVTX
// ranges of this process, as RankActivity records on CUPTI's clock. Used in-process by the built-in
// trainer (`--profile`) and by the injection library (`CUDA_INJECTION64_PATH`) for other trainers.
//
// The conversion from CUPTI's records to ours (ActivityParser and the *_record functions) and the
// buffer pool make no CUPTI calls, so that the CPU tests exercise them with hand-built records;
// only CuptiCollector talks to libcupti.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <sys/types.h>

#include <cupti.h>

#include "profile/activity.h"

namespace ddpbench::profile {

// The record versions that the CUPTI of this toolkit (CUDA 13.0, CUPTI_API_VERSION 130001)
// writes. A record's layout is fixed by the libcupti that writes it, not by the header we compiled
// against: the libcupti loaded at run time must be the one of this toolkit.
using KernelActivity = CUpti_ActivityKernel10;         // CONCURRENT_KERNEL (and KERNEL)
using MemcpyActivity = CUpti_ActivityMemcpy6;          // MEMCPY
using PeerMemcpyActivity = CUpti_ActivityMemcpyPtoP4;  // MEMCPY2
using MemsetActivity = CUpti_ActivityMemset4;          // MEMSET
using MemoryActivity = CUpti_ActivityMemory4;          // MEMORY2
using MarkerActivity = CUpti_ActivityMarker2;          // MARKER
using OverheadActivity = CUpti_ActivityOverhead3;      // OVERHEAD
using DeviceActivity = CUpti_ActivityDevice5;          // DEVICE
using ApiActivity = CUpti_ActivityAPI;                 // RUNTIME and DRIVER

// The CUDA API calls recorded as ApiCallRecords: those that put work on the device (kernel, graph,
// memcpy and memset launches; a kernel's record carries the correlation id of the call that launched
// it) and those that wait for it (device, stream and event synchronization, stream waits). Both APIs:
// PyTorch's own kernels come through the runtime (cudaLaunchKernel), but cuBLAS(Lt)'s GEMMs, cuDNN's
// attention and NCCL's collectives through the driver (cuLaunchKernelEx), so a trace of runtime calls
// alone leaves those kernels without a launch. Where the per-API switches
// (cuptiActivityEnable{Runtime,Driver}Api) work, only these are enabled: PyTorch calls cudaGetDevice
// and friends thousands of times a step, and recording those would cost time and buffers for
// nothing. name is the function's documented name, without the per-thread-stream suffix (_ptsz,
// _ptds) or version suffix (_v2), and with CUDA 13's __cudaLaunchKernel (what <<<...>>> compiles to)
// as cudaLaunchKernel, the names Holistic Trace Analysis keys its launch statistics on.
struct TracedApi {
  CUpti_CallbackId cbid;
  const char* name;
};
std::span<const TracedApi> traced_runtime_apis();
std::span<const TracedApi> traced_driver_apis();

// What the collector records besides the kinds it always needs.
struct CollectorOptions {
  // The API calls above: host-side launch and wait records (Chrome trace `cuda_runtime` events,
  // what HTA's host-wait idle, launch statistics and critical path need). Their cost is a record per
  // launch.
  bool api_calls = true;
  // The whole RUNTIME and DRIVER kinds, filtered to the traced calls when parsed, rather than the
  // per-API switches. In the trainer's own process (LibTorch loaded) CUPTI 13.0 accepts the per-API
  // switches and then records nothing (H200, 2026-11-29: 42,344 kernels, 0 launch calls), while the
  // same switches work in an injected process. The DRIVER kind is needed beside the RUNTIME one: with
  // the runtime kind alone, 5,278 kernels a trace (cuBLAS's nvjet/cutlass GEMMs, cuDNN's SDPA) had
  // no launch, and HTA dropped them (H200, 2026-11-29). Kineto enables both kinds the same way.
  bool whole_api_kinds = false;
  // DDPBENCH_PROFILE_LAUNCHES: "0" switches the API-call records off, "1" or unset leaves them on;
  // UsageError for anything else.
  static CollectorOptions from_env();
};

// Itanium-ABI demangling; names that are not mangled C++ symbols (extern "C" kernels) unchanged.
std::string demangle(const char* name);

// Demangles each distinct kernel name once: a training step launches the same few hundred
// kernels over and over, and __cxa_demangle costs microseconds per call.
class Demangler {
 public:
  const std::string& operator()(const char* name);

 private:
  std::unordered_map<std::string, std::string> cache_;
};

// "HtoD", "DtoH", "DtoD", "PtoP", ...; "Unknown" for a kind this build does not know.
const char* memcpy_kind_name(std::uint32_t copy_kind);

// nullopt where CUPTI could not time the operation (start and end 0, or end before start).
std::optional<KernelRecord> kernel_record(const KernelActivity& k, Demangler& demangler);
std::optional<KernelRecord> kernel_record(const KernelActivity& k);
std::optional<MemcpyRecord> memcpy_record(const MemcpyActivity& m);
std::optional<MemcpyRecord> memcpy_record(const PeerMemcpyActivity& m);
std::optional<MemsetRecord> memset_record(const MemsetActivity& m);
// nullopt for host memory (pageable, pinned) and for an operation that is neither an allocation
// nor a release: the timeline is of device memory.
std::optional<MemoryRecord> memory_record(const MemoryActivity& m);
// nullopt where untimed. A call this build does not list in traced_*_apis() (the whole kind was
// enabled by someone else) keeps its cbid and is named "runtime API <cbid>" / "driver API <cbid>".
std::optional<ApiCallRecord> api_call_record(const ApiActivity& a);

// Pairs NVTX START and END marker records by id into ranges. The id, not a per-thread stack, is
// what pairs them: nested ranges and ranges of interleaved threads then need no special case, and
// an END may arrive before its START (CUPTI keeps a buffer per thread, and a start/end range may
// end on another thread than it began), so an early END waits for its START.
class MarkerPairer {
 public:
  void add(const MarkerActivity& m);
  // The ranges completed so far, moved out; open ranges and early ends stay.
  std::vector<RangeRecord> take();
  std::size_t open_ranges() const { return open_.size(); }
  std::size_t unmatched_ends() const { return early_ends_.size(); }

 private:
  struct Open {
    std::uint64_t start = 0;
    std::uint64_t thread = 0;
    std::string name;
  };
  std::unordered_map<std::uint32_t, Open> open_;
  std::unordered_map<std::uint32_t, std::uint64_t> early_ends_;  // id -> end timestamp
  std::vector<RangeRecord> done_;
};

// Turns CUPTI activity records, of any kind, into one RankActivity.
class ActivityParser {
 public:
  // record must be the full record of its kind (as cuptiActivityGetNextRecord hands it out).
  void add(const CUpti_Activity& record);
  void add_dropped(std::uint64_t n) { activity_.dropped_records += n; }
  std::size_t kernel_count() const { return activity_.kernels.size(); }
  std::size_t api_call_count() const { return activity_.api_calls.size(); }
  // Everything parsed so far, sorted by time; device_name from the device the kernels ran on.
  // Ranges still open (a START without its END yet) are left for a later take. Should CUPTI record
  // a driver call made inside a runtime call (the two then carry one correlation id), the runtime
  // record stands for the launch and the driver one is left out: each launch keeps one record.
  RankActivity take();

 private:
  RankActivity activity_;
  MarkerPairer markers_;
  Demangler demangler_;
  std::unordered_map<std::uint32_t, std::string> device_names_;
};

// CUPTI's activity buffers. bufferRequested runs on the thread that produced the activity (in the
// middle of a kernel launch): handing out a returned buffer keeps it to a lock and a pop, with no
// 8 MiB allocation on the training thread once the pool is warm.
class BufferPool {
 public:
  static constexpr std::size_t kBufferBytes = std::size_t{8} << 20;
  static constexpr std::size_t kAlignment = 8;  // what CUPTI requires of an activity buffer

  explicit BufferPool(std::size_t buffer_bytes = kBufferBytes);
  std::size_t buffer_bytes() const { return buffer_bytes_; }

  // A free buffer, or a new one; throws std::bad_alloc.
  std::uint8_t* acquire();
  // Makes a buffer from acquire() available again; a pointer the pool never handed out is ignored.
  void release(std::uint8_t* buffer);

  std::size_t allocated() const;  // buffers the pool owns
  std::size_t available() const;  // of which free

 private:
  std::size_t buffer_bytes_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<std::uint64_t[]>> owned_;  // uint64_t elements: 8-byte aligned
  std::vector<std::uint8_t*> free_;
};

class CuptiCollector {
 public:
  // The one collector of this process (see the definition for why there can only be one).
  static CuptiCollector& instance();

  CuptiCollector(const CuptiCollector&) = delete;
  CuptiCollector& operator=(const CuptiCollector&) = delete;

  // Registers the buffer callbacks and enables the activity kinds; RunError naming the CUPTI call
  // and its result on failure (nothing left enabled), or when already running. API calls that CUPTI
  // refuses to record are left out (stop() warns when kernels come without launches) rather than
  // failing the run.
  void start(const CollectorOptions& options = {});
  // Forces out every buffered record (synchronize the device first, or records of unfinished work
  // come without timestamps) and disables the kinds. Records parsed so far stay available to
  // take() even when stop() throws (a CUPTI call failed, or a buffer could not be read).
  void stop();
  bool running() const { return running_.load(std::memory_order_relaxed); }
  // True in the process that called start(), false in a child forked after it.
  bool started_in_this_process() const;

  // The records parsed so far, moved out. rank and world_size are left for the caller to set.
  RankActivity take();

  // Nanoseconds on the clock of CUPTI's records (cuptiGetTimestamp).
  static std::uint64_t timestamp();

  // Host-side ranges of the calling thread (the built-in trainer's phases), on CUPTI's clock,
  // thread = gettid() as in NVTX marker records. Ignored while not running; a pop without a push
  // does nothing.
  void push_range(const char* name);
  void pop_range();

 private:
  CuptiCollector() = default;

  static void CUPTIAPI on_buffer_requested(std::uint8_t** buffer, std::size_t* size, std::size_t* max_records);
  static void CUPTIAPI on_buffer_completed(CUcontext context, std::uint32_t stream, std::uint8_t* buffer,
                                           std::size_t size, std::size_t valid_size);
  void parse_buffer(std::uint8_t* buffer, std::size_t valid_size);
  void disable_enabled(std::string* first_error);
  bool enable_api_calls(std::uint8_t enable);

  BufferPool pool_;

  std::mutex control_mutex_;  // start / stop
  std::vector<CUpti_ActivityKind> enabled_;
  std::atomic<bool> api_calls_enabled_{false};  // the per-API switches are on (to be switched off)
  std::string api_calls_mode_ = "off";           // per-API, whole API kinds, refused by CUPTI, off
  std::atomic<bool> running_{false};
  std::atomic<pid_t> pid_{0};

  std::mutex parse_mutex_;
  ActivityParser parser_;
  std::string callback_error_;  // first failure inside a buffer callback, reported by stop()

  struct OpenRange {
    std::string name;
    std::uint64_t start = 0;
  };
  std::mutex ranges_mutex_;  // apart from parse_mutex_: a phase boundary never waits on a buffer parse
  std::unordered_map<std::uint64_t, std::vector<OpenRange>> open_ranges_;  // by thread
  std::vector<RangeRecord> host_ranges_;
};

}  // namespace ddpbench::profile
