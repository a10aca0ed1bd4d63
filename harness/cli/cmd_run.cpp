#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include "cli/builtin_suites.h"
#include "cli/cell_runner.h"
#include "cli/commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "ddp/device.h"
#include "results/results.h"
#include "suite/suite.h"

namespace ddpbench::cli {

namespace {

struct RunArgs {
  std::string suite_path;
  std::string runs_dir = "runs";
  std::string filter;
  bool dry_run = false;
};

std::string file_name_of(std::string cell) {
  for (auto& c : cell)
    if (c == '/') c = '_';
  return cell;
}

// Scaling efficiency holds the per-rank batch fixed: cells that differ only in nproc are compared
// with the 1-rank cell of the same workload, trainer and batch geometry.
std::string scaling_group(const suite::Cell& c) {
  return c.workload + "/" + c.config.trainer + "/b" + std::to_string(c.config.micro_batch) + "/g" +
         std::to_string(c.config.grad_accum) + "/s" + std::to_string(c.config.seq_len);
}

int run_main(const RunArgs& a) {
  const auto runtime = ddp::runtime_info();
  const int gpus = runtime.cuda_available ? runtime.cuda_device_count : 0;
  suite::Suite suite;
  if (a.suite_path.empty()) {
    suite = gpus > 0 ? suite::parse_suite(kSmokeGpuSuite, "<built-in smoke-gpu>")
                     : suite::parse_suite(kSmokeCpuSuite, "<built-in smoke-cpu>");
  } else {
    suite = suite::load_suite(a.suite_path);
  }
  std::vector<suite::Cell> cells;
  for (const auto& c : suite.cells)
    if (a.filter.empty() || c.name.find(a.filter) != std::string::npos) cells.push_back(c);
  if (cells.empty()) throw UsageError("--filter: no cell of suite '" + suite.name + "' matches '" + a.filter + "'");

  const std::string run_id = new_run_id();
  const std::string run_dir = a.runs_dir + "/" + run_id;
  std::printf("ddpbench run: suite %s, %zu cell(s), %d GPU(s) visible -> %s\n", suite.name.c_str(), cells.size(), gpus,
              run_dir.c_str());
  if (a.dry_run) {
    for (const auto& c : cells) std::printf("  %s\n", c.name.c_str());
    return 0;
  }
  make_dirs(run_dir + "/cells");

  struct Row {
    const suite::Cell* cell;
    std::string status;
    nlohmann::json summary;
  };
  const auto fingerprint = results::collect_fingerprint(runtime);
  std::vector<Row> rows;
  std::string csv = results::long_csv_header();
  nlohmann::json index = {{"suite", suite.name}, {"run_id", run_id}, {"created", utc_timestamp()}, {"cells", nlohmann::json::array()}};
  int failures = 0;
  for (const auto& cell : cells) {
    Row row{&cell, "ok", nullptr};
    const std::string file = "cells/" + file_name_of(cell.name) + ".json";
    if (cell.config.device == "cuda" && cell.config.nproc > gpus) {
      row.status = "skipped: needs " + std::to_string(cell.config.nproc) + " GPU(s), " + std::to_string(gpus) + " visible";
      std::printf("\n== %s: %s\n", cell.name.c_str(), row.status.c_str());
    } else {
      std::printf("\n== %s\n", cell.name.c_str());
      std::fflush(stdout);
      CellRequest req;
      req.run_id = run_id;
      req.cell = cell.name;
      req.dir = run_dir + "/work/" + file_name_of(cell.name);
      req.config = cell.config;
      req.fingerprint = fingerprint;
      const auto result = run_cell(req);
      write_file_atomic(run_dir + "/" + file, result.document.dump(2) + "\n");
      csv += results::long_csv_rows(result.document);
      row.summary = result.document["summary"];
      if (result.skipped) {
        row.status = "skipped: " + result.reason;
        std::printf("   %s\n", row.status.c_str());
      } else if (!result.ok) {
        row.status = "failed: " + result.reason;
        ++failures;
        std::printf("   failed: %s\n", result.reason.c_str());
      }
    }
    index["cells"].push_back({{"name", cell.name}, {"status", row.status}, {"file", row.summary.is_null() ? "" : file}});
    rows.push_back(std::move(row));
    // Kept current after every cell, so an interrupted suite still leaves a readable run.
    write_file_atomic(run_dir + "/run.json", index.dump(2) + "\n");
    write_file_atomic(run_dir + "/results.csv", csv);
  }

  std::map<std::string, double> single_rank_tps;
  for (const auto& r : rows)
    if (r.status == "ok" && r.cell->config.nproc == 1)
      single_rank_tps[scaling_group(*r.cell)] = r.summary["tokens_per_s"].get<double>();

  std::printf("\nsuite %s, run %s (scaling efficiency at fixed per-rank batch)\n", suite.name.c_str(), run_id.c_str());
  std::printf("%-36s %5s %11s %11s %8s %10s %10s %11s %8s\n", "cell", "ranks", "tok/s", "tok/s/rank", "scaling", "step p50",
              "step p95", "peak mem", "loss");
  for (const auto& r : rows) {
    if (r.status != "ok") {
      std::printf("%-36s %5d  %s\n", r.cell->name.c_str(), r.cell->config.nproc, r.status.c_str());
      continue;
    }
    const auto& s = r.summary;
    std::string eff = "-";
    auto base = single_rank_tps.find(scaling_group(*r.cell));
    if (base != single_rank_tps.end() && base->second > 0) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * s["tokens_per_s"].get<double>() / (r.cell->config.nproc * base->second));
      eff = buf;
    }
    std::printf("%-36s %5d %11s %11s %8s %8.1fms %8.1fms %11s %8.4f\n", r.cell->name.c_str(), r.cell->config.nproc,
                format_si(s["tokens_per_s"].get<double>()).c_str(), format_si(s["tokens_per_s_per_gpu"].get<double>()).c_str(),
                eff.c_str(), s["step_time_p50_s"].get<double>() * 1e3, s["step_time_p95_s"].get<double>() * 1e3,
                format_bytes(s["peak_allocated_bytes"].get<double>()).c_str(), s["final_loss"].get<double>());
  }
  std::printf("\nresults: %s/run.json, %s/results.csv, cells in %s/cells\n", run_dir.c_str(), run_dir.c_str(), run_dir.c_str());
  return failures == 0 ? 0 : 1;
}

}  // namespace

void add_run_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<RunArgs>();
  auto* sub = app.add_subcommand("run", "Run a suite: workloads x GPU counts x batch settings (no SUITE: the built-in smoke suite)");
  sub->add_option("suite", args->suite_path, "suite file (TOML); without one: smoke-gpu where GPUs are visible, else smoke-cpu");
  sub->add_option("--runs-dir", args->runs_dir, "folder for run folders [runs]");
  sub->add_option("--filter", args->filter, "run only cells whose name contains this");
  sub->add_flag("--dry-run", args->dry_run, "list the cells and stop");
  sub->callback([args, &action] { action = [args] { return run_main(*args); }; });
}

}  // namespace ddpbench::cli
