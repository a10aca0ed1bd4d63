// The checks made before any rank starts: the memory estimate against measured peaks and a given
// capacity, the capacity read from /proc/meminfo-like text, and inputs corrupted by the test.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/strings.h"
#include "preflight/preflight.h"
#include "suite/suite.h"
#include "test_helpers.h"
#include "train/hf_config.h"
#include "train/safetensors.h"
#include "train/token_file.h"

namespace {

using namespace ddpbench;
using testing_helpers::contains;
using testing_helpers::message_of;

constexpr double GiB = 1024.0 * 1024.0 * 1024.0;

train::Config gpu_config(const std::string& preset, train::Mode mode) {
  train::Config c;
  c.preset = preset;
  c.mode = mode;
  c.device = "cuda";
  c.micro_batch = 4;
  c.seq_len = 2048;
  c.optim_state = train::OptimState::param;
  return c;
}

TEST(PreflightMemory, EstimateIsWithinFivePercentOfThePeaksOfRecord) {
  // Peak allocated, one H200, batch 4 x 2048, bf16 (README "Measured", bench/results/2026-11-29-h200x1-peers).
  struct Case {
    train::Config cfg;
    double measured_gib;
  };
  auto lora = gpu_config("1b", train::Mode::lora);
  auto lora_ckpt = lora;
  lora_ckpt.grad_ckpt = true;
  const std::vector<Case> cases{{lora, 34.1}, {lora_ckpt, 16.4}, {gpu_config("350m", train::Mode::full), 12.6}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.cfg.preset + " " + train::to_string(c.cfg.mode) + (c.cfg.grad_ckpt ? " grad-ckpt" : ""));
    const double estimate = preflight::rank_memory(c.cfg).total() / GiB;
    EXPECT_NEAR(estimate / c.measured_gib, 1.0, 0.05) << estimate << " GiB estimated";
  }
}

TEST(PreflightMemory, PartsFollowTheModeAndTheOptimizerState) {
  train::Config c;  // tiny, LoRA, CPU (fp32)
  // tiny: embedding 256 x 64, matmuls 90112 (train::matmul_parameters), 5 RMSNorm weights of 64.
  const double params = 256 * 64 + 90112 + 5 * 64;
  const double lora = static_cast<double>(train::lora_parameters(c));
  auto m = preflight::rank_memory(c);
  EXPECT_DOUBLE_EQ(m.weights, (params + lora) * 4);
  EXPECT_DOUBLE_EQ(m.grads, lora * 4);
  EXPECT_DOUBLE_EQ(m.optimizer, lora * 8);  // two fp32 moments
  c.mode = train::Mode::full;
  c.device = "cuda";
  m = preflight::rank_memory(c);
  EXPECT_DOUBLE_EQ(m.grads, params * 2);
  EXPECT_DOUBLE_EQ(m.optimizer, params * 12);  // fp32 master and moments of bf16 weights
  c.shard_optimizer = true;
  c.nproc = 4;
  EXPECT_DOUBLE_EQ(preflight::rank_memory(c).optimizer, params * 12 / 4 + params * 2 / 4);
  // Activations grow with the tokens of a micro-batch, not with accumulation.
  train::Config a;
  const double one = preflight::rank_memory(a).activations;
  a.grad_accum = 8;
  EXPECT_DOUBLE_EQ(preflight::rank_memory(a).activations, one);
  a.micro_batch *= 3;
  EXPECT_DOUBLE_EQ(preflight::rank_memory(a).activations, 3 * one);
}

TEST(PreflightMemory, CapacityFromMeminfoTheCgroupAndABudget) {
  const std::string meminfo = "MemTotal:       24731708 kB\nMemFree:        16813376 kB\nMemAvailable:   23554528 kB\n";
  auto c = preflight::capacity_from(meminfo, "", "", "", {});
  EXPECT_DOUBLE_EQ(c.host_available, 23554528.0 * 1024);
  EXPECT_EQ(c.host_source, "MemAvailable");
  EXPECT_EQ(c.gpu_total, 0);
  c = preflight::capacity_from(meminfo, "max\n", "1000\n", "", {});  // no cgroup limit
  EXPECT_DOUBLE_EQ(c.host_available, 23554528.0 * 1024);
  c = preflight::capacity_from(meminfo, "8589934592\n", "1073741824\n", "", {});
  EXPECT_DOUBLE_EQ(c.host_available, 7.0 * GiB);
  EXPECT_TRUE(contains(c.host_source, "cgroup"));
  c = preflight::capacity_from(meminfo, "8589934592\n", "0\n", "16G", {});
  EXPECT_DOUBLE_EQ(c.host_available, 16 * GiB);
  EXPECT_EQ(c.host_source, "DDPBENCH_HOST_MEMORY");
  results::GpuInfo a, b;
  a.memory_gib = 80;
  b.memory_gib = 40;
  EXPECT_DOUBLE_EQ(preflight::capacity_from(meminfo, "", "", "", {a, b}).gpu_total, 40 * GiB);
  EXPECT_TRUE(contains(message_of<UsageError>([&] { preflight::capacity_from(meminfo, "", "", "lots", {}); }),
                       "DDPBENCH_HOST_MEMORY"));
}

TEST(PreflightMemory, RunsThatCannotFitAreRefusedNamingTheEstimate) {
  preflight::Capacity host;
  host.host_available = 16 * GiB;
  host.host_source = "MemAvailable";
  train::Config c;
  preflight::check_memory(c, host);  // tiny fits
  c.seq_len = 1000000000;
  c.lengths = {false, c.seq_len, c.seq_len};
  auto msg = message_of<UsageError>([&] { preflight::check_memory(c, host); });
  EXPECT_TRUE(contains(msg, "memory: tiny lora, micro-batch 2 x seq-len 1000000000 needs an estimated")) << msg;
  EXPECT_TRUE(contains(msg, "activations")) << msg;
  EXPECT_TRUE(contains(msg, "MemAvailable")) << msg;
  EXPECT_TRUE(contains(msg, "--no-memory-check")) << msg;

  train::Config big;
  big.preset = "8b";  // 32 GB of fp32 weights on the CPU
  msg = message_of<UsageError>([&] { preflight::check_memory(big, host); });
  EXPECT_TRUE(contains(msg, "memory: 8b lora") && contains(msg, "more than the 16.00 GiB available (MemAvailable)")) << msg;
  // On a GPU each rank is held against its GPU; the host only holds the processes.
  big.device = "cuda";
  preflight::Capacity gpus = host;
  gpus.gpu_total = 80 * GiB;
  preflight::check_memory(big, gpus);
  gpus.gpu_total = 12 * GiB;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { preflight::check_memory(big, gpus); }), "the GPU's 12.00 GiB"));
  // prepare builds the weights on the host (fp32 for a CPU configuration: 32 GB).
  big.device = "cpu";
  EXPECT_TRUE(contains(message_of<UsageError>([&] { preflight::check_prepare_memory(big, 1, host); }), "preparing 8b"));
  train::Config tiny;
  preflight::check_prepare_memory(tiny, 2, host);
  // Nothing known: nothing refused.
  preflight::check_memory(c, preflight::Capacity{});
}

class PreflightInputs : public testing_helpers::TempDirTest {
 protected:
  // A checkpoint folder of the tiny shape, as far as the checks read it: config.json, the weights
  // file (one tensor stands in for them) and, with adapter, PEFT's files.
  std::string checkpoint(bool adapter, int r = 16, double alpha = 32, std::vector<std::string> targets = train::lora_module_names()) {
    const std::string dir = path("ckpt");
    std::filesystem::create_directories(dir);
    write_file_atomic(dir + "/config.json", train::hf_llama_config(train::preset_shape("tiny"), "float32").dump());
    const std::vector<float> w(64, 0.5f);
    train::safetensors::write(dir + "/model.safetensors", {{"model.norm.weight", "F32", {64}, w.data(), 256}});
    if (adapter) {
      write_file_atomic(dir + "/adapter_config.json", train::peft_lora_config(r, alpha, targets).dump());
      train::safetensors::write(dir + "/adapter_model.safetensors", {{"a", "F32", {64}, w.data(), 256}});
    }
    return dir;
  }
  std::string token_file() {
    const std::string p = path("tokens.bin");
    train::write_token_file(p, 256, {{1, 2, 3}, {4, 5, 6, 7}});
    return p;
  }
};

TEST_F(PreflightInputs, GoodInputsPass) {
  train::Config c;
  c.checkpoint = checkpoint(true);
  c.data_file = token_file();
  preflight::check_inputs(c);
}

TEST_F(PreflightInputs, CorruptFilesAndAFolderAreRefusedNamingTheFile) {
  train::Config c;
  c.checkpoint = checkpoint(false);
  // Weights cut in the middle: the header promises more bytes than the file has.
  const auto weights = c.checkpoint + "/model.safetensors";
  std::filesystem::resize_file(weights, std::filesystem::file_size(weights) - 100);
  auto msg = message_of<UsageError>([&] { preflight::check_inputs(c); });
  EXPECT_TRUE(contains(msg, "--checkpoint: ")) << msg;
  EXPECT_TRUE(contains(msg, "model.safetensors")) << msg;

  train::Config d;
  d.data_file = token_file();
  {
    std::fstream f(d.data_file, std::ios::in | std::ios::out | std::ios::binary);
    f.write("GARBAGE!", 8);  // the magic
  }
  msg = message_of<UsageError>([&] { preflight::check_inputs(d); });
  EXPECT_TRUE(contains(msg, "--data-file: ")) << msg;
  EXPECT_TRUE(contains(msg, "bad magic")) << msg;

  d.data_file = dir_.string();
  EXPECT_TRUE(contains(message_of<UsageError>([&] { preflight::check_inputs(d); }), "is a folder, not a token file"));
  d.data_file = path("none.bin");
  EXPECT_TRUE(contains(message_of<UsageError>([&] { preflight::check_inputs(d); }), "does not exist"));
  // A vocabulary larger than the model's.
  train::write_token_file(d.data_file, 1000, {{1, 2, 999}});
  EXPECT_TRUE(contains(message_of<UsageError>([&] { preflight::check_inputs(d); }), "vocabulary 1000"));
}

TEST_F(PreflightInputs, LoraSettingsThatContradictTheAdapterAreRefused) {
  train::Config c;
  c.checkpoint = checkpoint(true, 16, 32, {"q_proj", "v_proj"});
  c.lora_targets = {"v_proj", "q_proj"};  // the same set in another order
  preflight::check_inputs(c);
  c.lora_alpha = 16;
  auto msg = message_of<UsageError>([&] { preflight::check_inputs(c); });
  EXPECT_TRUE(contains(msg, "--lora-alpha: 16 differs from lora_alpha 32")) << msg;
  c.lora_alpha = 32;
  c.lora_targets = {"q_proj"};
  msg = message_of<UsageError>([&] { preflight::check_inputs(c); });
  EXPECT_TRUE(contains(msg, "--lora-targets: q_proj differs from target_modules q_proj,v_proj")) << msg;
  c.lora_targets = {"q_proj", "v_proj"};
  c.lora_rank = 8;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { preflight::check_inputs(c); }), "--lora-rank: 8 differs from r 16"));
  // Full fine-tuning does not train the adapter: nothing to contradict.
  c.mode = train::Mode::full;
  preflight::check_inputs(c);
}

TEST(PreflightConfig, BoundsAndSettingsTheDataWouldNotHonour) {
  train::Config c;
  c.nproc = 100000;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::validate(c); }), "--nproc: 100000 ranks on one node, more than the 1024"));
  c.nproc = 1;
  c.markov_states = 1000000;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::validate(c); }), "--markov-states: 1000000 is more than the 255 tokens"));
  c.markov_states = 255;
  train::validate(c);
  train::Config t;
  EXPECT_TRUE(contains(message_of<UsageError>([&] { train::apply_settings(t, {{"lora_targets", ""}}); }), "--lora-targets: empty"));
}

TEST(PreflightConfig, ASuiteOfTenBillionCellsIsRefusedBeforeExpanding) {
  std::string values;
  for (int v = 1; v <= 100; ++v) values += (v > 1 ? ", " : "") + std::to_string(v + 1);
  std::string text = "name = \"huge\"\n[defaults]\ntrainer = [\"builtin\", \"hf\", \"liger\", \"unsloth\", \"hf-loop\"]\n";
  for (const char* key : {"nproc", "micro_batch", "grad_accum", "seq_len"}) text += std::string(key) + " = [" + values + "]\n";
  for (int w = 0; w < 20; ++w) text += "[[workload]]\nname = \"w" + std::to_string(w) + "\"\n";  // 20 x 5e8 cells
  const auto msg = message_of<UsageError>([&] { suite::parse_suite(text, "huge.toml"); });
  EXPECT_TRUE(contains(msg, "huge.toml:")) << msg;
  EXPECT_TRUE(contains(msg, "more than 10000 cells (this workload alone to 500.0M)")) << msg;
}

}  // namespace
