// Small text functions shared by the chat formats: the bits of Python and Jinja behaviour that the
// Gemma chat templates rely on (str.strip, dictsort, float repr, truthiness).
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/json.h"

namespace fgnet {

inline bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Python's str.strip() with no argument: removes leading and trailing Unicode whitespace
// (str.isspace) from UTF-8 text. Invalid UTF-8 bytes are kept.
std::string_view PythonStrip(std::string_view s);

// Python's str.upper() restricted to ASCII letters (other bytes unchanged).
std::string AsciiUpper(std::string_view s);

// The keys of a JSON object in Jinja `dictsort` order: compared with ASCII letters folded to
// lower case; keys equal under folding keep byte order (Jinja keeps insertion order, which a
// JSON object does not record).
std::vector<const std::string*> DictSortedKeys(const Json& object);

// Python's repr() of a finite float: shortest round-trip digits, fixed notation for
// 1e-4 <= |x| < 1e16 ("0.5", "2.0", "100.0"), exponent notation otherwise ("1e-05", "1.5e+16").
std::string FormatPythonFloat(double x);

// Jinja truthiness of a JSON value: false for null, false, 0, 0.0, "", [] and {}.
bool IsTruthy(const Json& value);

}  // namespace fgnet
