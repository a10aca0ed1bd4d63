// `ddpbench check-loss`: the loss rule of DESIGN.md checked on any trainer. W ranks x G micro-batches
// of uneven lengths must give the same per-step losses and gradients as 1 rank with the whole global
// batch in one micro-batch, from the same weights and tokens. The normalisation bugs users hit (the
// mean of per-micro-batch means, the rank's own token count, a loss scaled by the process count)
// all break this equality; correct accumulation and averaging keep it up to rounding.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "common/error.h"
#include "common/strings.h"
#include "orchestrate/orchestrate.h"

namespace ddpbench::orchestrate {

namespace {

// Rounding alone: fp32 on the CPU sums the same tokens in another order (relative error ~1e-6);
// bf16 on a GPU rounds activations and accumulated gradients differently per grouping: at most
// 3.1e-4 for the built-in trainer, the HF Trainer and Liger on one H200 (350m LoRA, 4 x 2 against
// 1 x 8, 2026-11-29, bench/results/2026-11-29-h200x1-peers), so 5e-3 leaves a margin of 15.
double default_tolerance(const train::Config& cfg) { return cfg.device == "cuda" ? 5e-3 : 1e-4; }

double relative_difference(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::infinity();
  return std::abs(a - b) / std::max(std::abs(b), 1e-12);
}

struct Series {
  std::vector<double> loss, grad_norm;
};

Series series_of(const nlohmann::json& doc) {
  Series s;
  for (const auto& step : doc.at("steps")) {
    s.loss.push_back(step.at("loss").is_number() ? step.at("loss").get<double>() : std::nan(""));
    s.grad_norm.push_back(step.at("grad_norm").is_number() ? step.at("grad_norm").get<double>() : std::nan(""));
  }
  return s;
}

}  // namespace

bool check_loss(const CheckLossOptions& a) {
  auto cfg = a.config;
  const double tolerance = a.tolerance >= 0 ? a.tolerance : default_tolerance(cfg);
  const int world = cfg.nproc, accum = cfg.grad_accum, micro = cfg.micro_batch;

  const std::string run_id = new_run_id();
  const std::string dir = a.runs_dir + "/" + run_id;
  std::printf("ddpbench check-loss: trainer %s (loss norm %s), %d rank(s) x %d micro-batch(es) of %d against 1 rank x "
              "1 micro-batch of %d, lengths %s, %d step(s) -> %s\n",
              cfg.trainer.c_str(), train::to_string(cfg.loss_norm).c_str(), world, accum, micro, world * accum * micro,
              cfg.lengths.to_string().c_str(), cfg.warmup + cfg.steps, dir.c_str());
  std::fflush(stdout);

  if (auto missing = missing_trainer_packages(cfg.trainer)) {
    std::printf("skipped: %s\n", missing->c_str());
    return true;
  }
  // Both cells read one checkpoint and one token file, made for the candidate's world.
  if (cfg.checkpoint.empty() || cfg.data_file.empty()) {
    const auto in = prepare_equal_work_inputs(cfg, dir + "/inputs", world);
    if (cfg.checkpoint.empty()) cfg.checkpoint = in.checkpoint;
    if (cfg.data_file.empty()) cfg.data_file = in.data_file;
  }
  train::Config reference = cfg;
  reference.nproc = 1;
  reference.grad_accum = 1;
  reference.micro_batch = world * accum * micro;

  nlohmann::json documents;
  for (const auto& [name, config] : {std::pair{"candidate", cfg}, std::pair{"reference", reference}}) {
    CellRequest req;
    req.run_id = run_id;
    req.cell = std::string("check-loss/") + name;
    req.dir = dir + "/" + name;
    req.config = config;
    req.memory_check = a.memory_check;
    req.echo_rank0 = false;
    const auto result = run_cell(req);
    if (!result.ok) {
      std::fprintf(stderr, "ddpbench check-loss: the %s run failed: %s (logs: %s/logs)\n", name, result.reason.c_str(),
                   req.dir.c_str());
      return false;
    }
    documents[name] = result.document;
  }

  const auto cand = series_of(documents["candidate"]);
  const auto ref = series_of(documents["reference"]);
  if (cand.loss.size() != ref.loss.size() || cand.loss.empty())
    throw RunError("check-loss: the runs recorded " + std::to_string(cand.loss.size()) + " and " +
                   std::to_string(ref.loss.size()) + " steps");
  nlohmann::json rows = nlohmann::json::array();
  double worst_loss = 0, worst_norm = 0;
  std::printf("\n%5s %14s %14s %10s %14s %14s %10s\n", "step", "loss W x G", "loss 1 x 1", "rel diff", "grad norm W x G",
              "grad norm 1x1", "rel diff");
  for (std::size_t i = 0; i < cand.loss.size(); ++i) {
    const double dl = relative_difference(cand.loss[i], ref.loss[i]);
    const double dn = relative_difference(cand.grad_norm[i], ref.grad_norm[i]);
    worst_loss = std::max(worst_loss, dl);
    worst_norm = std::max(worst_norm, dn);
    std::printf("%5zu %14.6f %14.6f %10.2e %14.6f %14.6f %10.2e\n", i, cand.loss[i], ref.loss[i], dl, cand.grad_norm[i],
                ref.grad_norm[i], dn);
    rows.push_back({{"step", i},
                    {"loss", cand.loss[i]},
                    {"reference_loss", ref.loss[i]},
                    {"loss_rel_diff", dl},
                    {"grad_norm", cand.grad_norm[i]},
                    {"reference_grad_norm", ref.grad_norm[i]},
                    {"grad_norm_rel_diff", dn}});
  }
  const bool pass = worst_loss <= tolerance && worst_norm <= tolerance;
  nlohmann::json verdict = {{"trainer", cfg.trainer},
                            {"loss_norm", train::to_string(cfg.loss_norm)},
                            {"device", cfg.device},
                            {"world_size", world},
                            {"grad_accum", accum},
                            {"micro_batch", micro},
                            {"lengths", cfg.lengths.to_string()},
                            {"tolerance", tolerance},
                            {"max_loss_rel_diff", worst_loss},
                            {"max_grad_norm_rel_diff", worst_norm},
                            {"pass", pass},
                            {"steps", rows},
                            {"fingerprint", documents["candidate"]["fingerprint"]}};
  write_file_atomic(dir + "/check-loss.json", verdict.dump(2) + "\n");
  if (!a.out.empty()) write_file_atomic(a.out, verdict.dump(2) + "\n");
  std::printf("\n%s: largest relative difference %.2e in the loss, %.2e in the gradient norm (tolerance %.0e)\n",
              pass ? "PASS" : "FAIL", worst_loss, worst_norm, tolerance);
  if (!pass)
    std::printf("the loss of %d rank(s) x %d micro-batch(es) is not the loss of the same global batch on one rank: the "
                "trainer does not normalise by the global token count (DESIGN.md)\n",
                world, accum);
  std::printf("result: %s/check-loss.json\n", dir.c_str());
  return pass;
}

}  // namespace ddpbench::orchestrate
