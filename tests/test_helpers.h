// Small assertions shared by the unit tests.
#pragma once
#include <gtest/gtest.h>

#include <exception>
#include <string>

namespace ddpbench::testing_helpers {

// The message of the E that f throws; a test failure when it throws nothing or something else.
template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace ddpbench::testing_helpers
