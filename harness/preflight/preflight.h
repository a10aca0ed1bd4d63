// Checks made before any rank starts, so that a run that cannot work is one line and exit status 2
// (UsageError) instead of N ranks failing, or a machine swapping itself to a halt:
//  - memory: an estimate of what one rank holds (weights, gradients, optimizer state, activations)
//    against the GPU's total memory and the host's available memory;
//  - inputs: the checkpoint and token file a configuration names, opened and checked as the ranks
//    will read them, and LoRA settings that contradict the checkpoint's adapter.
// Torch-free: the estimate is arithmetic on the preset's shape, the inputs are read with the same
// readers the trainer uses (safetensors::File, TokenFile).
#pragma once
#include <string>
#include <vector>

#include "predict/predict.h"
#include "results/fingerprint.h"
#include "train/config.h"

namespace ddpbench::preflight {

// One rank's memory on the device it trains on (the host for --device cpu), bytes, by what holds
// it: the parts of predict::Memory, estimated from the configuration instead of measured.
predict::Memory rank_memory(const train::Config& cfg);
// What a rank process holds on the host besides that: LibTorch's runtime and the step's batches.
double rank_host_bytes(const train::Config& cfg);
// `prepare`: the host memory to build the initial weights and the run's token documents for
// world_size ranks.
double prepare_host_bytes(const train::Config& cfg, int world_size);

// What this machine offers. 0 where unknown (the check is then skipped for that side).
struct Capacity {
  double host_available = 0;  // bytes
  std::string host_source;    // where host_available came from, for the message
  double gpu_total = 0;       // bytes of the smallest visible GPU
};
// host: MemAvailable of /proc/meminfo, lowered to what the cgroup's memory.max leaves; the
// variable DDPBENCH_HOST_MEMORY (bytes, or a number with K, M, G or T) sets a budget instead,
// for a shared machine. gpu: the smallest total memory among `gpus` (NVML's, from the fingerprint).
Capacity capacity_here(const std::vector<results::GpuInfo>& gpus);
// The same from given texts (tests): meminfo as /proc/meminfo, cgroup_max and cgroup_current as
// the cgroup v2 files ("" when absent), budget as DDPBENCH_HOST_MEMORY ("" when unset).
Capacity capacity_from(const std::string& meminfo, const std::string& cgroup_max, const std::string& cgroup_current,
                       const std::string& budget, const std::vector<results::GpuInfo>& gpus);

// The flag that turns the memory checks off, for those who know better than the estimate.
inline constexpr const char* kNoMemoryCheckFlag = "--no-memory-check";

// UsageError when the node's ranks (cfg.nproc) would not fit: on the CPU all of them in the host's
// memory; on GPUs each rank in its GPU and their host parts in the host's memory.
void check_memory(const train::Config& cfg, const Capacity& capacity);
// UsageError when `prepare` for world_size ranks would not fit in the host's memory.
void check_prepare_memory(const train::Config& cfg, int world_size, const Capacity& capacity);

// The checkpoint folder (config.json of the preset's shape, model.safetensors and, for LoRA, the
// adapter's files readable) and the token file (a file, not a folder; its header, document table
// and vocabulary) that cfg names. A LoRA checkpoint's adapter_config.json must agree with
// --lora-rank, --lora-alpha and --lora-targets: the trainers would otherwise load adapters of one
// setting and train them under another. UsageError naming the flag, the file and the fault.
void check_inputs(const train::Config& cfg);

}  // namespace ddpbench::preflight
