#include "cli/train_flags.h"

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
    if (s.is_switch) sub.add_flag(train::flag_of(s.key) + "{true}", *value, s.help);
    else sub.add_option(train::flag_of(s.key), *value, help);
    values_.emplace_back(s.key, value);
  }
}

train::Config TrainFlags::config() const { return config({}); }

train::Config TrainFlags::config(const std::vector<std::pair<std::string, std::string>>& defaults) const {
  std::vector<std::pair<std::string, std::string>> values;
  for (const auto& d : defaults)
    if (!given(d.first)) values.push_back(d);
  for (const auto& [key, value] : values_)
    if (!value->empty()) values.emplace_back(key, *value);
  train::Config cfg;
  train::apply_settings(cfg, values);
  train::validate(cfg);
  return cfg;
}

bool TrainFlags::given(const std::string& key) const {
  for (const auto& [k, value] : values_)
    if (k == key) return !value->empty();
  return false;
}

}  // namespace ddpbench::cli
