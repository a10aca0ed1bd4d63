#include "results/fingerprint.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <dlfcn.h>
#include <optional>
#include <sched.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "common/error.h"
#include "common/strings.h"

// Set by CMake; the defaults let this file compile on its own (tests, quick builds).
#ifndef DDPBENCH_VERSION
#define DDPBENCH_VERSION "0.0.0"
#endif
// The commit the binary is built from, with "-dirty" for uncommitted changes at build time
// (cmake/build_info.cmake); "unknown" where the source was no git checkout.
#if __has_include("build_info.h")
#include "build_info.h"
#endif
#ifndef DDPBENCH_BUILD_COMMIT
#define DDPBENCH_BUILD_COMMIT "unknown"
#endif
#ifndef DDPBENCH_BUILD_SOURCE_DIGEST
#define DDPBENCH_BUILD_SOURCE_DIGEST "unknown"
#endif

namespace ddpbench::results {
namespace {

// --- NVML, declared here rather than included: the build machines have no nvml.h, and the library
// is loaded at run time so that the same binary runs (GPU facts empty) where there is no driver.
// Layouts and values follow nvml.h of CUDA 12/13.
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
constexpr nvmlReturn_t NVML_SUCCESS = 0;
constexpr int NVML_FEATURE_ENABLED = 1;
constexpr int NVML_NVLINK_DEVICE_TYPE_SWITCH = 2;
constexpr unsigned NVML_NVLINK_MAX_LINKS = 18;
constexpr unsigned kNvmlStringSize = 96;  // >= every NVML name/uuid/version buffer size

struct nvmlPciInfo_t {
  char busIdLegacy[16];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pciDeviceId;
  unsigned int pciSubSystemId;
  char busId[32];
};

struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

// Owns the dlopen handle and the nvmlInit; every function pointer may be null when an old driver
// lacks it, and each use checks.
class Nvml {
 public:
  Nvml() {
    lib_ = ::dlopen("libnvidia-ml.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!lib_) return;
    load(init_, "nvmlInit_v2");
    load(shutdown_, "nvmlShutdown");
    load(driver_version, "nvmlSystemGetDriverVersion");
    load(cuda_driver_version, "nvmlSystemGetCudaDriverVersion_v2");
    if (!cuda_driver_version) load(cuda_driver_version, "nvmlSystemGetCudaDriverVersion");
    load(device_count, "nvmlDeviceGetCount_v2");
    load(handle_by_index, "nvmlDeviceGetHandleByIndex_v2");
    load(name, "nvmlDeviceGetName");
    load(uuid, "nvmlDeviceGetUUID");
    load(pci_info, "nvmlDeviceGetPciInfo_v3");
    load(memory_info, "nvmlDeviceGetMemoryInfo");
    load(nvlink_state, "nvmlDeviceGetNvLinkState");
    load(nvlink_remote_pci, "nvmlDeviceGetNvLinkRemotePciInfo_v2");
    load(nvlink_remote_type, "nvmlDeviceGetNvLinkRemoteDeviceType");
    load(common_ancestor, "nvmlDeviceGetTopologyCommonAncestor");
    initialized_ = init_ && shutdown_ && init_() == NVML_SUCCESS;
  }
  ~Nvml() {
    if (initialized_) shutdown_();
    if (lib_) ::dlclose(lib_);
  }
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  bool ok() const { return initialized_; }

  nvmlReturn_t (*driver_version)(char*, unsigned) = nullptr;
  nvmlReturn_t (*cuda_driver_version)(int*) = nullptr;
  nvmlReturn_t (*device_count)(unsigned*) = nullptr;
  nvmlReturn_t (*handle_by_index)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*pci_info)(nvmlDevice_t, nvmlPciInfo_t*) = nullptr;
  nvmlReturn_t (*memory_info)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*nvlink_state)(nvmlDevice_t, unsigned, int*) = nullptr;
  nvmlReturn_t (*nvlink_remote_pci)(nvmlDevice_t, unsigned, nvmlPciInfo_t*) = nullptr;
  nvmlReturn_t (*nvlink_remote_type)(nvmlDevice_t, unsigned, int*) = nullptr;
  nvmlReturn_t (*common_ancestor)(nvmlDevice_t, nvmlDevice_t, int*) = nullptr;

 private:
  template <typename Fn>
  void load(Fn& fn, const char* symbol) {
    fn = reinterpret_cast<Fn>(::dlsym(lib_, symbol));
  }

  void* lib_ = nullptr;
  bool initialized_ = false;
  nvmlReturn_t (*init_)() = nullptr;
  nvmlReturn_t (*shutdown_)() = nullptr;
};

// A string from a fixed NVML buffer, or "" when the call is missing or fails.
template <typename Fn, typename... Args>
std::string nvml_string(Fn fn, Args... args) {
  if (!fn) return {};
  char buf[kNvmlStringSize] = {};
  if (fn(args..., buf, kNvmlStringSize) != NVML_SUCCESS) return {};
  buf[kNvmlStringSize - 1] = '\0';
  return buf;
}

// NVML writes the domain with 8 digits in v3 PCI info and 4 in the legacy field, and the case of
// hex digits has varied between drivers; compare bus ids only in this form.
std::string normalize_bus_id(const std::string& bus_id) {
  std::string s = bus_id;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  auto colon = s.find(':');
  if (colon != std::string::npos && colon < 8) s.insert(0, 8 - colon, '0');
  return s;
}

struct GpuFacts {
  std::vector<GpuInfo> gpus;
  std::vector<std::vector<std::string>> links;
  std::string driver;
  std::string cuda_driver;
};

GpuFacts collect_gpus() {
  GpuFacts facts;
  Nvml nvml;
  if (!nvml.ok()) return facts;

  facts.driver = nvml_string(nvml.driver_version);
  int cuda = 0;
  if (nvml.cuda_driver_version && nvml.cuda_driver_version(&cuda) == NVML_SUCCESS && cuda > 0)
    facts.cuda_driver = std::to_string(cuda / 1000) + "." + std::to_string(cuda % 1000 / 10);

  unsigned count = 0;
  if (!nvml.device_count || !nvml.handle_by_index || nvml.device_count(&count) != NVML_SUCCESS)
    return facts;

  std::vector<nvmlDevice_t> handles;
  std::vector<GpuLinkView> views;
  for (unsigned i = 0; i < count; ++i) {
    nvmlDevice_t dev = nullptr;
    // A GPU NVML cannot open (fallen off the bus, no permission) is left out rather than
    // recorded half-empty; its absence shows in the count.
    if (nvml.handle_by_index(i, &dev) != NVML_SUCCESS) continue;
    GpuInfo gpu;
    gpu.index = static_cast<int>(i);
    gpu.name = nvml_string(nvml.name, dev);
    gpu.uuid = nvml_string(nvml.uuid, dev);
    nvmlPciInfo_t pci{};
    if (nvml.pci_info && nvml.pci_info(dev, &pci) == NVML_SUCCESS) {
      pci.busId[sizeof pci.busId - 1] = '\0';
      gpu.pci_bus_id = pci.busId;
    }
    nvmlMemory_t mem{};
    if (nvml.memory_info && nvml.memory_info(dev, &mem) == NVML_SUCCESS)
      gpu.memory_gib = static_cast<double>(mem.total) / (1024.0 * 1024.0 * 1024.0);

    GpuLinkView view;
    view.bus_id = gpu.pci_bus_id;
    for (unsigned link = 0; nvml.nvlink_state && link < NVML_NVLINK_MAX_LINKS; ++link) {
      int active = 0;
      // PCIe-only GPUs and links past the GPU's own count answer with an error: not active.
      if (nvml.nvlink_state(dev, link, &active) != NVML_SUCCESS || active != NVML_FEATURE_ENABLED)
        continue;
      ++gpu.nvlinks_active;
      int remote_type = -1;
      if (nvml.nvlink_remote_type && nvml.nvlink_remote_type(dev, link, &remote_type) == NVML_SUCCESS &&
          remote_type == NVML_NVLINK_DEVICE_TYPE_SWITCH) {
        ++view.nvswitch_links;
        continue;
      }
      nvmlPciInfo_t remote{};
      if (nvml.nvlink_remote_pci && nvml.nvlink_remote_pci(dev, link, &remote) == NVML_SUCCESS) {
        remote.busId[sizeof remote.busId - 1] = '\0';
        view.nvlink_remote_bus_ids.emplace_back(remote.busId);
      }
    }
    handles.push_back(dev);
    views.push_back(std::move(view));
    facts.gpus.push_back(std::move(gpu));
  }

  facts.links = build_link_matrix(views, [&](int i, int j) -> std::string {
    int level = -1;
    if (!nvml.common_ancestor ||
        nvml.common_ancestor(handles[static_cast<std::size_t>(i)], handles[static_cast<std::size_t>(j)],
                             &level) != NVML_SUCCESS)
      return "?";
    return topology_level_name(level);
  });
  return facts;
}

// --- host -----------------------------------------------------------------------------------------

// /proc may be missing or unreadable in odd sandboxes; the fingerprint then just lacks the fact.
std::string read_optional(const std::string& path) {
  try {
    return read_file(path);
  } catch (const std::exception&) {
    return {};
  }
}

std::string trim(std::string s) {
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

// The value of the first "key : value" line of a /proc file, or "".
std::string proc_field(const std::string& text, const std::string& key) {
  for (const auto& line : split(text, '\n')) {
    auto colon = line.find(':');
    if (colon != std::string::npos && trim(line.substr(0, colon)) == key) return trim(line.substr(colon + 1));
  }
  return {};
}

// The CPUs this process may run on, which under Slurm or a container cpuset is fewer than the
// machine has; the set is grown for machines with more than CPU_SETSIZE CPUs.
int usable_cpus() {
  for (int n = CPU_SETSIZE; n <= (1 << 16); n *= 2) {
    cpu_set_t* set = CPU_ALLOC(n);
    if (!set) break;
    const std::size_t size = CPU_ALLOC_SIZE(n);
    CPU_ZERO_S(size, set);
    const int rc = ::sched_getaffinity(0, size, set);
    const int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    const int err = errno;
    CPU_FREE(set);
    if (rc == 0 && count > 0) return count;
    if (rc != 0 && err != EINVAL) break;
  }
  return static_cast<int>(std::thread::hardware_concurrency());
}

std::string compiler_name() {
#if defined(__clang__)
  return "clang++ " + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__) + "." +
         std::to_string(__clang_patchlevel__);
#elif defined(__GNUC__)
  return "g++ " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}


// Baked in at build time: the code that ran, whatever tree the binary runs in (a copy of the tree on
// a GPU host, a clean clone, another checkout).
std::string git_commit() { return DDPBENCH_BUILD_COMMIT; }

std::map<std::string, std::string> recorded_env() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    if (eq == std::string::npos) continue;
    std::string name = entry.substr(0, eq);
    if (!is_recorded_env(name)) continue;
    // Results files get shared and pasted into issues: that a secret was set may matter, its
    // value never goes in.
    std::string value = entry.substr(eq + 1);
    if (looks_secret(name, value)) value = kMaskedValue;
    env.emplace(std::move(name), std::move(value));
  }
  return env;
}

// --- JSON reading -----------------------------------------------------------------------------------

template <typename T>
void read_field(const nlohmann::json& j, const char* key, T& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(std::string("fingerprint field '") + key + "': " + e.what());
  }
}

void require_object(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw UsageError(what + " is not a JSON object");
}

}  // namespace

// --- public -------------------------------------------------------------------------------------

std::string topology_level_name(int nvml_level) {
  switch (nvml_level) {
    case 0:   // NVML_TOPOLOGY_INTERNAL: two GPUs of one board, behind the board's own switch
    case 10:  // NVML_TOPOLOGY_SINGLE
      return "PIX";
    case 20:  // NVML_TOPOLOGY_MULTIPLE
      return "PXB";
    case 30:  // NVML_TOPOLOGY_HOSTBRIDGE
      return "PHB";
    case 40:  // NVML_TOPOLOGY_NODE
      return "NODE";
    case 50:  // NVML_TOPOLOGY_SYSTEM
      return "SYS";
    default:
      return "?";
  }
}

std::vector<std::vector<std::string>> build_link_matrix(
    const std::vector<GpuLinkView>& gpus, const std::function<std::string(int, int)>& pcie_path) {
  const std::size_t n = gpus.size();
  std::vector<std::string> bus(n);
  for (std::size_t i = 0; i < n; ++i) bus[i] = normalize_bus_id(gpus[i].bus_id);

  std::vector<std::vector<std::string>> links(n, std::vector<std::string>(n));
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      if (i == j) {
        links[i][j] = "X";
        continue;
      }
      int direct = 0;
      if (!bus[j].empty())
        for (const auto& remote : gpus[i].nvlink_remote_bus_ids)
          if (normalize_bus_id(remote) == bus[j]) ++direct;
      // Through an NVSwitch every GPU reaches every other one; the narrower side bounds the pair,
      // and min keeps the matrix symmetric (nvidia-smi shows NV18 for all pairs of an HGX H100).
      const int switched = std::min(gpus[i].nvswitch_links, gpus[j].nvswitch_links);
      const int total = direct + switched;
      links[i][j] = total > 0 ? "NV" + std::to_string(total)
                              : pcie_path(static_cast<int>(i), static_cast<int>(j));
    }
  }
  return links;
}

namespace {

std::string upper_case(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

bool starts_with_any(const std::string& s, std::initializer_list<const char*> prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(), [&](const char* p) { return s.rfind(p, 0) == 0; });
}

}  // namespace

bool is_recorded_env(const std::string& name) {
  // Families that change NCCL, CUDA, torch.distributed or threading behaviour. TORCH_ is not a
  // family of its own: torch reads only some of its names, and anything else under it (an auth
  // token of some plug-in) has no business in a result file.
  if (starts_with_any(name, {"NCCL_", "CUDA_", "NVSHMEM_", "OMP_", "MASTER_", "SLURM_", "PYTORCH_", "TORCHINDUCTOR_",
                             "TORCH_NCCL_", "TORCH_DISTRIBUTED_", "TORCH_GLOO_", "TORCH_CUDA_", "TORCH_CUDNN_",
                             "TORCH_BLAS_", "TORCH_COMPILE_", "TORCH_FR_", "TORCH_SYMMMEM", "TORCH_ALLOW_TF32"}))
    return true;
  for (const char* exact : {"WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "MKL_NUM_THREADS", "LD_PRELOAD",
                            "CUDA_INJECTION64_PATH", "TORCH_CPP_LOG_LEVEL", "TORCH_SHOW_CPP_STACKTRACES", "TORCH_LOGS",
                            "TORCH_USE_CUDA_DSA", "TORCH_DEVICE_BACKEND_AUTOLOAD"})
    if (name == exact) return true;
  return false;
}

bool looks_secret(const std::string& name, const std::string& value) {
  const std::string upper = upper_case(name);
  for (const char* word : {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "KEY", "AUTH", "COOKIE", "PRIVATE",
                           "SESSION", "SIGNATURE"})
    if (upper.find(word) != std::string::npos) return true;
  // A URL with a user's password in it (scheme://user:password@host), whatever the variable's name.
  if (const auto scheme = value.find("://"); scheme != std::string::npos) {
    const auto at = value.find('@', scheme + 3);
    const auto colon = value.find(':', scheme + 3);
    if (at != std::string::npos && colon < at && value.find('/', scheme + 3) > at) return true;
  }
  return false;
}

Fingerprint collect_fingerprint(const RuntimeInfo& runtime) {
  Fingerprint fp;

  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) fp.hostname = host;

  struct utsname uts{};
  const bool have_uts = ::uname(&uts) == 0;
  if (have_uts) fp.os = std::string(uts.sysname) + " " + uts.release;

  fp.cpu_model = proc_field(read_optional("/proc/cpuinfo"), "model name");
  // ARM kernels print no "model name"; the architecture still tells the hosts apart.
  if (fp.cpu_model.empty() && have_uts) fp.cpu_model = uts.machine;
  fp.cpu_cores = usable_cpus();

  // "MemTotal:       131072000 kB"
  const std::string mem_total = proc_field(read_optional("/proc/meminfo"), "MemTotal");
  if (auto kib = parse_int(split(mem_total, ' ').front()))
    fp.host_memory_gib = static_cast<double>(*kib) / (1024.0 * 1024.0);

  GpuFacts gpu = collect_gpus();
  fp.driver = std::move(gpu.driver);
  fp.cuda_driver = std::move(gpu.cuda_driver);
  fp.gpus = std::move(gpu.gpus);
  fp.links = std::move(gpu.links);

  fp.runtime = runtime;
  fp.compiler = compiler_name();
  fp.ddpbench_version = DDPBENCH_VERSION;
  fp.git_commit = git_commit();
  fp.source_digest = DDPBENCH_BUILD_SOURCE_DIGEST;
  fp.env = recorded_env();
  return fp;
}

nlohmann::json to_json(const Fingerprint& fp) {
  nlohmann::json gpus = nlohmann::json::array();
  for (const auto& g : fp.gpus) {
    gpus.push_back({{"index", g.index},
                    {"name", g.name},
                    {"uuid", g.uuid},
                    {"pci_bus_id", g.pci_bus_id},
                    {"memory_gib", g.memory_gib},
                    {"nvlinks_active", g.nvlinks_active}});
  }
  const auto& r = fp.runtime;
  return {
      {"hostname", fp.hostname},
      {"os", fp.os},
      {"cpu_model", fp.cpu_model},
      {"cpu_cores", fp.cpu_cores},
      {"host_memory_gib", fp.host_memory_gib},
      {"driver", fp.driver},
      {"cuda_driver", fp.cuda_driver},
      {"gpus", std::move(gpus)},
      {"links", fp.links},
      {"runtime",
       {{"libtorch", r.libtorch},
        {"cuda_runtime", r.cuda_runtime},
        {"nccl", r.nccl},
        {"cudnn", r.cudnn},
        {"cuda_device_count", r.cuda_device_count},
        {"cuda_available", r.cuda_available}}},
      {"compiler", fp.compiler},
      {"ddpbench_version", fp.ddpbench_version},
      {"git_commit", fp.git_commit},
      {"source_digest", fp.source_digest},
      {"env", fp.env},
      {"hardware_key", hardware_key(fp)},  // derived, stored so that tables need not recompute it
  };
}

Fingerprint fingerprint_from_json(const nlohmann::json& j) {
  require_object(j, "fingerprint");
  Fingerprint fp;
  read_field(j, "hostname", fp.hostname);
  read_field(j, "os", fp.os);
  read_field(j, "cpu_model", fp.cpu_model);
  read_field(j, "cpu_cores", fp.cpu_cores);
  read_field(j, "host_memory_gib", fp.host_memory_gib);
  read_field(j, "driver", fp.driver);
  read_field(j, "cuda_driver", fp.cuda_driver);
  if (auto it = j.find("gpus"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) throw UsageError("fingerprint field 'gpus' is not an array");
    for (const auto& g : *it) {
      require_object(g, "fingerprint gpu entry");
      GpuInfo gpu;
      read_field(g, "index", gpu.index);
      read_field(g, "name", gpu.name);
      read_field(g, "uuid", gpu.uuid);
      read_field(g, "pci_bus_id", gpu.pci_bus_id);
      read_field(g, "memory_gib", gpu.memory_gib);
      read_field(g, "nvlinks_active", gpu.nvlinks_active);
      fp.gpus.push_back(std::move(gpu));
    }
  }
  read_field(j, "links", fp.links);
  if (auto it = j.find("runtime"); it != j.end() && !it->is_null()) {
    const nlohmann::json& r = *it;
    require_object(r, "fingerprint field 'runtime'");
    read_field(r, "libtorch", fp.runtime.libtorch);
    read_field(r, "cuda_runtime", fp.runtime.cuda_runtime);
    read_field(r, "nccl", fp.runtime.nccl);
    read_field(r, "cudnn", fp.runtime.cudnn);
    read_field(r, "cuda_device_count", fp.runtime.cuda_device_count);
    read_field(r, "cuda_available", fp.runtime.cuda_available);
  }
  read_field(j, "compiler", fp.compiler);
  read_field(j, "ddpbench_version", fp.ddpbench_version);
  read_field(j, "git_commit", fp.git_commit);
  read_field(j, "source_digest", fp.source_digest);
  read_field(j, "env", fp.env);
  return fp;
}

std::string hardware_key(const Fingerprint& fp) {
  if (fp.gpus.empty()) return "cpu: " + std::to_string(fp.cpu_cores) + " cores, " + fp.cpu_model;

  std::string key = std::to_string(fp.gpus.size()) + "x " + fp.gpus.front().name;
  int nvlink_pairs = 0, other_pairs = 0;
  bool same_count = true;
  std::optional<std::int64_t> first_count;
  for (std::size_t i = 0; i < fp.links.size(); ++i) {
    for (std::size_t j = 0; j < fp.links[i].size(); ++j) {
      if (i == j) continue;
      const std::string& link = fp.links[i][j];
      auto count = link.rfind("NV", 0) == 0 ? parse_int(std::string_view(link).substr(2)) : std::nullopt;
      if (!count) {
        ++other_pairs;
        continue;
      }
      ++nvlink_pairs;
      if (!first_count) first_count = count;
      else if (*first_count != *count) same_count = false;
    }
  }
  // One GPU, or a file without the matrix: the links say nothing, so the key says nothing of them.
  if (nvlink_pairs == 0 && other_pairs == 0) return key;
  if (other_pairs == 0 && same_count) return key + " (NV" + std::to_string(*first_count) + ")";
  if (nvlink_pairs == 0) return key + " (PCIe)";
  return key + " (mixed links)";
}

}  // namespace ddpbench::results
