// `ddpbench run`: a suite's cells in interleaved rounds, their documents, run.json and the summary.
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "common/error.h"
#include "common/strings.h"
#include "device/device.h"
#include "orchestrate/builtin_suites.h"
#include "orchestrate/orchestrate.h"
#include "results/cells.h"
#include "results/results.h"
#include "results/stats.h"
#include "suite/suite.h"

namespace ddpbench::orchestrate {

namespace {

// A cell of the run with its identity, and what its repeats gave.
struct PlannedCell {
  const suite::Cell* cell;
  train::Config config;  // the cell's, with the run's shared equal-work inputs filled in
  std::string id;     // results::cell_id
  std::string group;  // results::scaling_group
  std::string gpu_skip;  // non-empty: not run, with this reason (more GPUs than visible)
  std::vector<std::string> statuses;  // per repeat: ok | skipped: ... | failed: ...
  std::vector<nlohmann::json> ok_summaries;
  results::LossCurves ok_losses;  // results::measured_losses of each ok repeat
};

std::string with_repeat(const std::string& text, int repeat, int repeats) {
  return repeats > 1 ? text + " (repeat " + std::to_string(repeat) + "/" + std::to_string(repeats) + ")" : text;
}

double median_of(const std::vector<nlohmann::json>& summaries, const char* field) {
  std::vector<double> v;
  for (const auto& s : summaries) v.push_back(s[field].get<double>());
  return results::median(v);
}

std::int64_t max_of(const std::vector<nlohmann::json>& summaries, const char* field) {
  std::int64_t m = 0;
  for (const auto& s : summaries) m = std::max(m, s[field].get<std::int64_t>());
  return m;
}

// One row of the summary table, as run.json keeps it: medians over the cell's ok repeats, the range
// of tokens/s, and the status of the cell's first repeat that was not ok.
nlohmann::json summary_row(const PlannedCell& p, int repeats, const std::optional<results::ScalingPoint>& scaling) {
  nlohmann::json row = {{"name", p.cell->name}, {"cell_id", p.id}, {"nproc", p.cell->config.nproc},
                        {"repeats", repeats}, {"ok_repeats", p.ok_summaries.size()}};
  // A suite interrupted before a cell's turn: "not run" (run --resume runs it).
  std::string status = p.statuses.empty() ? "not run" : "ok";
  for (const auto& s : p.statuses)
    if (s != "ok") {
      status = s;
      break;
    }
  row["status"] = status;
  if (p.ok_summaries.empty()) return row;
  std::vector<double> tps;
  for (const auto& s : p.ok_summaries) tps.push_back(s["tokens_per_s"].get<double>());
  const auto spread = results::spread_of(tps);
  row["tokens_per_s"] = {{"median", spread.median}, {"min", spread.min}, {"max", spread.max}};
  row["tokens_per_s_per_gpu"] = median_of(p.ok_summaries, "tokens_per_s_per_gpu");
  row["step_time_p50_s"] = median_of(p.ok_summaries, "step_time_p50_s");
  row["step_time_p95_s"] = median_of(p.ok_summaries, "step_time_p95_s");
  row["peak_allocated_bytes"] = max_of(p.ok_summaries, "peak_allocated_bytes");
  row["final_loss"] = median_of(p.ok_summaries, "final_loss");
  row["scaling_efficiency"] = scaling ? nlohmann::json(scaling->efficiency) : nlohmann::json(nullptr);
  return row;
}

void print_summary(const std::vector<nlohmann::json>& rows, int repeats) {
  int width = 4;
  for (const auto& r : rows) width = std::max(width, static_cast<int>(r["name"].get<std::string>().size()));
  const bool many = repeats > 1;
  std::printf("%-*s %5s", width, "cell", "ranks");
  if (many) std::printf(" %5s", "ok");
  std::printf(" %11s", many ? "tok/s med" : "tok/s");
  if (many) std::printf(" %17s", "tok/s range");
  std::printf(" %11s %8s %10s %10s %11s %8s\n", "tok/s/rank", "scaling", "step p50", "step p95", "peak mem", "loss");
  for (const auto& r : rows) {
    const std::string name = r["name"].get<std::string>();
    const int nproc = r["nproc"].get<int>();
    if (!r.contains("tokens_per_s")) {
      std::printf("%-*s %5d  %s\n", width, name.c_str(), nproc, r["status"].get<std::string>().c_str());
      continue;
    }
    std::printf("%-*s %5d", width, name.c_str(), nproc);
    if (many) std::printf(" %5s", (r["ok_repeats"].dump() + "/" + std::to_string(repeats)).c_str());
    const auto& tps = r["tokens_per_s"];
    std::printf(" %11s", format_si(tps["median"].get<double>()).c_str());
    if (many)
      std::printf(" %17s", (format_si(tps["min"].get<double>()) + "-" + format_si(tps["max"].get<double>())).c_str());
    char eff[32] = "-";
    if (r["scaling_efficiency"].is_number()) std::snprintf(eff, sizeof eff, "%.1f%%", 100.0 * r["scaling_efficiency"].get<double>());
    std::printf(" %11s %8s %8.1fms %8.1fms %11s %8.4f\n", format_si(r["tokens_per_s_per_gpu"].get<double>()).c_str(), eff,
                r["step_time_p50_s"].get<double>() * 1e3, r["step_time_p95_s"].get<double>() * 1e3,
                format_bytes(r["peak_allocated_bytes"].get<double>()).c_str(), r["final_loss"].get<double>());
  }
}

// Equal-work inputs (the initial weights as a checkpoint, the batches as token files) are made
// once per run for each set of cells that differ only in trainer, implementation and rank count,
// where a Python trainer of the set needs them; every cell of the set then reads them, the built-in
// trainer too. One checkpoint for the set; a token file per rank count, so that a cell reads the
// same tokens whichever other rank counts share its run (a 1-GPU cell reading a prefix of the
// 2-GPU file trained on other tokens than in a 1-GPU-only run: bench/results/2026-11-29-h200x2-scaling).
// Made per cell, a 1b checkpoint would be written again for every Python cell and repeat.
void share_equal_work_inputs(std::vector<PlannedCell>& cells, const std::string& dir) {
  std::map<std::string, const suite::Cell*> by_name;
  for (const auto& p : cells) by_name[p.cell->name] = p.cell;
  std::map<std::string, std::vector<PlannedCell*>> sets;
  for (auto& p : cells) {
    if (!p.gpu_skip.empty() || !p.config.checkpoint.empty() || !p.config.data_file.empty()) continue;
    auto key = results::work_config(train::to_json(p.config));
    // The batches depend on the sequences per rank and step, not on their split into micro-batches,
    // so an A/A twin joins its cell's set (under its cell's workload) and reads the very same tokens.
    key["rank_batch"] = p.config.micro_batch * p.config.grad_accum;
    for (const char* varies : {"trainer", "impl", "nproc", "global_batch_sequences", "micro_batch", "grad_accum"}) key.erase(varies);
    const auto base = by_name.find(p.cell->aa_of);
    const std::string& workload = base != by_name.end() ? base->second->workload : p.cell->workload;
    sets[workload + "\n" + key.dump()].push_back(&p);
  }
  for (const auto& [key, members] : sets) {
    if (std::none_of(members.begin(), members.end(), [](const PlannedCell* p) { return train::is_python_trainer(p->config.trainer); }))
      continue;
    std::set<int> worlds;
    for (const auto* p : members) worlds.insert(p->config.nproc);
    const std::string folder = dir + "/" + results::short_hash(key);
    std::printf("equal-work inputs for %zu cell(s) of %s: %s\n", members.size(), members.front()->cell->workload.c_str(),
                folder.c_str());
    std::fflush(stdout);
    const auto in = prepare_equal_work_inputs(members.front()->config, folder, worlds);
    for (auto* p : members) {
      p->config.checkpoint = in.checkpoint;
      p->config.data_file = in.data_file.at(p->config.nproc);
    }
  }
}

std::string format_loss_difference(const std::optional<double>& v) {
  if (!v) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", *v);
  return buf;
}

// Equal work but for the trainer: the same workload, rank count, micro-batch, accumulation, length.
std::string equal_work_key(const suite::Cell& c) {
  return c.workload + "/n" + std::to_string(c.config.nproc) + "/b" + std::to_string(c.config.micro_batch) + "/g" +
         std::to_string(c.config.grad_accum) + "/s" + std::to_string(c.config.seq_len);
}

// The A/A floors of the run (each twinned trainer's: its one-rank cell against its twin) and every
// other trainer's loss curve against the built-in trainer's in the cell of equal work, judged by
// the larger of the two trainers' floors, which is named: a trainer whose kernels round
// differently has a floor of its own (issue 10). A pair lacking either floor gets no verdict.
// The largest difference is noisy (a maximum over steps of one pair), so the curves' signed mean
// difference (bias) is judged too: noise flips sign from step to step and averages out, a curve
// that lies below another at every step (other numerics) does not.
nlohmann::json loss_floors(const std::vector<PlannedCell>& cells) {
  std::map<std::string, const PlannedCell*> by_name;
  for (const auto& p : cells) by_name[p.cell->name] = &p;
  nlohmann::json floors = nlohmann::json::array(), judged = nlohmann::json::array();
  std::map<std::string, std::map<std::string, std::optional<double>>> floor_of;  // work key -> trainer -> floor
  // work key -> the largest A/A bias of the trainers twinned there: each twin is a sample of the
  // same rounding noise of the workload, whatever its trainer, so the bias floor is the workload's.
  std::map<std::string, std::optional<double>> bias_floor_of;
  for (const auto& twin : cells) {
    const auto base = by_name.find(twin.cell->aa_of);
    if (twin.cell->aa_of.empty() || base == by_name.end()) continue;
    const auto& cell = *base->second;
    const auto label = results::trainer_label(cell.config.trainer, cell.config.impl);
    const auto floor = results::aa_floor(cell.ok_losses, twin.ok_losses);
    const auto bias = results::aa_bias(cell.ok_losses, twin.ok_losses);
    const auto key = equal_work_key(*cell.cell);
    floor_of[key][label] = floor;
    auto& bias_floor = bias_floor_of[key];
    if (bias) bias_floor = std::max(bias_floor.value_or(0.0), *bias);
    floors.push_back({{"trainer", label}, {"cell", cell.cell->name}, {"twin", twin.cell->name},
                      {"floor", floor ? nlohmann::json(*floor) : nlohmann::json(nullptr)},
                      {"bias_floor", bias ? nlohmann::json(*bias) : nlohmann::json(nullptr)}});
  }
  std::map<std::string, const PlannedCell*> builtin;  // work key -> the built-in cell
  for (const auto& p : cells)
    if (p.cell->aa_of.empty() && results::trainer_label(p.config.trainer, p.config.impl) == "builtin")
      builtin[equal_work_key(*p.cell)] = &p;
  for (const auto& p : cells) {
    const auto label = results::trainer_label(p.config.trainer, p.config.impl);
    const auto key = equal_work_key(*p.cell);
    const auto base = builtin.find(key);
    const auto known = floor_of.find(key);
    if (!p.cell->aa_of.empty() || label == "builtin" || base == builtin.end() || known == floor_of.end()) continue;
    const auto distance = results::loss_curve_distance(p.ok_losses, base->second->ok_losses);
    const auto bias = results::loss_curve_bias(p.ok_losses, base->second->ok_losses);
    if (!distance || !bias) continue;  // both or neither: the same pairs of curves
    nlohmann::json j = {{"cell", p.cell->name}, {"baseline_cell", base->second->cell->name}, {"distance", *distance},
                        {"floor", nullptr}, {"floor_of", nullptr}, {"bias", *bias}, {"bias_floor", nullptr}};
    if (const auto& bias_floor = bias_floor_of[key]) {
      j["bias_floor"] = *bias_floor;
      j["bias_verdict"] = std::fabs(*bias) <= *bias_floor ? "no bias beyond A/A" : "biased";
    } else {
      j["bias_verdict"] = "no A/A floor";
    }
    const auto floor = [&](const std::string& t) {
      auto f = known->second.find(t);
      return f == known->second.end() ? std::optional<double>() : f->second;
    };
    const auto mine = floor(label), builtins = floor("builtin");
    std::string missing;
    for (const auto& [t, f] : {std::pair{label, mine}, std::pair{std::string("builtin"), builtins}})
      if (!f) missing += (missing.empty() ? "" : " and ") + t;
    if (!missing.empty()) {
      j["verdict"] = "no A/A floor for " + missing;
    } else {
      const bool mine_larger = *mine > *builtins;
      const double larger = mine_larger ? *mine : *builtins;
      j["floor"] = larger;
      j["floor_of"] = mine_larger ? label : "builtin";
      j["verdict"] = *distance <= larger ? "within A/A floor" : "beyond A/A floor";
    }
    judged.push_back(std::move(j));
  }
  return {{"floors", floors}, {"against_builtin", judged}};
}

void print_loss_floors(const nlohmann::json& f) {
  if (f["floors"].empty()) return;
  const auto number = [](const nlohmann::json& v) { return v.is_number() ? std::optional<double>(v.get<double>()) : std::nullopt; };
  std::printf("\nA/A floors (max |loss difference| and bias |mean loss difference| over the measured steps, one-rank cell "
              "against its A/A twin):\n");
  for (const auto& x : f["floors"])
    std::printf("  %-10s max %-9s bias %-9s %s vs %s\n", x["trainer"].get<std::string>().c_str(),
                format_loss_difference(number(x["floor"])).c_str(), format_loss_difference(number(x["bias_floor"])).c_str(),
                x["cell"].get<std::string>().c_str(), x["twin"].get<std::string>().c_str());
  if (f["against_builtin"].empty()) return;
  std::printf("loss curves against builtin (medians over pairs of repeats): max |loss difference| by the larger A/A floor, "
              "mean difference (trainer - builtin) by the workload's largest A/A bias:\n");
  for (const auto& x : f["against_builtin"]) {
    std::string verdict = x["verdict"].get<std::string>();
    if (x["floor"].is_number())
      verdict += " " + format_loss_difference(x["floor"].get<double>()) + " (" + x["floor_of"].get<std::string>() + "'s)";
    char mean[32];
    std::snprintf(mean, sizeof mean, "%+.1e", x["bias"].get<double>());
    std::string bias_verdict = x["bias_verdict"].get<std::string>();
    if (x["bias_floor"].is_number()) bias_verdict += " (" + format_loss_difference(x["bias_floor"].get<double>()) + ")";
    std::printf("  %s  max %s %s; mean %s: %s\n", x["cell"].get<std::string>().c_str(),
                format_loss_difference(x["distance"].get<double>()).c_str(), verdict.c_str(), mean, bias_verdict.c_str());
  }
}

// Ctrl-C, SIGTERM (Slurm's scancel) and SIGHUP stop the whole suite, not only the cell that is
// running: they are held blocked for the run and looked at between cells, and while a cell runs the
// launcher takes them (launch::Outcome::interrupted_by). Only this thread's mask changes.
class HeldSignals {
 public:
  HeldSignals() {
    sigemptyset(&set_);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, s);
    ::pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  // One that came after the last look is dropped: the suite is done by then, and unblocking it
  // would end the process before it returns its status.
  ~HeldSignals() {
    while (pending() != 0) {
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  HeldSignals(const HeldSignals&) = delete;
  HeldSignals& operator=(const HeldSignals&) = delete;
  // The signal that has come (and is taken now), 0 if none.
  int pending() {
    timespec zero{};
    const int s = ::sigtimedwait(&set_, nullptr, &zero);
    return s > 0 ? s : 0;
  }

 private:
  sigset_t set_;
  sigset_t old_;
};

// The longest file name Linux file systems take (NAME_MAX): a cell's result file is named after its id.
constexpr std::size_t kMaxFileName = 255;

// What a run folder says about itself, for --resume: the suite text saved beside run.json, and the
// cell repeats already done (ok), whose documents stay as they are.
struct Resumed {
  nlohmann::json index;
  std::string suite_text;
  std::map<std::pair<std::string, int>, nlohmann::json> done;  // (cell_id, repeat) -> its run.json entry
};

Resumed read_run_folder(const std::string& dir) {
  const std::string index_path = dir + "/run.json";
  if (!std::filesystem::is_regular_file(index_path)) throw UsageError("--resume: " + index_path + " does not exist (not a run folder)");
  Resumed r;
  try {
    r.index = nlohmann::json::parse(read_file(index_path));
    for (const auto& e : r.index.at("cells"))
      if (e.at("status") == "ok") r.done[{e.at("cell_id").get<std::string>(), e.at("repeat").get<int>()}] = e;
    r.index.at("repeats").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw UsageError("--resume: " + index_path + ": " + e.what());
  }
  const std::string suite_path = dir + "/" + r.index.value("suite_file", std::string("suite.toml"));
  if (!std::filesystem::is_regular_file(suite_path))
    throw UsageError("--resume: " + suite_path + " does not exist (a run started before --resume existed cannot be resumed)");
  r.suite_text = read_file(suite_path);
  return r;
}

}  // namespace

SuiteRunOutcome run_suite(const SuiteRunOptions& a) {
  if (a.repeats < 1) throw UsageError("--repeats: must be at least 1 (got " + std::to_string(a.repeats) + ")");
  HeldSignals signals;
  const auto runtime = device::runtime_info();
  const int gpus = runtime.cuda_available ? runtime.cuda_device_count : 0;
  std::optional<Resumed> resumed;
  std::string suite_text, suite_source;
  std::vector<std::string> filters = a.filters;
  int repeats = a.repeats;
  if (!a.resume.empty()) {
    if (!a.suite_path.empty() || !a.filters.empty() || a.repeats != 1)
      throw UsageError("--resume: the run's own suite, --filter and --repeats are used; give none of them");
    resumed = read_run_folder(a.resume);
    suite_text = resumed->suite_text;
    suite_source = a.resume + "/suite.toml";
    filters = resumed->index.value("filters", std::vector<std::string>{});
    repeats = resumed->index["repeats"].get<int>();
  } else if (a.suite_path.empty()) {
    suite_text = gpus > 0 ? kSmokeGpuSuite : kSmokeCpuSuite;
    suite_source = gpus > 0 ? "<built-in smoke-gpu>" : "<built-in smoke-cpu>";
  } else {
    try {
      suite_text = read_file(a.suite_path);
    } catch (const RunError& e) {
      throw UsageError(e.what());
    }
    suite_source = a.suite_path;
  }
  const suite::Suite suite = suite::parse_suite(suite_text, suite_source);
  std::vector<PlannedCell> cells;
  for (const auto& c : suite.cells) {
    if (!filters.empty() && std::none_of(filters.begin(), filters.end(),
                                         [&](const std::string& f) { return c.name.find(f) != std::string::npos; }))
      continue;
    const auto config = train::to_json(c.config);
    PlannedCell p{&c, c.config, results::cell_id(c.workload, config), results::scaling_group(c.workload, config), "", {}, {}};
    if (c.config.device == "cuda" && c.config.nproc > gpus)
      p.gpu_skip = "skipped: needs " + std::to_string(c.config.nproc) + " GPU(s), " + std::to_string(gpus) + " visible";
    cells.push_back(std::move(p));
  }
  if (cells.empty()) {
    std::string wanted;
    for (const auto& f : filters) wanted += (wanted.empty() ? "'" : ", '") + f + "'";
    throw UsageError("--filter: no cell of suite '" + suite.name + "' matches " + wanted);
  }

  // Every cell's inputs, memory and file name are checked before the first cell runs (and by
  // --dry-run): a bad later cell is one line naming it, not a suite that stops half-way.
  const auto fingerprint = results::collect_fingerprint(runtime);
  for (const auto& p : cells) {
    if (!p.gpu_skip.empty()) continue;
    try {
      check_cell(p.config, fingerprint, a.memory_check);
      const auto file = results::cell_file_name(p.id, repeats);
      if (file.size() > kMaxFileName)
        throw UsageError("its result file name " + file.substr(0, 40) + "... is " + std::to_string(file.size()) +
                         " characters, more than the " + std::to_string(kMaxFileName) + " a file name may have: shorten the workload name");
    } catch (const UsageError& e) {
      throw UsageError("cell " + p.cell->name + ": " + e.what());
    }
  }

  const std::string run_id = resumed ? resumed->index.value("run_id", std::string()) : new_run_id();
  const std::string run_dir = resumed ? a.resume : a.runs_dir + "/" + run_id;
  std::printf("ddpbench run: suite %s, %zu cell(s) x %d round(s), %d GPU(s) visible -> %s\n", suite.name.c_str(),
              cells.size(), repeats, gpus, run_dir.c_str());
  if (resumed) std::printf("resuming: %zu cell repeat(s) already done are kept\n", resumed->done.size());
  if (a.dry_run) {
    // Every round runs the cells in this order, so drift over the run hits every cell alike.
    std::printf("each of the %d round(s) runs, in this order:\n", repeats);
    for (const auto& c : cells) std::printf("  %s%s\n", c.id.c_str(), c.gpu_skip.empty() ? "" : ("  (" + c.gpu_skip + ")").c_str());
    return {run_dir, 0, 0};
  }
  make_dirs(run_dir + "/cells");
  // The suite as it was run, so that --resume runs the same cells whatever became of the file.
  if (!resumed) write_file_atomic(run_dir + "/suite.toml", suite_text);

  share_equal_work_inputs(cells, run_dir + "/inputs");
  std::string csv = results::long_csv_header();
  nlohmann::json index = {{"suite", suite.name},     {"run_id", run_id},     {"created", utc_timestamp()},
                          {"repeats", repeats},      {"filters", filters},     {"suite_file", "suite.toml"},
                          {"state", "running"},      {"cells", nlohmann::json::array()}};
  if (resumed) {
    index["created"] = resumed->index.value("created", utc_timestamp());
    index["resumed"] = utc_timestamp();
  }
  int failures = 0, interrupted_by = 0;
  for (int repeat = 1; repeat <= repeats && interrupted_by == 0; ++repeat) {
    for (auto& p : cells) {
      const std::string file_name = results::cell_file_name(p.id, repeat);
      const std::string file = "cells/" + file_name;
      if (resumed && resumed->done.count({p.id, repeat})) {
        // Done before the run was interrupted: its document stays, and counts as it did.
        const auto doc = results::load_run_document(run_dir + "/" + file);
        p.statuses.push_back("ok");
        p.ok_summaries.push_back(doc["summary"]);
        p.ok_losses.push_back(results::measured_losses(doc));
        csv += results::long_csv_rows(doc);
        index["cells"].push_back(resumed->done.at({p.id, repeat}));
        continue;
      }
      if ((interrupted_by = signals.pending()) != 0) break;
      std::string status = "ok";
      bool wrote = false;
      if (!p.gpu_skip.empty()) {
        status = p.gpu_skip;
        std::printf("\n== %s: %s\n", with_repeat(p.id, repeat, repeats).c_str(), status.c_str());
      } else {
        std::printf("\n== %s\n", with_repeat(p.id, repeat, repeats).c_str());
        std::fflush(stdout);
        CellRequest req;
        req.run_id = run_id;
        req.cell = p.cell->name;
        req.cell_id = p.id;
        req.repeat = repeat;
        req.dir = run_dir + "/work/" + file_name.substr(0, file_name.rfind(".json"));
        req.config = p.config;
        req.fingerprint = fingerprint;
        req.memory_check = a.memory_check;
        std::optional<CellResult> result;
        try {
          result = run_cell(req);
        } catch (const std::exception& e) {
          // A cell that fails where no check before the run could see it is that cell's failure:
          // recorded, and the suite goes on.
          status = "failed: " + std::string(e.what());
          ++failures;
          std::printf("   %s\n", status.c_str());
        }
        if (result) {
          write_file_atomic(run_dir + "/" + file, result->document.dump(2) + "\n");
          wrote = true;
          csv += results::long_csv_rows(result->document);
          if (result->interrupted_by != 0) {
            interrupted_by = result->interrupted_by;
            status = "interrupted: " + result->reason;
            std::printf("   %s\n", status.c_str());
          } else if (result->skipped) {
            status = "skipped: " + result->reason;
            std::printf("   %s\n", status.c_str());
          } else if (!result->ok) {
            status = "failed: " + result->reason;
            ++failures;
            std::printf("   %s\n", status.c_str());
          } else {
            p.ok_summaries.push_back(result->document["summary"]);
            p.ok_losses.push_back(results::measured_losses(result->document));
          }
        }
      }
      p.statuses.push_back(status);
      index["cells"].push_back(
          {{"name", p.cell->name}, {"cell_id", p.id}, {"repeat", repeat}, {"status", status}, {"file", wrote ? file : ""}});
      // Kept current after every cell, so an interrupted suite still leaves a readable run.
      write_file_atomic(run_dir + "/run.json", index.dump(2) + "\n");
      write_file_atomic(run_dir + "/results.csv", csv);
      if (interrupted_by != 0) break;
    }
  }
  index["state"] = interrupted_by != 0 ? "interrupted" : "done";
  if (interrupted_by != 0) index["interrupted_by"] = interrupted_by;
  write_file_atomic(run_dir + "/results.csv", csv);

  std::vector<results::CellFigures> figures;
  for (const auto& p : cells) {
    results::CellFigures f{p.id, p.group, p.cell->config.nproc, {}};
    for (const auto& s : p.ok_summaries) f.tokens_per_s.push_back(s["tokens_per_s"].get<double>());
    figures.push_back(std::move(f));
  }
  const auto scaling = results::scaling_efficiencies(figures);
  std::vector<nlohmann::json> rows;
  for (const auto& p : cells) {
    std::optional<results::ScalingPoint> point;
    for (const auto& s : scaling)
      if (s.cell_id == p.id) point = s;
    rows.push_back(summary_row(p, repeats, point));
  }
  index["summary"] = rows;
  index["loss_floors"] = loss_floors(cells);
  index["scaling"] = nlohmann::json::array();
  for (const auto& s : scaling) index["scaling"].push_back(results::to_json(s));
  write_file_atomic(run_dir + "/run.json", index.dump(2) + "\n");

  std::printf("\nsuite %s, run %s (scaling efficiency at fixed per-rank batch%s)\n", suite.name.c_str(), run_id.c_str(),
              repeats > 1 ? ", from medians over repeats" : "");
  print_summary(rows, repeats);
  print_loss_floors(index["loss_floors"]);
  std::printf("\nresults: %s/run.json, %s/results.csv, cells in %s/cells\n", run_dir.c_str(), run_dir.c_str(), run_dir.c_str());
  if (interrupted_by != 0)
    std::fprintf(stderr, "ddpbench run: interrupted by signal %d; %zu of %zu cell repeat(s) done; run the rest with: ddpbench run --resume %s\n",
                 interrupted_by,
                 static_cast<std::size_t>(std::count_if(index["cells"].begin(), index["cells"].end(),
                                                        [](const nlohmann::json& e) { return e["status"] == "ok"; })),
                 cells.size() * static_cast<std::size_t>(repeats), run_dir.c_str());
  return {run_dir, failures, interrupted_by};
}

}  // namespace ddpbench::orchestrate
