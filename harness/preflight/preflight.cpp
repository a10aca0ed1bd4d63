#include "preflight/preflight.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/strings.h"
#include "train/batches.h"
#include "train/hf_config.h"
#include "train/safetensors.h"

namespace ddpbench::preflight {

namespace {

namespace fs = std::filesystem;

// A rank process's own host memory before it holds any weights: LibTorch's libraries, allocator
// arenas and the c10d threads (a tiny CPU rank peaks at about 300 MiB resident; a CUDA context adds
// its host side). Deliberately round: the estimate is to stop runs that cannot fit, not to budget.
constexpr double kProcessOverhead = 512.0 * (1 << 20);

// The estimate lies within 5% of the measured peaks of record (34.7 / 16.5 / 12.5 GiB estimated
// against 34.1 / 16.4 / 12.6 measured): a run is refused only when it exceeds what the machine
// offers by 10%, so that one that would fit is not refused for the estimate's error.
constexpr double kEstimateSlack = 1.1;

// Weights and activations: bf16 on GPUs, fp32 on the CPU (the trainer's choice).
double element_bytes(const train::Config& cfg) { return cfg.device == "cuda" ? 2.0 : 4.0; }

// Every parameter of the model: the embedding, the matmuls (LM head included) and the RMSNorm
// weights (two per layer and the final one).
double total_parameters(const train::ModelShape& s) {
  return static_cast<double>(s.vocab) * s.hidden + static_cast<double>(train::matmul_parameters(s)) +
         (2.0 * s.layers + 1) * s.hidden;
}

double positive_bytes(const std::string& text, const std::string& where) {
  std::string digits = text;
  while (!digits.empty() && std::isspace(static_cast<unsigned char>(digits.back()))) digits.pop_back();
  double scale = 1;
  if (!digits.empty()) {
    const char unit = static_cast<char>(std::toupper(static_cast<unsigned char>(digits.back())));
    const std::string units = "KMGT";
    if (const auto at = units.find(unit); at != std::string::npos) {
      scale = std::pow(1024.0, static_cast<double>(at + 1));
      digits.pop_back();
    }
  }
  const auto v = parse_double(digits);
  if (!v || !(*v > 0)) throw UsageError(where + ": '" + text + "' is not a positive number of bytes (e.g. 16G)");
  return *v * scale;
}

std::string describe(const predict::Memory& m) {
  return "weights " + format_bytes(m.weights) + ", gradients " + format_bytes(m.grads) + ", optimizer state " +
         format_bytes(m.optimizer) + ", activations " + format_bytes(m.activations);
}

std::string workload_of(const train::Config& cfg) {
  return cfg.preset + " " + train::to_string(cfg.mode) + ", micro-batch " + std::to_string(cfg.micro_batch) + " x seq-len " +
         std::to_string(cfg.seq_len);
}

[[noreturn]] void refuse(const std::string& what) {
  throw UsageError("memory: " + what + "; lower --micro-batch, --seq-len or --nproc, or pass " + kNoMemoryCheckFlag +
                   " to run it anyway");
}

}  // namespace

predict::Memory rank_memory(const train::Config& cfg) {
  const auto s = train::preset_shape(cfg.preset);
  const double e = element_bytes(cfg);
  const double world = std::max(1, cfg.nproc);
  const double params = total_parameters(s);
  // LoRA adapters are kept and computed in fp32 whatever the base dtype (as PEFT does).
  const double lora = static_cast<double>(train::lora_parameters(cfg));
  const bool full = cfg.mode == train::Mode::full;
  const double trainable = full ? params : lora;
  const double grad_bytes = full ? e : 4.0;

  predict::Memory m;
  m.weights = params * e + lora * 4.0;
  // The reducer's flat buckets are the gradients (one copy); ZeRO-1 adds each rank's shard.
  m.grads = trainable * grad_bytes * (cfg.shard_optimizer ? 1.0 + 1.0 / world : 1.0);
  // AdamW: two moments; bf16 weights with fp32 state add an fp32 master copy (12 bytes a
  // parameter in all), bf16 state keeps the moments in the weight's dtype; fp32 weights (the CPU,
  // the adapters) need no master. ZeRO-1 keeps 1/world of it, plus the rank's block of weights.
  double per_param = 0;
  if (grad_bytes == 4.0) per_param = 8.0;
  else per_param = cfg.optim_state == train::OptimState::fp32 ? 12.0 : 2.0 * grad_bytes;
  m.optimizer = trainable * per_param;
  if (cfg.shard_optimizer) m.optimizer = m.optimizer / world + trainable * grad_bytes / world;

  // Activations of one micro-batch (accumulation runs micro-batches one after another): what
  // backward keeps per token of each decoder layer, in elements of the weights' dtype: the
  // attention norm's input and output (2h), q, k, v (h + 2kv), q and k after RoPE (h + kv),
  // attention's output (h), o_proj's output (h), the MLP norm's input and output (2h); gate, up,
  // silu(gate) and their product (4m); down_proj's output (h): 9h + 3kv + 4m. LoRA adapters keep
  // their input cast to fp32 (model.cpp, as PEFT computes adapters); the peaks of record fit one
  // copy per distinct input: the attention input (q, k, v), o_proj's, the MLP input (gate, up),
  // down_proj's (m). Scaled dot-product attention keeps no s x s
  // matrix (flash and memory-efficient kernels, the CPU's flash kernel too). Gradient
  // checkpointing keeps each layer's input and recomputes one layer at a time.
  const double tokens = static_cast<double>(cfg.micro_batch) * cfg.seq_len;
  const double kv = static_cast<double>(s.kv_heads) * s.head_dim();
  double lora_inputs = 0;  // fp32 elements per token and layer
  if (!full) {
    const auto adapted = [&](std::initializer_list<const char*> names) {
      for (const char* n : names)
        if (std::find(cfg.lora_targets.begin(), cfg.lora_targets.end(), n) != cfg.lora_targets.end()) return true;
      return false;
    };
    lora_inputs = s.hidden * (adapted({"q_proj", "k_proj", "v_proj"}) + adapted({"o_proj"}) + adapted({"gate_proj", "up_proj"})) +
                  s.mlp * static_cast<double>(adapted({"down_proj"}));
  }
  const double per_layer = (9.0 * s.hidden + 3.0 * kv + 4.0 * s.mlp) * e + lora_inputs * 4.0;  // bytes
  const double layers = cfg.grad_ckpt ? s.layers * s.hidden * e + per_layer : s.layers * per_layer;
  // The LM head: logits in the weights' dtype, their fp32 copy for the loss, in backward the fp32
  // gradient and its cast back: 2e + 8 bytes per vocabulary entry. The embedding's output and the
  // final norm add 3h. Checked against the peaks of record in tests/test_preflight.cpp.
  m.activations = tokens * (layers + 3.0 * s.hidden * e + static_cast<double>(s.vocab) * (2.0 * e + 8.0));
  return m;
}

double rank_host_bytes(const train::Config& cfg) {
  // The step's micro-batches are built on the host before the first forward: tokens and labels
  // as int64, for every micro-batch of the step.
  const double batches = 16.0 * cfg.micro_batch * static_cast<double>(cfg.seq_len) * cfg.grad_accum;
  return kProcessOverhead + batches;
}

double prepare_host_bytes(const train::Config& cfg, int world_size) {
  const auto m = rank_memory(cfg);
  // The initial model is built on the host in the checkpoint's dtype and streamed to the file; the
  // token documents of the whole run (u32 ids) are held until the token file is written.
  const double documents = 4.0 * world_size * cfg.micro_batch * static_cast<double>(cfg.grad_accum) *
                           cfg.total_steps() * cfg.seq_len;
  return kProcessOverhead + m.weights + documents;
}

Capacity capacity_from(const std::string& meminfo, const std::string& cgroup_max, const std::string& cgroup_current,
                       const std::string& budget, const std::vector<results::GpuInfo>& gpus) {
  Capacity c;
  for (const auto& g : gpus)
    if (g.memory_gib > 0) {
      const double total = g.memory_gib * (1 << 30);
      c.gpu_total = c.gpu_total > 0 ? std::min(c.gpu_total, total) : total;
    }
  if (!budget.empty()) {
    c.host_available = positive_bytes(budget, "DDPBENCH_HOST_MEMORY");
    c.host_source = "DDPBENCH_HOST_MEMORY";
    return c;
  }
  // "MemAvailable:   23554528 kB": what can be allocated without swapping, page cache included.
  for (const auto& line : split(meminfo, '\n')) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::string rest = line.substr(13);
    rest.erase(0, rest.find_first_not_of(' '));
    if (auto kib = parse_int(split(rest, ' ').front())) {
      c.host_available = static_cast<double>(*kib) * 1024.0;
      c.host_source = "MemAvailable";
    }
  }
  // In a container the cgroup's limit is the wall the ranks hit first ("max": none).
  const auto limit = parse_int(split(cgroup_max, '\n').front());
  const auto used = parse_int(split(cgroup_current, '\n').front());
  if (limit && used) {
    const double left = std::max(0.0, static_cast<double>(*limit - *used));
    if (c.host_available <= 0 || left < c.host_available) {
      c.host_available = left;
      c.host_source = "the cgroup's memory.max less memory.current";
    }
  }
  return c;
}

Capacity capacity_here(const std::vector<results::GpuInfo>& gpus) {
  const auto optional = [](const char* path) {
    try {
      return read_file(path);
    } catch (const RunError&) {
      return std::string();
    }
  };
  return capacity_from(optional("/proc/meminfo"), optional("/sys/fs/cgroup/memory.max"),
                       optional("/sys/fs/cgroup/memory.current"), getenv_or("DDPBENCH_HOST_MEMORY", ""), gpus);
}

void check_memory(const train::Config& cfg, const Capacity& cap) {
  const auto m = rank_memory(cfg);
  const double ranks = cfg.nproc;
  const std::string per_rank = workload_of(cfg) + " needs an estimated " + format_bytes(m.total()) + " per rank (" +
                               describe(m) + ")";
  if (cfg.device == "cuda") {
    if (cap.gpu_total > 0 && m.total() > kEstimateSlack * cap.gpu_total)
      refuse(per_rank + ", more than the GPU's " + format_bytes(cap.gpu_total));
    const double host = ranks * rank_host_bytes(cfg);
    if (cap.host_available > 0 && host > kEstimateSlack * cap.host_available)
      refuse(std::to_string(cfg.nproc) + " rank process(es) need an estimated " + format_bytes(host) + " of host memory, more than the " +
             format_bytes(cap.host_available) + " available (" + cap.host_source + ")");
    return;
  }
  const double host = ranks * (m.total() + rank_host_bytes(cfg));
  if (cap.host_available > 0 && host > kEstimateSlack * cap.host_available)
    refuse(per_rank + ", " + format_bytes(host) + " for " + std::to_string(cfg.nproc) + " rank(s) with their processes, more than the " +
           format_bytes(cap.host_available) + " available (" + cap.host_source + ")");
}

void check_prepare_memory(const train::Config& cfg, int world_size, const Capacity& cap) {
  const double host = prepare_host_bytes(cfg, world_size);
  if (cap.host_available > 0 && host > kEstimateSlack * cap.host_available)
    refuse("preparing " + cfg.preset + " (" + format_bytes(rank_memory(cfg).weights) + " of weights) and the token file of " +
           std::to_string(world_size) + " rank(s) needs an estimated " + format_bytes(host) + ", more than the " +
           format_bytes(cap.host_available) + " available (" + cap.host_source + ")");
}

namespace {

void check_adapter(const train::Config& cfg, const std::string& dir) {
  const std::string path = dir + "/adapter_config.json";
  if (cfg.mode != train::Mode::lora || !fs::exists(path)) return;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const std::exception& e) {
    throw UsageError("--checkpoint: " + path + ": " + e.what());
  }
  const auto field = [&](const char* name) {
    if (!j.is_object() || !j.contains(name)) throw UsageError("--checkpoint: " + path + " has no '" + name + "'");
    return j[name];
  };
  const auto conflict = [&](const std::string& flag, const std::string& given, const std::string& key, const std::string& have) {
    throw UsageError(flag + ": " + given + " differs from " + key + " " + have + " in " + path +
                     " (give " + flag + " " + have + ", or a checkpoint prepared with " + given + ")");
  };
  const auto r = field("r");
  if (!r.is_number_integer()) throw UsageError("--checkpoint: " + path + ": 'r' is not a whole number");
  if (r.get<int>() != cfg.lora_rank) conflict("--lora-rank", std::to_string(cfg.lora_rank), "r", r.dump());
  const auto alpha = field("lora_alpha");
  if (!alpha.is_number()) throw UsageError("--checkpoint: " + path + ": 'lora_alpha' is not a number");
  if (alpha.get<double>() != cfg.lora_alpha) {
    const auto text = [](double v) {
      std::ostringstream out;
      out << v;  // 32, 0.5: as a user types it
      return out.str();
    };
    conflict("--lora-alpha", text(cfg.lora_alpha), "lora_alpha", text(alpha.get<double>()));
  }
  const auto targets = field("target_modules");
  std::set<std::string> have;
  if (targets.is_string()) have.insert(targets.get<std::string>());
  else if (targets.is_array())
    for (const auto& t : targets)
      if (t.is_string()) have.insert(t.get<std::string>());
  const std::set<std::string> want(cfg.lora_targets.begin(), cfg.lora_targets.end());
  if (have != want) {
    const auto list = [](const std::set<std::string>& s) {
      std::string out;
      for (const auto& x : s) out += (out.empty() ? "" : ",") + x;
      return out;
    };
    conflict("--lora-targets", list(want), "target_modules", list(have));
  }
  const std::string weights = dir + "/adapter_model.safetensors";
  if (!fs::exists(weights)) throw UsageError("--checkpoint: " + path + " has no " + weights + " beside it");
  try {
    train::safetensors::File file(weights);
  } catch (const UsageError& e) {
    throw UsageError(std::string("--checkpoint: ") + e.what());
  }
}

void check_checkpoint(const train::Config& cfg) {
  const std::string& dir = cfg.checkpoint;
  if (!fs::is_directory(dir))
    throw UsageError("--checkpoint: " + dir + (fs::exists(dir) ? " is not a folder" : " does not exist") +
                     " (a Hugging Face checkpoint folder: config.json + model.safetensors)");
  const std::string path = dir + "/config.json";
  if (!fs::exists(path)) throw UsageError("--checkpoint: " + path + " does not exist");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const std::exception& e) {
    throw UsageError("--checkpoint: " + path + ": " + e.what());
  }
  const auto have = train::shape_from_hf_config(j, path);
  const auto want = train::preset_shape(cfg.preset);
  if (!train::same_weights_shape(have, want))
    throw UsageError("--checkpoint: " + path + " holds a model of hidden " + std::to_string(have.hidden) + ", " +
                     std::to_string(have.layers) + " layers, vocab " + std::to_string(have.vocab) +
                     ", not the shape of preset " + cfg.preset);
  const std::string weights = dir + "/model.safetensors";
  if (!fs::exists(weights)) throw UsageError("--checkpoint: " + weights + " does not exist");
  try {
    // Opening checks the header, every tensor's dtype, shape and offsets against the file's size.
    train::safetensors::File file(weights);
  } catch (const UsageError& e) {
    throw UsageError(std::string("--checkpoint: ") + e.what());
  }
  check_adapter(cfg, dir);
}

}  // namespace

void check_inputs(const train::Config& cfg) {
  if (!cfg.checkpoint.empty()) check_checkpoint(cfg);
  if (!cfg.data_file.empty()) {
    if (fs::is_directory(cfg.data_file)) throw UsageError("--data-file: " + cfg.data_file + " is a folder, not a token file");
    if (!fs::exists(cfg.data_file)) throw UsageError("--data-file: " + cfg.data_file + " does not exist");
    try {
      // The reader the ranks use: header, document table and vocabulary against the model's.
      train::BatchSource::make(cfg, train::preset_shape(cfg.preset).vocab, cfg.nproc);
    } catch (const UsageError& e) {
      const std::string what = e.what();
      throw UsageError(what.rfind("--data-file", 0) == 0 ? what : "--data-file: " + what);
    }
  }
}

}  // namespace ddpbench::preflight
