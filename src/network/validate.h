// Validation of node and network outputs against the output contract:
//   - the contract: JSON Schema (the instance validated against the schema, every violation
//     with its JSON path) or FunctionGemma calls (each call names a declared function, its
//     arguments match the declared parameters and their types, required ones present);
//   - code syntax: JavaScript / TypeScript through Node.js with the TypeScript compiler's parser
//     (installed by scripts/setup.sh from npm), Python through python3's ast module; each error
//     names the file and line;
//   - import/export consistency across files: every relative import resolves to a file of the
//     output that exports each imported name; no file exports a name twice; no two files claim
//     the same path.
// The code checks read the imports and exports from the code itself (the parsers report them),
// falling back to the declared lists when a language has no parser.
//
// Nothing generated is executed: the checks only parse. A missing tool (no node, no
// typescript, no python3) turns its check into one "skipped" note, not a failure.
// Thread-safety: a CodeChecker may be shared by threads (each check runs its own process).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "network/spec.h"
#include "network/structured.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::network {

struct ValidationIssue {
  std::string check;        // "contract", "syntax", "imports", "exports", "paths"
  std::string file;         // the code file ("" for the contract)
  std::int64_t line = 0;    // 1-based; 0 when not about a line
  std::int64_t column = 0;  // 1-based; 0 when unknown
  std::string message;  // one line; for the contract it starts with the JSON path ("$.a[1]: ...")

  std::string ToString() const;  // "file:line:col: check: message"
};

struct ValidationReport {
  bool ok = true;                       // no issue
  double score = 1.0;                   // in [0, 1]: the fraction of checks passed
  std::int32_t checks = 0;              // checks run
  std::vector<ValidationIssue> issues;  // failures
  std::vector<std::string> skipped;     // checks that could not run, and why

  Json ToJson() const;
};

struct CodeCheckerOptions {
  std::string node = "node";  // the Node.js binary
  std::string node_path;      // NODE_PATH holding `typescript` ("" = FGNET default)
  std::string python = "python3";
  std::int64_t timeout_ms = 10000;  // per check process
};

// Runs the syntax parsers. One process per language per call.
class CodeChecker {
 public:
  explicit CodeChecker(CodeCheckerOptions options = {});

  struct FileFacts {
    std::vector<ValidationIssue> syntax;  // syntax errors
    std::vector<ImportRef> imports;       // as the parser read them
    std::vector<std::string> exports;
    bool parsed = false;        // false: no parser ran for this file
    bool open_exports = false;  // `export * from`: the export list is incomplete
  };
  // Parses every file; `skipped` receives a note per language whose tool is missing.
  std::vector<FileFacts> Check(const std::vector<CodeFile>& files,
                               std::vector<std::string>* skipped) const;

  const CodeCheckerOptions& options() const { return options_; }

 private:
  CodeCheckerOptions options_;
};

// The contract check alone.
std::vector<ValidationIssue> ValidateContract(const StructuredOutput& output,
                                              const OutputContract& contract);

// Import/export consistency of `files` given what each file's parser found.
std::vector<ValidationIssue> CheckImportsExports(const std::vector<CodeFile>& files,
                                                 const std::vector<CodeChecker::FileFacts>& facts);

// Every check that applies to `output` under `contract` (code checks when
// contract.check_code and the output carries code). `checker` may be null (no syntax checks).
ValidationReport Validate(const StructuredOutput& output, const OutputContract& contract,
                          const CodeChecker* checker);

}  // namespace fgnet::network
