#include "train/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <set>
#include <type_traits>

#include "common/error.h"
#include "common/strings.h"
#include "launch/launch.h"

namespace ddpbench::train {

namespace {

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}

}  // namespace

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names{"tiny", "350m", "1b", "8b"};
  return names;
}

const std::vector<std::string>& trainer_names() {
  static const std::vector<std::string> names{"builtin", "hf", "liger", "unsloth", "hf-loop"};
  return names;
}

bool is_python_trainer(const std::string& trainer) { return trainer != "builtin"; }

ModelShape preset_shape(const std::string& name) {
  // 1b and 8b: Llama-3.2-1B and Llama-3.1-8B. 350m: the shape of DESIGN.md's reference figures.
  if (name == "tiny") return {"tiny", 64, 2, 4, 2, 128, 256, 10000.0, 1e-5};
  if (name == "350m") return {"350m", 1024, 16, 16, 16, 4096, 32000, 10000.0, 1e-5};
  if (name == "1b") return {"1b", 2048, 16, 32, 8, 8192, 128256, 500000.0, 1e-5};
  if (name == "8b") return {"8b", 4096, 32, 32, 8, 14336, 128256, 500000.0, 1e-5};
  throw UsageError("--preset: unknown preset '" + name + "' (choose one of " + joined(preset_names()) + ")");
}

bool same_weights_shape(const ModelShape& a, const ModelShape& b) {
  return a.hidden == b.hidden && a.layers == b.layers && a.heads == b.heads && a.kv_heads == b.kv_heads &&
         a.mlp == b.mlp && a.vocab == b.vocab;
}

const std::vector<std::string>& lora_module_names() {
  static const std::vector<std::string> names{"q_proj", "k_proj", "v_proj", "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};
  return names;
}

Lengths Lengths::parse(std::string_view text, int seq_len) {
  if (text == "fixed") return Lengths{false, seq_len, seq_len};
  const auto parts = split(text, ':');
  const std::string where = "--lengths: '" + std::string(text) + "'";
  require(parts.size() == 3 && parts[0] == "uniform", where + " is neither 'fixed' nor 'uniform:MIN:MAX'");
  const auto lo = parse_int(parts[1]);
  const auto hi = parse_int(parts[2]);
  require(lo && hi, where + ": MIN and MAX must be whole numbers");
  require(*lo >= 2, where + ": MIN must be at least 2 (a sequence needs one predicted token)");
  require(*lo <= *hi, where + ": MIN (" + parts[1] + ") must not exceed MAX (" + parts[2] + ")");
  require(*hi <= seq_len, where + ": MAX (" + parts[2] + ") exceeds --seq-len (" + std::to_string(seq_len) + ")");
  return Lengths{true, static_cast<int>(*lo), static_cast<int>(*hi)};
}

std::string Lengths::to_string() const {
  return uniform ? "uniform:" + std::to_string(min) + ":" + std::to_string(max) : "fixed";
}

std::string to_string(Mode m) { return m == Mode::lora ? "lora" : "full"; }

Mode parse_mode(std::string_view text) {
  if (text == "lora") return Mode::lora;
  if (text == "full") return Mode::full;
  throw UsageError("--mode: unknown mode '" + std::string(text) + "' (choose lora or full)");
}

std::string to_string(LossNorm n) {
  switch (n) {
    case LossNorm::global_tokens: return "global-tokens";
    case LossNorm::mean_of_micro_means: return "mean-of-micro-means";
    case LossNorm::local_tokens: return "local-tokens";
  }
  return "?";
}

LossNorm parse_loss_norm(std::string_view text) {
  for (auto n : {LossNorm::global_tokens, LossNorm::mean_of_micro_means, LossNorm::local_tokens})
    if (text == to_string(n)) return n;
  throw UsageError("--loss-norm: unknown rule '" + std::string(text) +
                   "' (choose global-tokens, mean-of-micro-means or local-tokens)");
}

std::string to_string(OptimState s) { return s == OptimState::fp32 ? "fp32" : "param"; }

OptimState parse_optim_state(std::string_view text) {
  for (auto s : {OptimState::fp32, OptimState::param})
    if (text == to_string(s)) return s;
  throw UsageError("--optim-state: unknown value '" + std::string(text) + "' (choose fp32 or param)");
}

void validate(const Config& c) {
  preset_shape(c.preset);
  {
    const auto& names = trainer_names();
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    require(std::find(names.begin(), names.end(), c.trainer) != names.end(),
            "--trainer: unknown trainer '" + c.trainer + "' (choose " + list + ")");
  }
  require(c.impl == "baseline" || c.impl == "fused", "--impl: unknown implementation '" + c.impl + "' (choose baseline or fused)");
  require(c.device == "cpu" || c.device == "cuda", "--device: unknown device '" + c.device + "' (choose cpu or cuda)");
  if (c.impl == "fused") {
    require(c.trainer == "builtin", "--impl fused: only the built-in trainer has it (trainer is " + c.trainer + ")");
    require(c.device == "cuda", "--impl fused: the fused kernels run on CUDA only; use --device cuda or --impl baseline");
#ifndef DDPBENCH_WITH_KERNELS
    require(false, "--impl fused: this binary was built without the fused kernels (no nvcc at configure time); "
                   "rebuild with a CUDA toolkit or use --impl baseline");
#endif
  }
  require(c.nproc >= 1, "--nproc: must be at least 1, got " + std::to_string(c.nproc));
  require(c.nproc <= kMaxRanksPerNode, "--nproc: " + std::to_string(c.nproc) + " ranks on one node, more than the " +
                                           std::to_string(kMaxRanksPerNode) + " a node can start (one process and log each)");
  require(c.micro_batch >= 1, "--micro-batch: must be at least 1, got " + std::to_string(c.micro_batch));
  require(c.grad_accum >= 1, "--grad-accum: must be at least 1, got " + std::to_string(c.grad_accum));
  require(c.seq_len >= 2, "--seq-len: must be at least 2, got " + std::to_string(c.seq_len));
  require(c.lengths.max <= c.seq_len && c.lengths.min >= 2 && c.lengths.min <= c.lengths.max,
          "--lengths: " + c.lengths.to_string() + " does not fit --seq-len " + std::to_string(c.seq_len));
  require(c.steps >= 1, "--steps: must be at least 1, got " + std::to_string(c.steps));
  require(c.warmup >= 0, "--warmup: must not be negative, got " + std::to_string(c.warmup));
  require(c.lr > 0, "--lr: must be positive");
  require(c.lr_warmup >= 0, "--lr-warmup: must not be negative");
  require(c.weight_decay >= 0, "--weight-decay: must not be negative");
  require(c.max_grad_norm >= 0, "--max-grad-norm: must not be negative");
  require(c.bucket_cap_mb >= 1, "--bucket-cap-mb: must be at least 1");
  require(c.bucket_cap_kib >= 0, "--bucket-cap-kib: must not be negative, got " + std::to_string(c.bucket_cap_kib));
  require(c.bucket_cap_kib == 0 || c.trainer == "builtin",
          "--bucket-cap-kib: only the built-in trainer has it (trainer '" + c.trainer + "' takes --bucket-cap-mb)");
  require(c.timeout_s >= 1, "--timeout: must be at least 1 second");
  require(!c.profile || c.device == "cuda" || c.trainer == "builtin",
          "--profile: on the CPU only the built-in trainer records its phases; trainer '" + c.trainer +
              "' needs --device cuda (CUPTI records GPU activity)");
  require(c.data == "markov" || c.data == "random", "--data: unknown generator '" + c.data + "' (choose markov or random)");
  require(c.markov_states >= 1, "--markov-states: must be at least 1, got " + std::to_string(c.markov_states));
  {
    // Token 0 is padding: the chain visits at most vocab - 1 tokens. More would be clamped, and the
    // configuration would record states the data never had.
    const int usable = preset_shape(c.preset).vocab - 1;
    require(c.data != "markov" || c.markov_states <= usable,
            "--markov-states: " + std::to_string(c.markov_states) + " is more than the " + std::to_string(usable) +
                " tokens preset " + c.preset + "'s vocabulary offers (token 0 is padding)");
  }
  require(c.global_batch >= 0, "--global-batch: must not be negative, got " + std::to_string(c.global_batch));
  require(c.lr_scaling == "none" || c.lr_scaling == "linear" || c.lr_scaling == "sqrt",
          "--lr-scaling: unknown rule '" + c.lr_scaling + "' (choose none, linear or sqrt)");
  require(c.global_batch == 0 || c.global_batch == c.global_batch_sequences(),
          "--global-batch: " + std::to_string(c.global_batch) + " sequences is not micro-batch x grad-accum x nproc = " +
              std::to_string(c.global_batch_sequences()));
  std::set<std::string> env_names;
  for (const auto& e : c.env) {
    const auto name = e.substr(0, e.find('='));
    const bool identifier = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0])) &&
                            std::all_of(name.begin(), name.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; });
    require(e.find('=') != std::string::npos && identifier, "--env: '" + e + "' is not NAME=value");
    // A cell that moved the launcher's rendezvous variables would not meet its own ranks.
    const auto& owned = launch::rendezvous_variables();
    require(std::find(owned.begin(), owned.end(), name) == owned.end(), "--env: " + name + " is set by the launcher for each rank");
    require(env_names.insert(name).second, "--env: " + name + " is given twice");
  }
  require(c.debug_step_delay_ms >= 0, "--debug-step-delay-ms: must not be negative, got " + std::to_string(c.debug_step_delay_ms));
  require(c.debug_step_delay_ms == 0 || c.trainer == "builtin", "--debug-step-delay-ms: only the built-in trainer has it");
  if (c.mode == Mode::lora) {
    require(c.lora_rank >= 1, "--lora-rank: must be at least 1, got " + std::to_string(c.lora_rank));
    require(c.lora_alpha > 0, "--lora-alpha: must be positive");
    require(!c.lora_targets.empty(), "--lora-targets: name at least one module");
    for (const auto& t : c.lora_targets) {
      const auto& names = lora_module_names();
      require(std::find(names.begin(), names.end(), t) != names.end(),
              "--lora-targets: unknown module '" + t + "' (choose from " + joined(names) + ")");
    }
  }
}

nlohmann::json to_json(const Config& c) {
  nlohmann::json j = {
      {"trainer", c.trainer},         {"preset", c.preset},
      {"mode", to_string(c.mode)},    {"impl", c.impl},
      {"device", c.device},           {"nproc", c.nproc},
      {"micro_batch", c.micro_batch}, {"grad_accum", c.grad_accum},
      {"seq_len", c.seq_len},         {"lengths", c.lengths.to_string()},
      {"steps", c.steps},             {"warmup", c.warmup},
      {"seed", c.seed},               {"lr", c.lr},
      {"lr_warmup", c.lr_warmup},
      {"weight_decay", c.weight_decay}, {"max_grad_norm", c.max_grad_norm},
      {"lora_rank", c.lora_rank},     {"lora_alpha", c.lora_alpha},
      {"lora_targets", c.lora_targets}, {"loss_norm", to_string(c.loss_norm)},
      {"bucket_cap_mb", c.bucket_cap_mb}, {"timeout_s", c.timeout_s},
      {"data", c.data},               {"markov_states", c.markov_states},
      {"data_file", c.data_file},     {"optim_state", to_string(c.optim_state)},
      {"checkpoint", c.checkpoint},   {"grad_ckpt", c.grad_ckpt},
      {"profile", c.profile},          {"bind_cpus", c.bind_cpus},
      {"debug_step_delay_ms", c.debug_step_delay_ms},
      {"shard_optimizer", c.shard_optimizer},
      {"global_batch", c.global_batch},
      {"lr_scaling", c.lr_scaling},
      {"scaling_mode", c.scaling_mode()},
      {"global_batch_sequences", c.global_batch_sequences()},
      {"model_flops_per_token", model_flops_per_token(c)},
  };
  // Only when set, so that the documents and cell ids of configurations without it stay as they were.
  if (c.bucket_cap_kib > 0) j["bucket_cap_kib"] = c.bucket_cap_kib;
  if (!c.env.empty()) j["env"] = c.env;
  return j;
}

Config config_from_json(const nlohmann::json& j) {
  try {
    Config c;
    c.trainer = j.at("trainer").get<std::string>();
    c.preset = j.at("preset").get<std::string>();
    c.mode = parse_mode(j.at("mode").get<std::string>());
    c.impl = j.at("impl").get<std::string>();
    c.device = j.at("device").get<std::string>();
    c.nproc = j.at("nproc").get<int>();
    c.micro_batch = j.at("micro_batch").get<int>();
    c.grad_accum = j.at("grad_accum").get<int>();
    c.seq_len = j.at("seq_len").get<int>();
    c.lengths = Lengths::parse(j.at("lengths").get<std::string>(), c.seq_len);
    c.steps = j.at("steps").get<int>();
    c.warmup = j.at("warmup").get<int>();
    c.seed = j.at("seed").get<std::uint64_t>();
    c.lr = j.at("lr").get<double>();
    c.lr_warmup = j.value("lr_warmup", 0);
    c.weight_decay = j.at("weight_decay").get<double>();
    c.max_grad_norm = j.at("max_grad_norm").get<double>();
    c.lora_rank = j.at("lora_rank").get<int>();
    c.lora_alpha = j.at("lora_alpha").get<double>();
    c.lora_targets = j.at("lora_targets").get<std::vector<std::string>>();
    c.loss_norm = parse_loss_norm(j.at("loss_norm").get<std::string>());
    c.bucket_cap_mb = j.at("bucket_cap_mb").get<int>();
    c.bucket_cap_kib = j.value("bucket_cap_kib", 0);
    c.env = j.value("env", std::vector<std::string>{});
    c.timeout_s = j.at("timeout_s").get<int>();
    c.data = j.at("data").get<std::string>();
    c.markov_states = j.value("markov_states", c.markov_states);
    c.optim_state = parse_optim_state(j.value("optim_state", to_string(c.optim_state)));
    c.data_file = j.at("data_file").get<std::string>();
    c.checkpoint = j.at("checkpoint").get<std::string>();
    c.grad_ckpt = j.at("grad_ckpt").get<bool>();
    c.profile = j.value("profile", false);
    c.bind_cpus = j.value("bind_cpus", false);
    c.debug_step_delay_ms = j.value("debug_step_delay_ms", 0);
    c.shard_optimizer = j.value("shard_optimizer", false);
    c.global_batch = j.value("global_batch", 0);
    c.lr_scaling = j.value("lr_scaling", std::string("none"));
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(std::string("config: ") + e.what());
  }
}

std::int64_t matmul_parameters(const ModelShape& s) {
  const std::int64_t d = s.hidden, kv = static_cast<std::int64_t>(s.kv_heads) * s.head_dim();
  const std::int64_t per_layer = d * d * 2 + d * kv * 2 + 3 * d * s.mlp;
  return per_layer * s.layers + d * s.vocab;  // the LM head is a matmul; the embedding is not
}

std::int64_t lora_parameters(const Config& c) {
  if (c.mode != Mode::lora) return 0;
  const auto s = preset_shape(c.preset);
  const std::int64_t d = s.hidden, kv = static_cast<std::int64_t>(s.kv_heads) * s.head_dim(), r = c.lora_rank;
  std::int64_t per_layer = 0;
  for (const auto& t : c.lora_targets) {
    std::int64_t in = d, out = d;
    if (t == "k_proj" || t == "v_proj") out = kv;
    if (t == "gate_proj" || t == "up_proj") out = s.mlp;
    if (t == "down_proj") in = s.mlp;
    per_layer += r * (in + out);
  }
  return per_layer * s.layers;
}

double model_flops_per_token(const Config& c) {
  const auto s = preset_shape(c.preset);
  const double n = static_cast<double>(matmul_parameters(s));
  const double attention = 12.0 * s.layers * s.hidden * static_cast<double>(c.seq_len);
  if (c.mode == Mode::full) return 6.0 * n + attention;
  return 4.0 * n + 6.0 * static_cast<double>(lora_parameters(c)) + attention;
}

}  // namespace ddpbench::train

namespace ddpbench::train {

namespace {

template <typename T>
T parse_number(const std::string& key, const std::string& v) {
  if constexpr (std::is_floating_point_v<T>) {
    auto d = parse_double(v);
    if (!d) throw UsageError(flag_of(key) + ": '" + v + "' is not a number");
    return static_cast<T>(*d);
  } else {
    auto i = parse_int(v);
    if (!i || *i < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
        (*i > 0 && static_cast<std::uint64_t>(*i) > static_cast<std::uint64_t>(std::numeric_limits<T>::max())))
      throw UsageError(flag_of(key) + ": '" + v + "' is not a whole number in range");
    return static_cast<T>(*i);
  }
}

bool parse_bool(const std::string& key, const std::string& v) {
  if (v != "true" && v != "false") throw UsageError(flag_of(key) + ": '" + v + "' is neither true nor false");
  return v == "true";
}

#define DDPBENCH_NUMBER(key, field, help) \
  Setting { key, help, [](Config& c, const std::string& v) { c.field = parse_number<decltype(c.field)>(key, v); } }

}  // namespace

const std::vector<Setting>& settings() {
  static const std::vector<Setting> table{
      {"trainer", "builtin (the C++ trainer), hf (transformers.Trainer + PEFT), liger (the same with Liger-Kernel), "
                  "unsloth (Unsloth's FastLanguageModel and trainer), hf-loop (a hand-written Transformers loop, a diagnostic); "
                  "builtin-fused: builtin with impl fused, so that a suite's trainer list can hold both",
       [](Config& c, const std::string& v) {
         if (v == "builtin-fused") {
           c.trainer = "builtin";
           c.impl = "fused";
         } else {
           c.trainer = v;
         }
       }},
      {"preset", "model shape: tiny, 350m, 1b, 8b", [](Config& c, const std::string& v) { preset_shape(v); c.preset = v; }},
      {"mode", "lora or full fine-tuning", [](Config& c, const std::string& v) { c.mode = parse_mode(v); }},
      {"impl", "baseline (stock ATen ops) or fused (kernels/, CUDA only)", [](Config& c, const std::string& v) { c.impl = v; }},
      {"device", "cpu or cuda", [](Config& c, const std::string& v) { c.device = v; }},
      DDPBENCH_NUMBER("nproc", nproc, "ranks (processes) per node"),
      DDPBENCH_NUMBER("micro_batch", micro_batch, "sequences per micro-batch per rank"),
      DDPBENCH_NUMBER("grad_accum", grad_accum, "micro-batches per optimizer step"),
      DDPBENCH_NUMBER("global_batch", global_batch,
                      "strong scaling: sequences per optimizer step over all ranks, fixed across rank counts; "
                      "grad_accum = global_batch / (micro_batch x nproc) (0: weak scaling, the per-rank batch fixed)"),
      DDPBENCH_NUMBER("seq_len", seq_len, "tokens per sequence, padding included"),
      {"lengths", "fixed, or uniform:MIN:MAX (right-padded to seq_len)",
       [](Config& c, const std::string& v) { c.lengths = Lengths::parse(v, c.seq_len); }},
      DDPBENCH_NUMBER("steps", steps, "measured optimizer steps"),
      DDPBENCH_NUMBER("warmup", warmup, "optimizer steps before the measured ones"),
      DDPBENCH_NUMBER("seed", seed, "seed of weights and data"),
      DDPBENCH_NUMBER("lr", lr, "AdamW learning rate"),
      DDPBENCH_NUMBER("lr_warmup", lr_warmup, "optimizer steps of linear learning-rate warm-up"),
      {"lr_scaling", "lr follows the global batch against the same cell on one rank: none, linear or sqrt",
       [](Config& c, const std::string& v) { c.lr_scaling = v; }},
      DDPBENCH_NUMBER("weight_decay", weight_decay, "AdamW weight decay"),
      DDPBENCH_NUMBER("max_grad_norm", max_grad_norm, "clip the global gradient norm to this (0: off)"),
      {"optim_state", "AdamW state of bf16 weights: fp32 (master weights + moments) or param (bf16, as torch.optim on a bf16 model)",
       [](Config& c, const std::string& v) { c.optim_state = parse_optim_state(v); }},
      DDPBENCH_NUMBER("lora_rank", lora_rank, "LoRA rank r"),
      DDPBENCH_NUMBER("lora_alpha", lora_alpha, "LoRA alpha (scale alpha / r)"),
      {"lora_targets", "comma-separated modules to adapt (q_proj,...,down_proj)",
       [](Config& c, const std::string& v) {
         if (v.empty()) throw UsageError("--lora-targets: empty; name at least one module (q_proj,...,down_proj)");
         c.lora_targets = split(v, ',');
       },
       false, ','},
      {"loss_norm", "global-tokens (right), mean-of-micro-means or local-tokens (the wrong variants)",
       [](Config& c, const std::string& v) { c.loss_norm = parse_loss_norm(v); }},
      DDPBENCH_NUMBER("bucket_cap_mb", bucket_cap_mb, "gradient bucket size in MiB"),
      DDPBENCH_NUMBER("bucket_cap_kib", bucket_cap_kib, "gradient bucket size in KiB instead of MiB (built-in trainer; 0: off)"),
      {"env", "environment variables for every rank, NAME=value;NAME=value (a suite: a list of NAME=value)",
       [](Config& c, const std::string& v) {
         c.env.clear();
         for (auto& e : split(v, ';'))
           if (!e.empty()) c.env.push_back(e);
       },
       false, ';'},
      DDPBENCH_NUMBER("timeout_s", timeout_s, "seconds before every rank is torn down"),
      {"data", "synthetic data: markov (learnable sparse Markov chain) or random (uniform tokens)",
       [](Config& c, const std::string& v) { c.data = v; }},
      DDPBENCH_NUMBER("markov_states", markov_states, "tokens the Markov chain visits (fewer: learnt sooner)"),
      {"data_file", "read token batches from this token file instead (see `ddpbench prepare`)",
       [](Config& c, const std::string& v) { c.data_file = v; }},
      {"checkpoint", "start from this Hugging Face checkpoint folder instead of random weights",
       [](Config& c, const std::string& v) { c.checkpoint = v; }},
      {"grad_ckpt", "gradient checkpointing: recompute each layer in backward",
       [](Config& c, const std::string& v) { c.grad_ckpt = parse_bool("grad_ckpt", v); }, true},
      {"profile", "break each step down: on a GPU with its activity (CUPTI, NVTX), on the CPU by the trainer's phases alone",
       [](Config& c, const std::string& v) { c.profile = parse_bool("profile", v); }, true},
      {"bind_cpus", "bind each local rank to its own contiguous share of the launcher's CPUs",
       [](Config& c, const std::string& v) { c.bind_cpus = parse_bool("bind_cpus", v); }, true},
      DDPBENCH_NUMBER("debug_step_delay_ms", debug_step_delay_ms,
                      "debug: the built-in trainer sleeps this many ms inside every timed step (a known slow-down, to test the gate)"),
      {"shard_optimizer", "ZeRO-1 (built-in trainer): reduce-scatter the gradients, shard the optimizer state, all-gather the weights",
       [](Config& c, const std::string& v) { c.shard_optimizer = parse_bool("shard_optimizer", v); }, true},
  };
  return table;
}

#undef DDPBENCH_NUMBER

std::string flag_of(const std::string& key) {
  std::string f = "--" + key;
  std::replace(f.begin(), f.end(), '_', '-');
  return f == "--timeout-s" ? "--timeout" : f;
}

void apply_settings(Config& cfg, const std::vector<std::pair<std::string, std::string>>& values) {
  for (const auto& [key, value] : values) {
    const auto& table = settings();
    if (std::none_of(table.begin(), table.end(), [&](const Setting& s) { return s.key == key; }))
      throw UsageError("unknown setting '" + key + "'");
  }
  bool lengths_given = false;
  for (const auto& s : settings()) {
    for (const auto& [key, value] : values) {
      if (key != s.key) continue;
      s.apply(cfg, value);
      lengths_given |= key == "lengths";
    }
  }
  // "fixed" follows seq_len when only seq_len was given.
  if (!lengths_given && !cfg.lengths.uniform) cfg.lengths = Lengths{false, cfg.seq_len, cfg.seq_len};
  const auto given = [&](const char* k) {
    return std::any_of(values.begin(), values.end(), [&](const auto& kv) { return kv.first == k; });
  };
  if (given("bucket_cap_mb") && given("bucket_cap_kib"))
    throw UsageError("--bucket-cap-kib: give the bucket cap in MiB or in KiB, not both");
  if (cfg.global_batch > 0) {
    if (given("grad_accum"))
      throw UsageError("--global-batch: give the global batch or --grad-accum, not both (the global batch sets it)");
    const int per_step = cfg.micro_batch * cfg.nproc;
    if (per_step <= 0 || cfg.global_batch % per_step != 0)
      throw UsageError("--global-batch: " + std::to_string(cfg.global_batch) + " sequences do not divide into micro-batches of " +
                       std::to_string(cfg.micro_batch) + " on " + std::to_string(cfg.nproc) + " rank(s)");
    cfg.grad_accum = cfg.global_batch / per_step;
  }
  // Under weak scaling the global batch is nproc times the one-rank cell's; under strong scaling it
  // is the same, and lr stays.
  const double ratio = cfg.global_batch > 0 ? 1.0 : static_cast<double>(cfg.nproc);
  if (cfg.lr_scaling == "linear") cfg.lr *= ratio;
  if (cfg.lr_scaling == "sqrt") cfg.lr *= std::sqrt(ratio);
}

}  // namespace ddpbench::train
