// The environment fingerprint stored with every result: what hardware and software produced a
// figure. The gate only compares results whose hardware part matches.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "device/device.h"

namespace ddpbench::results {

struct GpuInfo {
  int index = 0;
  std::string name;
  std::string uuid;
  std::string pci_bus_id;
  double memory_gib = 0;
  int nvlinks_active = 0;  // active NVLink links of this GPU
};

// Filled by the LibTorch side (device/device.h), which is the only part that can ask the runtime.
using RuntimeInfo = device::RuntimeInfo;

struct Fingerprint {
  std::string hostname;
  std::string os;          // uname sysname + release
  std::string cpu_model;
  int cpu_cores = 0;
  double host_memory_gib = 0;
  std::string driver;      // NVIDIA driver, from NVML; empty without one
  std::string cuda_driver; // CUDA version the driver supports
  std::vector<GpuInfo> gpus;
  // link[i][j]: "NV18" (18 NVLinks), "PIX"/"PXB"/"PHB"/"NODE"/"SYS" (PCIe paths as nvidia-smi topo
  // names them), "X" on the diagonal
  std::vector<std::vector<std::string>> links;
  RuntimeInfo runtime;
  std::string compiler;
  std::string ddpbench_version;
  std::string git_commit;
  // SHA-256 (12 hex digits) of the compiled parts' files by path and content, baked in at build time
  // (cmake/build_info.cmake): names the code even where the commit cannot (a stale or absent .git).
  std::string source_digest;
  std::map<std::string, std::string> env;  // the variables that change NCCL/torch/threading behaviour
};

Fingerprint collect_fingerprint(const RuntimeInfo& runtime);
nlohmann::json to_json(const Fingerprint& fp);
// The inverse of to_json, for the gate and the report reading stored results. Missing fields keep
// their defaults (older files); a value of the wrong type throws UsageError.
Fingerprint fingerprint_from_json(const nlohmann::json& j);
// "2x NVIDIA H100 80GB HBM3 (NV18)" or "cpu: 2 cores, Intel(R) Xeon(R) ...": the key the gate
// and the long-format table use for "same hardware".
std::string hardware_key(const Fingerprint& fp);
// Which variables from the environment are recorded: an allow-list of families (NCCL_, CUDA_,
// NVSHMEM_, OMP_, MASTER_, SLURM_, PYTORCH_, the TORCH_ names torch reads) and a few exact names.
bool is_recorded_env(const std::string& name);
// A variable whose name (TOKEN, SECRET, PASSWORD, CREDENTIAL, KEY, AUTH, ...) or value (a URL with
// a password) says it holds a secret: recorded as kMaskedValue, never verbatim.
bool looks_secret(const std::string& name, const std::string& value);
inline constexpr const char* kMaskedValue = "<masked>";

// One GPU's NVLinks as NVML reports them: the input of build_link_matrix, kept apart from NVML so
// that topologies no test machine has can still be tested.
struct GpuLinkView {
  std::string bus_id;                              // this GPU's PCI bus id
  std::vector<std::string> nvlink_remote_bus_ids;  // remote end of each active NVLink (not switches)
  int nvswitch_links = 0;                          // active NVLinks that end at an NVSwitch
};
// links[i][j] as in Fingerprint::links. pcie_path(i, j) names the PCIe path ("PIX" .. "SYS") and is
// asked only for pairs that share no NVLink.
std::vector<std::vector<std::string>> build_link_matrix(
    const std::vector<GpuLinkView>& gpus, const std::function<std::string(int, int)>& pcie_path);
// nvmlGpuTopologyLevel_t value -> "PIX"/"PXB"/"PHB"/"NODE"/"SYS" ("?" for values NVML may add).
std::string topology_level_name(int nvml_level);

}  // namespace ddpbench::results
