#include "results/results.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include "common/error.h"
#include "common/strings.h"
#include "results/cells.h"
#include "results/stats.h"

namespace ddpbench::results {

namespace {
// JSON has no NaN: nlohmann writes it as null, and a diverged loss must survive the round trip.
double number_or_nan(const nlohmann::json& j) {
  return j.is_null() ? std::numeric_limits<double>::quiet_NaN() : j.get<double>();
}
}  // namespace

nlohmann::json to_json(const StepSample& s) {
  return {{"step", s.step},
          {"warmup", s.warmup},
          {"loss", s.loss},
          {"tokens", s.tokens},
          {"padded_tokens", s.padded_tokens},
          {"predicted_tokens", s.predicted_tokens},
          {"global_predicted_tokens", s.global_predicted},
          {"step_time_s", s.step_time_s},
          {"grad_norm", s.grad_norm},
          {"mem_allocated_peak", s.mem_allocated_peak},
          {"mem_reserved_peak", s.mem_reserved_peak}};
}

nlohmann::json to_json(const RankReport& r) {
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& s : r.steps) steps.push_back(to_json(s));
  return {{"schema_version", kSchemaVersion},
          {"rank", r.rank},
          {"local_rank", r.local_rank},
          {"world_size", r.world_size},
          {"host", r.host},
          {"device", r.device},
          {"status", r.status},
          {"phase", r.phase},
          {"error", r.error},
          {"failed_at", r.failed_at},
          {"setup_s", r.setup_s},
          {"buckets", r.buckets},
          {"bucket_bytes", r.bucket_bytes},
          {"parameters", r.parameters},
          {"trainable_parameters", r.trainable_parameters},
          {"optimizer_state_bytes", r.optimizer_state_bytes},
          {"matmul_bf16_flops", r.matmul_bf16_flops},
          {"packages", r.packages},
          {"steps", steps}};
}

RankReport rank_report_from_json(const nlohmann::json& j) {
  try {
    RankReport r;
    r.rank = j.at("rank").get<int>();
    r.local_rank = j.at("local_rank").get<int>();
    r.world_size = j.at("world_size").get<int>();
    r.host = j.at("host").get<std::string>();
    r.device = j.at("device").get<std::string>();
    r.status = j.at("status").get<std::string>();
    r.phase = j.at("phase").get<std::string>();
    r.error = j.at("error").get<std::string>();
    r.failed_at = j.value("failed_at", 0.0);
    r.setup_s = j.at("setup_s").get<double>();
    r.buckets = j.at("buckets").get<int>();
    r.bucket_bytes = j.at("bucket_bytes").get<std::int64_t>();
    r.parameters = j.at("parameters").get<std::int64_t>();
    r.trainable_parameters = j.at("trainable_parameters").get<std::int64_t>();
    r.optimizer_state_bytes = j.value("optimizer_state_bytes", std::int64_t{0});
    r.matmul_bf16_flops = j.value("matmul_bf16_flops", 0.0);
    if (j.contains("packages")) r.packages = j.at("packages").get<std::map<std::string, std::string>>();
    for (const auto& s : j.at("steps")) r.steps.push_back(step_sample_from_json(s));
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw RunError(std::string("rank report: ") + e.what());
  }
}

StepSample step_sample_from_json(const nlohmann::json& s) {
  StepSample x;
  x.step = s.at("step").get<int>();
  x.warmup = s.at("warmup").get<bool>();
  x.loss = number_or_nan(s.at("loss"));
  x.tokens = s.at("tokens").get<std::int64_t>();
  x.padded_tokens = s.at("padded_tokens").get<std::int64_t>();
  x.predicted_tokens = s.at("predicted_tokens").get<std::int64_t>();
  x.global_predicted = s.at("global_predicted_tokens").get<std::int64_t>();
  x.step_time_s = s.at("step_time_s").get<double>();
  x.grad_norm = number_or_nan(s.at("grad_norm"));
  x.mem_allocated_peak = s.at("mem_allocated_peak").get<std::int64_t>();
  x.mem_reserved_peak = s.at("mem_reserved_peak").get<std::int64_t>();
  return x;
}

std::string step_stream_path(const std::string& ranks_dir, int rank) {
  return ranks_dir + "/rank" + std::to_string(rank) + ".steps.jsonl";
}

void append_step_sample(const std::string& path, const StepSample& sample) {
  // One write of a whole line with O_APPEND: a reader never sees two lines interleaved, and a
  // process killed after it returns has its line in the file (the page cache survives the process).
  const std::string line = to_json(sample).dump() + "\n";
  FILE* f = std::fopen(path.c_str(), "a");
  if (!f) throw RunError("cannot append to " + path + ": " + std::strerror(errno));
  const bool ok = std::fwrite(line.data(), 1, line.size(), f) == line.size();
  if (std::fclose(f) != 0 || !ok) throw RunError("cannot append to " + path + ": " + std::strerror(errno));
}

std::vector<StepSample> read_step_stream(const std::string& path) {
  std::vector<StepSample> out;
  std::string text;
  try {
    text = read_file(path);
  } catch (const RunError&) {
    return out;  // the rank died before its first step
  }
  for (const auto& line : split(text, '\n')) {
    if (line.empty()) continue;
    try {
      out.push_back(step_sample_from_json(nlohmann::json::parse(line)));
    } catch (const nlohmann::json::exception&) {
      break;  // torn: the rank died in the middle of writing this line
    }
  }
  return out;
}

namespace {

// One merged step across ranks.
struct MergedStep {
  int step = 0;
  bool warmup = false;
  double loss = 0;
  std::int64_t tokens = 0, padded = 0, global_predicted = 0;
  double step_time_s = 0;
  double grad_norm = 0;
  std::vector<double> rank_times;
};

std::vector<MergedStep> merge_steps(const std::vector<RankReport>& ranks) {
  std::map<int, MergedStep> by_step;
  for (const auto& r : ranks) {
    for (const auto& s : r.steps) {
      auto& m = by_step[s.step];
      m.step = s.step;
      m.warmup = s.warmup;
      if (r.rank == 0 || m.rank_times.empty()) {
        m.loss = s.loss;
        m.grad_norm = s.grad_norm;
        m.global_predicted = s.global_predicted;
      }
      m.tokens += s.tokens;
      m.padded += s.padded_tokens;
      m.step_time_s = std::max(m.step_time_s, s.step_time_s);
      m.rank_times.push_back(s.step_time_s);
    }
  }
  std::vector<MergedStep> out;
  // Only steps every rank finished count: a failed rank's partial step is not a measurement.
  for (auto& [k, m] : by_step)
    if (m.rank_times.size() == ranks.size()) out.push_back(std::move(m));
  return out;
}

}  // namespace

Summary summarize(const std::vector<RankReport>& ranks, double flops_per_token, double peak_flops) {
  Summary s;
  const auto merged = merge_steps(ranks);
  std::vector<double> times;
  double tokens = 0, padded = 0;
  for (const auto& m : merged) {
    if (m.warmup) continue;
    times.push_back(m.step_time_s);
    tokens += static_cast<double>(m.tokens);
    padded += static_cast<double>(m.padded);
  }
  s.measured_steps = static_cast<int>(times.size());
  const double total_time = std::accumulate(times.begin(), times.end(), 0.0);
  // Per rank over the ranks whose reports are here: all of them, or a node's own in a partial
  // document (make_run_document), whose tokens are that node's too.
  const int reported = ranks.empty() ? 1 : static_cast<int>(ranks.size());
  if (total_time > 0) {
    s.tokens_per_s = tokens / total_time;
    s.tokens_per_s_per_gpu = s.tokens_per_s / reported;
    s.padded_tokens_per_s = padded / total_time;
  }
  s.step_time_p50_s = median(times);
  s.step_time_p95_s = percentile(times, 95.0);
  s.step_time_mean_s = mean(times);
  if (flops_per_token > 0 && peak_flops > 0) s.mfu = flops_per_token * s.tokens_per_s_per_gpu / peak_flops;
  if (!merged.empty()) s.final_loss = merged.back().loss;
  for (const auto& r : ranks) {
    for (const auto& st : r.steps) {
      s.peak_allocated_max = std::max(s.peak_allocated_max, st.mem_allocated_peak);
      s.peak_reserved_max = std::max(s.peak_reserved_max, st.mem_reserved_peak);
    }
  }
  return s;
}

nlohmann::json to_json(const Summary& s) {
  nlohmann::json j = {{"measured_steps", s.measured_steps},
                      {"tokens_per_s", s.tokens_per_s},
                      {"tokens_per_s_per_gpu", s.tokens_per_s_per_gpu},
                      {"padded_tokens_per_s", s.padded_tokens_per_s},
                      {"step_time_p50_s", s.step_time_p50_s},
                      {"step_time_p95_s", s.step_time_p95_s},
                      {"step_time_mean_s", s.step_time_mean_s},
                      {"final_loss", s.final_loss},
                      {"peak_allocated_bytes", s.peak_allocated_max},
                      {"peak_reserved_bytes", s.peak_reserved_max}};
  j["mfu"] = s.mfu >= 0 ? nlohmann::json(s.mfu) : nlohmann::json(nullptr);
  return j;
}

nlohmann::json make_run_document(const RunContext& ctx, const std::vector<RankReport>& ranks) {
  nlohmann::json doc;
  doc["schema_version"] = kSchemaVersion;
  doc["run_id"] = ctx.run_id;
  doc["cell"] = ctx.cell;
  doc["cell_id"] = ctx.cell_id;
  doc["repeat"] = ctx.repeat;
  doc["created"] = utc_timestamp();
  doc["config"] = ctx.config;
  doc["fingerprint"] = ctx.fingerprint;
  for (const auto& r : ranks)
    if (!r.packages.empty()) {
      doc["fingerprint"]["python_packages"] = r.packages;
      break;
    }
  doc["hardware_key"] = ctx.hardware_key;

  // Status: the cause that came first in time. A rank the launcher saw end without an account
  // (killed, crashed, stalled) or the run ended as a whole (timeout, interrupt): the launcher's
  // verdict. Else the failed rank that failed first by its own clock (ranks of one node share it;
  // failed_at 0, unknown, counts as last), ties to the lowest rank; else the launcher's verdict.
  const auto merged = merge_steps(ranks);
  nlohmann::json status = {{"state", "ok"}};
  const RankReport* first = nullptr;
  for (const auto& r : ranks) {
    if (r.status == "ok") continue;
    const auto later = [](double t) { return t > 0 ? t : std::numeric_limits<double>::infinity(); };
    if (!first || later(r.failed_at) < later(first->failed_at)) first = &r;
  }
  const bool launcher_failed = ctx.launcher_status != "ok";
  if (launcher_failed && (ctx.failed_rank_silent || ctx.failed_rank < 0 || !first))
    status = {{"state", "failed"}, {"rank", ctx.failed_rank}, {"phase", ctx.failed_phase}, {"reason", ctx.launcher_reason}};
  else if (first)
    status = {{"state", "failed"}, {"rank", first->rank}, {"phase", first->phase}, {"reason", first->error}};
  if (status["state"] == "failed") status["completed_steps"] = merged.size();
  if (!ctx.skipped_reason.empty()) status = {{"state", "skipped"}, {"reason", ctx.skipped_reason}};
  doc["status"] = status;

  nlohmann::json steps = nlohmann::json::array();
  for (const auto& m : merged) {
    steps.push_back({{"step", m.step},
                     {"warmup", m.warmup},
                     {"loss", m.loss},
                     {"tokens", m.tokens},
                     {"padded_tokens", m.padded},
                     {"global_predicted_tokens", m.global_predicted},
                     {"step_time_s", m.step_time_s},
                     {"rank_step_time_s", m.rank_times},
                     {"grad_norm", m.grad_norm}});
  }
  doc["steps"] = steps;

  nlohmann::json per_rank = nlohmann::json::array();
  for (const auto& r : ranks) {
    std::vector<double> times;
    std::vector<std::int64_t> predicted;
    std::int64_t tokens = 0, peak_alloc = 0, peak_res = 0;
    for (const auto& s : r.steps) {
      predicted.push_back(s.predicted_tokens);
      peak_alloc = std::max(peak_alloc, s.mem_allocated_peak);
      peak_res = std::max(peak_res, s.mem_reserved_peak);
      if (s.warmup) continue;
      times.push_back(s.step_time_s);
      tokens += s.tokens;
    }
    per_rank.push_back({{"rank", r.rank},
                        {"local_rank", r.local_rank},
                        {"host", r.host},
                        {"device", r.device},
                        {"status", r.status},
                        {"setup_s", r.setup_s},
                        {"buckets", r.buckets},
                        {"bucket_bytes", r.bucket_bytes},
                        {"parameters", r.parameters},
                        {"trainable_parameters", r.trainable_parameters},
                        {"optimizer_state_bytes", r.optimizer_state_bytes},
                        {"matmul_bf16_flops", r.matmul_bf16_flops},
                        {"measured_tokens", tokens},
                        {"predicted_tokens_per_step", predicted},
                        {"step_time_p50_s", median(times)},
                        {"step_time_p95_s", percentile(times, 95.0)},
                        {"peak_allocated_bytes", peak_alloc},
                        {"peak_reserved_bytes", peak_res}});
  }
  doc["ranks"] = per_rank;
  // A document without every rank's report (a node of a multi-node run that holds only its own
  // ranks, or ranks that never reported) says so, and its figures are over the ranks it holds.
  const int world = ranks.empty() ? 0 : ranks.front().world_size;
  if (!ranks.empty() && static_cast<int>(ranks.size()) < world) {
    nlohmann::json held = nlohmann::json::array();
    for (const auto& r : ranks) held.push_back(r.rank);
    doc["partial"] = {{"world_size", world}, {"ranks", held}, {"reason", ctx.partial_reason}};
  }
  auto summary = to_json(summarize(ranks, ctx.flops_per_token, ctx.peak_flops));
  summary["flops_per_token"] = ctx.flops_per_token;
  summary["peak_flops"] = ctx.peak_flops;
  summary["datasheet_flops"] = ctx.datasheet_flops;
  doc["summary"] = summary;
  return doc;
}

double datasheet_bf16_flops(const std::string& gpu_name) {
  // Dense (not 2:4 sparse) bf16 tensor-core rates, SXM boards unless named. Order matters: the
  // first name found in gpu_name wins ("H100 PCIe" before "H100").
  static const std::pair<const char*, double> table[] = {
      {"H100 PCIe", 756e12}, {"H100 NVL", 835e12}, {"H100", 989e12}, {"H200", 989e12},
      {"H800", 989e12},      {"A100", 312e12},     {"B200", 2250e12}, {"L40S", 362e12},
  };
  for (const auto& [name, flops] : table)
    if (gpu_name.find(name) != std::string::npos) return flops;
  return 0;
}

double measured_peak_flops(const std::vector<RankReport>& ranks) {
  std::vector<double> rates;
  for (const auto& r : ranks)
    if (r.matmul_bf16_flops > 0) rates.push_back(r.matmul_bf16_flops);
  return rates.empty() ? 0 : median(rates);
}

nlohmann::json benchmark_document_head(const std::string& kind, const std::string& cell, const nlohmann::json& config,
                                       const std::string& run_id, const nlohmann::json& fingerprint,
                                       const std::string& hardware_key) {
  nlohmann::json doc;
  doc["schema_version"] = 1;
  doc["kind"] = kind;
  doc["run_id"] = run_id;
  doc["cell"] = cell;
  doc["cell_id"] = cell + "#" + short_hash(config.dump());
  doc["repeat"] = 1;
  doc["created"] = utc_timestamp();
  doc["config"] = config;
  doc["fingerprint"] = fingerprint;
  doc["hardware_key"] = hardware_key;
  return doc;
}

std::string long_csv_header() { return "hardware,ddpbench_commit,libtorch,cell,trainer,preset,mode,impl,nproc,micro_batch,grad_accum,seq_len,metric,value\n"; }

std::string long_csv_rows(const nlohmann::json& doc) {
  // Only cells that ran: a failed or skipped cell's zeros are no measurement.
  if (doc.at("status").value("state", "") != "ok") return "";
  const auto& c = doc.at("config");
  const auto& fp = doc.at("fingerprint");
  std::ostringstream key;
  auto str = [](const nlohmann::json& j, const char* k) {
    return j.contains(k) ? (j[k].is_string() ? j[k].get<std::string>() : j[k].dump()) : std::string();
  };
  key << '"' << doc.value("hardware_key", "") << "\"," << str(fp, "git_commit") << ','
      << (fp.contains("runtime") ? str(fp["runtime"], "libtorch") : "") << ',' << doc.value("cell", "") << ','
      << str(c, "trainer") << ',' << str(c, "preset") << ',' << str(c, "mode") << ',' << str(c, "impl") << ','
      << str(c, "nproc") << ',' << str(c, "micro_batch") << ',' << str(c, "grad_accum") << ',' << str(c, "seq_len");
  std::ostringstream out;
  for (const auto& [metric, value] : doc.at("summary").items())
    if (value.is_number()) out << key.str() << ',' << metric << ',' << value.dump() << '\n';
  return out.str();
}

nlohmann::json load_run_document(const std::string& path) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(path + ": not valid JSON (" + e.what() + ")");
  } catch (const RunError& e) {
    throw UsageError(e.what());
  }
  if (!doc.is_object() || !doc.contains("schema_version"))
    throw UsageError(path + ": not a ddpbench result (no schema_version)");
  if (doc["schema_version"] != kSchemaVersion)
    throw UsageError(path + ": schema version " + doc["schema_version"].dump() + ", this ddpbench reads " +
                     std::to_string(kSchemaVersion));
  for (const char* field : {"config", "fingerprint", "status", "steps", "ranks", "summary"})
    if (!doc.contains(field)) throw UsageError(path + ": missing field '" + std::string(field) + "'");
  return doc;
}

}  // namespace ddpbench::results
