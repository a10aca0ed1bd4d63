#include <cstdio>

#include "cli/commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "device/device.h"
#include "launch/launch.h"
#include "results/fingerprint.h"

namespace ddpbench::cli {

namespace {

struct DoctorArgs {
  int nproc = 0;
  bool json = false;
};

const char* or_none(const std::string& s) { return s.empty() ? "(none)" : s.c_str(); }

int doctor_main(const DoctorArgs& a) {
  const auto runtime = device::runtime_info();
  const auto fp = results::collect_fingerprint(runtime);
  if (a.json) {
    std::printf("%s\n", results::to_json(fp).dump(2).c_str());
    return 0;
  }
  std::printf("ddpbench %s (commit %s, source %s), built with %s\n", fp.ddpbench_version.c_str(), fp.git_commit.c_str(),
              fp.source_digest.c_str(), fp.compiler.c_str());
  std::printf("host        %s, %s\n", fp.hostname.c_str(), fp.os.c_str());
  std::printf("cpu         %s, %d cores usable, %.1f GiB memory\n", fp.cpu_model.c_str(), fp.cpu_cores, fp.host_memory_gib);
  std::printf("hardware    %s\n", results::hardware_key(fp).c_str());
  std::printf("libtorch    %s\n", runtime.libtorch.c_str());
  std::printf("cuda        runtime %s, driver %s (supports CUDA %s), cuDNN %s\n", or_none(runtime.cuda_runtime),
              or_none(fp.driver), or_none(fp.cuda_driver), or_none(runtime.cudnn));
  std::printf("nccl        %s\n", or_none(runtime.nccl));
  std::printf("gpus        %zu by NVML, %d visible to LibTorch\n", fp.gpus.size(), runtime.cuda_device_count);
  for (const auto& g : fp.gpus)
    std::printf("  gpu %d     %s, %.1f GiB, %s, %s, %d NVLinks active\n", g.index, g.name.c_str(), g.memory_gib,
                g.pci_bus_id.c_str(), g.uuid.c_str(), g.nvlinks_active);
  if (!fp.links.empty()) {
    std::printf("links       ");
    for (std::size_t j = 0; j < fp.links.size(); ++j) std::printf("%6s", ("gpu" + std::to_string(j)).c_str());
    std::printf("\n");
    for (std::size_t i = 0; i < fp.links.size(); ++i) {
      std::printf("  gpu%-7zu ", i);
      for (const auto& l : fp.links[i]) std::printf("%6s", l.c_str());
      std::printf("\n");
    }
  }
  std::printf("environment\n");
  if (fp.env.empty()) std::printf("  (no NCCL_/TORCH_/CUDA_/OMP_/MASTER_/SLURM_ variables set)\n");
  for (const auto& [k, v] : fp.env) std::printf("  %s=%s\n", k.c_str(), v.c_str());

  const int gpus = runtime.cuda_available ? runtime.cuda_device_count : 0;
  const int nproc = a.nproc > 0 ? a.nproc : std::max(1, gpus);
  const std::string device = gpus > 0 ? "cuda" : "cpu";
  std::printf("launch      --nproc %d would start %d rank(s) on %s (backend %s):\n", nproc, nproc, device.c_str(),
              gpus > 0 ? "nccl" : "gloo");
  launch::Spec spec;
  spec.topology.nproc_per_node = nproc;
  spec.argv = {"ddpbench"};
  const std::string visible = getenv_or("CUDA_VISIBLE_DEVICES", "");
  for (int r = 0; r < nproc; ++r) {
    const auto env = launch::rank_environment(spec, r, 29500);
    std::string where = "cpu, OMP_NUM_THREADS=" + env.at("OMP_NUM_THREADS");
    if (gpus > 0) {
      where = "cuda:" + std::to_string(r);
      if (r >= gpus) where += " (MISSING: only " + std::to_string(gpus) + " visible)";
      else if (r < static_cast<int>(fp.gpus.size()) && visible.empty())
        where += " = " + fp.gpus[static_cast<std::size_t>(r)].name + " " + fp.gpus[static_cast<std::size_t>(r)].pci_bus_id;
      else if (!visible.empty())
        where += " (CUDA_VISIBLE_DEVICES=" + visible + ")";
    }
    std::printf("  rank %d    LOCAL_RANK=%d -> %s\n", r, r, where.c_str());
  }
  return 0;
}

}  // namespace

void add_doctor_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<DoctorArgs>();
  auto* sub = app.add_subcommand("doctor", "Describe the environment: GPUs, links, driver, CUDA, NCCL, LibTorch, rank mapping");
  sub->add_option("--nproc", args->nproc, "show the rank-to-device mapping for this many ranks [GPUs visible, or 1]")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--json", args->json, "print the environment fingerprint as JSON");
  sub->callback([args, &action] { action = [args] { return doctor_main(*args); }; });
}

}  // namespace ddpbench::cli
