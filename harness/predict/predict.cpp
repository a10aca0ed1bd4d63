#include "predict/predict.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "common/strings.h"
#include "results/stats.h"
#include "train/config.h"

namespace ddpbench::predict {

namespace {

int ceil_log2(int n) {
  int levels = 0;
  while ((1 << levels) < n) ++levels;
  return levels;
}

struct Path {
  int nodes = 1;
  int per_node = 1;
  double bandwidth = 0;  // the slowest link a ring crosses
};

Path path_of(const Fabric& f, int n, int per_node) {
  Path p;
  p.per_node = per_node > 0 ? per_node : std::min(n, f.gpus_per_node);
  p.nodes = f.single_domain ? 1 : (n + p.per_node - 1) / p.per_node;
  if (f.single_domain) p.per_node = n;
  p.bandwidth = p.nodes > 1 ? std::min(f.intra.bandwidth, f.inter.bandwidth) : f.intra.bandwidth;
  return p;
}

// One pass around a ring of n: n-1 hops, of which `nodes` cross between nodes when there are several.
double ring_hops_latency(const Fabric& f, const Path& p, int n) {
  if (p.nodes <= 1) return (n - 1) * f.intra.alpha_s;
  return (n - p.nodes) * f.intra.alpha_s + p.nodes * f.inter.alpha_s;
}

double tree_levels_latency(const Fabric& f, const Path& p) {
  return ceil_log2(p.per_node) * f.intra.alpha_s + ceil_log2(p.nodes) * f.inter.alpha_s;
}

}  // namespace

CollectiveTime all_reduce_time(const Fabric& f, double bytes, int n, int per_node) {
  if (n <= 1 || bytes <= 0) return {};
  const auto p = path_of(f, n, per_node);
  const double ring = 2.0 * (n - 1) / n * bytes / p.bandwidth + 2 * ring_hops_latency(f, p, n);
  const double tree = 2.0 * bytes / p.bandwidth + 2 * tree_levels_latency(f, p);
  return tree < ring ? CollectiveTime{tree, Algorithm::tree} : CollectiveTime{ring, Algorithm::ring};
}

double scatter_gather_time(const Fabric& f, double bytes, int n, int per_node) {
  if (n <= 1 || bytes <= 0) return 0;
  const auto p = path_of(f, n, per_node);
  return static_cast<double>(n - 1) / n * bytes / p.bandwidth + ring_hops_latency(f, p, n);
}

Fit fit_all_reduce(const std::vector<std::pair<double, double>>& points, int ranks, int gpus_per_node) {
  if (ranks < 2) throw UsageError("an all-reduce over " + std::to_string(ranks) + " rank moves nothing: fit needs a run on 2 or more");
  if (points.size() < 2) throw UsageError("a latency-bandwidth fit needs at least 2 measured sizes, got " + std::to_string(points.size()));
  if (ranks > gpus_per_node) throw UsageError("the collectives run has " + std::to_string(ranks) + " ranks, more than --gpus-per-node " + std::to_string(gpus_per_node) + ": fit one node's run");
  // Relative error: divide each equation a + b S = t by t and solve the 2x2 normal equations.
  double xx = 0, xy = 0, yy = 0, x1 = 0, y1 = 0;
  for (const auto& [s, t] : points) {
    if (t <= 0) throw UsageError("a measured time of " + std::to_string(t) + " s cannot be fitted");
    const double x = 1 / t, y = s / t;
    xx += x * x, xy += x * y, yy += y * y, x1 += x, y1 += y;
  }
  double a = 0, b = 0;
  const double det = xx * yy - xy * xy;
  if (det > 0) {
    a = (x1 * yy - y1 * xy) / det;
    b = (xx * y1 - xy * x1) / det;
  }
  if (det <= 0 || a < 0) {  // sizes too alike to tell latency from bandwidth: bandwidth only
    a = 0;
    b = y1 / yy;
  }
  if (b <= 0) throw UsageError("the measured all-reduce times do not grow with size: no bandwidth to fit");
  Fit fit;
  fit.ranks = ranks;
  const int hops = std::min(2 * (ranks - 1), 2 * ceil_log2(ranks));
  fit.link.bandwidth = 2.0 * (ranks - 1) / ranks / b;
  fit.link.alpha_s = a / hops;
  Fabric f;
  f.intra = fit.link;
  f.gpus_per_node = gpus_per_node;
  std::vector<double> errors;
  for (const auto& [s, t] : points) {
    FitPoint p{s, t, all_reduce_time(f, s, ranks).seconds};
    errors.push_back(std::abs(p.rel_error()));
    fit.points.push_back(p);
  }
  fit.max_abs_rel_error = *std::max_element(errors.begin(), errors.end());
  fit.median_abs_rel_error = results::median(errors);
  return fit;
}

Fit fit_collectives_run(const std::string& run_dir, const std::string& dtype, int gpus_per_node) {
  const std::string index_path = run_dir + "/run.json";
  if (!std::filesystem::exists(index_path)) throw UsageError("--collectives: " + index_path + " does not exist");
  nlohmann::json chosen;
  std::vector<nlohmann::json> others;
  try {
    const auto index = nlohmann::json::parse(read_file(index_path));
    if (index.value("kind", "") != "collectives")
      throw UsageError("--collectives: " + run_dir + " is not a collectives run (run.json kind is not 'collectives')");
    for (const auto& cell : index.at("cells")) {
      const auto doc = nlohmann::json::parse(read_file(run_dir + "/" + cell.at("file").get<std::string>()));
      const auto& c = doc.at("config");
      if ((c.at("collective") == "reduce_scatter" || c.at("collective") == "all_gather") && c.at("dtype") == dtype) others.push_back(doc);
      if (c.at("collective") != "all_reduce" || c.at("mode") != "in-place") continue;
      if (chosen.is_null() || c.at("dtype") == dtype) chosen = doc;
    }
  } catch (const nlohmann::json::exception& e) {
    throw UsageError("--collectives: " + run_dir + ": " + e.what());
  }
  if (chosen.is_null()) throw UsageError("--collectives: " + run_dir + " holds no in-place all_reduce series");
  std::vector<std::pair<double, double>> points;
  for (const auto& r : chosen.at("rows")) points.emplace_back(r.at("bytes").get<double>(), r.at("time_s").get<double>());
  const auto& c = chosen.at("config");
  auto fit = fit_all_reduce(points, c.at("nproc").get<int>() * c.value("nnodes", 1), gpus_per_node);
  fit.source = run_dir + ": all_reduce " + c.at("dtype").get<std::string>() + " in-place, " + c.at("backend").get<std::string>() +
               ", " + std::to_string(fit.ranks) + " ranks";
  Fabric f;
  f.intra = fit.link;
  f.gpus_per_node = gpus_per_node;
  for (const auto& doc : others) {
    const auto& oc = doc.at("config");
    HeldOut h;
    h.series = oc.at("collective").get<std::string>() + "/" + oc.at("dtype").get<std::string>() + "/" + oc.at("mode").get<std::string>();
    std::vector<double> errors;
    for (const auto& r : doc.at("rows")) {
      FitPoint p{r.at("bytes").get<double>(), r.at("time_s").get<double>(), 0};
      p.model_s = scatter_gather_time(f, p.bytes, fit.ranks);
      errors.push_back(std::abs(p.rel_error()));
      h.points.push_back(p);
    }
    if (errors.empty()) continue;
    h.max_abs_rel_error = *std::max_element(errors.begin(), errors.end());
    h.median_abs_rel_error = results::median(errors);
    fit.held_out.push_back(std::move(h));
  }
  return fit;
}

Measured measured_from(const nlohmann::json& doc, const std::string& where) {
  Measured m;
  try {
    if (doc.value("kind", "") == "collectives") throw UsageError(where + ": a collectives document; pass it with --collectives");
    const auto& status = doc.at("status");
    if (status.at("state") != "ok") throw UsageError(where + ": the run's status is '" + status.at("state").get<std::string>() + "', not ok");
    const auto& c = doc.at("config");
    const auto& s = doc.at("summary");
    const auto& ranks = doc.at("ranks");
    if (ranks.empty()) throw UsageError(where + ": no rank reports");
    const auto& r0 = ranks.at(0);
    m.cell = doc.value("cell_id", doc.value("cell", std::string("?")));
    m.ranks = static_cast<int>(ranks.size());
    m.grad_accum = c.value("grad_accum", 1);
    m.micro_batch = c.value("micro_batch", 1);
    m.seq_len = c.value("seq_len", 0);
    m.element_bytes = c.value("device", std::string("cuda")) == "cpu" ? 4 : 2;
    try {
      const auto shape = train::preset_shape(c.value("preset", std::string()));
      m.hidden = shape.hidden, m.layers = shape.layers, m.heads = shape.heads, m.kv_heads = shape.kv_heads;
    } catch (const UsageError&) {
      m.assumptions.push_back("no known model shape (preset '" + c.value("preset", std::string()) + "'): no tensor or pipeline parallel rows");
    }
    m.step_s = s.at("step_time_p50_s").get<double>();
    if (!(m.step_s > 0)) throw UsageError(where + ": no measured step time");
    m.tokens_per_gpu_step = s.at("tokens_per_s_per_gpu").get<double>() * s.at("step_time_mean_s").get<double>();
    const double params = r0.value("parameters", 0.0), trainable = r0.value("trainable_parameters", 0.0);
    m.weight_bytes = params * m.element_bytes;
    m.grad_bytes = r0.value("bucket_bytes", 0.0);
    m.buckets = r0.value("buckets", 0);
    if (m.grad_bytes <= 0 && trainable > 0) {
      m.grad_bytes = trainable * m.element_bytes;
      m.buckets = static_cast<int>(std::ceil(m.grad_bytes / (25.0 * (1 << 20))));
      m.assumptions.push_back("no bucket report: gradients = trainable parameters x " + std::to_string(m.element_bytes) +
                              " B in buckets of 25 MiB (torch DDP's default)");
    }
    m.optimizer_bytes = r0.value("optimizer_state_bytes", 0.0);
    if (c.value("shard_optimizer", false)) {
      m.optimizer_bytes *= m.ranks;
      m.assumptions.push_back("the run sharded its optimizer (ZeRO-1): the whole state taken as " + std::to_string(m.ranks) +
                              " x one rank's, the step modelled as if unsharded");
    }
    m.peak_bytes = s.value("peak_allocated_bytes", 0.0);
    if (doc.contains("steps") && doc["steps"].is_array())
      for (const auto& step : doc["steps"])
        if (!step.value("warmup", false) && step.value("step_time_s", 0.0) > 0) m.step_times.push_back(step["step_time_s"].get<double>());

    // The profile, where the run has one: medians over measured steps, then over ranks.
    if (doc.contains("profile") && doc["profile"].contains("ranks") && !doc["profile"]["ranks"].empty()) {
      std::vector<double> step, exposed, backward, optimizer;
      for (const auto& pr : doc["profile"]["ranks"]) {
        const auto& med = pr.at("summary").at("median");
        step.push_back(med.at("step_ns").get<double>() * 1e-9);
        exposed.push_back(med.at("exposed_comm_ns").get<double>() * 1e-9);
        if (med.contains("phases_ns")) {
          backward.push_back(med["phases_ns"].value("backward", 0.0) * 1e-9);
          optimizer.push_back(med["phases_ns"].value("optimizer", 0.0) * 1e-9);
        }
      }
      m.has_profile = true;
      m.step_s = results::median(step);
      m.exposed_comm_s = results::median(exposed);
      if (!backward.empty()) m.backward_s = results::median(backward), m.optimizer_s = results::median(optimizer);
    }
    if (!(m.backward_s > 0)) {
      m.backward_s = 2.0 / 3.0 * m.step_s;
      m.assumptions.push_back("no profile phases: backward taken as 2/3 of the step, the optimizer step as 0 (not sharded in ZeRO-1)");
    }
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(where + ": not a training result document (" + e.what() + ")");
  }
  return m;
}

double expected_max(std::vector<double> samples, double q) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const auto m = static_cast<double>(samples.size());
  double e = 0;
  for (std::size_t i = 0; i < samples.size(); ++i)
    e += samples[i] * (std::pow(static_cast<double>(i + 1) / m, q) - std::pow(static_cast<double>(i) / m, q));
  return e;
}

double exposed_after_window(const std::vector<double>& comm, double window) {
  double end = 0;
  const auto n = static_cast<double>(comm.size());
  for (std::size_t i = 0; i < comm.size(); ++i) end = std::max(end, window * static_cast<double>(i + 1) / n) + comm[i];
  return std::max(0.0, end - window);
}

namespace {

// The bucket schedule of a data-parallel group: `bytes` of gradients in `buckets` equal buckets.
std::vector<double> bucket_times(const Fabric& f, double bytes, int buckets, int n, int per_node, bool reduce_scatter) {
  std::vector<double> out;
  if (bytes <= 0 || n <= 1) return out;
  buckets = std::max(1, buckets);
  for (int i = 0; i < buckets; ++i)
    out.push_back(reduce_scatter ? scatter_gather_time(f, bytes / buckets, n, per_node) : all_reduce_time(f, bytes / buckets, n, per_node).seconds);
  return out;
}

double sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

Memory base_memory(const Measured& r) {
  Memory m{r.weight_bytes, r.grad_bytes, r.optimizer_bytes, 0};
  m.activations = std::max(0.0, r.peak_bytes - m.weights - m.grads - m.optimizer);
  return m;
}

}  // namespace

Model make_model(const Measured& run, const Fabric& fabric) {
  Model m;
  m.run = run;
  m.fabric = fabric;
  m.assumptions = run.assumptions;
  if (run.has_profile) {
    m.compute_s = run.step_s - run.exposed_comm_s;
  } else {
    const auto comm = bucket_times(fabric, run.grad_bytes, run.buckets, run.ranks, 0, false);
    m.compute_s = run.step_s - exposed_after_window(comm, run.backward_s / run.grad_accum);
    if (run.ranks > 1) m.assumptions.push_back("no profile: the step without communication = the measured step - the model's exposed communication at " + std::to_string(run.ranks) + " ranks");
  }
  m.compute_s = std::max(m.compute_s, 1e-12);
  if (run.step_times.size() >= 2)
    m.assumptions.push_back("stragglers: a step of n GPUs waits for the slowest; the measured " + std::to_string(run.step_times.size()) +
                            " step times at " + std::to_string(run.ranks) + " rank(s) are taken as independent draws per group of " +
                            std::to_string(run.ranks) + ", the wait the expected maximum of n/" + std::to_string(run.ranks) +
                            " draws beyond their mean");
  else
    m.assumptions.push_back("stragglers: no per-step times in the document, no wait for the slowest GPU modelled");
  return m;
}

std::vector<Prediction> predict(const Model& m, const std::vector<int>& gpus) {
  const auto& r = m.run;
  const auto& f = m.fabric;
  const Memory mem = base_memory(r);
  const double window = r.backward_s / r.grad_accum;  // gradients sync in the last micro-step's backward
  const double activation_bytes = static_cast<double>(r.micro_batch) * r.seq_len * r.hidden * r.element_bytes;
  std::vector<Prediction> out;
  const double mean_step = expected_max(r.step_times, 1);
  auto finish = [&](Prediction p, double gpus_per_replica) {
    // Every GPU of the step synchronises with every other (the gradients' collectives, or the
    // activations' for TP and PP): the step waits for the slowest of n, of which the run saw r
    // (0 without step times, or with one: its maximum is its mean).
    p.straggler_s = expected_max(r.step_times, static_cast<double>(p.gpus) / r.ranks) - mean_step;
    p.step_s += p.straggler_s;
    p.tokens_per_s_per_gpu = r.tokens_per_gpu_step / gpus_per_replica / p.step_s;
    p.efficiency = p.tokens_per_s_per_gpu / (r.tokens_per_gpu_step / m.compute_s);
    out.push_back(p);
  };
  for (const int n : gpus) {
    {  // DDP: all-reduce per bucket, overlapped with backward.
      Prediction p{"ddp", n, n, 1, 1};
      p.exposed_comm_s = exposed_after_window(bucket_times(f, r.grad_bytes, r.buckets, n, 0, false), window);
      p.step_s = m.compute_s + p.exposed_comm_s;
      p.memory = mem;
      finish(p, 1);
    }
    {  // ZeRO-1: reduce-scatter per bucket in the same window, the optimizer on 1/n of the state,
       // then the updated weights all-gathered before the next forward (exposed).
      Prediction p{"zero1", n, n, 1, 1};
      const double rs = exposed_after_window(bucket_times(f, r.grad_bytes, r.buckets, n, 0, true), window);
      const double ag = sum(bucket_times(f, r.grad_bytes, r.buckets, n, 0, true));
      p.exposed_comm_s = rs + ag;
      p.step_s = m.compute_s - r.optimizer_s * (1.0 - 1.0 / n) + p.exposed_comm_s;
      p.memory = mem;
      p.memory.optimizer /= n;
      finish(p, 1);
    }
    if (r.hidden == 0) continue;
    for (int t = 2; t <= std::min(n, f.gpus_per_node); t *= 2) {
      // Tensor parallel inside a node (Megatron): 2 all-reduces of the activations per layer forward
      // and 2 backward, on the critical path; weights, gradients, state and activations split t ways.
      if (n % t != 0 || r.heads % t != 0 || r.kv_heads % t != 0) continue;
      Prediction p{"tp", n, n / t, t, 1};
      const double tp_comm = 4.0 * r.layers * r.grad_accum * all_reduce_time(f, activation_bytes, t, t).seconds;
      const int dp_per_node = f.single_domain ? 0 : std::max(1, f.gpus_per_node / t);
      const double dp = exposed_after_window(bucket_times(f, r.grad_bytes / t, r.buckets, n / t, dp_per_node, false), window / t);
      p.exposed_comm_s = tp_comm + dp;
      p.step_s = m.compute_s / t + p.exposed_comm_s;
      p.memory = {mem.weights / t, mem.grads / t, mem.optimizer / t, mem.activations / t};
      finish(p, t);
    }
    for (int s = 2; s <= std::min(n, 64); s *= 2) {
      // Pipeline parallel: `s` stages of layers/s, the step's micro-batches as the pipeline's (1F1B):
      // (m + s - 1) / m of the ideal time, activations sent between neighbours forward and backward.
      if (n % s != 0 || r.layers % s != 0) continue;
      Prediction p{"pp", n, n / s, 1, s};
      const int micro = r.grad_accum;
      const double fb = std::max(0.0, m.compute_s - r.optimizer_s);
      const double pipeline = (micro + s - 1.0) / micro * fb / s;
      const Fabric& link = f;
      const bool same_node = f.single_domain || s <= f.gpus_per_node;
      const Link hop = same_node ? link.intra : Link{link.inter.alpha_s, std::min(link.intra.bandwidth, link.inter.bandwidth)};
      const double p2p = 2.0 * (s - 1) * (hop.alpha_s + activation_bytes / hop.bandwidth);
      const int dp_per_node = f.single_domain ? 0 : std::max(1, f.gpus_per_node / s);
      const double dp = exposed_after_window(bucket_times(f, r.grad_bytes / s, r.buckets, n / s, dp_per_node, false), window / s);
      p.exposed_comm_s = p2p + dp;
      p.step_s = pipeline + r.optimizer_s / s + p.exposed_comm_s;
      p.memory = {mem.weights / s, mem.grads / s, mem.optimizer / s, mem.activations * std::min(micro, s) / s};
      finish(p, s);
    }
  }
  return out;
}

std::vector<int> parse_gpu_counts(const std::string& text) {
  std::vector<int> out;
  const auto parts = split(text, ',');
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == "...") {
      if (out.empty() || i + 1 >= parts.size()) throw UsageError("--gpus: '...' needs a number before and after it");
      const auto last = parse_int(parts[i + 1]);
      if (!last) throw UsageError("--gpus: '" + parts[i + 1] + "' is not a number");
      for (int g = out.back() * 2; g < *last; g *= 2) out.push_back(g);
      continue;
    }
    const auto g = parse_int(parts[i]);
    if (!g || *g < 1 || *g > (1 << 20)) throw UsageError("--gpus: '" + parts[i] + "' is not a GPU count");
    out.push_back(static_cast<int>(*g));
  }
  if (out.empty()) throw UsageError("--gpus: no GPU count given");
  return out;
}

nlohmann::json to_json(const Fit& f) {
  nlohmann::json pts = nlohmann::json::array();
  for (const auto& p : f.points)
    pts.push_back({{"bytes", p.bytes}, {"measured_s", p.measured_s}, {"model_s", p.model_s}, {"rel_error", p.rel_error()}});
  nlohmann::json held = nlohmann::json::array();
  for (const auto& h : f.held_out) {
    nlohmann::json hp = nlohmann::json::array();
    for (const auto& p : h.points)
      hp.push_back({{"bytes", p.bytes}, {"measured_s", p.measured_s}, {"model_s", p.model_s}, {"rel_error", p.rel_error()}});
    held.push_back({{"series", h.series}, {"max_abs_rel_error", h.max_abs_rel_error}, {"median_abs_rel_error", h.median_abs_rel_error}, {"points", hp}});
  }
  return {{"source", f.source},
          {"ranks", f.ranks},
          {"alpha_s", f.link.alpha_s},
          {"bandwidth_GBps", f.link.bandwidth / 1e9},
          {"max_abs_rel_error", f.max_abs_rel_error},
          {"median_abs_rel_error", f.median_abs_rel_error},
          {"points", pts},
          {"held_out", held}};
}

nlohmann::json to_json(const Prediction& p) {
  return {{"strategy", p.strategy},
          {"gpus", p.gpus},
          {"dp", p.dp},
          {"tp", p.tp},
          {"pp", p.pp},
          {"step_s", p.step_s},
          {"exposed_comm_s", p.exposed_comm_s},
          {"straggler_s", p.straggler_s},
          {"tokens_per_s_per_gpu", p.tokens_per_s_per_gpu},
          {"efficiency", p.efficiency},
          {"memory_bytes",
           {{"weights", p.memory.weights},
            {"grads", p.memory.grads},
            {"optimizer", p.memory.optimizer},
            {"activations", p.memory.activations},
            {"total", p.memory.total()}}}};
}

}  // namespace ddpbench::predict
