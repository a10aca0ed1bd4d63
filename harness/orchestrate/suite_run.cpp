// `ddpbench run`: a suite's cells in interleaved rounds, their documents, run.json and the summary.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>

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
  std::string status = "ok";
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

// Equal-work inputs (the initial weights as a checkpoint, the batches as a token file) are made
// once per run for each set of cells that differ only in trainer, implementation and rank count,
// for the largest world among them (a smaller world reads a prefix of the same documents), where a
// Python trainer of the set needs them; every cell of the set then reads them, the built-in trainer
// too. Made per cell, a 1b checkpoint would be written again for every Python cell and repeat.
void share_equal_work_inputs(std::vector<PlannedCell>& cells, const std::string& dir) {
  std::map<std::string, std::vector<PlannedCell*>> sets;
  for (auto& p : cells) {
    if (!p.gpu_skip.empty() || !p.config.checkpoint.empty() || !p.config.data_file.empty()) continue;
    auto key = results::work_config(train::to_json(p.config));
    for (const char* varies : {"trainer", "impl", "nproc", "global_batch_sequences"}) key.erase(varies);
    sets[p.cell->workload + "\n" + key.dump()].push_back(&p);
  }
  for (const auto& [key, members] : sets) {
    if (std::none_of(members.begin(), members.end(), [](const PlannedCell* p) { return train::is_python_trainer(p->config.trainer); }))
      continue;
    const auto* widest = *std::max_element(members.begin(), members.end(), [](const PlannedCell* a, const PlannedCell* b) {
      return a->config.nproc < b->config.nproc;
    });
    const std::string folder = dir + "/" + results::short_hash(key);
    std::printf("equal-work inputs for %zu cell(s) of %s: %s\n", members.size(), widest->cell->workload.c_str(), folder.c_str());
    std::fflush(stdout);
    const auto in = prepare_equal_work_inputs(widest->config, folder, widest->config.nproc);
    for (auto* p : members) {
      p->config.checkpoint = in.checkpoint;
      p->config.data_file = in.data_file;
    }
  }
}

}  // namespace

SuiteRunOutcome run_suite(const SuiteRunOptions& a) {
  if (a.repeats < 1) throw UsageError("--repeats: must be at least 1 (got " + std::to_string(a.repeats) + ")");
  const auto runtime = device::runtime_info();
  const int gpus = runtime.cuda_available ? runtime.cuda_device_count : 0;
  suite::Suite suite;
  if (a.suite_path.empty()) {
    suite = gpus > 0 ? suite::parse_suite(kSmokeGpuSuite, "<built-in smoke-gpu>")
                     : suite::parse_suite(kSmokeCpuSuite, "<built-in smoke-cpu>");
  } else {
    suite = suite::load_suite(a.suite_path);
  }
  std::vector<PlannedCell> cells;
  for (const auto& c : suite.cells) {
    if (!a.filter.empty() && c.name.find(a.filter) == std::string::npos) continue;
    const auto config = train::to_json(c.config);
    PlannedCell p{&c, c.config, results::cell_id(c.workload, config), results::scaling_group(c.workload, config), "", {}, {}};
    if (c.config.device == "cuda" && c.config.nproc > gpus)
      p.gpu_skip = "skipped: needs " + std::to_string(c.config.nproc) + " GPU(s), " + std::to_string(gpus) + " visible";
    cells.push_back(std::move(p));
  }
  if (cells.empty()) throw UsageError("--filter: no cell of suite '" + suite.name + "' matches '" + a.filter + "'");

  const std::string run_id = new_run_id();
  const std::string run_dir = a.runs_dir + "/" + run_id;
  std::printf("ddpbench run: suite %s, %zu cell(s) x %d round(s), %d GPU(s) visible -> %s\n", suite.name.c_str(),
              cells.size(), a.repeats, gpus, run_dir.c_str());
  if (a.dry_run) {
    // Every round runs the cells in this order, so drift over the run hits every cell alike.
    std::printf("each of the %d round(s) runs, in this order:\n", a.repeats);
    for (const auto& c : cells) std::printf("  %s%s\n", c.id.c_str(), c.gpu_skip.empty() ? "" : ("  (" + c.gpu_skip + ")").c_str());
    return {run_dir, 0};
  }
  make_dirs(run_dir + "/cells");

  share_equal_work_inputs(cells, run_dir + "/inputs");
  const auto fingerprint = results::collect_fingerprint(runtime);
  std::string csv = results::long_csv_header();
  nlohmann::json index = {{"suite", suite.name},   {"run_id", run_id},
                          {"created", utc_timestamp()}, {"repeats", a.repeats},
                          {"cells", nlohmann::json::array()}};
  int failures = 0;
  for (int repeat = 1; repeat <= a.repeats; ++repeat) {
    for (auto& p : cells) {
      const std::string file_name = results::cell_file_name(p.id, repeat);
      const std::string file = "cells/" + file_name;
      std::string status = "ok";
      bool wrote = false;
      if (!p.gpu_skip.empty()) {
        status = p.gpu_skip;
        std::printf("\n== %s: %s\n", with_repeat(p.id, repeat, a.repeats).c_str(), status.c_str());
      } else {
        std::printf("\n== %s\n", with_repeat(p.id, repeat, a.repeats).c_str());
        std::fflush(stdout);
        CellRequest req;
        req.run_id = run_id;
        req.cell = p.cell->name;
        req.cell_id = p.id;
        req.repeat = repeat;
        req.dir = run_dir + "/work/" + file_name.substr(0, file_name.rfind(".json"));
        req.config = p.config;
        req.fingerprint = fingerprint;
        const auto result = run_cell(req);
        write_file_atomic(run_dir + "/" + file, result.document.dump(2) + "\n");
        wrote = true;
        csv += results::long_csv_rows(result.document);
        if (result.skipped) {
          status = "skipped: " + result.reason;
          std::printf("   %s\n", status.c_str());
        } else if (!result.ok) {
          status = "failed: " + result.reason;
          ++failures;
          std::printf("   %s\n", status.c_str());
        } else {
          p.ok_summaries.push_back(result.document["summary"]);
        }
      }
      p.statuses.push_back(status);
      index["cells"].push_back(
          {{"name", p.cell->name}, {"cell_id", p.id}, {"repeat", repeat}, {"status", status}, {"file", wrote ? file : ""}});
      // Kept current after every cell, so an interrupted suite still leaves a readable run.
      write_file_atomic(run_dir + "/run.json", index.dump(2) + "\n");
      write_file_atomic(run_dir + "/results.csv", csv);
    }
  }

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
    rows.push_back(summary_row(p, a.repeats, point));
  }
  index["summary"] = rows;
  index["scaling"] = nlohmann::json::array();
  for (const auto& s : scaling) index["scaling"].push_back(results::to_json(s));
  write_file_atomic(run_dir + "/run.json", index.dump(2) + "\n");

  std::printf("\nsuite %s, run %s (scaling efficiency at fixed per-rank batch%s)\n", suite.name.c_str(), run_id.c_str(),
              a.repeats > 1 ? ", from medians over repeats" : "");
  print_summary(rows, a.repeats);
  std::printf("\nresults: %s/run.json, %s/results.csv, cells in %s/cells\n", run_dir.c_str(), run_dir.c_str(), run_dir.c_str());
  return {run_dir, failures};
}

}  // namespace ddpbench::orchestrate
