#include "suite/suite.h"

#include <algorithm>
#include <map>
#include <iomanip>
#include <iterator>
#include <set>
#include <sstream>

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

#include "common/error.h"
#include "common/strings.h"
#include "results/cells.h"

namespace ddpbench::suite {

namespace {

using Values = std::map<std::string, std::vector<std::string>>;  // key -> one value, or a list

std::string where(const std::string& source, const toml::node& node) {
  return source + ":" + std::to_string(node.source().begin.line);
}

std::string scalar_text(const toml::node& node, const std::string& at, const std::string& key) {
  if (auto s = node.as_string()) return s->get();
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto f = node.as_floating_point()) {
    std::ostringstream out;
    out << std::setprecision(17) << f->get();  // every digit the file gave survives
    return out.str();
  }
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  throw UsageError(at + ": '" + key + "' must be a string or a number");
}

bool is_matrix_key(const std::string& key) {
  const auto& keys = matrix_keys();
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

// Reads one table of settings (defaults or a workload) into key -> values.
Values read_settings(const toml::table& table, const std::string& source, const std::set<std::string>& skip) {
  Values out;
  const auto& known = train::settings();
  for (const auto& [k, node] : table) {
    const std::string key(k.str());
    if (skip.count(key)) continue;
    const auto at = where(source, node);
    const auto setting = std::find_if(known.begin(), known.end(), [&](const train::Setting& s) { return s.key == key; });
    if (setting == known.end()) throw UsageError(at + ": unknown setting '" + key + "'");
    if (auto arr = node.as_array()) {
      if (setting->list_separator != 0) {  // one value, joined as its flag takes it
        std::string joined;
        for (const auto& item : *arr)
          joined += (joined.empty() ? "" : std::string(1, setting->list_separator)) + scalar_text(item, at, key);
        out[key] = {joined};
        continue;
      }
      if (!is_matrix_key(key)) throw UsageError(at + ": '" + key + "' cannot take a list (only matrix keys can)");
      if (arr->empty()) throw UsageError(at + ": '" + key + "' is an empty list");
      std::vector<std::string> values;
      for (const auto& item : *arr) values.push_back(scalar_text(item, at, key));
      out[key] = values;
    } else {
      out[key] = {scalar_text(node, at, key)};
    }
  }
  return out;
}

std::string cell_name(const std::string& workload, const train::Config& c) {
  return workload + "/" + results::trainer_label(c.trainer, c.impl) + "/n" + std::to_string(c.nproc) + "/b" + std::to_string(c.micro_batch) + "/g" +
         std::to_string(c.grad_accum) + "/s" + std::to_string(c.seq_len);
}

}  // namespace

namespace {

// After a workload's cells (from `first`): the profiled twin of each cell of a trainer in `trainers`
// at the workload's largest rank count, right after it.
void add_profile_twins(Suite& suite, std::size_t first, const std::string& workload, const std::set<std::string>& trainers,
                       std::set<std::string>& names, const std::string& at) {
  int widest = 0;
  for (std::size_t i = first; i < suite.cells.size(); ++i)
    if (suite.cells[i].workload == workload) widest = std::max(widest, suite.cells[i].config.nproc);
  std::vector<Cell> cells(std::make_move_iterator(suite.cells.begin() + static_cast<std::ptrdiff_t>(first)),
                          std::make_move_iterator(suite.cells.end()));
  suite.cells.resize(first);
  for (auto& cell : cells) {
    const bool profile = cell.workload == workload && cell.config.nproc == widest && trainers.count(cell.config.trainer) > 0;
    Cell twin = cell;
    suite.cells.push_back(std::move(cell));
    if (!profile) continue;
    twin.workload = workload + "-profile";
    twin.config.profile = true;
    try {
      train::validate(twin.config);
    } catch (const UsageError& e) {
      throw UsageError(at + ": profile: workload '" + workload + "': " + e.what());
    }
    twin.name = cell_name(twin.workload, twin.config);
    if (!names.insert(twin.name).second) throw UsageError(at + ": duplicate cell " + twin.name);
    suite.cells.push_back(std::move(twin));
  }
}

// The trainers (as results::trainer_label names them) whose one-rank cells get an A/A twin: `aa`
// is true (the built-in trainer, its meaning before it took a list), false, or a list of trainers.
std::set<std::string> aa_trainers(const toml::table& root, const std::string& source) {
  const toml::node* node = root.get("aa");
  if (!node) return {};
  if (auto flag = node->as_boolean()) return flag->get() ? std::set<std::string>{"builtin"} : std::set<std::string>{};
  auto list = node->as_array();
  if (!list)
    throw UsageError(where(source, *node) + ": 'aa' must be true, false or a list of trainers, e.g. [\"builtin\", \"hf\"]");
  std::string known;
  for (const auto& n : train::trainer_names()) known += (known.empty() ? "" : ", ") + n;
  known += ", builtin-fused";
  std::set<std::string> out;
  for (const auto& item : *list) {
    auto name = item.value<std::string>();
    if (!name) throw UsageError(where(source, item) + ": 'aa' must be a list of trainer names");
    train::Config probe;
    train::apply_settings(probe, {{"trainer", *name}});
    const auto& names = train::trainer_names();
    if (std::find(names.begin(), names.end(), probe.trainer) == names.end())
      throw UsageError(where(source, item) + ": aa: unknown trainer '" + *name + "' (choose " + known + ")");
    out.insert(results::trainer_label(probe.trainer, probe.impl));
  }
  return out;
}

}  // namespace

const std::vector<std::string>& matrix_keys() {
  static const std::vector<std::string> keys{"trainer", "nproc", "micro_batch", "grad_accum", "seq_len"};
  return keys;
}

Suite parse_suite(const std::string& text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw UsageError(source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  Suite suite;
  for (const auto& [k, node] : root) {
    const std::string key(k.str());
    if (key != "name" && key != "description" && key != "defaults" && key != "workload" && key != "aa" && key != "profile")
      throw UsageError(where(source, node) + ": unknown top-level key '" + key +
                       "' (name, description, defaults, workload, aa, profile)");
  }
  suite.name = root["name"].value_or(std::string());
  if (suite.name.empty()) throw UsageError(source + ": the suite has no name (name = \"...\")");
  suite.description = root["description"].value_or(std::string());
  const std::set<std::string> aa = aa_trainers(root, source);

  // profile = ["builtin", "hf"]: those trainers' cells at each workload's largest rank count, once
  // more with --profile (workload "<name>-profile"), so that the measured cells stay unprofiled.
  std::set<std::string> profiled;
  if (auto node = root.get("profile")) {
    auto list = node->as_array();
    if (!list) throw UsageError(where(source, *node) + ": 'profile' must be a list of trainers, e.g. [\"builtin\", \"hf\"]");
    for (const auto& item : *list) {
      auto name = item.value<std::string>();
      if (!name) throw UsageError(where(source, item) + ": 'profile' must be a list of trainer names");
      try {
        train::Config probe;
        train::apply_settings(probe, {{"trainer", *name}});
        train::validate(probe);
      } catch (const UsageError& e) {
        throw UsageError(where(source, item) + ": profile: " + e.what());
      }
      profiled.insert(*name);
    }
  }

  Values defaults;
  if (auto node = root.get("defaults")) {
    auto table = node->as_table();
    if (!table) throw UsageError(where(source, *node) + ": 'defaults' must be a table");
    defaults = read_settings(*table, source, {});
  }
  auto workloads = root["workload"].as_array();
  if (!workloads || workloads->empty()) throw UsageError(source + ": no [[workload]] entries");

  // Counted before any cell is made: a few long lists multiply to more cells than memory holds.
  double total_cells = 0;
  for (const auto& wnode : *workloads) {
    auto table = wnode.as_table();
    if (!table) throw UsageError(where(source, wnode) + ": each workload must be a table");
    Values values = defaults;
    for (auto& [k, v] : read_settings(*table, source, {"name"})) values[k] = v;
    double cells = aa.empty() ? 1 : 2;
    for (const auto& [key, list] : values) cells *= static_cast<double>(list.size());
    total_cells += cells;
    if (total_cells > kMaxCells)
      throw UsageError(where(source, wnode) + ": the suite expands to more than " + std::to_string(kMaxCells) +
                       " cells (this workload alone to " + format_si(cells) + "): split it, or list fewer values");
  }

  std::set<std::string> names;
  std::set<std::string> twinned;  // trainers of aa that got a twin
  for (const auto& wnode : *workloads) {
    auto table = wnode.as_table();
    if (!table) throw UsageError(where(source, wnode) + ": each workload must be a table");
    const std::string wname = (*table)["name"].value_or(std::string());
    if (wname.empty()) throw UsageError(where(source, wnode) + ": a workload has no name");
    Values values = defaults;
    for (auto& [k, v] : read_settings(*table, source, {"name"})) values[k] = v;

    // Expand the matrix: the cartesian product over keys holding several values.
    std::vector<std::vector<std::pair<std::string, std::string>>> combos{{}};
    for (const auto& [key, list] : values) {
      std::vector<std::vector<std::pair<std::string, std::string>>> next;
      for (const auto& combo : combos)
        for (const auto& v : list) {
          auto c = combo;
          c.emplace_back(key, v);
          next.push_back(std::move(c));
        }
      combos = std::move(next);
    }
    const std::size_t first_of_workload = suite.cells.size();
    for (const auto& combo : combos) {
      Cell cell;
      cell.workload = wname;
      try {
        train::apply_settings(cell.config, combo);
        train::validate(cell.config);
      } catch (const UsageError& e) {
        throw UsageError(where(source, wnode) + ": workload '" + wname + "': " + e.what());
      }
      cell.name = cell_name(wname, cell.config);
      if (!names.insert(cell.name).second) throw UsageError(where(source, wnode) + ": duplicate cell " + cell.name);
      // The A/A cell of equal work: the same trainer on one rank with the same global batch as
      // twice the accumulated half micro-batches. The loss rule makes it the same computation, so its
      // loss curve's distance from the plain cell is what that trainer's rounding alone produces: its
      // floor, by which its curve is judged against another trainer's (workload "<name>-aa", which
      // reports recognise). Each trainer's own, since kernels round differently (issue 10).
      const std::string label = results::trainer_label(cell.config.trainer, cell.config.impl);
      if (aa.count(label) && cell.config.nproc == 1 && cell.config.global_batch == 0) {
        if (cell.config.micro_batch % 2 != 0)
          throw UsageError(where(source, wnode) + ": aa needs an even micro_batch to halve (" + cell.name + ")");
        Cell twin = cell;
        twin.workload = wname + "-aa";
        twin.config.micro_batch /= 2;
        twin.config.grad_accum *= 2;
        twin.name = cell_name(twin.workload, twin.config);
        twin.aa_of = cell.name;
        if (!names.insert(twin.name).second) throw UsageError(where(source, wnode) + ": duplicate cell " + twin.name);
        twinned.insert(label);
        suite.cells.push_back(std::move(cell));
        suite.cells.push_back(std::move(twin));
        continue;
      }
      suite.cells.push_back(std::move(cell));
    }
    if (!profiled.empty()) add_profile_twins(suite, first_of_workload, wname, profiled, names, where(source, wnode));
  }
  for (const auto& label : aa)
    if (!twinned.count(label))
      throw UsageError(where(source, *root.get("aa")) + ": aa: no workload has a one-rank cell of trainer '" + label +
                       "' (without a global_batch) to twin");
  return suite;
}

Suite load_suite(const std::string& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const RunError& e) {
    throw UsageError(e.what());
  }
  return parse_suite(text, path);
}

}  // namespace ddpbench::suite
