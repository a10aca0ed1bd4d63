#include "cli/train_flags.h"

#include "preflight/preflight.h"

namespace ddpbench::cli {

TrainFlags::TrainFlags(CLI::App& sub) {
  const train::Config defaults;
  const auto defaults_json = train::to_json(defaults);
  for (const auto& s : train::settings()) {
    auto value = std::make_shared<std::string>();
    std::string help = s.help;
    if (defaults_json.contains(s.key)) {
      const auto& d = defaults_json[s.key];
      std::string shown = d.is_string() ? d.get<std::string>() : d.dump();
      if (d.is_array()) {
        shown.clear();
        for (const auto& x : d) shown += (shown.empty() ? "" : ",") + x.get<std::string>();
      }
      help += " [" + shown + "]";
    }
    auto* option = s.is_switch ? sub.add_flag(train::flag_of(s.key) + "{true}", *value, s.help)
                               : sub.add_option(train::flag_of(s.key), *value, help);
    values_.push_back({s.key, value, option});
  }
  sub.add_flag(preflight::kNoMemoryCheckFlag, no_memory_check_,
               "run even where the memory estimate (weights, gradients, optimizer state, activations) exceeds the "
               "GPU's or the host's memory");
}

train::Config TrainFlags::config() const { return config({}); }

train::Config TrainFlags::config(const std::vector<std::pair<std::string, std::string>>& defaults) const {
  std::vector<std::pair<std::string, std::string>> values;
  for (const auto& d : defaults)
    if (!given(d.first)) values.push_back(d);
  for (const auto& v : values_)
    if (v.option->count() > 0) values.emplace_back(v.key, *v.text);
  train::Config cfg;
  train::apply_settings(cfg, values);
  train::validate(cfg);
  return cfg;
}

bool TrainFlags::given(const std::string& key) const {
  for (const auto& v : values_)
    if (v.key == key) return v.option->count() > 0;
  return false;
}

}  // namespace ddpbench::cli
