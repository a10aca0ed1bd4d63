#include "results/fingerprint.h"

#include <gtest/gtest.h>

#include <cstdio>

#include <cstdlib>
#include <dlfcn.h>
#include <set>
#include <utility>

#include "common/error.h"

namespace ddpbench::results {
namespace {

using Matrix = std::vector<std::vector<std::string>>;

Fingerprint gpu_host(int count, const std::string& name, Matrix links) {
  Fingerprint fp;
  fp.cpu_cores = 64;
  fp.cpu_model = "Intel(R) Xeon(R) Platinum 8480+";
  for (int i = 0; i < count; ++i) {
    GpuInfo g;
    g.index = i;
    g.name = name;
    fp.gpus.push_back(g);
  }
  fp.links = std::move(links);
  return fp;
}

// --- hardware_key ---------------------------------------------------------------------------------

TEST(HardwareKey, CpuOnly) {
  Fingerprint fp;
  fp.cpu_cores = 2;
  fp.cpu_model = "Intel(R) Xeon(R) CPU @ 2.20GHz";
  EXPECT_EQ(hardware_key(fp), "cpu: 2 cores, Intel(R) Xeon(R) CPU @ 2.20GHz");
}

TEST(HardwareKey, AllNvlinkSameCount) {
  auto fp = gpu_host(2, "NVIDIA H100 80GB HBM3", {{"X", "NV18"}, {"NV18", "X"}});
  EXPECT_EQ(hardware_key(fp), "2x NVIDIA H100 80GB HBM3 (NV18)");
}

TEST(HardwareKey, AllPcie) {
  auto fp = gpu_host(3, "NVIDIA L40S", {{"X", "PIX", "SYS"}, {"PIX", "X", "SYS"}, {"SYS", "SYS", "X"}});
  EXPECT_EQ(hardware_key(fp), "3x NVIDIA L40S (PCIe)");
}

TEST(HardwareKey, NvlinkCountsDiffer) {
  auto fp = gpu_host(2, "NVIDIA A100-SXM4-80GB", {{"X", "NV12"}, {"NV4", "X"}});
  EXPECT_EQ(hardware_key(fp), "2x NVIDIA A100-SXM4-80GB (mixed links)");
}

TEST(HardwareKey, NvlinkAndPcieMixed) {
  // NVLink bridges over pairs 0-1 and 2-3 only, as on many PCIe workstation cards.
  Matrix links = {{"X", "NV4", "SYS", "SYS"},
                  {"NV4", "X", "SYS", "SYS"},
                  {"SYS", "SYS", "X", "NV4"},
                  {"SYS", "SYS", "NV4", "X"}};
  auto fp = gpu_host(4, "NVIDIA RTX A6000", links);
  EXPECT_EQ(hardware_key(fp), "4x NVIDIA RTX A6000 (mixed links)");
}

TEST(HardwareKey, SingleGpuOrNoMatrixSaysNothingOfLinks) {
  EXPECT_EQ(hardware_key(gpu_host(1, "NVIDIA H100 80GB HBM3", {{"X"}})), "1x NVIDIA H100 80GB HBM3");
  EXPECT_EQ(hardware_key(gpu_host(2, "NVIDIA H100 80GB HBM3", {})), "2x NVIDIA H100 80GB HBM3");
}

// --- link matrix ----------------------------------------------------------------------------------

std::vector<std::string> bus_ids(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "00000000:%02X:00.0", 0x18 + 0x10 * i);
    ids.emplace_back(buf);
  }
  return ids;
}

TEST(LinkMatrix, FourGpusDirectNv6EachPair) {
  // HGX H100 4-GPU board: 18 links per GPU, 6 straight to each of the three others.
  auto ids = bus_ids(4);
  std::vector<GpuLinkView> gpus(4);
  for (int i = 0; i < 4; ++i) {
    gpus[i].bus_id = ids[i];
    for (int j = 0; j < 4; ++j)
      if (j != i)
        for (int k = 0; k < 6; ++k) gpus[i].nvlink_remote_bus_ids.push_back(ids[j]);
  }
  int pcie_calls = 0;
  auto links = build_link_matrix(gpus, [&](int, int) {
    ++pcie_calls;
    return std::string("SYS");
  });
  Matrix expected = {{"X", "NV6", "NV6", "NV6"},
                     {"NV6", "X", "NV6", "NV6"},
                     {"NV6", "NV6", "X", "NV6"},
                     {"NV6", "NV6", "NV6", "X"}};
  EXPECT_EQ(links, expected);
  EXPECT_EQ(pcie_calls, 0);
}

TEST(LinkMatrix, FourGpusThroughNvswitchNv18) {
  // HGX H100 8-GPU slice: every link ends at an NVSwitch, so no remote bus id names a GPU.
  auto ids = bus_ids(4);
  std::vector<GpuLinkView> gpus(4);
  for (int i = 0; i < 4; ++i) {
    gpus[i].bus_id = ids[i];
    gpus[i].nvswitch_links = 18;
  }
  auto links = build_link_matrix(gpus, [](int, int) { return std::string("SYS"); });
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(links[i][j], i == j ? "X" : "NV18") << i << "," << j;
  auto fp = gpu_host(4, "NVIDIA H100 80GB HBM3", links);
  EXPECT_EQ(hardware_key(fp), "4x NVIDIA H100 80GB HBM3 (NV18)");
}

TEST(LinkMatrix, RemoteBusIdsMatchAcrossDomainWidthAndCase) {
  std::vector<GpuLinkView> gpus(2);
  gpus[0].bus_id = "00000000:1B:00.0";
  gpus[1].bus_id = "00000000:43:00.0";
  gpus[0].nvlink_remote_bus_ids = {"0000:43:00.0", "0000:43:00.0"};
  gpus[1].nvlink_remote_bus_ids = {"00000000:1b:00.0", "00000000:1b:00.0"};
  auto links = build_link_matrix(gpus, [](int, int) { return std::string("SYS"); });
  EXPECT_EQ(links, (Matrix{{"X", "NV2"}, {"NV2", "X"}}));
}

TEST(LinkMatrix, PcieOnlyAsksForEveryOffDiagonalPair) {
  // Two sockets, two GPUs behind one PCIe switch on each.
  auto ids = bus_ids(4);
  std::vector<GpuLinkView> gpus(4);
  for (int i = 0; i < 4; ++i) gpus[i].bus_id = ids[i];
  std::set<std::pair<int, int>> asked;
  auto links = build_link_matrix(gpus, [&](int i, int j) {
    asked.insert({i, j});
    return (i / 2 == j / 2) ? topology_level_name(10) : topology_level_name(50);
  });
  Matrix expected = {{"X", "PIX", "SYS", "SYS"},
                     {"PIX", "X", "SYS", "SYS"},
                     {"SYS", "SYS", "X", "PIX"},
                     {"SYS", "SYS", "PIX", "X"}};
  EXPECT_EQ(links, expected);
  EXPECT_EQ(asked.size(), 12u);
  EXPECT_EQ(hardware_key(gpu_host(4, "NVIDIA L4", links)), "4x NVIDIA L4 (PCIe)");
}

TEST(LinkMatrix, NvlinkToAGpuOutsideTheListFallsBackToPcie) {
  // NVML in a container sees only its GPUs; a link to a hidden one must not count.
  auto ids = bus_ids(3);
  std::vector<GpuLinkView> gpus(2);
  gpus[0].bus_id = ids[0];
  gpus[1].bus_id = ids[1];
  gpus[0].nvlink_remote_bus_ids = {ids[2]};
  auto links = build_link_matrix(gpus, [](int, int) { return std::string("NODE"); });
  EXPECT_EQ(links, (Matrix{{"X", "NODE"}, {"NODE", "X"}}));
}

TEST(LinkMatrix, TopologyLevelNames) {
  EXPECT_EQ(topology_level_name(10), "PIX");
  EXPECT_EQ(topology_level_name(20), "PXB");
  EXPECT_EQ(topology_level_name(30), "PHB");
  EXPECT_EQ(topology_level_name(40), "NODE");
  EXPECT_EQ(topology_level_name(50), "SYS");
  EXPECT_EQ(topology_level_name(60), "?");
}

TEST(LinkMatrix, NoGpusGivesEmptyMatrix) {
  EXPECT_TRUE(build_link_matrix({}, [](int, int) { return std::string("SYS"); }).empty());
}

// --- JSON -----------------------------------------------------------------------------------------

TEST(FingerprintJson, RoundTrip) {
  Fingerprint fp = gpu_host(2, "NVIDIA H100 80GB HBM3", {{"X", "NV18"}, {"NV18", "X"}});
  fp.hostname = "gpu-node-7";
  fp.os = "Linux 6.8.0-45-generic";
  fp.host_memory_gib = 2015.5;
  fp.driver = "580.65.06";
  fp.cuda_driver = "13.0";
  fp.gpus[0].uuid = "GPU-aaaa";
  fp.gpus[0].pci_bus_id = "00000000:18:00.0";
  fp.gpus[0].memory_gib = 79.6474609375;
  fp.gpus[0].nvlinks_active = 18;
  fp.gpus[1].uuid = "GPU-bbbb";
  fp.gpus[1].pci_bus_id = "00000000:2A:00.0";
  fp.gpus[1].memory_gib = 0.1 + 0.2;  // not exactly representable: the JSON must keep every bit
  fp.gpus[1].nvlinks_active = 18;
  fp.runtime = {"2.11.0", "13.0", "2.28.9", "9.10.2", 2, true};
  fp.compiler = "g++ 12.2.0";
  fp.ddpbench_version = "0.1.0";
  fp.git_commit = "0123456789ab-dirty";
  fp.env = {{"NCCL_DEBUG", "INFO"}, {"OMP_NUM_THREADS", "8"}};

  const nlohmann::json j = to_json(fp);
  EXPECT_TRUE(j["gpus"].is_array());
  EXPECT_TRUE(j["links"].is_array());
  EXPECT_TRUE(j["links"][0].is_array());
  EXPECT_TRUE(j["runtime"].is_object());
  EXPECT_TRUE(j["env"].is_object());
  EXPECT_EQ(j["runtime"]["nccl"], "2.28.9");
  EXPECT_EQ(j["hardware_key"], "2x NVIDIA H100 80GB HBM3 (NV18)");

  // Through text too, as the results files store it.
  const Fingerprint back = fingerprint_from_json(nlohmann::json::parse(j.dump()));
  EXPECT_EQ(to_json(back), j);
  EXPECT_EQ(back.hostname, fp.hostname);
  EXPECT_EQ(back.cpu_cores, 64);
  EXPECT_EQ(back.host_memory_gib, fp.host_memory_gib);
  ASSERT_EQ(back.gpus.size(), 2u);
  EXPECT_EQ(back.gpus[1].index, 1);
  EXPECT_EQ(back.gpus[1].pci_bus_id, "00000000:2A:00.0");
  EXPECT_EQ(back.gpus[1].memory_gib, fp.gpus[1].memory_gib);
  EXPECT_EQ(back.links, fp.links);
  EXPECT_EQ(back.runtime.cudnn, "9.10.2");
  EXPECT_EQ(back.runtime.cuda_device_count, 2);
  EXPECT_TRUE(back.runtime.cuda_available);
  EXPECT_EQ(back.git_commit, fp.git_commit);
  EXPECT_EQ(back.env, fp.env);
}

TEST(FingerprintJson, CpuOnlyRoundTrip) {
  Fingerprint fp;
  fp.cpu_cores = 4;
  fp.cpu_model = "AMD EPYC 7B13";
  const nlohmann::json j = to_json(fp);
  EXPECT_TRUE(j["gpus"].is_array());
  EXPECT_TRUE(j["gpus"].empty());
  EXPECT_TRUE(j["env"].is_object());
  EXPECT_EQ(to_json(fingerprint_from_json(j)), j);
}

TEST(FingerprintJson, MissingFieldsKeepDefaults) {
  const Fingerprint fp = fingerprint_from_json(nlohmann::json{{"cpu_cores", 8}});
  EXPECT_EQ(fp.cpu_cores, 8);
  EXPECT_TRUE(fp.gpus.empty());
  EXPECT_TRUE(fp.env.empty());
  EXPECT_FALSE(fp.runtime.cuda_available);
}

TEST(FingerprintJson, WrongTypesAreUsageErrors) {
  EXPECT_THROW(fingerprint_from_json(nlohmann::json::array()), UsageError);
  EXPECT_THROW(fingerprint_from_json(nlohmann::json{{"cpu_cores", "many"}}), UsageError);
  EXPECT_THROW(fingerprint_from_json(nlohmann::json{{"gpus", {{"name", 3}}}}), UsageError);
  EXPECT_THROW(fingerprint_from_json(nlohmann::json{{"runtime", 1}}), UsageError);
  EXPECT_THROW(fingerprint_from_json(nlohmann::json{{"gpus", nlohmann::json::array({1})}}), UsageError);
}

// --- environment ----------------------------------------------------------------------------------

TEST(RecordedEnv, Prefixes) {
  for (const char* name : {"NCCL_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "CUDA_VISIBLE_DEVICES",
                           "NVSHMEM_DISABLE_P2P", "OMP_NUM_THREADS", "MASTER_ADDR", "MASTER_PORT",
                           "SLURM_PROCID", "PYTORCH_CUDA_ALLOC_CONF"})
    EXPECT_TRUE(is_recorded_env(name)) << name;
}

TEST(RecordedEnv, ExactNames) {
  for (const char* name : {"WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "MKL_NUM_THREADS",
                           "LD_PRELOAD", "CUDA_INJECTION64_PATH"})
    EXPECT_TRUE(is_recorded_env(name)) << name;
  for (const char* name : {"HOME", "PATH", "RANKING", "MY_RANK", "NCCL", "LD_LIBRARY_PATH", ""})
    EXPECT_FALSE(is_recorded_env(name)) << name;
}

TEST(RecordedEnv, AllowListOfFamiliesNotAllOfTorch) {
  for (const char* name : {"TORCH_DISTRIBUTED_DEBUG", "TORCH_CPP_LOG_LEVEL", "TORCH_NCCL_BLOCKING_WAIT",
                           "TORCH_SHOW_CPP_STACKTRACES"})
    EXPECT_TRUE(is_recorded_env(name)) << name;
  for (const char* name : {"TORCH_AUTH_CREDENTIAL", "TORCH_HOME", "TORCH_PLUGIN_SETTING", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"})
    EXPECT_FALSE(is_recorded_env(name)) << name;
}

TEST(RecordedEnv, SecretLookingNamesAndValues) {
  for (const char* name : {"HF_TOKEN", "NCCL_TOKEN", "TORCH_SECRET", "SLURM_JOB_PASSWORD", "CUDA_API_KEY",
                           "MASTER_KEYFILE", "NCCL_ib_token", "TORCH_AUTH_CREDENTIAL"})
    EXPECT_TRUE(looks_secret(name, "x")) << name;
  EXPECT_TRUE(looks_secret("MASTER_ADDR", "https://alice:hunter2@store.example/x"));
  EXPECT_FALSE(looks_secret("MASTER_ADDR", "https://store.example/x@y"));
  EXPECT_FALSE(looks_secret("NCCL_DEBUG", "INFO"));
  EXPECT_FALSE(looks_secret("CUDA_VISIBLE_DEVICES", "0,1"));
}

// --- this machine ---------------------------------------------------------------------------------

TEST(CollectFingerprint, ThisMachine) {
  ::setenv("NCCL_DEBUG", "WARN", 1);
  ::setenv("NCCL_FAKE_TOKEN", "hunter2", 1);
  ::setenv("TORCH_AUTH_CREDENTIAL", "hunter3", 1);
  ::setenv("TORCH_NCCL_API_KEY", "hunter4", 1);
  ::setenv("DDPBENCH_TEST_UNRELATED", "1", 1);
  RuntimeInfo runtime;
  runtime.libtorch = "2.11.0";

  Fingerprint fp;
  ASSERT_NO_THROW(fp = collect_fingerprint(runtime));
  ::unsetenv("NCCL_DEBUG");
  ::unsetenv("NCCL_FAKE_TOKEN");
  ::unsetenv("TORCH_AUTH_CREDENTIAL");
  ::unsetenv("TORCH_NCCL_API_KEY");
  ::unsetenv("DDPBENCH_TEST_UNRELATED");

  EXPECT_GT(fp.cpu_cores, 0);
  EXPECT_GT(fp.host_memory_gib, 0);
  EXPECT_FALSE(fp.hostname.empty());
  EXPECT_FALSE(fp.os.empty());
  EXPECT_FALSE(fp.cpu_model.empty());
  EXPECT_FALSE(fp.compiler.empty());
  // The commit is the build's (cmake/build_info.cmake), not read from the tree at run time: a
  // commit of the source tree's history (HEAD itself, or an ancestor where commits came after the
  // build), whatever the working directory of the process.
  if (std::system("git -C '" DDPBENCH_SOURCE_DIR "' rev-parse HEAD >/dev/null 2>&1") != 0) {
    EXPECT_EQ(fp.git_commit, "unknown");  // built from a tree that is no git checkout
  } else {
    ASSERT_GE(fp.git_commit.size(), 12u) << fp.git_commit;
    const std::string baked = fp.git_commit.substr(0, 12);
    EXPECT_TRUE(std::all_of(baked.begin(), baked.end(), [](unsigned char c) { return std::isxdigit(c); })) << baked;
    const std::string ancestry = "git -C '" DDPBENCH_SOURCE_DIR "' merge-base --is-ancestor " + baked + " HEAD";
    EXPECT_EQ(std::system(ancestry.c_str()), 0) << baked << " is not in the source tree's history";
  }
  // The source digest is the build's too (12 hex digits; what it names: ctest build_info_source_digest).
  ASSERT_EQ(fp.source_digest.size(), 12u) << fp.source_digest;
  EXPECT_TRUE(std::all_of(fp.source_digest.begin(), fp.source_digest.end(), [](unsigned char c) { return std::isxdigit(c); }))
      << fp.source_digest;
  EXPECT_EQ(results::fingerprint_from_json(results::to_json(fp)).source_digest, fp.source_digest);
  EXPECT_FALSE(fp.ddpbench_version.empty());
  EXPECT_EQ(fp.runtime.libtorch, "2.11.0");
  EXPECT_EQ(fp.env.count("NCCL_DEBUG"), 1u);
  EXPECT_EQ(fp.env["NCCL_DEBUG"], "WARN");
  // Secrets: in an allowed family, the name is kept and the value masked; outside one, neither.
  EXPECT_EQ(fp.env["NCCL_FAKE_TOKEN"], kMaskedValue);
  EXPECT_EQ(fp.env["TORCH_NCCL_API_KEY"], kMaskedValue);
  EXPECT_EQ(fp.env.count("TORCH_AUTH_CREDENTIAL"), 0u);
  EXPECT_EQ(to_json(fp).dump().find("hunter"), std::string::npos);
  EXPECT_EQ(fp.env.count("DDPBENCH_TEST_UNRELATED"), 0u);

  // The development and CI machines have no NVIDIA driver: the GPU part is empty, not an error.
  // Where the library is installed the facts are real and only their shape is checked.
  void* nvml = ::dlopen("libnvidia-ml.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (nvml) ::dlclose(nvml);
  if (!nvml) {
    EXPECT_TRUE(fp.driver.empty());
    EXPECT_TRUE(fp.gpus.empty());
    EXPECT_TRUE(fp.links.empty());
    EXPECT_TRUE(fp.cuda_driver.empty());
    EXPECT_EQ(hardware_key(fp).rfind("cpu: ", 0), 0u);
  } else {
    EXPECT_EQ(fp.links.size(), fp.gpus.size());
  }

  const nlohmann::json j = to_json(fp);
  EXPECT_EQ(to_json(fingerprint_from_json(j)), j);
}

}  // namespace
}  // namespace ddpbench::results
