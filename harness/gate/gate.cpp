#include "gate/gate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

#include "common/error.h"
#include "common/strings.h"
#include "results/fingerprint.h"
#include "results/results.h"
#include "results/stats.h"

namespace ddpbench::gate {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kBaselineKind = "ddpbench-gate-baseline";
constexpr int kBaselineSchema = 1;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string show(const Metric& m, double v) {
  if (!std::isfinite(v)) return "-";
  switch (m.format) {
    case Format::si: return format_si(v, 2);
    case Format::milliseconds: return fmt("%.2f ms", v * 1e3);
    case Format::bytes: return format_bytes(v);
    case Format::percent: return fmt("%.2f%%", v * 100);
    case Format::plain: return fmt("%.4f", v);
  }
  return "?";
}

std::string signed_percent(double fraction) {
  return std::isfinite(fraction) ? fmt("%+.2f%%", fraction * 100) : "-";
}

std::string p_text(double p) { return p >= 0.001 ? fmt("%.3f", p) : fmt("%.1e", p); }

// The cell a document is a repeat of. Documents of `ddpbench train` are all named "train": their
// configuration tells them apart.
std::string cell_identity(const json& doc, Match match) {
  std::string id;
  if (doc.contains("cell_id") && doc["cell_id"].is_string()) {
    id = doc["cell_id"].get<std::string>();
  } else {
    id = doc.value("cell", std::string());
    if (id == "train" && doc.contains("config")) {
      const auto& c = doc["config"];
      auto part = [&](const char* k) { return c.contains(k) ? (c[k].is_string() ? c[k].get<std::string>() : c[k].dump()) : "?"; };
      id += ":" + part("preset") + "-" + part("mode") + "/" + part("trainer") + "/n" + part("nproc") + "/b" +
            part("micro_batch") + "/g" + part("grad_accum") + "/s" + part("seq_len");
    }
  }
  if (match == Match::name) id = id.substr(0, id.find('#'));
  return id;
}

std::string document_hardware(const json& doc) {
  if (doc.contains("hardware_key") && doc["hardware_key"].is_string()) return doc["hardware_key"].get<std::string>();
  const auto& fp = doc.at("fingerprint");
  if (fp.contains("hardware_key") && fp["hardware_key"].is_string()) return fp["hardware_key"].get<std::string>();
  return results::hardware_key(results::fingerprint_from_json(fp));
}

void set_hardware(Side& side, const std::string& key, const std::string& where) {
  if (side.hardware_key.empty()) side.hardware_key = key;
  if (side.hardware_key != key)
    throw UsageError(where + ": hardware '" + key + "' differs from '" + side.hardware_key +
                     "' of the files before it (a side must come from one hardware)");
}

void add_baseline_file(Side& side, const json& doc, const std::string& where, Match match) {
  try {
    if (doc.at("schema_version") != kBaselineSchema)
      throw UsageError(where + ": baseline schema version " + doc["schema_version"].dump() + ", this ddpbench reads " +
                       std::to_string(kBaselineSchema));
    set_hardware(side, doc.at("hardware_key").get<std::string>(), where);
    for (const auto& [stored_id, cell] : doc.at("cells").items()) {
      const std::string id = match == Match::name ? stored_id.substr(0, stored_id.find('#')) : stored_id;
      if (side.cells.count(id)) throw UsageError(where + ": cell '" + id + "' given twice");
      CellRepeats r;
      r.id = id;
      r.name = cell.at("name").get<std::string>();
      r.repeats = cell.at("repeats").get<std::vector<std::string>>();
      r.failures = cell.value("failures", std::vector<std::string>{});
      for (const auto& [key, m] : cell.at("metrics").items()) r.values[key] = m.at("values").get<std::vector<double>>();
      side.cells[id] = std::move(r);
    }
  } catch (const json::exception& e) {
    throw UsageError(where + ": not a gate baseline (" + e.what() + ")");
  }
}

void add_file(Side& side, const std::string& path, Match match) {
  json doc;
  try {
    doc = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw UsageError(path + ": not valid JSON (" + e.what() + ")");
  } catch (const RunError& e) {
    throw UsageError(e.what());
  }
  if (doc.is_object() && doc.value("kind", "") == kBaselineKind) {
    add_baseline_file(side, doc, path, match);
  } else {
    add_document(side, results::load_run_document(path), path, match);
  }
  side.sources.push_back(path);
}

// The result documents of a folder: a run folder's cells/*.json, else the folder's own *.json that
// are result documents (folders of `ddpbench train --out` files).
std::vector<std::string> documents_in(const std::string& dir) {
  const bool run_folder = fs::is_directory(fs::path(dir) / "cells");
  const fs::path where = run_folder ? fs::path(dir) / "cells" : fs::path(dir);
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(where)) {
    if (!e.is_regular_file() || e.path().extension() != ".json") continue;
    if (!run_folder) {
      // Side files of a results folder (indexes, profiles) are not repeats.
      try {
        const auto j = json::parse(read_file(e.path().string()));
        if (!j.is_object() || !j.contains("schema_version")) continue;
      } catch (const json::exception&) {
        continue;
      }
    }
    out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) throw UsageError(dir + ": no result documents (expected a run folder with cells/*.json)");
  return out;
}

bool finite_number(const json& j) { return j.is_number() && std::isfinite(j.get<double>()); }

}  // namespace

const std::vector<Metric>& metrics() {
  static const std::vector<Metric> table{
      {"tokens_per_s_per_gpu", "tokens/s/GPU", Direction::higher_is_better, Format::si},
      {"mfu", "MFU", Direction::higher_is_better, Format::percent},
      {"scaling_efficiency", "scaling efficiency", Direction::higher_is_better, Format::percent},
      {"step_time_p50_s", "step time p50", Direction::lower_is_better, Format::milliseconds},
      {"step_time_p95_s", "step time p95", Direction::lower_is_better, Format::milliseconds},
      {"peak_allocated_bytes", "peak memory", Direction::lower_is_better, Format::bytes},
      {"exposed_comm_s", "exposed comm/step", Direction::lower_is_better, Format::milliseconds},
      {"final_loss", "final loss", Direction::equal, Format::plain},
  };
  return table;
}

const MetricRule& Rules::rule(const std::string& key) const {
  static const MetricRule none;
  auto it = metrics.find(key);
  return it == metrics.end() ? none : it->second;
}

Rules parse_rules(const std::string& toml_text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    throw UsageError(source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  auto at = [&](const toml::node& n) { return source + ":" + std::to_string(n.source().begin.line); };
  auto number = [&](const toml::node& n, const std::string& key, double lo, double hi) {
    std::optional<double> v;
    if (auto f = n.as_floating_point()) v = f->get();
    if (auto i = n.as_integer()) v = static_cast<double>(i->get());
    if (!v) throw UsageError(at(n) + ": '" + key + "' must be a number");
    if (*v < lo || *v > hi)
      throw UsageError(at(n) + ": '" + key + "' = " + fmt("%g", *v) + " is outside [" + fmt("%g", lo) + ", " + fmt("%g", hi) + "]");
    return *v;
  };
  Rules rules;
  for (const auto& [k, node] : root) {
    const std::string key(k.str());
    if (key == "alpha") {
      rules.alpha = number(node, key, 1e-6, 0.5);
    } else if (key == "spread_multiple") {
      rules.spread_multiple = number(node, key, 0, 100);
    } else if (key == "min_repeats") {
      rules.min_repeats = static_cast<int>(number(node, key, 2, 1000));
    } else if (key == "metrics") {
      const auto* table = node.as_table();
      if (!table) throw UsageError(at(node) + ": 'metrics' must be a table of [metrics.NAME] tables");
      for (const auto& [mk, mnode] : *table) {
        const std::string name(mk.str());
        const auto& known = metrics();
        if (std::none_of(known.begin(), known.end(), [&](const Metric& m) { return m.key == name; })) {
          std::string names;
          for (const auto& m : known) names += (names.empty() ? "" : ", ") + m.key;
          throw UsageError(at(mnode) + ": unknown metric '" + name + "' (known: " + names + ")");
        }
        const auto* mt = mnode.as_table();
        if (!mt) throw UsageError(at(mnode) + ": [metrics." + name + "] must be a table");
        MetricRule r;
        for (const auto& [rk, rnode] : *mt) {
          const std::string rkey(rk.str());
          if (rkey == "floor") {
            r.floor = number(rnode, rkey, 0, 10);
          } else if (rkey == "abs_floor") {
            r.abs_floor = number(rnode, rkey, 0, std::numeric_limits<double>::max());
          } else if (rkey == "enabled") {
            const auto* b = rnode.as_boolean();
            if (!b) throw UsageError(at(rnode) + ": 'enabled' must be true or false");
            r.enabled = b->get();
          } else {
            throw UsageError(at(rnode) + ": unknown key '" + rkey + "' in [metrics." + name + "] (floor, abs_floor, enabled)");
          }
        }
        rules.metrics[name] = r;
      }
    } else {
      throw UsageError(at(node) + ": unknown key '" + key + "' (alpha, spread_multiple, min_repeats, [metrics.NAME])");
    }
  }
  return rules;
}

Rules load_rules(const std::string& path) {
  try {
    return parse_rules(read_file(path), path);
  } catch (const RunError& e) {
    throw UsageError(std::string("--rules: ") + e.what());
  }
}

std::map<std::string, double> metric_values(const json& doc) {
  std::map<std::string, double> out;
  if (!doc.contains("summary")) return out;
  const auto& s = doc["summary"];
  for (const char* key : {"tokens_per_s_per_gpu", "mfu", "scaling_efficiency", "step_time_p50_s", "step_time_p95_s",
                          "peak_allocated_bytes", "final_loss"})
    if (s.contains(key) && finite_number(s[key])) out[key] = s[key].get<double>();
  // Exposed communication of a profiled run: the worst rank's median per step.
  if (doc.contains("profile") && doc["profile"].is_object() && doc["profile"].contains("ranks")) {
    double worst = kNaN;
    for (const auto& r : doc["profile"]["ranks"]) {
      if (!r.contains("summary") || !r["summary"].contains("median")) continue;
      const auto& median = r["summary"]["median"];
      if (median.contains("exposed_comm_ns") && finite_number(median["exposed_comm_ns"])) {
        const double s_per_step = median["exposed_comm_ns"].get<double>() * 1e-9;
        worst = std::isnan(worst) ? s_per_step : std::max(worst, s_per_step);
      }
    }
    if (!std::isnan(worst)) out["exposed_comm_s"] = worst;
  }
  return out;
}

void add_document(Side& side, const json& doc, const std::string& where, Match match) {
  try {
    set_hardware(side, document_hardware(doc), where);
    const std::string id = cell_identity(doc, match);
    if (id.empty()) throw UsageError(where + ": no cell_id or cell name");
    auto& cell = side.cells[id];
    cell.id = id;
    // `train` documents all carry the name "train": their identity says more.
    if (cell.name.empty()) cell.name = doc.value("cell", std::string()) == "train" ? id : doc.value("cell", id);
    const int repeat = doc.value("repeat", 1);
    const std::string repeat_key = doc.value("run_id", std::string("?")) + "#" + std::to_string(repeat);
    const auto& st = doc.at("status");
    const std::string state = st.value("state", std::string("ok"));
    const bool seen = std::find(cell.repeats.begin(), cell.repeats.end(), repeat_key) != cell.repeats.end() ||
                      std::any_of(cell.failures.begin(), cell.failures.end(),
                                  [&](const std::string& f) { return f.rfind(repeat_key + ":", 0) == 0; });
    if (seen) throw UsageError(where + ": repeat " + repeat_key + " of cell '" + id + "' was read already (the same run given twice?)");
    if (state == "skipped") {
      ++cell.skipped;
    } else if (state != "ok") {
      cell.failures.push_back(repeat_key + ": " + st.value("reason", state));
    } else {
      cell.repeats.push_back(repeat_key);
      for (const auto& [key, value] : metric_values(doc)) cell.values[key].push_back(value);
    }
  } catch (const json::exception& e) {
    throw UsageError(where + ": " + e.what());
  }
}

Side load_side(const std::vector<std::string>& paths, Match match) {
  Side side;
  for (const auto& p : paths) {
    if (fs::is_directory(p)) {
      for (const auto& f : documents_in(p)) add_file(side, f, match);
    } else if (fs::exists(p)) {
      add_file(side, p, match);
    } else {
      throw UsageError(p + ": no such file or folder");
    }
  }
  if (side.cells.empty()) throw UsageError("no cells in " + (paths.empty() ? std::string("(nothing given)") : paths.front()));
  return side;
}

std::string to_string(Verdict v) {
  switch (v) {
    case Verdict::unchanged: return "ok";
    case Verdict::regression: return "REGRESSION";
    case Verdict::improvement: return "improved";
    case Verdict::missing: return "missing";
  }
  return "?";
}

MetricResult compare_metric(const Metric& metric, const std::vector<double>& baseline, const std::vector<double>& current,
                            const Rules& rules) {
  MetricResult r;
  r.metric = &metric;
  r.baseline_n = static_cast<int>(baseline.size());
  r.current_n = static_cast<int>(current.size());
  r.baseline_median = results::median(baseline);
  r.current_median = results::median(current);
  if (baseline.empty() || current.empty()) {
    r.verdict = Verdict::missing;
    r.note = baseline.empty() ? "not in the baseline" : "not in the current runs";
    return r;
  }
  const auto& rule = rules.rule(metric.key);
  r.spread = std::max(results::relative_range(baseline), results::relative_range(current));
  const double relative_tolerance = std::max(rule.floor, rules.spread_multiple * r.spread);
  r.tolerance = std::max(relative_tolerance * std::fabs(r.baseline_median), rule.abs_floor);
  const double diff = r.current_median - r.baseline_median;
  r.change = r.baseline_median != 0 ? diff / std::fabs(r.baseline_median) : kNaN;
  const double p_up = results::rank_sum_p_greater(baseline, current);  // current tends to be larger
  const double p_down = results::rank_sum_p_greater(current, baseline);
  double worse = 0;
  switch (metric.direction) {
    case Direction::higher_is_better:
      worse = -diff, r.p_worse = p_down, r.p_better = p_up;
      break;
    case Direction::lower_is_better:
      worse = diff, r.p_worse = p_up, r.p_better = p_down;
      break;
    case Direction::equal:
      // Either way is a change: each one-sided test at alpha, so 2 alpha in all.
      worse = std::fabs(diff), r.p_worse = diff >= 0 ? p_up : p_down, r.p_better = 1;
      break;
  }
  if (worse > r.tolerance && r.p_worse <= rules.alpha) {
    r.verdict = Verdict::regression;
  } else if (metric.direction != Direction::equal && -worse > r.tolerance && r.p_better <= rules.alpha) {
    r.verdict = Verdict::improvement;
  } else if (std::fabs(diff) > r.tolerance) {
    r.note = "beyond tolerance, not across repeats (p " + p_text(std::min(r.p_worse, r.p_better)) + ")";
  }
  return r;
}

bool CellResult::regressed() const {
  return failed || std::any_of(metrics.begin(), metrics.end(), [](const MetricResult& m) { return m.verdict == Verdict::regression; });
}

bool CellResult::improved() const {
  return std::any_of(metrics.begin(), metrics.end(), [](const MetricResult& m) { return m.verdict == Verdict::improvement; });
}

std::vector<std::string> Comparison::regressed_cells() const {
  std::vector<std::string> out;
  for (const auto& c : cells)
    if (c.regressed()) out.push_back(c.name);
  return out;
}

bool Comparison::improved() const {
  return std::any_of(cells.begin(), cells.end(), [](const CellResult& c) { return c.improved(); });
}

Comparison compare(const Side& baseline, const Side& current, const Rules& rules) {
  if (baseline.hardware_key != current.hardware_key)
    throw UsageError("hardware differs: baseline '" + baseline.hardware_key + "', current '" + current.hardware_key +
                     "' (a gate compares only the same hardware)");
  Comparison out;
  out.hardware_key = baseline.hardware_key;
  out.baseline_sources = baseline.sources;
  out.current_sources = current.sources;
  // A cell that only the runner skipped on a side is absent there.
  auto present = [](const CellRepeats& c) { return !c.repeats.empty() || !c.failures.empty(); };
  // Listed under the side that has it; "(skipped)" when the other side's runner skipped it.
  auto label = [](const std::string& id, const std::map<std::string, CellRepeats>& other) {
    auto it = other.find(id);
    return it != other.end() && it->second.skipped > 0 ? id + " (skipped)" : id;
  };
  std::vector<std::string> too_few;
  for (const auto& [id, b] : baseline.cells) {
    auto it = current.cells.find(id);
    if (!present(b)) continue;
    if (it == current.cells.end() || !present(it->second)) {
      out.only_baseline.push_back(label(id, current.cells));
      continue;
    }
    const auto& c = it->second;
    CellResult cell;
    cell.id = id;
    cell.name = c.name;
    cell.failures = c.failures;
    cell.failed = !c.failures.empty();
    const auto min = static_cast<std::size_t>(rules.min_repeats);
    if (b.repeats.size() < min)
      too_few.push_back("baseline has " + std::to_string(b.repeats.size()) + " repeat(s) of " + id);
    if (c.repeats.size() < min && !cell.failed)
      too_few.push_back("current has " + std::to_string(c.repeats.size()) + " repeat(s) of " + id);
    for (const auto& m : metrics()) {
      if (!rules.rule(m.key).enabled) continue;
      auto bv = b.values.find(m.key);
      auto cv = c.values.find(m.key);
      if (bv == b.values.end() && cv == c.values.end()) continue;
      static const std::vector<double> none;
      cell.metrics.push_back(compare_metric(m, bv == b.values.end() ? none : bv->second,
                                            cv == c.values.end() ? none : cv->second, rules));
    }
    out.cells.push_back(std::move(cell));
  }
  for (const auto& [id, c] : current.cells) {
    auto it = baseline.cells.find(id);
    if (present(c) && (it == baseline.cells.end() || !present(it->second))) out.only_current.push_back(label(id, baseline.cells));
  }
  if (!too_few.empty()) {
    std::string list;
    for (const auto& t : too_few) list += (list.empty() ? "" : "; ") + t;
    throw UsageError("too few repeats to gate (at least " + std::to_string(rules.min_repeats) + " a side; 5 recommended): " + list);
  }
  if (out.cells.empty())
    throw UsageError("no cell in common between baseline and current (baseline: " +
                     std::to_string(baseline.cells.size()) + " cell(s), current: " + std::to_string(current.cells.size()) +
                     "; to compare configurations of one cell, --match name)");
  return out;
}

namespace {

struct Row {
  std::string cell, metric, baseline, current, change, tolerance, p, verdict, note;
};

std::vector<Row> rows_of(const Comparison& c, bool all) {
  std::vector<Row> rows;
  for (const auto& cell : c.cells) {
    if (cell.failed)
      rows.push_back({cell.name, "status", "ok", "failed", "", "", "", "REGRESSION", cell.failures.front()});
    for (const auto& m : cell.metrics) {
      if (!all && m.verdict == Verdict::unchanged) continue;
      Row r;
      r.cell = cell.name;
      r.metric = m.metric->label;
      r.baseline = show(*m.metric, m.baseline_median) + " (" + std::to_string(m.baseline_n) + ")";
      r.current = show(*m.metric, m.current_median) + " (" + std::to_string(m.current_n) + ")";
      if (m.verdict != Verdict::missing) {
        r.change = signed_percent(m.change);
        r.tolerance = m.baseline_median != 0 ? fmt("%.2f%%", 100 * m.tolerance / std::fabs(m.baseline_median))
                                             : show(*m.metric, m.tolerance);
        r.p = p_text(m.verdict == Verdict::improvement ? m.p_better : m.p_worse);
      }
      r.verdict = to_string(m.verdict);
      r.note = m.note;
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string headline(const Comparison& c) {
  const auto bad = c.regressed_cells();
  if (!bad.empty()) return "FAIL: regression in " + std::to_string(bad.size()) + " cell(s): " + join(bad, ", ");
  return "PASS: " + std::to_string(c.cells.size()) + " cell(s), no regression beyond noise";
}

const char* kRefreshHint =
    "improvements beyond noise: once they are merged, refresh the baseline with `ddpbench gate --update RUN... --out ci/baselines/`";

std::string rule_line() {
  return "rule: median of repeats worse by more than max(floor, spread) and a one-sided rank-sum test across repeats";
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab and newlines are not allowed in XML 1.0.
        if (static_cast<unsigned char>(ch) < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') out += ' ';
        else out += ch;
    }
  }
  return out;
}

std::string md_cell(std::string s) {
  std::string out;
  for (char ch : s) out += ch == '|' ? std::string("\\|") : std::string(1, ch);
  return out;
}

}  // namespace

std::string terminal_table(const Comparison& c) {
  const auto rows = rows_of(c, true);
  std::vector<std::string> head{"cell", "metric", "baseline (n)", "current (n)", "change", "tolerance", "p", "verdict"};
  std::vector<std::size_t> w(head.size());
  for (std::size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  auto fields = [](const Row& r) {
    return std::vector<std::string>{r.cell, r.metric, r.baseline, r.current, r.change, r.tolerance, r.p, r.verdict};
  };
  for (const auto& r : rows) {
    const auto f = fields(r);
    for (std::size_t i = 0; i < f.size(); ++i) w[i] = std::max(w[i], f[i].size());
  }
  std::ostringstream out;
  out << "gate on " << c.hardware_key << "\n";
  auto line = [&](const std::vector<std::string>& f, const std::string& note) {
    for (std::size_t i = 0; i < f.size(); ++i) {
      out << f[i] << std::string(w[i] - f[i].size(), ' ');
      if (i + 1 < f.size()) out << "  ";
    }
    if (!note.empty()) out << "  " << note;
    out << "\n";
  };
  line(head, "");
  std::string last_cell;
  for (const auto& r : rows) {
    auto f = fields(r);
    if (f[0] == last_cell) f[0] = "";  // the cell name once per group
    else last_cell = f[0];
    line(f, r.note);
  }
  for (const auto& id : c.only_baseline) out << "only in the baseline: " << id << "\n";
  for (const auto& id : c.only_current) out << "only in the current runs: " << id << "\n";
  out << rule_line() << "\n";
  if (c.improved()) out << kRefreshHint << "\n";
  out << headline(c) << "\n";
  return out.str();
}

std::string markdown_summary(const Comparison& c) {
  std::ostringstream out;
  out << "## ddpbench gate: " << md_cell(headline(c)) << "\n\n";
  out << "Hardware: `" << c.hardware_key << "`. Baseline: " << c.baseline_sources.size()
      << " file(s); current: " << c.current_sources.size() << " file(s). " << rule_line() << ".\n\n";
  auto table = [&](const std::vector<Row>& rows) {
    out << "| cell | metric | baseline (n) | current (n) | change | tolerance | p | verdict |\n";
    out << "| --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for (const auto& r : rows)
      out << "| " << md_cell(r.cell) << " | " << md_cell(r.metric) << " | " << r.baseline << " | " << r.current << " | "
          << r.change << " | " << r.tolerance << " | " << r.p << " | "
          << (r.verdict == "REGRESSION" ? "**REGRESSION**" : r.verdict) << (r.note.empty() ? "" : " (" + md_cell(r.note) + ")")
          << " |\n";
  };
  const auto notable = rows_of(c, false);
  if (!notable.empty()) {
    out << "### Beyond noise\n\n";
    table(notable);
    out << "\n";
  }
  if (c.improved()) out << "Note: " << kRefreshHint << ".\n\n";
  if (!c.only_baseline.empty()) out << "Only in the baseline: " << md_cell(join(c.only_baseline, ", ")) << ".\n\n";
  if (!c.only_current.empty()) out << "Only in the current runs: " << md_cell(join(c.only_current, ", ")) << ".\n\n";
  out << "<details><summary>All metrics</summary>\n\n";
  table(rows_of(c, true));
  out << "\n</details>\n";
  return out.str();
}

std::string junit_xml(const Comparison& c) {
  int tests = 0, failures = 0, skipped = 0;
  std::ostringstream cases;
  for (const auto& cell : c.cells) {
    const std::string cls = xml_escape(cell.name);
    ++tests;
    cases << "    <testcase classname=\"" << cls << "\" name=\"status\">";
    if (cell.failed) {
      ++failures;
      cases << "<failure message=\"a current repeat failed\">" << xml_escape(join(cell.failures, "\n")) << "</failure>";
    }
    cases << "</testcase>\n";
    for (const auto& m : cell.metrics) {
      ++tests;
      cases << "    <testcase classname=\"" << cls << "\" name=\"" << xml_escape(m.metric->label) << "\">";
      const std::string detail = "baseline " + show(*m.metric, m.baseline_median) + " (" + std::to_string(m.baseline_n) +
                                 " repeats), current " + show(*m.metric, m.current_median) + " (" +
                                 std::to_string(m.current_n) + "), change " + signed_percent(m.change) +
                                 ", tolerance " + show(*m.metric, m.tolerance) + ", p " + p_text(m.p_worse);
      if (m.verdict == Verdict::regression) {
        ++failures;
        cases << "<failure message=\"" << xml_escape(m.metric->label + " regressed " + signed_percent(m.change)) << "\">"
              << xml_escape(detail) << "</failure>";
      } else if (m.verdict == Verdict::missing) {
        ++skipped;
        cases << "<skipped message=\"" << xml_escape(m.note) << "\"/>";
      } else {
        cases << "<system-out>" << xml_escape(to_string(m.verdict) + ": " + detail) << "</system-out>";
      }
      cases << "</testcase>\n";
    }
  }
  for (const auto& id : c.only_baseline) {
    ++tests, ++skipped;
    cases << "    <testcase classname=\"" << xml_escape(id) << "\" name=\"status\"><skipped message=\"only in the baseline\"/></testcase>\n";
  }
  std::ostringstream out;
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out << "<testsuites name=\"ddpbench gate\" tests=\"" << tests << "\" failures=\"" << failures << "\">\n";
  out << "  <testsuite name=\"" << xml_escape("ddpbench gate on " + c.hardware_key) << "\" tests=\"" << tests
      << "\" failures=\"" << failures << "\" errors=\"0\" skipped=\"" << skipped << "\">\n";
  out << cases.str();
  out << "  </testsuite>\n</testsuites>\n";
  return out.str();
}

json baseline_document(const Side& side) {
  json cells = json::object();
  for (const auto& [id, c] : side.cells) {
    if (c.repeats.empty()) continue;
    json ms = json::object();
    for (const auto& [key, values] : c.values) {
      const double med = results::median(values);
      std::vector<double> deviations;
      for (double v : values) deviations.push_back(std::fabs(v - med));
      ms[key] = {{"values", values},
                 {"median", med},
                 {"min", *std::min_element(values.begin(), values.end())},
                 {"max", *std::max_element(values.begin(), values.end())},
                 {"relative_range", results::relative_range(values)},
                 {"mad", results::median(deviations)}};
    }
    cells[id] = {{"name", c.name}, {"repeats", c.repeats}, {"failures", c.failures}, {"metrics", ms}};
  }
  return {{"kind", kBaselineKind},
          {"schema_version", kBaselineSchema},
          {"hardware_key", side.hardware_key},
          {"created", utc_timestamp()},
          {"sources", side.sources},
          {"cells", cells}};
}

std::string baseline_file_name(const std::string& hardware_key) {
  std::string out;
  for (char ch : hardware_key) {
    const bool keep = std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_';
    if (keep) out += ch;
    else if (!out.empty() && out.back() != '-') out += '-';
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return (out.empty() ? "unknown" : out) + ".json";
}

}  // namespace ddpbench::gate
