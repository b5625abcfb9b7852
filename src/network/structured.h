// What a node's output says, when it says it in a structure: code with its imports and exports,
// several files, function calls, or other JSON. Handoffs pass structured outputs on losslessly
// and compactly; combiners compare outputs by their structure; validation checks the code.
//
// Recognised forms (after trimming whitespace; a single ```json fenced block counts as its body):
//   {"code": "...", "imports": [...], "exports": [...], "path"?: "...", "language"?: "..."}
//   {"files": [{"path": "...", "code": "...", "imports": [...], "exports": [...]}, ...]}
//   FunctionGemma calls: <start_function_call>call:NAME{...}<end_function_call> ...
//   any other JSON value
//   fenced code blocks (```lang [path]\n...\n```): one file per block
// An import is a string ("./button", "{ Button } from './button'", "react") or an object
// {"from": "./button", "names": ["Button"]}; exports are names.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/function_call.h"
#include "util/json.h"

namespace fgnet::network {

struct ImportRef {
  std::string from;                // module specifier ("./button", "react")
  std::vector<std::string> names;  // imported names (empty: a side-effect or namespace import)
  std::int64_t line = 0;           // 1-based line of the import in the code; 0 when unknown
};

struct CodeFile {
  std::string path;      // may be empty for a single unnamed file
  std::string language;  // "javascript", "typescript", "python", ... ("" unknown)
  std::string code;
  std::vector<ImportRef> imports;
  std::vector<std::string> exports;
};

struct StructuredOutput {
  enum class Kind : std::uint8_t { kText, kCode, kFiles, kCalls, kJson };
  Kind kind = Kind::kText;
  std::vector<CodeFile> files;      // kCode (one file) and kFiles
  std::vector<FunctionCall> calls;  // kCalls
  Json json;                        // kJson, and the parsed document for kCode / kFiles
  std::string text;                 // the output as generated
};

// Recognises the structure of `text` (kText when nothing parses).
StructuredOutput ExtractStructured(std::string_view text);

// Parses an import string or object (see above); nullopt when it is neither.
std::optional<ImportRef> ParseImportRef(const Json& value);

// The language a path's extension implies ("" when unknown).
std::string LanguageOfPath(std::string_view path);

// A canonical form for comparing outputs: JSON re-serialised with sorted keys and no spaces,
// calls as their parsed JSON, files sorted by path with trimmed code, text with whitespace runs
// collapsed and trimmed.
std::string Canonicalize(const StructuredOutput& output);

// The handoff text a downstream node receives: files as "// file: PATH" headers followed by the
// code, with their imports and exports listed; calls re-rendered; JSON compact; text as is.
std::string RenderHandoff(const StructuredOutput& output);

}  // namespace fgnet::network
