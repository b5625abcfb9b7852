// JSON Schema (the subset Grammar::FromJsonSchema documents) to automaton fragments, in either
// value syntax (compact JSON, or FunctionGemma's argument syntax for tool parameters).
// Errors name the JSON path of the offending keyword, starting from the root path given.
// Thread-safety: single-threaded.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "grammar/value_syntax.h"
#include "util/status.h"

namespace fgnet::grammar_detail {

// Deepest schema nesting accepted (objects within objects, anyOf within items, ...).
inline constexpr int kMaxSchemaDepth = 64;

// Deepest JSON document accepted at all (checked before anything recurses into it).
inline constexpr int kMaxDocumentDepth = 4 * kMaxSchemaDepth;

// True if `value` (a Json or OrderedJson) nests no deeper than `max_depth`, checked without
// recursion.
template <class JsonType>
bool NestingAtMost(const JsonType& value, int max_depth) {
  std::vector<std::pair<const JsonType*, int>> stack = {{&value, 0}};
  while (!stack.empty()) {
    const auto [v, depth] = stack.back();
    stack.pop_back();
    if (!v->is_structured()) continue;
    if (depth >= max_depth) return false;
    for (const auto& child : *v) stack.emplace_back(&child, depth + 1);
  }
  return true;
}

// `error` with control characters (a property name holding a newline, ...) written as \xNN, so
// that the message stays on one line.
Error OneLine(const Error& error);

class SchemaCompiler {
 public:
  // `root` is the document $ref resolves against; `root_path` names it in errors ("schema",
  // "tools[0].function.parameters").
  SchemaCompiler(ValueWriter& writer, const OrderedJson& root, std::string root_path);

  Result<Fragment> Compile(const OrderedJson& schema, const std::string& path);
  // The schema as an object even without "type" (a function's parameters); error if its type
  // says otherwise.
  Result<Fragment> CompileObjectRoot(const OrderedJson& schema, const std::string& path);

 private:
  enum TypeBit : unsigned {
    kNull = 1,
    kBoolean = 2,
    kInteger = 4,
    kNumber = 8,
    kString = 16,
    kArray = 32,
    kObject = 64,
  };

  Result<Fragment> CompileNode(const OrderedJson& schema, const std::string& path);
  Result<Piece> CompilePiece(const OrderedJson& schema, const std::string& path);
  Result<unsigned> Types(const OrderedJson& schema, const std::string& path) const;
  Result<Fragment> CompileRef(const OrderedJson& schema, const std::string& path);
  Result<Fragment> CompileAnyOf(const OrderedJson& schema, const std::string& path);
  Result<Fragment> CompileConstants(const OrderedJson& schema, const std::string& path);
  Result<Fragment> CompileObject(const OrderedJson& schema, const std::string& path);
  Result<Fragment> CompileArray(const OrderedJson& schema, const std::string& path);
  Result<Fragment> CompileString(const OrderedJson& schema, const std::string& path);

  ValueWriter& w_;
  const OrderedJson& root_;
  std::string root_path_;
  std::vector<std::string> ref_stack_;
  int depth_ = 0;
};

}  // namespace fgnet::grammar_detail
