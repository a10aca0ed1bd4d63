// The outer main of the benchmark programs: a UsageError becomes one line and exit status 2, any
// other error one line and exit status 1, each naming the program.
#pragma once
#include <cstdio>
#include <exception>

#include "common/error.h"

namespace ddpbench::bench {

template <typename Body>
int guarded_main(const char* program, Body&& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace ddpbench::bench
