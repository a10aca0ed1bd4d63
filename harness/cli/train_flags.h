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
  // False with --no-memory-check: the memory estimate (preflight.h) is not held against the machine.
  bool memory_check() const { return !no_memory_check_; }

 private:
  struct Value {
    std::string key;
    std::shared_ptr<std::string> text;
    CLI::Option* option;  // given by its count, not by its text: `--lora-targets ""` is given, and empty
  };
  std::vector<Value> values_;
  bool no_memory_check_ = false;
};

}  // namespace ddpbench::cli
