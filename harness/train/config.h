// What one run of the built-in trainer is: model preset, fine-tuning mode, batch geometry, data and
// optimizer settings. Read from flags or a suite cell, handed to every rank as JSON.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ddpbench::train {

// Llama-family shapes. Presets follow the released configs they are named after.
struct ModelShape {
  std::string name;
  int hidden = 0;
  int layers = 0;
  int heads = 0;
  int kv_heads = 0;
  int mlp = 0;
  int vocab = 0;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  int head_dim() const { return hidden / heads; }
};

const std::vector<std::string>& preset_names();  // tiny, 350m, 1b, 8b
// builtin, and the Python trainers harness/hf/ runs: hf, liger, unsloth (peer_trainers.py), hf-loop.
const std::vector<std::string>& trainer_names();
bool is_python_trainer(const std::string& trainer);
// Whether two shapes describe the same weights (names aside): what loading a checkpoint requires.
bool same_weights_shape(const ModelShape& a, const ModelShape& b);
ModelShape preset_shape(const std::string& name);  // UsageError on an unknown name

// The linear layers LoRA can adapt, in Hugging Face PEFT's names.
const std::vector<std::string>& lora_module_names();

// Sequence lengths of the synthetic data: every sequence seq_len long, or uniform in [min, max]
// and right-padded to seq_len.
struct Lengths {
  bool uniform = false;
  int min = 0;
  int max = 0;
  static Lengths parse(std::string_view text, int seq_len);  // "fixed" | "uniform:MIN:MAX"
  std::string to_string() const;
};

enum class Mode { lora, full };
// The loss normalisation of DESIGN.md (global_tokens) and the two wrong variants users hit, kept
// so that tests can prove they differ and users can reproduce what their trainer does.
enum class LossNorm { global_tokens, mean_of_micro_means, local_tokens };
// Where AdamW keeps its state for a weight stored in bf16 (full fine-tuning on a GPU):
//  fp32  - an fp32 master copy of the weight plus fp32 moments; the update runs on the master and
//          is rounded to the bf16 weight afterwards (the bf16 mixed-precision recipe of Megatron
//          and DeepSpeed), so an update far smaller than the weight is not lost to rounding.
//  param - moments in the weight's own dtype and the update applied to the bf16 weight directly:
//          torch.optim.AdamW on a model loaded in bf16 (a common Hugging Face setup); 8 bytes per
//          parameter less, and updates below bf16's resolution vanish.
enum class OptimState { fp32, param };
// Tokens the learnable synthetic data's Markov chain visits by default (train/data.h): few enough
// that the GPU presets learn them within 50 steps.
inline constexpr int kMarkovStates = 64;
// Ranks one node may start: each is a process with its own log, so a typo (--nproc 100000) would
// fork until the machine gives out.
inline constexpr int kMaxRanksPerNode = 1024;

struct Config {
  std::string trainer = "builtin";
  std::string preset = "tiny";
  Mode mode = Mode::lora;
  std::string impl = "baseline";
  std::string device = "cpu";  // cpu | cuda
  int nproc = 1;
  int micro_batch = 2;
  int grad_accum = 1;
  int seq_len = 128;
  Lengths lengths{false, 128, 128};
  int steps = 10;   // measured steps
  int warmup = 2;   // steps run before them, reported but not counted
  std::uint64_t seed = 0;
  double lr = 1e-4;
  int lr_warmup = 0;             // optimizer steps of linear learning-rate warm-up (0: constant lr)
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;  // 0: no clipping
  int lora_rank = 16;
  double lora_alpha = 32.0;
  std::vector<std::string> lora_targets = lora_module_names();
  LossNorm loss_norm = LossNorm::global_tokens;
  OptimState optim_state = OptimState::fp32;
  int bucket_cap_mb = 25;
  // > 0: the bucket cap in KiB instead (built-in trainer), for buckets below 1 MiB: tests and small
  // models that would otherwise fit one bucket.
  int bucket_cap_kib = 0;
  // Environment variables (NAME=value) for every rank, set after the launcher's own: an NCCL or
  // allocator setting, or a peer's switch, as one cell's configuration (part of its identity).
  std::vector<std::string> env;
  int timeout_s = 1800;
  std::string data = "markov";  // markov (learnable) | random (uniform tokens, for pure speed runs)
  int markov_states = kMarkovStates;  // distinct tokens of the Markov chain (each with 4 successors)
  std::string data_file;         // a token file (token_file.h) instead of the synthetic generator
  std::string checkpoint;        // a Hugging Face checkpoint folder instead of random weights
  bool grad_ckpt = false;        // recompute each decoder layer in backward instead of storing it
  bool profile = false;          // record GPU activity with the in-process CUPTI collector
  bool bind_cpus = false;        // each local rank on its own share of the CPUs (launch::Spec)
  int debug_step_delay_ms = 0;   // debug: the built-in trainer sleeps this long in every timed step (tests the gate)
  // ZeRO-1: gradients reduce-scattered instead of all-reduced, each rank's optimizer updating its
  // 1/world of every bucket with 1/world of the state, the weights all-gathered after the step.
  bool shard_optimizer = false;
  // Strong scaling: sequences per optimizer step over all ranks, held fixed across rank counts;
  // grad_accum is derived from it (global_batch / (micro_batch x nproc)). 0: weak scaling, the
  // per-rank batch (micro_batch x grad_accum) held fixed.
  int global_batch = 0;
  // How lr follows the global batch, relative to the same cell on one rank: none, linear
  // (x global batch ratio) or sqrt. apply_settings scales lr by it; strong scaling keeps the ratio 1.
  std::string lr_scaling = "none";

  int total_steps() const { return warmup + steps; }
  // The learning rate of optimizer step `step` (0-based): linear warm-up to lr over lr_warmup
  // steps, constant after. Both trainers use this schedule.
  double lr_at(int step) const { return step < lr_warmup ? lr * (step + 1) / lr_warmup : lr; }
  int global_batch_sequences() const { return nproc * micro_batch * grad_accum; }
  std::string scaling_mode() const { return global_batch > 0 ? "strong" : "weak"; }
  // The gradient reducer's bucket cap: bucket_cap_kib when set, else bucket_cap_mb.
  std::int64_t bucket_cap_bytes() const {
    return bucket_cap_kib > 0 ? static_cast<std::int64_t>(bucket_cap_kib) << 10 : static_cast<std::int64_t>(bucket_cap_mb) << 20;
  }
};

// Throws UsageError naming the flag and the value at fault.
void validate(const Config& cfg);

// Every setting a user can give, by flags or in a suite file, in one table: the CLI and the suite
// reader both go through it, so a name means the same thing everywhere. Settings apply in table
// order (seq_len before lengths).
struct Setting {
  std::string key;   // snake_case, as in suite files and JSON; the flag is --kebab-case
  std::string help;
  void (*apply)(Config&, const std::string& value);
  bool is_switch = false;  // a flag without a value on the command line ("true" when given)
  // A list by nature, not a matrix dimension: its items in one value, joined by this (a suite's
  // TOML list is joined so); 0 for a single value.
  char list_separator = 0;
};
const std::vector<Setting>& settings();
std::string flag_of(const std::string& key);  // micro_batch -> --micro-batch
// Applies key=value pairs in table order, then derives grad_accum from global_batch (strong
// scaling) and scales lr by lr_scaling; UsageError "--flag: ..." for a bad value, an unknown key, a
// global batch that does not divide into micro-batches of the ranks, or global_batch with grad_accum.
void apply_settings(Config& cfg, const std::vector<std::pair<std::string, std::string>>& values);

nlohmann::json to_json(const Config& cfg);
Config config_from_json(const nlohmann::json& j);  // UsageError on a missing or wrong field

std::string to_string(Mode m);
Mode parse_mode(std::string_view text);
std::string to_string(LossNorm n);
LossNorm parse_loss_norm(std::string_view text);
std::string to_string(OptimState s);
OptimState parse_optim_state(std::string_view text);

// Model FLOPs per trained token, as DESIGN.md defines them for MFU: 6N + 12 l d s for full
// fine-tuning, 4N + 6 N_lora + 12 l d s for LoRA (N: non-embedding matmul parameters).
double model_flops_per_token(const Config& cfg);
std::int64_t matmul_parameters(const ModelShape& shape);
std::int64_t lora_parameters(const Config& cfg);

}  // namespace ddpbench::train
