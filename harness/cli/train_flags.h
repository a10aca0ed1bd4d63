// The trainer's settings as command-line flags, one per entry of train::settings().
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "train/config.h"

namespace ddpbench::cli {

class TrainFlags {
 public:
  explicit TrainFlags(CLI::App& sub);
  // The configuration the flags describe, validated; UsageError names the flag at fault.
  train::Config config() const;
  // The same, with `defaults` applied before the flags given (a subcommand's own defaults).
  train::Config config(const std::vector<std::pair<std::string, std::string>>& defaults) const;
  bool given(const std::string& key) const;  // whether the user gave this setting's flag

 private:
  std::vector<std::pair<std::string, std::shared_ptr<std::string>>> values_;
};

}  // namespace ddpbench::cli
