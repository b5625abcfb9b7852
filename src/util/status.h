// Errors in three tiers (see docs/architecture.md):
//   1. programmer error  -> FGNET_CHECK*: prints file:line and both compared values, then aborts;
//   2. runtime condition -> a returned fgnet::Error inside Result<T>, whose message names the file,
//      field or request and what is wrong; callers add context as the error travels up;
//   3. nothing escapes the CLI as a crash: main() prints the message and exits non-zero.
// Thread-safety: Error and Result are plain values.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace fgnet {

class Error {
 public:
  explicit Error(std::string message) : message_(std::move(message)) {}

  const std::string& message() const { return message_; }

  // Returns the error with "context: " prepended, e.g. the file being read.
  Error WithContext(std::string_view context) const {
    return Error(std::string(context) + ": " + message_);
  }

 private:
  std::string message_;
};

// Builds an Error from streamable parts: MakeError("tensor ", name, " has ", n, " dims").
template <class... Parts>
Error MakeError(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return Error(os.str());
}

// A value or an Error. Intentionally tiny: the subset of std::expected that fgnet uses.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return !error_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return *error_; }

 private:
  std::optional<Error> error_;
};

using Status = Result<void>;

inline Status Ok() { return Status(); }

namespace detail {
[[noreturn]] inline void CheckFailed(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "fgnet: internal check failed at %s:%d: %s\n", file, line, what.c_str());
  std::fflush(stderr);
  std::abort();
}
template <class A, class B>
std::string DescribeComparison(const char* expr, const A& a, const B& b) {
  std::ostringstream os;
  os << expr << " (" << a << " vs " << b << ")";
  return os.str();
}
}  // namespace detail

}  // namespace fgnet

#define FGNET_CONCAT_INNER(a, b) a##b
#define FGNET_CONCAT(a, b) FGNET_CONCAT_INNER(a, b)

// Returns the error of a Status/Result expression from the enclosing function.
#define FGNET_TRY(expr)                                            \
  do {                                                             \
    auto&& fgnet_try_result_ = (expr);                             \
    if (!fgnet_try_result_.ok()) return fgnet_try_result_.error(); \
  } while (0)

// FGNET_ASSIGN_OR_RETURN(auto x, F()); declares x from the value or returns the error.
#define FGNET_ASSIGN_OR_RETURN(lhs, expr) \
  FGNET_ASSIGN_OR_RETURN_IMPL(FGNET_CONCAT(fgnet_result_, __LINE__), lhs, expr)
#define FGNET_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.error();                \
  lhs = std::move(tmp).value()

#define FGNET_CHECK(cond)                                                 \
  do {                                                                    \
    if (!(cond)) ::fgnet::detail::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (0)

#define FGNET_CHECK_OP(op, a, b)                                                       \
  do {                                                                                 \
    const auto& fgnet_a_ = (a);                                                        \
    const auto& fgnet_b_ = (b);                                                        \
    if (!(fgnet_a_ op fgnet_b_))                                                       \
      ::fgnet::detail::CheckFailed(                                                    \
          __FILE__, __LINE__,                                                          \
          ::fgnet::detail::DescribeComparison(#a " " #op " " #b, fgnet_a_, fgnet_b_)); \
  } while (0)

#define FGNET_CHECK_EQ(a, b) FGNET_CHECK_OP(==, a, b)
#define FGNET_CHECK_NE(a, b) FGNET_CHECK_OP(!=, a, b)
#define FGNET_CHECK_LT(a, b) FGNET_CHECK_OP(<, a, b)
#define FGNET_CHECK_LE(a, b) FGNET_CHECK_OP(<=, a, b)
#define FGNET_CHECK_GT(a, b) FGNET_CHECK_OP(>, a, b)
#define FGNET_CHECK_GE(a, b) FGNET_CHECK_OP(>=, a, b)
