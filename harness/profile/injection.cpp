// The CUPTI collector as a CUDA injection library, so that `ddpbench profile` traces any trainer,
// the Python HF reference included, without its cooperation: the CUDA driver loads the library
// named by CUDA_INJECTION64_PATH during cuInit and calls InitializeInjection, before any work of the
// program reaches the GPU. What was recorded is written when the process exits normally, to
// $DDPBENCH_PROFILE_DIR/rank$RANK.activity.json (RANK default 0, directory default "."), in the
// document of profile/activity.h, so that the analysis reads it like the built-in trainer's.
//
// NVTX ranges of the traced program reach CUPTI only when NVTX_INJECTION64_PATH names libcupti:
// NVTX hands its calls to whichever library that variable names, and nothing otherwise. The
// launcher sets it next to CUDA_INJECTION64_PATH; without it, kernels and memory are recorded but
// no ranges.
//
// Only a normal exit (exit(), return from main, the end of a Python interpreter) writes the file: a
// rank killed by a signal or leaving through _exit leaves none, and the launcher reports it missing.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>

#include "common/error.h"
#include "common/strings.h"
#include "profile/activity.h"
#include "profile/cupti_collector.h"

namespace {

using ddpbench::profile::CuptiCollector;

struct Destination {
  int rank = 0;
  int world_size = 1;
  std::string path;
};

int env_int(const char* name, int fallback) {
  const std::string text = ddpbench::getenv_or(name, "");
  if (text.empty()) return fallback;
  const auto value = ddpbench::parse_int(text);
  if (!value || *value < 0 || *value > 1'000'000)
    throw ddpbench::UsageError(std::string(name) + "=" + text + " is not a rank count or index");
  return static_cast<int>(*value);
}

// Read at start (to refuse a bad environment before tracing anything) and again at exit, so that
// no state outlives the call besides the collector.
Destination destination_from_env() {
  Destination d;
  d.rank = env_int("RANK", 0);
  d.world_size = env_int("WORLD_SIZE", 1);
  if (d.world_size < 1 || d.rank >= d.world_size)
    throw ddpbench::UsageError("RANK=" + std::to_string(d.rank) + " does not lie in WORLD_SIZE=" +
                               std::to_string(d.world_size));
  const std::string dir = ddpbench::getenv_or("DDPBENCH_PROFILE_DIR", ".");
  d.path = (std::filesystem::path(dir.empty() ? "." : dir) / ("rank" + std::to_string(d.rank) + ".activity.json"))
               .string();
  return d;
}

void warn(const std::string& what) { std::fprintf(stderr, "ddpbench-cupti: %s\n", what.c_str()); }

void write_activity_at_exit() {
  CuptiCollector& collector = CuptiCollector::instance();
  // A child forked after cuInit runs this handler too if it exits normally; its copy of the
  // records is the parent's, and the file is the parent's to write. Not running: never started, or
  // already written by an earlier registration of this handler.
  if (!collector.running() || !collector.started_in_this_process()) return;
  try {
    try {
      collector.stop();
    } catch (const std::exception& e) {
      warn(std::string(e.what()) + " (writing what was recorded)");
    }
    const Destination d = destination_from_env();
    ddpbench::profile::RankActivity activity = collector.take();
    activity.rank = d.rank;
    activity.world_size = d.world_size;
    std::error_code ignored;  // a missing directory shows as the write's error, which names the path
    std::filesystem::create_directories(std::filesystem::path(d.path).parent_path(), ignored);
    ddpbench::write_file_atomic(d.path, ddpbench::profile::to_json(activity).dump());
    if (activity.dropped_records > 0)
      warn("rank " + std::to_string(d.rank) + ": CUPTI dropped " + std::to_string(activity.dropped_records) +
           " records (buffers full): the trace has gaps");
  } catch (const std::exception& e) {
    warn(std::string("writing the activity record failed: ") + e.what());
  }
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjection(void) {
  try {
    if (CuptiCollector::instance().running()) return 1;
    destination_from_env();
    // Its order against CUDA's own exit handlers does not matter: buffers that CUPTI flushes at
    // context teardown land in the collector, which outlives static destruction. Registered before
    // start(), so that a started collector always has its writer; unstarted, the handler does nothing.
    if (std::atexit(write_activity_at_exit) != 0) throw ddpbench::RunError("atexit refused the exit handler");
    CuptiCollector::instance().start(ddpbench::profile::CollectorOptions::from_env());
    return 1;
  } catch (const std::exception& e) {
    warn(std::string("not tracing: ") + e.what());
    return 0;
  }
}

// NVTX ranges of the profiled program (its step marker) reach CUPTI only through NVTX's own
// injection hook. Pointing NVTX_INJECTION64_PATH at a libcupti file can load a second copy of
// libcupti when the program already loaded one (PyTorch ships its own), and that copy records
// nothing. So the launcher points NVTX at this library, and this hook forwards to the libcupti
// instance that this library is bound to, the one whose activity the collector reads.
extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(const void* get_export_table) {
  using Hook = int (*)(const void*);
  void* cupti = dlopen("libcupti.so.13", RTLD_LAZY | RTLD_NOLOAD);
  if (cupti == nullptr) cupti = dlopen("libcupti.so", RTLD_LAZY | RTLD_NOLOAD);
  if (cupti == nullptr) {
    std::fprintf(stderr, "ddpbench-cupti: no libcupti loaded; NVTX ranges are not recorded\n");
    return 0;
  }
  auto hook = reinterpret_cast<Hook>(dlsym(cupti, "InitializeInjectionNvtx2"));
  if (hook == nullptr) {
    std::fprintf(stderr, "ddpbench-cupti: libcupti has no InitializeInjectionNvtx2; NVTX ranges are not recorded\n");
    return 0;
  }
  return hook(get_export_table);
}
