// Errors that carry their context, and the split every subcommand relies on: a UsageError is the
// user's input (bad flag, bad file: one line, exit status 2); anything else is a failure of the run.
#pragma once
#include <stdexcept>
#include <string>

namespace ddpbench {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "while <what>: <inner message>", so that an error read at the top says where it came from.
[[noreturn]] void rethrow_with_context(const std::string& what);

}  // namespace ddpbench
