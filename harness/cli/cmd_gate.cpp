// `ddpbench gate`: the performance gate of CI (gate/gate.h has the rule), and `--update`, which
// writes a baseline.
#include <cstdio>
#include <fstream>

#include "cli/builtin_gate_rules.h"
#include "cli/commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "gate/gate.h"

namespace ddpbench::cli {

namespace {

struct GateArgs {
  std::vector<std::string> baseline, current, update;
  std::string rules_path, markdown, junit, match = "id";
  std::string out = "ci/baselines";
};

gate::Rules rules_of(const GateArgs& a) {
  return a.rules_path.empty() ? gate::parse_rules(kGateRules, "<built-in ci/gate.toml>") : gate::load_rules(a.rules_path);
}

int update_main(const GateArgs& a) {
  const auto rules = rules_of(a);
  const auto side = gate::load_side(a.update, gate::Match::id);
  std::string too_few;
  for (const auto& [id, c] : side.cells)
    if (!c.repeats.empty() && static_cast<int>(c.repeats.size()) < rules.min_repeats)
      too_few += (too_few.empty() ? "" : ", ") + id + " (" + std::to_string(c.repeats.size()) + ")";
  if (!too_few.empty())
    throw UsageError("a baseline needs at least " + std::to_string(rules.min_repeats) +
                     " repeats of each cell (5 recommended; run with --repeats or give more runs): " + too_few);
  make_dirs(a.out);
  const std::string path = a.out + "/" + gate::baseline_file_name(side.hardware_key);
  const auto doc = gate::baseline_document(side);
  write_file_atomic(path, doc.dump(2) + "\n");
  std::printf("baseline for %s: %zu cell(s) from %zu file(s) -> %s\n", side.hardware_key.c_str(), doc["cells"].size(),
              side.sources.size(), path.c_str());
  for (const auto& [id, c] : side.cells)
    if (!c.failures.empty()) std::printf("  %s: %zu failed repeat(s) left out\n", id.c_str(), c.failures.size());
  return 0;
}

void write_report(const std::string& path, const std::string& text, bool append) {
  std::ofstream f(path, append ? std::ios::app : std::ios::trunc);
  if (!f || !(f << text)) throw RunError("cannot write " + path);
}

int gate_main(const GateArgs& a) {
  if (!a.update.empty()) return update_main(a);
  if (a.baseline.empty() || a.current.empty())
    throw UsageError("--baseline and --current are both needed (or --update RUN... to write a baseline)");
  const auto rules = rules_of(a);
  const auto match = a.match == "name" ? gate::Match::name : gate::Match::id;
  const auto baseline = gate::load_side(a.baseline, match);
  const auto current = gate::load_side(a.current, match);
  const auto result = gate::compare(baseline, current, rules);
  std::fputs(gate::terminal_table(result).c_str(), stdout);
  const auto md = gate::markdown_summary(result);
  if (!a.markdown.empty()) write_report(a.markdown, md, false);
  // GitHub Actions shows what a step appends to this file as the job's summary.
  if (const auto summary = getenv_or("GITHUB_STEP_SUMMARY", ""); !summary.empty()) write_report(summary, md, true);
  if (!a.junit.empty()) write_report(a.junit, gate::junit_xml(result), false);
  return result.regressed() ? 1 : 0;
}

}  // namespace

void add_gate_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<GateArgs>();
  auto* sub = app.add_subcommand(
      "gate", "Compare current runs with a baseline of the same hardware: exit 1 on a regression beyond noise, 0 when "
              "clean, 2 on unusable input; --update writes a baseline");
  sub->footer(
      "Each result document is one repeat of its cell (5 repeats a side recommended, 3 at least). A metric regresses\n"
      "when the median of the current repeats is worse than the baseline's by more than its tolerance (the larger\n"
      "of the rules' floor and the runs' own relative range) and a one-sided rank-sum test across the repeats\n"
      "agrees (p <= alpha). Examples:\n"
      "  ddpbench gate --baseline ci/baselines/4x-NVIDIA-H200-NV18.json --current runs/<id>\n"
      "  ddpbench gate --baseline runs/<a> runs/<b> runs/<c> --current runs/<d> runs/<e> runs/<f>\n"
      "  ddpbench gate --update runs/<id> --out ci/baselines");
  auto* baseline = sub->add_option("--baseline", args->baseline,
                                   "baseline file (ci/baselines/<hardware>.json), or run folders / result documents")
                       ->expected(1, -1);
  auto* current = sub->add_option("--current", args->current, "run folders or result documents to gate")->expected(1, -1);
  sub->add_option("--update", args->update, "write a baseline from these run folders instead of gating")
      ->expected(1, -1)
      ->excludes(baseline)
      ->excludes(current);
  sub->add_option("--out", args->out, "folder for the baseline of --update [ci/baselines]");
  sub->add_option("--rules", args->rules_path, "rules file (TOML) [the built-in copy of ci/gate.toml]");
  sub->add_option("--match", args->match, "match cells by full cell_id, or by name (the cell_id before '#') [id]")
      ->check(CLI::IsMember({"id", "name"}));
  sub->add_option("--markdown", args->markdown, "write a Markdown summary here (also appended to $GITHUB_STEP_SUMMARY when set)");
  sub->add_option("--junit", args->junit, "write JUnit XML here");
  sub->callback([args, &action] { action = [args] { return gate_main(*args); }; });
}

}  // namespace ddpbench::cli
