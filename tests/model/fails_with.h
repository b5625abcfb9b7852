// FailsWith(result, {fragments}): a gtest predicate that `result` is an error whose message is one
// line containing every fragment (the file, the tensor or key, the problem).
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>

namespace fgnet::testing {

template <class R>
::testing::AssertionResult FailsWith(const R& result,
                                     std::initializer_list<std::string_view> fragments) {
  if (result.ok()) {
    auto failure = ::testing::AssertionFailure() << "succeeded; expected an error containing";
    for (const auto f : fragments) failure << " '" << f << "'";
    return failure;
  }
  const std::string& message = result.error().message();
  if (message.find('\n') != std::string::npos || message.find('\r') != std::string::npos) {
    return ::testing::AssertionFailure() << "message spans several lines: " << message;
  }
  for (const auto f : fragments) {
    if (message.find(f) == std::string::npos) {
      return ::testing::AssertionFailure() << "message \"" << message << "\" lacks \"" << f << "\"";
    }
  }
  return ::testing::AssertionSuccess() << message;
}

}  // namespace fgnet::testing
