// `ddpbench predict RUN`: scaling beyond the GPUs at hand, from one measured run and a fitted (or
// stated) latency-bandwidth model of the collectives. See predict/predict.h for the model.
#include <cstdio>
#include <filesystem>
#include <optional>

#include "cli/commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "predict/predict.h"
#include "results/results.h"

namespace ddpbench::cli {

namespace {

struct PredictArgs {
  std::string run;
  std::string gpus = "1,2,4,8,...,1024";
  std::string link = "ib";
  double link_gbps = 0;          // 0: the link's default
  double link_latency_us = -1;   // <0: the link's default
  std::string collectives;
  int gpus_per_node = 8;
  std::string dtype = "bf16";
  std::string out = "predict.json";
};

// The training documents a RUN names: a document, a folder with result.json, or a suite run folder
// (its cells that finished ok).
std::vector<std::pair<std::string, nlohmann::json>> documents_of(const std::string& run) {
  namespace fs = std::filesystem;
  std::vector<std::string> paths;
  if (fs::is_regular_file(run)) {
    paths.push_back(run);
  } else if (fs::exists(run + "/result.json")) {
    paths.push_back(run + "/result.json");
  } else if (fs::exists(run + "/run.json")) {
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(read_file(run + "/run.json"));
    } catch (const nlohmann::json::exception& e) {
      throw UsageError(run + "/run.json: " + e.what());
    }
    if (index.value("kind", "") == "collectives") throw UsageError(run + ": a collectives run; pass it with --collectives");
    for (const auto& c : index.value("cells", nlohmann::json::array()))
      if (c.value("status", "") == "ok" && !c.value("file", "").empty()) paths.push_back(run + "/" + c["file"].get<std::string>());
  } else {
    throw UsageError("RUN: " + run + " is neither a result document nor a run folder");
  }
  if (paths.empty()) throw UsageError("RUN: " + run + " holds no cell that finished ok");
  std::vector<std::pair<std::string, nlohmann::json>> out;
  for (const auto& p : paths) out.emplace_back(p, results::load_run_document(p));
  return out;
}

std::string gib(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", bytes / double(1 << 30));
  return b;
}

int predict_main(const PredictArgs& a) {
  if (a.link != "ib" && a.link != "nvlink") throw UsageError("--link: '" + a.link + "' (ib or nvlink)");
  if (a.gpus_per_node < 1) throw UsageError("--gpus-per-node: must be at least 1");
  const auto gpus = predict::parse_gpu_counts(a.gpus);
  const auto docs = documents_of(a.run);

  std::vector<std::string> fabric_notes;
  predict::Fabric fabric;
  fabric.gpus_per_node = a.gpus_per_node;
  fabric.single_domain = a.link == "nvlink";
  // Defaults, stated in the output: H100/H200 NVLink (900 GB/s both ways, 450 each way) and one
  // 400 Gb/s NDR InfiniBand NIC per GPU; per-hop latencies are rough orders, not measurements.
  const double nvlink_gbps = 3600, ib_gbps = 400, nvlink_us = 1, ib_us = 5;
  fabric.intra = {nvlink_us * 1e-6, nvlink_gbps / 8 * 1e9};
  fabric.inter = {(a.link_latency_us >= 0 && a.link == "ib" ? a.link_latency_us : ib_us) * 1e-6,
                  (a.link_gbps > 0 && a.link == "ib" ? a.link_gbps : ib_gbps) / 8 * 1e9};
  std::optional<predict::Fit> fit;
  if (!a.collectives.empty()) {
    fit = predict::fit_collectives_run(a.collectives, a.dtype, a.gpus_per_node);
    fabric.intra = fit->link;
    fabric_notes.push_back("within a node: the fit to measured all-reduce times (" + fit->source + ")");
  } else if (a.link == "nvlink" && (a.link_gbps > 0 || a.link_latency_us >= 0)) {
    fabric.intra = {(a.link_latency_us >= 0 ? a.link_latency_us : nvlink_us) * 1e-6, (a.link_gbps > 0 ? a.link_gbps : nvlink_gbps) / 8 * 1e9};
    fabric_notes.push_back("no measured collectives: within the NVLink domain the link figure given");
  } else {
    fabric_notes.push_back("no measured collectives: within a node an assumed NVLink figure (pass --collectives RUN to measure it)");
  }
  char line[256];
  std::snprintf(line, sizeof line, "intra-node link: alpha %.2f us per hop, %.1f GB/s per GPU and direction", fabric.intra.alpha_s * 1e6,
                fabric.intra.bandwidth / 1e9);
  fabric_notes.push_back(line);
  if (fabric.single_domain) {
    fabric_notes.push_back("--link nvlink: every GPU count runs in one NVLink domain at the intra-node link");
  } else {
    std::snprintf(line, sizeof line, "between nodes of %d GPUs: InfiniBand, one NIC per GPU, %.1f GB/s (%.0f Gb/s), alpha %.1f us per hop%s",
                  fabric.gpus_per_node, fabric.inter.bandwidth / 1e9, fabric.inter.bandwidth * 8 / 1e9, fabric.inter.alpha_s * 1e6,
                  a.link_gbps > 0 ? "" : " (assumed: pass --link-gbps)");
    fabric_notes.push_back(line);
  }
  fabric_notes.push_back("collectives: ring 2(n-1)/n x S/B + 2(n-1) hops, tree 2 x S/B + 2 log2(n) hops, the faster per size (NCCL's choice, roughly)");
  fabric_notes.push_back("DDP buckets of equal size (the run's bucket count and bytes) ready evenly through the last micro-step's backward; exposed = what runs past it");
  fabric_notes.push_back("the per-GPU batch stays as measured (weak scaling); efficiency = tokens/s per GPU against one GPU with no communication");
  fabric_notes.push_back("ZeRO-1: reduce-scatter per bucket in the same window, optimizer on 1/n of the state, all-gather of the weights exposed; "
                         "the optimizer time is the profile's optimizer range (host time), so ZeRO-1 can pass 100% where that step is a large share");
  fabric_notes.push_back("TP (Megatron, within a node): 4 all-reduces of micro-batch x seq x hidden per layer and micro-step on the critical path, compute / t");
  fabric_notes.push_back("PP (1F1B): the step's micro-batches fill the pipeline, bubble (s-1)/m, activations sent between stages forward and backward");
  fabric_notes.push_back("memory per GPU: weights, gradients and optimizer state from the run's report; activations = measured peak - those; TP splits all four");

  nlohmann::json out = {{"fabric", {{"intra_alpha_s", fabric.intra.alpha_s}, {"intra_bandwidth_GBps", fabric.intra.bandwidth / 1e9},
                                    {"inter_alpha_s", fabric.inter.alpha_s}, {"inter_bandwidth_GBps", fabric.inter.bandwidth / 1e9},
                                    {"gpus_per_node", fabric.gpus_per_node}, {"single_domain", fabric.single_domain}}},
                        {"runs", nlohmann::json::array()}};
  if (fit) {
    out["fit"] = predict::to_json(*fit);
    std::printf("latency-bandwidth fit: alpha %.2f us, B %.1f GB/s on %zu points of %s\n", fit->link.alpha_s * 1e6, fit->link.bandwidth / 1e9,
                fit->points.size(), fit->source.c_str());
    std::printf("  %12s %12s %12s %8s\n", "bytes", "measured us", "model us", "error");
    for (const auto& p : fit->points)
      std::printf("  %12.0f %12.2f %12.2f %7.1f%%\n", p.bytes, p.measured_s * 1e6, p.model_s * 1e6, 100 * p.rel_error());
    std::printf("  fit error: median %.1f%%, largest %.1f%%\n", 100 * fit->median_abs_rel_error, 100 * fit->max_abs_rel_error);
    for (const auto& h : fit->held_out)
      std::printf("  not fitted, %s (ring, the same alpha and B): error median %.1f%%, largest %.1f%%\n", h.series.c_str(),
                  100 * h.median_abs_rel_error, 100 * h.max_abs_rel_error);
    std::printf("\n");
  }
  for (const auto& [path, doc] : docs) {
    const auto measured = predict::measured_from(doc, path);
    const auto model = predict::make_model(measured, fabric);
    auto notes = model.assumptions;
    notes.insert(notes.end(), fabric_notes.begin(), fabric_notes.end());
    std::printf("%s: %s, measured on %d rank(s): step %.1f ms, %.1f%s without exposed communication, %s tokens per GPU per step, %d bucket(s) of %s\n",
                path.c_str(), measured.cell.c_str(), measured.ranks, measured.step_s * 1e3, model.compute_s * 1e3,
                measured.has_profile ? " ms (profile)" : " ms (model)", format_si(measured.tokens_per_gpu_step).c_str(), measured.buckets,
                format_bytes(measured.grad_bytes / std::max(1, measured.buckets)).c_str());
    // The model against the run itself: at the measured rank count it must give the measured step.
    nlohmann::json check;
    if (measured.ranks > 1) {
      const auto at_run = predict::predict(model, {measured.ranks}).front();
      check = {{"ranks", measured.ranks}, {"measured_step_s", measured.step_s}, {"model_step_s", at_run.step_s},
               {"rel_error", (at_run.step_s - measured.step_s) / measured.step_s}};
      if (measured.has_profile) {
        check["measured_exposed_comm_s"] = measured.exposed_comm_s;
        check["model_exposed_comm_s"] = at_run.exposed_comm_s;
      }
      std::printf("check at the measured %d ranks: model step %.2f ms against %.2f ms measured (%+.1f%%)", measured.ranks,
                  at_run.step_s * 1e3, measured.step_s * 1e3, 100 * check["rel_error"].get<double>());
      if (measured.has_profile)
        std::printf(", exposed communication %.2f ms against %.2f ms", at_run.exposed_comm_s * 1e3, measured.exposed_comm_s * 1e3);
      std::printf("\n");
    }
    std::printf("assumptions:\n");
    for (const auto& n : notes) std::printf("  - %s\n", n.c_str());
    std::printf("%-6s %6s %4s %3s %3s %10s %10s %10s %12s %7s %8s %8s %8s %8s %8s\n", "", "gpus", "dp", "tp", "pp", "step ms", "exposed",
                "straggler", "tok/s/GPU",
                "eff", "w GiB", "g GiB", "opt GiB", "act GiB", "tot GiB");
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& p : predict::predict(model, gpus)) {
      std::printf("%-6s %6d %4d %3d %3d %10.2f %10.2f %10.2f %12s %6.1f%% %8s %8s %8s %8s %8s\n", p.strategy.c_str(), p.gpus, p.dp, p.tp,
                  p.pp, p.step_s * 1e3, p.exposed_comm_s * 1e3, p.straggler_s * 1e3, format_si(p.tokens_per_s_per_gpu).c_str(), 100 * p.efficiency,
                  gib(p.memory.weights).c_str(), gib(p.memory.grads).c_str(), gib(p.memory.optimizer).c_str(),
                  gib(p.memory.activations).c_str(), gib(p.memory.total()).c_str());
      rows.push_back(predict::to_json(p));
    }
    std::printf("\n");
    out["runs"].push_back({{"document", path},
                           {"cell", measured.cell},
                           {"measured_ranks", measured.ranks},
                           {"measured_step_s", measured.step_s},
                           {"compute_s", model.compute_s},
                           {"has_profile", measured.has_profile},
                           {"check_at_measured_ranks", check},
                           {"assumptions", notes},
                           {"predictions", rows}});
  }
  write_file_atomic(a.out, out.dump(2) + "\n");
  std::printf("predictions: %s\n", a.out.c_str());
  return 0;
}

}  // namespace

void add_predict_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<PredictArgs>();
  auto* sub = app.add_subcommand("predict", "Step time, exposed communication, tokens/s per GPU, scaling and memory at more GPUs, from one run");
  sub->add_option("run", args->run, "a result document, a folder with result.json, or a suite run folder")->required();
  sub->add_option("--gpus", args->gpus, "GPU counts: a list, '...' doubling [1,2,4,8,...,1024]");
  sub->add_option("--collectives", args->collectives, "a `bench collectives` run folder: fit the intra-node link to its all-reduce times");
  sub->add_option("--dtype", args->dtype, "which measured all-reduce series to fit [bf16]")->check(CLI::IsMember({"bf16", "fp32"}));
  sub->add_option("--link", args->link, "ib: nodes joined by InfiniBand; nvlink: all GPUs in one NVLink domain [ib]");
  sub->add_option("--link-gbps", args->link_gbps, "that link's bandwidth per GPU and direction, Gb/s [ib 400, nvlink 3600]");
  sub->add_option("--link-latency-us", args->link_latency_us, "that link's latency per hop, us [ib 5, nvlink 1]");
  sub->add_option("--gpus-per-node", args->gpus_per_node, "GPUs per node [8]");
  sub->add_option("--out", args->out, "JSON file to write [predict.json]");
  sub->callback([args, &action] { action = [args] { return predict_main(*args); }; });
}

}  // namespace ddpbench::cli
