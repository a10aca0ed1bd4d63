#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <thread>

#include "common/error.h"
#include "common/strings.h"
#include "ddp/ddp.h"
#include "ddp/store.h"
#include "device/device.h"
#include "profile/activity.h"
#include "profile/in_process.h"
#include "device/phases.h"
#include "train/adamw.h"
#include "train/batches.h"
#include "train/data.h"
#include "train/model.h"
#include "train/staging.h"

namespace ddpbench::train {

namespace {

using Clock = std::chrono::steady_clock;

int env_int(const char* name, std::optional<int> fallback) {
  const char* v = std::getenv(name);
  if (!v) {
    if (fallback) return *fallback;
    throw UsageError(std::string("environment variable ") + name + " is not set (start ranks with `ddpbench train` or torchrun)");
  }
  auto parsed = parse_int(v);
  if (!parsed) throw UsageError(std::string("environment variable ") + name + "='" + v + "' is not a whole number");
  return static_cast<int>(*parsed);
}

std::string host_name() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// Global L2 norm of the averaged gradient; scales gradients down to max_norm when it is exceeded
// (max_norm 0: no clipping), as torch.nn.utils.clip_grad_norm_ does, rounding included: the total
// norm and the clip factor stay in the gradients' dtype (bf16 in full fine-tuning). An fp32 norm
// gives a factor up to 2^-8 apart from torch's every step, and on a fast-learning run that alone
// pulled the two trainers' loss curves apart well beyond their run-to-run noise.
// Returns the norm as a device tensor: reading it here would stall the host until the GPU is done,
// leaving the GPU idle while the optimizer's kernels are launched; it is read once the step is.
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params) grads.push_back(p.grad());
  at::NoGradGuard no_grad;
  const auto norms = at::_foreach_norm(grads, 2);
  const auto total = at::linalg_vector_norm(at::stack(norms), 2);
  if (max_norm > 0) {
    const auto coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);
    at::_foreach_mul_(grads, coef.to(grads.front().scalar_type()));
  }
  return total;
}

// clip_grad_norm for ZeRO-1: the norm of the whole averaged gradient from the blocks each rank
// holds, their squared sums added over ranks (in fp32: where the unsharded clip keeps torch's
// rounding in the gradients' dtype, bf16 factors can differ by a rounding step; fp32 ones agree).
at::Tensor clip_grad_norm_sharded(const std::vector<at::Tensor>& shards, double max_norm, ddp::Communicator& comm) {
  std::vector<at::Tensor> grads;
  for (const auto& p : shards) grads.push_back(p.grad());
  at::NoGradGuard no_grad;
  auto squares = at::zeros({1}, grads.front().options().dtype(at::kFloat));
  for (const auto& g : grads) squares += g.to(at::kFloat).square().sum();
  comm.allreduce_sum(squares);
  const auto total = squares.sqrt().squeeze();
  if (max_norm > 0) {
    const auto coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);
    at::_foreach_mul_(grads, coef.to(grads.front().scalar_type()));
  }
  return total;
}

// Tensors one after another in fp64 on the host: what the probes hand out.
std::vector<double> host_fp64(const std::vector<at::Tensor>& tensors) {
  std::vector<double> flat;
  for (const auto& t : tensors) {
    const auto h = t.detach().to(at::kDouble).cpu().contiguous();
    flat.insert(flat.end(), h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
  }
  return flat;
}

// The per-micro-batch factor on the summed token loss. With DDP's mean over W ranks, the
// global_tokens rule back-propagates W * sum / N so that the averaged gradient is that of
// sum over all tokens / N (DESIGN.md); the other two are the wrong variants users hit.
double loss_scale(LossNorm rule, int world, int grad_accum, std::int64_t n_global, std::int64_t n_rank, std::int64_t n_micro) {
  switch (rule) {
    case LossNorm::global_tokens: return static_cast<double>(world) / static_cast<double>(n_global);
    case LossNorm::mean_of_micro_means: return 1.0 / (static_cast<double>(n_micro) * grad_accum);
    case LossNorm::local_tokens: return 1.0 / static_cast<double>(n_rank);
  }
  return 0;
}

// peak_flops: this GPU's measured bf16 matrix rate; 0 leaves MFU out of the line (CPU).
void print_step_line(const Config& cfg, const results::StepSample& s, std::int64_t global_tokens, int world, double peak_flops) {
  const double tps = static_cast<double>(global_tokens) / s.step_time_s;
  char mfu[32] = "";
  if (peak_flops > 0)
    std::snprintf(mfu, sizeof mfu, " | mfu %4.1f%%", 100.0 * model_flops_per_token(cfg) * tps / world / peak_flops);
  std::printf("step %4d/%d%s | loss %.4f | %s tok/s (%s per rank)%s | %8.1f ms | mem %s | N %lld | norm %.3f\n",
              s.step + 1, cfg.total_steps(), s.warmup ? " (warmup)" : "         ", s.loss, format_si(tps).c_str(),
              format_si(tps / world).c_str(), mfu, s.step_time_s * 1e3,
              format_bytes(static_cast<double>(s.mem_allocated_peak)).c_str(), static_cast<long long>(s.global_predicted),
              s.grad_norm);
  std::fflush(stdout);
}

}  // namespace

RankEnv RankEnv::from_environment() {
  RankEnv e;
  e.rank = env_int("RANK", 0);
  e.world_size = env_int("WORLD_SIZE", 1);
  e.local_rank = env_int("LOCAL_RANK", e.rank);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size);
  e.master_addr = getenv_or("MASTER_ADDR", "127.0.0.1");
  e.master_port = env_int("MASTER_PORT", e.world_size == 1 ? std::optional<int>(0) : std::nullopt);
  e.report_store = getenv_or(ddp::kReportStoreVariable, "") == "1";
  if (e.rank < 0 || e.rank >= e.world_size)
    throw UsageError("RANK=" + std::to_string(e.rank) + " is outside WORLD_SIZE=" + std::to_string(e.world_size));
  return e;
}

results::RankReport run_rank(const Config& cfg, const RankEnv& env, const Probe& probe) {
  results::RankReport report;
  report.rank = env.rank;
  report.local_rank = env.local_rank;
  report.world_size = env.world_size;
  report.host = host_name();
  auto set_phase = [&](std::string phase) {
    report.phase = std::move(phase);
    if (probe.on_phase) probe.on_phase(report.phase);
  };
  set_phase("setup");
  std::unique_ptr<ddp::Communicator> comm;
  try {
    const auto t_setup = Clock::now();
    const bool cuda = cfg.device == "cuda";
    const at::Device device = cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank)) : at::Device(at::kCPU);
    report.device = device.str();
    if (cuda) device::set_cuda_device(env.local_rank);
    const auto options = at::TensorOptions().device(device).dtype(cuda ? at::kBFloat16 : at::kFloat);

    LlamaModel model(cfg, options);
    if (!cfg.checkpoint.empty()) {
      set_phase("checkpoint");
      model.load_hf(cfg.checkpoint);
    }
    const auto trainable = model.trainable();
    report.parameters = model.parameter_count(false);
    report.trainable_parameters = model.parameter_count(true);
    // Before the rendezvous, so that a bad token file is named as the data's fault, not the peers'.
    set_phase("data");
    const auto shape = preset_shape(cfg.preset);
    const auto batches = BatchSource::make(cfg, shape.vocab, env.world_size);

    set_phase("rendezvous");
    ddp::Rendezvous rv{env.master_addr, env.master_port, env.rank, env.world_size, std::chrono::seconds(cfg.timeout_s),
                       env.report_store};
    comm = ddp::Communicator::connect(cuda ? "nccl" : "gloo", rv, env.local_rank);
    // Every rank starts from rank 0's weights, as torch DDP guarantees at construction.
    {
      at::NoGradGuard no_grad;
      for (const auto& p : model.parameters()) {
        auto t = p.tensor.detach();
        comm->broadcast(t, 0);
      }
    }
    ddp::GradReducer reducer(*comm, trainable, cfg.bucket_cap_bytes(), cfg.shard_optimizer);
    // ZeRO-1: the optimizer steps this rank's blocks of the parameters, not the parameters.
    const auto shards = cfg.shard_optimizer ? reducer.param_shards() : std::vector<at::Tensor>{};
    std::unique_ptr<profile::InProcessProfiler> profiler;
    if (cfg.profile) profiler = std::make_unique<profile::InProcessProfiler>(cfg.device);
    const device::Phases phases(profiler ? profiler->sink() : device::Phases::Sink{});
    reducer.set_phases(&phases);
    report.buckets = reducer.bucket_count();
    for (int b = 0; b < reducer.bucket_count(); ++b) report.bucket_bytes += reducer.bucket_bytes(b);
    AdamW optimizer(cfg.shard_optimizer ? shards : trainable, cfg.weight_decay, cfg.optim_state);
    report.optimizer_state_bytes = optimizer.state_bytes();
    device::synchronize(cfg.device, env.local_rank);
    report.setup_s = std::chrono::duration<double>(Clock::now() - t_setup).count();
    // The MFU denominator, measured on this GPU before the first step (DESIGN.md).
    report.matmul_bf16_flops = device::measure_bf16_matmul_flops(cfg.device, env.local_rank);

    const int W = env.world_size, G = cfg.grad_accum;
    MicroBatchStager stager(device, G);
    for (int step = 0; step < cfg.total_steps(); ++step) {
      set_phase("step " + std::to_string(step));
      device::reset_memory_peaks(cfg.device, env.local_rank);
      const auto t0 = Clock::now();
      std::optional<device::Phases::Scope> step_scope;
      step_scope.emplace(phases, profile::kStepRange);
      std::optional<device::Phases::Scope> data_scope;
      data_scope.emplace(phases, profile::kDataRange);
      std::vector<TokenBatch> micro;
      std::int64_t n_rank = 0, real_rank = 0;
      for (int m = 0; m < G; ++m) {
        micro.push_back(batches->micro_batch(step, env.rank, m));
        n_rank += micro.back().predicted_tokens();
        real_rank += micro.back().real_tokens();
      }
      // N, the loss's divisor, counted once per optimizer step over all ranks and micro-batches;
      // the global count of real tokens rides along for the live log.
      auto counts = at::tensor(std::vector<std::int64_t>{n_rank, real_rank}, at::kLong).to(device);
      comm->allreduce_sum(counts);
      const auto counts_cpu = counts.cpu();
      const std::int64_t n_global = counts_cpu[0].item<std::int64_t>();
      const std::int64_t real_global = counts_cpu[1].item<std::int64_t>();

      data_scope.reset();
      reducer.zero_grad();
      auto loss_acc = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
      results::StepSample sample;
      sample.step = step;
      sample.warmup = step < cfg.warmup;
      for (int m = 0; m < G; ++m) {
        reducer.set_sync(m == G - 1);
        const auto& mb = micro[static_cast<std::size_t>(m)];
        at::Tensor tokens, labels;
        {
          const auto scope = phases.scope(profile::kDataRange);
          tokens = stager.to_device(mb.tokens, mb.rows, mb.seq_len, 2 * m);
          labels = stager.to_device(mb.labels, mb.rows, mb.seq_len, 2 * m + 1);
        }
        const double scale = loss_scale(cfg.loss_norm, W, G, n_global, n_rank, mb.predicted_tokens());
        at::Tensor loss_sum;
        {
          const auto scope = phases.scope(profile::kForwardRange);
          loss_sum = model.loss_sum(tokens, labels);
        }
        {
          const auto scope = phases.scope(profile::kBackwardRange);
          (loss_sum * scale).backward();
        }
        // What this rank adds to the step's loss once DDP has averaged over ranks.
        loss_acc += loss_sum.detach().to(at::kDouble) * (scale / W);
        sample.tokens += mb.real_tokens();
        sample.padded_tokens += mb.padded_tokens();
      }
      {
        const auto scope = phases.scope(profile::kAllreduceRange);
        reducer.finish();
      }
      if (probe.on_grads && !cfg.shard_optimizer) {
        std::vector<at::Tensor> grads;
        for (const auto& p : trainable) grads.push_back(p.grad());
        probe.on_grads(step, host_fp64(grads));
      }
      at::Tensor grad_norm;
      {
        const auto scope = phases.scope(profile::kOptimizerRange);
        if (cfg.shard_optimizer) {
          grad_norm = clip_grad_norm_sharded(shards, cfg.max_grad_norm, *comm);
          optimizer.step(cfg.lr_at(step));
          reducer.gather_params(shards);
        } else {
          grad_norm = clip_grad_norm(trainable, cfg.max_grad_norm);
          optimizer.step(cfg.lr_at(step));
        }
      }
      // A known slow-down inside the timed step, so that tests can make a regression on demand.
      if (cfg.debug_step_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(cfg.debug_step_delay_ms));
      comm->allreduce_sum(loss_acc);
      sample.loss = loss_acc.item<double>();
      sample.grad_norm = grad_norm.item<double>();
      device::synchronize(cfg.device, env.local_rank);
      step_scope.reset();
      sample.step_time_s = std::chrono::duration<double>(Clock::now() - t0).count();
      sample.predicted_tokens = n_rank;
      sample.global_predicted = n_global;
      const auto mem = device::memory_peaks(cfg.device, env.local_rank);
      sample.mem_allocated_peak = mem.allocated;
      sample.mem_reserved_peak = mem.reserved;
      report.steps.push_back(sample);
      if (probe.on_step) probe.on_step(sample);
      if (probe.live_log && env.rank == 0) print_step_line(cfg, sample, real_global, W, report.matmul_bf16_flops);
      // A NaN or infinite loss poisons every later step: stop here, naming the step (the phase), so
      // that a diverged run is a failed run and not a row of NaN figures with state "ok". The loss
      // is allreduced and the norm is of the averaged gradient, so every rank stops at this step.
      if (!std::isfinite(sample.loss) || !std::isfinite(sample.grad_norm))
        throw std::runtime_error("non-finite " + std::string(std::isfinite(sample.loss) ? "gradient norm" : "loss") +
                                 " at step " + std::to_string(step) + " (loss " + std::to_string(sample.loss) +
                                 ", gradient norm " + std::to_string(sample.grad_norm) +
                                 "): the run diverged; try a smaller --lr");
    }
    if (probe.on_weights) probe.on_weights(host_fp64(trainable));
    if (profiler) {
      auto activity = profiler->finish(env.rank, env.world_size);
      if (probe.on_activity) probe.on_activity(std::move(activity));
    }
    set_phase("shutdown");
    comm->shutdown();
    set_phase("done");
  } catch (const std::exception& e) {
    // Taken before anything else (the shutdown below closes connections, and peers then fail too).
    report.failed_at = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    report.status = "failed";
    report.error = e.what();
    // Keep only the first line of c10 errors: their backtraces drown the reason.
    if (auto nl = report.error.find('\n'); nl != std::string::npos) report.error.resize(nl);
    if (comm) {
      try {
        comm->shutdown();
      } catch (...) {
        // Already failing; the original error is what the user needs.
      }
    }
  }
  return report;
}

}  // namespace ddpbench::train
