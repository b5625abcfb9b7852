// A JSON Schema instance validator (the subset that structured outputs use): type, properties,
// required, additionalProperties, patternProperties, items / prefixItems, enum, const, anyOf,
// oneOf, allOf, not, $ref to "#", "#/$defs/..." or "#/definitions/...", minimum / maximum /
// exclusiveMinimum / exclusiveMaximum (numbers, or draft-4 booleans), multipleOf, minLength /
// maxLength (in code points), minItems / maxItems, minProperties / maxProperties, pattern
// (std::regex, ECMAScript, unanchored; strings over 4096 bytes are not matched), uniqueItems.
// Unknown keywords are ignored; type names are matched case-insensitively (declarations written as
// "STRING" work). Every violation names the JSON path of the instance: "$.files[1].exports:
// expected an array, got a string". Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/json.h"

namespace fgnet::network {

struct SchemaViolation {
  std::string path;     // "$.files[1].exports"
  std::string message;  // "expected an array, got a string"

  std::string ToString() const { return path + ": " + message; }
};

// Validates `instance` against `schema`; `root_path` prefixes every path ("$" by default).
// Returns every violation found (empty: valid).
std::vector<SchemaViolation> CheckJsonSchema(const Json& instance, const Json& schema,
                                             std::string_view root_path = "$");

// "$.a", "$[\"a b\"]": appends an object key to a JSON path.
std::string JsonPathKey(std::string_view path, std::string_view key);

}  // namespace fgnet::network
