#include "network/validate.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace fgnet::network {
namespace {

using Kind = StructuredOutput::Kind;

// The real tools: node + typescript (from FGNET_NPM_DIR) and python3, which setup installs.
// Their absence fails these tests, except when FGNET_NO_NODE is set.
class CodeCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("FGNET_NO_NODE") != nullptr) GTEST_SKIP() << "FGNET_NO_NODE is set";
  }
  CodeChecker checker_{CodeCheckerOptions{"node", FGNET_NPM_DIR, "python3", 30000}};

  std::vector<CodeChecker::FileFacts> Check(const std::vector<CodeFile>& files) {
    std::vector<std::string> skipped;
    auto facts = checker_.Check(files, &skipped);
    EXPECT_TRUE(skipped.empty()) << "the code checks need node, typescript (" FGNET_NPM_DIR
                                    ") and python3 (scripts/setup.sh installs them): "
                                 << (skipped.empty() ? "" : skipped[0]);
    return facts;
  }
};

CodeFile File(std::string path, std::string code) {
  CodeFile f;
  f.language = LanguageOfPath(path);
  f.path = std::move(path);
  f.code = std::move(code);
  return f;
}

TEST_F(CodeCheckTest, SyntaxErrorsNameFileAndLine) {
  std::vector<CodeFile> files = {
      File("src/ok.js", "export function f(a) {\n  return a + 1;\n}\n"),
      File("src/bad.js", "const a = 1;\nfunction (\n"),
      File("src/bad.ts", "let x: number = 1;\nlet y: = 2;\n"),
      File("src/view.tsx", "export const V = () => (\n  <div>\n    <span>hi</div>\n);\n"),
      File("pkg/bad.py", "def f():\n    return 1\n\ndef g(:\n    pass\n"),
      File("pkg/ok.py", "def f():\n    return 1\n")};
  auto facts = Check(files);
  ASSERT_EQ(facts.size(), files.size());
  for (const auto& f : facts) EXPECT_TRUE(f.parsed);
  EXPECT_TRUE(facts[0].syntax.empty());
  ASSERT_FALSE(facts[1].syntax.empty());
  EXPECT_EQ(facts[1].syntax[0].file, "src/bad.js");
  EXPECT_EQ(facts[1].syntax[0].line, 2);
  EXPECT_EQ(facts[1].syntax[0].check, "syntax");
  ASSERT_FALSE(facts[2].syntax.empty());
  EXPECT_EQ(facts[2].syntax[0].line, 2);
  ASSERT_FALSE(facts[3].syntax.empty());
  EXPECT_EQ(facts[3].syntax[0].file, "src/view.tsx");
  EXPECT_EQ(facts[3].syntax[0].line, 3);
  ASSERT_EQ(facts[4].syntax.size(), 1u);
  EXPECT_EQ(facts[4].syntax[0].file, "pkg/bad.py");
  EXPECT_EQ(facts[4].syntax[0].line, 4);
  EXPECT_GT(facts[4].syntax[0].column, 0);
  EXPECT_TRUE(facts[5].syntax.empty());
  // JSX in a .tsx file parses; the same text in a .ts file does not.
  auto jsx = Check({File("a.tsx", "export const A = () => <b>x</b>;\n"),
                    File("a2.ts", "export const A = () => <b>x</b>;\n")});
  EXPECT_TRUE(jsx[0].syntax.empty());
  EXPECT_FALSE(jsx[1].syntax.empty());
}

TEST_F(CodeCheckTest, ParsersReportImportsAndExports) {
  auto facts =
      Check({File("src/a.ts",
                  "import React from 'react';\nimport { b, c as d } from './b';\n"
                  "import * as ns from './ns';\nimport './side';\n"
                  "export { x as y } from './x';\nexport * from './all';\n"
                  "export const k = 1, { m } = o;\nexport default function () {}\n"
                  "export class C {}\nexport interface I {}\nconst z = 1;\nexport { z };\n"),
             File("pkg/m.py",
                  "import os\nfrom . import sib\nfrom ..up.mod import a, b as c\n"
                  "def f(): pass\nclass K: pass\nV = 1\n"),
             File("pkg/all.py", "__all__ = ['only']\ndef only(): pass\ndef other(): pass\n")});
  const auto& ts = facts[0];
  ASSERT_EQ(ts.imports.size(), 6u);
  EXPECT_EQ(ts.imports[0].from, "react");
  EXPECT_EQ(ts.imports[0].names, (std::vector<std::string>{"default"}));
  EXPECT_EQ(ts.imports[1].names, (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(ts.imports[1].line, 2);
  EXPECT_TRUE(ts.imports[2].names.empty());
  EXPECT_EQ(ts.imports[3].from, "./side");
  EXPECT_EQ(ts.imports[4].from, "./x");
  EXPECT_EQ(ts.imports[4].names, (std::vector<std::string>{"x"}));
  EXPECT_TRUE(ts.open_exports);
  EXPECT_EQ(ts.exports, (std::vector<std::string>{"y", "k", "m", "default", "C", "I", "z"}));
  const auto& py = facts[1];
  ASSERT_EQ(py.imports.size(), 3u);
  EXPECT_EQ(py.imports[0].from, "os");
  EXPECT_EQ(py.imports[1].from, ".");
  EXPECT_EQ(py.imports[1].names, (std::vector<std::string>{"sib"}));
  EXPECT_EQ(py.imports[2].from, "..up.mod");
  EXPECT_EQ(py.imports[2].names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(py.imports[2].line, 3);
  EXPECT_EQ(py.exports, (std::vector<std::string>{"os", "sib", "a", "c", "f", "K", "V"}));
  EXPECT_EQ(facts[2].exports, (std::vector<std::string>{"only"}));
}

std::vector<std::string> Issues(const std::vector<ValidationIssue>& issues) {
  std::vector<std::string> out;
  for (const auto& i : issues) out.push_back(i.ToString());
  return out;
}

TEST_F(CodeCheckTest, ImportExportConsistency) {
  std::vector<CodeFile> files = {
      File("src/app.ts",
           "import Button, { Icon } from './ui/button';\nimport { missing } from './ui';\n"
           "import { gone } from './nowhere';\nimport React from 'react';\n"
           "import def from './util.js';\n"),
      File("src/ui/button.tsx", "export const Icon = 1;\nexport const Icon2 = 2;\n"),
      File("src/ui/index.ts", "export function ok() {}\nexport function ok() {}\n"),
      File("src/util.ts", "export default 3;\n")};
  auto facts = Check(files);
  EXPECT_EQ(
      Issues(CheckImportsExports(files, facts)),
      (std::vector<std::string>{
          "src/ui/index.ts: exports: 'ok' is exported more than once",
          "src/app.ts:1: imports: './ui/button' (src/ui/button.tsx) has no default export",
          "src/app.ts:2: imports: 'missing' is not exported by src/ui/index.ts",
          "src/app.ts:3: imports: module './nowhere' does not resolve to a file of the output",
      }));
}

TEST_F(CodeCheckTest, PythonRelativeImports) {
  std::vector<CodeFile> files = {File("pkg/__init__.py", "from .core import run\n"),
                                 File("pkg/core.py",
                                      "from .util import helper, absent\nfrom . import extra\n"
                                      "from ..outside import x\ndef run(): return helper()\n"),
                                 File("pkg/util.py", "def helper(): return 1\n"),
                                 File("pkg/extra.py", "")};
  auto facts = Check(files);
  EXPECT_EQ(
      Issues(CheckImportsExports(files, facts)),
      (std::vector<std::string>{
          "pkg/core.py:1: imports: 'absent' is not exported by pkg/util.py",
          "pkg/core.py:3: imports: module '..outside' does not resolve to a file of the output",
      }));
}

TEST_F(CodeCheckTest, ValidateScoresChecks) {
  auto output = ExtractStructured(
      "```ts src/a.ts\nimport { b } from './b';\nexport const a = b + 1;\n```\n"
      "```ts src/b.ts\nexport const b = ;\n```\n");
  ASSERT_EQ(output.kind, Kind::kFiles);
  OutputContract contract;
  auto report = Validate(output, contract, &checker_);
  EXPECT_FALSE(report.ok);
  EXPECT_TRUE(report.skipped.empty());
  // 2 syntax checks (1 fails), 2 import/export checks (pass), 1 path check.
  EXPECT_EQ(report.checks, 5);
  EXPECT_DOUBLE_EQ(report.score, 0.8);
  ASSERT_EQ(report.issues.size(), 1u);
  EXPECT_EQ(report.issues[0].file, "src/b.ts");
  EXPECT_EQ(report.issues[0].line, 1);
  EXPECT_EQ(report.ToJson()["issues"][0]["file"], "src/b.ts");

  auto good = ExtractStructured(
      "```ts src/a.ts\nimport { b } from './b';\nexport const a = b + 1;\n```\n"
      "```ts src/b.ts\nexport const b = 1;\n```\n");
  auto good_report = Validate(good, contract, &checker_);
  EXPECT_TRUE(good_report.ok);
  EXPECT_DOUBLE_EQ(good_report.score, 1.0);
  contract.check_code = false;
  EXPECT_EQ(Validate(output, contract, &checker_).checks, 0);
}

TEST_F(CodeCheckTest, MissingTypescriptIsSkipped) {
  CodeChecker checker(CodeCheckerOptions{"node", "/nonexistent/fgnet", "python3", 30000});
  std::vector<std::string> skipped;
  auto facts = checker.Check({File("a.ts", "let x = ;")}, &skipped);
  EXPECT_FALSE(facts[0].parsed);
  EXPECT_EQ(skipped,
            (std::vector<std::string>{
                "syntax (typescript): typescript not found (NODE_PATH /nonexistent/fgnet)"}));
}

TEST(CodeCheckerToolsTest, MissingToolsAreSkippedNotFailed) {
  CodeChecker checker(CodeCheckerOptions{"fgnet-no-node", "", "fgnet-no-python", 5000});
  std::vector<std::string> skipped;
  auto facts = checker.Check({File("a.ts", "let x = ;"), File("b.py", "def (")}, &skipped);
  EXPECT_FALSE(facts[0].parsed);
  EXPECT_FALSE(facts[1].parsed);
  EXPECT_EQ(skipped, (std::vector<std::string>{"syntax (typescript): fgnet-no-node not found",
                                               "syntax (python): fgnet-no-python not found"}));
  auto report =
      Validate(ExtractStructured("```ts a.ts\nlet x = ;\n```"), OutputContract{}, &checker);
  EXPECT_TRUE(report.ok);
  EXPECT_EQ(report.skipped.size(), 1u);
}

TEST(CodeCheckerToolsTest, DeclaredListsWithoutParser) {
  // No parser ran: the declared imports and exports are checked.
  auto output = ExtractStructured(R"({"files": [
      {"path": "a.js", "code": "x", "imports": ["{ B, C } from './b'"], "exports": ["A", "A"]},
      {"path": "b.js", "code": "y", "exports": ["B"]},
      {"path": "b.js", "code": "z"}]})");
  std::vector<CodeChecker::FileFacts> none(output.files.size());
  EXPECT_EQ(Issues(CheckImportsExports(output.files, none)),
            (std::vector<std::string>{
                "b.js: paths: path already used by file 2 of the output",
                "a.js: exports: 'A' is exported more than once",
                "a.js: imports: 'C' is not exported by b.js",
            }));
}

// --- The contract -----------------------------------------------------------------------------

TEST(ContractTest, JsonSchema) {
  OutputContract contract;
  contract.kind = OutputContract::Kind::kJsonSchema;
  contract.schema = Json::parse(
      R"({"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}})");
  EXPECT_TRUE(ValidateContract(ExtractStructured(R"({"answer": 4})"), contract).empty());
  auto issues = ValidateContract(ExtractStructured(R"({"answer": "4"})"), contract);
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].ToString(), "contract: $.answer: expected an integer, got a string");
  auto text = ValidateContract(ExtractStructured("four"), contract);
  ASSERT_EQ(text.size(), 1u);
  EXPECT_EQ(text[0].message, "$: expected a JSON document, got text");
  auto report = Validate(ExtractStructured(R"({"answer": "4"})"), contract, nullptr);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.checks, 1);
  EXPECT_DOUBLE_EQ(report.score, 0.0);
}

TEST(ContractTest, FunctionCalls) {
  OutputContract contract;
  contract.kind = OutputContract::Kind::kFunctionCalls;
  contract.tools = Json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Weather",
      "parameters": {"type": "object", "required": ["city"],
                     "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}},
    {"name": "ping", "parameters": {"type": "object", "properties": {}}}])");
  auto ok = ExtractStructured(
      "<start_function_call>call:get_weather{city:<escape>Oslo<escape>,days:3}"
      "<end_function_call><start_function_call>call:ping{}<end_function_call>");
  EXPECT_TRUE(ValidateContract(ok, contract).empty());
  auto bad = ExtractStructured(
      "<start_function_call>call:get_weather{city:5,days:<escape>x<escape>}<end_function_call>"
      "<start_function_call>call:get_weather{days:1}<end_function_call>"
      "<start_function_call>call:launch{}<end_function_call>");
  EXPECT_EQ(Issues(ValidateContract(bad, contract)),
            (std::vector<std::string>{
                "contract: $.calls[0].arguments.city: expected a string, got an integer",
                "contract: $.calls[0].arguments.days: expected an integer, got a string",
                "contract: $.calls[1].arguments.city: required but missing",
                "contract: $.calls[2].name: 'launch' is not a declared function (declared: "
                "get_weather, ping)"}));
  auto none = ValidateContract(ExtractStructured("I cannot call anything."), contract);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].message, "$.calls: expected at least one function call, got none");
  auto broken = ValidateContract(
      ExtractStructured("<start_function_call>call:ping{a:<end_function_call>"), contract);
  ASSERT_EQ(broken.size(), 1u);
  EXPECT_EQ(broken[0].message.rfind("$.calls: offset", 0), 0u) << broken[0].message;
}

}  // namespace
}  // namespace fgnet::network
