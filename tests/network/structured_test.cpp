#include "network/structured.h"

#include <gtest/gtest.h>

#include "network/schema_check.h"

namespace fgnet::network {
namespace {

using Kind = StructuredOutput::Kind;

TEST(StructuredTest, CodeObject) {
  auto out = ExtractStructured(
      R"({"code": "export const a = 1;", "path": "src/a.ts",
          "imports": ["{ Button, Icon as I } from './button'", "react",
                      {"from": "./x", "names": ["y"]}],
          "exports": ["a"]})");
  ASSERT_EQ(out.kind, Kind::kCode);
  ASSERT_EQ(out.files.size(), 1u);
  EXPECT_EQ(out.files[0].path, "src/a.ts");
  EXPECT_EQ(out.files[0].language, "typescript");
  ASSERT_EQ(out.files[0].imports.size(), 3u);
  EXPECT_EQ(out.files[0].imports[0].from, "./button");
  EXPECT_EQ(out.files[0].imports[0].names, (std::vector<std::string>{"Button", "Icon"}));
  EXPECT_EQ(out.files[0].imports[1].from, "react");
  EXPECT_TRUE(out.files[0].imports[1].names.empty());
  EXPECT_EQ(out.files[0].imports[2].names, (std::vector<std::string>{"y"}));
  EXPECT_EQ(out.files[0].exports, (std::vector<std::string>{"a"}));
  EXPECT_TRUE(out.json.is_object());
}

TEST(StructuredTest, FilesObjectInsideProseAndFence) {
  std::string text =
      "Here are the files:\n```json\n"
      R"({"files": [{"path": "a.py", "code": "x = 1"}, {"path": "b.py", "code": "from .a import x"}]})"
      "\n```\nDone.";
  auto out = ExtractStructured(text);
  ASSERT_EQ(out.kind, Kind::kFiles);
  ASSERT_EQ(out.files.size(), 2u);
  EXPECT_EQ(out.files[1].path, "b.py");
  EXPECT_EQ(out.files[1].language, "python");
  EXPECT_EQ(out.text, text);

  auto prose = ExtractStructured("Sure! {\"code\": \"let a\", \"path\": \"a.js\"} Hope it helps.");
  ASSERT_EQ(prose.kind, Kind::kCode);
  EXPECT_EQ(prose.files[0].path, "a.js");
}

TEST(StructuredTest, FunctionCalls) {
  auto out = ExtractStructured(
      "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>"
      "<start_function_call>call:f{n:2}<end_function_call>");
  ASSERT_EQ(out.kind, Kind::kCalls);
  ASSERT_EQ(out.calls.size(), 2u);
  EXPECT_EQ(out.calls[0].name, "get_weather");
  EXPECT_EQ(out.calls[0].arguments["city"], "Paris");
  EXPECT_EQ(RenderHandoff(out),
            "<start_function_call>call:get_weather{city:<escape>Paris<escape>}"
            "<end_function_call><start_function_call>call:f{n:2}<end_function_call>");
}

TEST(StructuredTest, OtherJsonAndText) {
  auto json = ExtractStructured(" [1, 2, {\"b\": 1, \"a\": 2}] ");
  ASSERT_EQ(json.kind, Kind::kJson);
  EXPECT_EQ(Canonicalize(json), R"([1,2,{"a":2,"b":1}])");
  EXPECT_EQ(RenderHandoff(json), R"([1,2,{"a":2,"b":1}])");
  auto text = ExtractStructured("  just   some\n words ");
  EXPECT_EQ(text.kind, Kind::kText);
  EXPECT_EQ(Canonicalize(text), "just some words");
  EXPECT_EQ(RenderHandoff(text), "  just   some\n words ");
  EXPECT_EQ(ExtractStructured("").kind, Kind::kText);
}

TEST(StructuredTest, FencedCodeBlocks) {
  auto out = ExtractStructured(
      "Two files:\n```ts src/a.ts\nexport const a = 1;\n```\n\n"
      "```javascript\n// file: src/b.js\nimport { a } from './a';\n```\n"
      "```python:pkg/m.py\nx = 1\n```\n");
  ASSERT_EQ(out.kind, Kind::kFiles);
  ASSERT_EQ(out.files.size(), 3u);
  EXPECT_EQ(out.files[0].path, "src/a.ts");
  EXPECT_EQ(out.files[0].language, "typescript");
  EXPECT_EQ(out.files[0].code, "export const a = 1;");
  EXPECT_EQ(out.files[1].path, "src/b.js");
  EXPECT_EQ(out.files[1].code, "import { a } from './a';");
  EXPECT_EQ(out.files[2].path, "pkg/m.py");
  EXPECT_EQ(out.files[2].language, "python");

  // A heading line names the block below it.
  auto headed = ExtractStructured(
      "**src/a.ts**\n```ts\nlet a;\n```\n### File: `lib/b.py`\n\n```python\nb = 1\n```\n"
      "Then some prose.\n```js\nlet c;\n```\n```js\nlet d;\n```");
  ASSERT_EQ(headed.files.size(), 4u);
  EXPECT_EQ(headed.files[3].path, "");
  EXPECT_EQ(headed.files[0].path, "src/a.ts");
  EXPECT_EQ(headed.files[1].path, "lib/b.py");
  EXPECT_EQ(headed.files[2].path, "");
  EXPECT_EQ(headed.files[2].language, "javascript");

  auto one = ExtractStructured("```py\nprint(1)\n```");
  ASSERT_EQ(one.kind, Kind::kCode);
  EXPECT_EQ(one.files[0].language, "python");
  EXPECT_EQ(one.files[0].path, "");
  // An unterminated block runs to the end.
  auto open = ExtractStructured("```js a.js\nlet x = 1;\n");
  ASSERT_EQ(open.kind, Kind::kCode);
  EXPECT_EQ(open.files[0].code, "let x = 1;");
}

TEST(StructuredTest, MalformedInputs) {
  // Broken JSON, a truncated call, a lone fence marker: all text, never a crash.
  for (const char* text :
       {"{\"code\": ", "{\"files\": [{\"path\": 1}]}x", "<start_function_call>call:f{a:", "```",
        "```\n```", "}{", "[[[", "<end_function_call>"}) {
    auto out = ExtractStructured(text);
    EXPECT_TRUE(out.kind == Kind::kText || out.kind == Kind::kJson) << text;
    EXPECT_EQ(out.text, text);
  }
  // Hostile nesting is text, not a stack overflow.
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto nested = ExtractStructured(deep);
  EXPECT_EQ(nested.kind, Kind::kText);
  EXPECT_EQ(Canonicalize(nested), deep);
  EXPECT_EQ(ExtractStructured(std::string(200, '[') + std::string(200, ']')).kind, Kind::kJson);
  // "files" with a non-file entry is plain JSON.
  auto json = ExtractStructured(R"({"files": [{"path": "a"}]})");
  EXPECT_EQ(json.kind, Kind::kJson);
  // "code" that is not a string is plain JSON.
  EXPECT_EQ(ExtractStructured(R"({"code": 3})").kind, Kind::kJson);
}

TEST(StructuredTest, ParseImportRefForms) {
  auto a = ParseImportRef(Json("import Button, { Icon } from \"./button\";"));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->from, "./button");
  EXPECT_EQ(a->names, (std::vector<std::string>{"default", "Icon"}));
  auto ns = ParseImportRef(Json("* as utils from './utils'"));
  ASSERT_TRUE(ns);
  EXPECT_TRUE(ns->names.empty());
  auto py = ParseImportRef(Json("from ..pkg.mod import a, b as c"));
  ASSERT_TRUE(py);
  EXPECT_EQ(py->from, "..pkg.mod");
  EXPECT_EQ(py->names, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(ParseImportRef(Json(3)));
  EXPECT_FALSE(ParseImportRef(Json::object()));
  EXPECT_FALSE(ParseImportRef(Json("")));
}

TEST(StructuredTest, LanguageOfPath) {
  EXPECT_EQ(LanguageOfPath("a/b.tsx"), "typescript");
  EXPECT_EQ(LanguageOfPath("b.mjs"), "javascript");
  EXPECT_EQ(LanguageOfPath("x.PY"), "python");
  EXPECT_EQ(LanguageOfPath("Makefile"), "");
  EXPECT_EQ(LanguageOfPath(".bashrc"), "");
}

TEST(StructuredTest, CanonicalEquality) {
  auto a = ExtractStructured(R"({"b": [1, 2], "a": {"y": null, "x": "s"}})");
  auto b = ExtractStructured("```json\n{\"a\":{\"x\":\"s\",\"y\":null},\n \"b\":[1,2]}\n```");
  EXPECT_EQ(Canonicalize(a), Canonicalize(b));
  EXPECT_NE(Canonicalize(a), Canonicalize(ExtractStructured(R"({"b": [2, 1], "a": {}})")));

  // Files: order of files, of exports and surrounding whitespace do not matter.
  auto f1 = ExtractStructured(
      R"({"files": [{"path": "b.ts", "code": "  let b\n", "exports": ["y", "x"]},
                    {"path": "a.ts", "code": "let a"}]})");
  auto f2 = ExtractStructured(
      R"({"files": [{"path": "a.ts", "code": "let a"},
                    {"path": "b.ts", "code": "let b", "exports": ["x", "y"]}]})");
  EXPECT_EQ(Canonicalize(f1), Canonicalize(f2));
  auto f3 = ExtractStructured(
      R"({"files": [{"path": "a.ts", "code": "let a2"},
                    {"path": "b.ts", "code": "let b", "exports": ["x", "y"]}]})");
  EXPECT_NE(Canonicalize(f1), Canonicalize(f3));

  // Calls: spacing and key order inside the call do not matter, values do.
  auto c1 =
      ExtractStructured("<start_function_call>call:f{b:1,a:<escape>x<escape>}<end_function_call>");
  auto c2 = ExtractStructured(
      "  <start_function_call>call:f{ a : <escape>x<escape> , b : 1 }<end_function_call>\n");
  auto c3 =
      ExtractStructured("<start_function_call>call:f{a:<escape>x<escape>,b:2}<end_function_call>");
  EXPECT_EQ(Canonicalize(c1), Canonicalize(c2));
  EXPECT_NE(Canonicalize(c1), Canonicalize(c3));
}

TEST(StructuredTest, HandoffIsCompactAndDeterministic) {
  auto out = ExtractStructured(
      R"({"files": [{"path": "src/a.ts", "code": "export const a = 1;\n",
                     "imports": ["{ b } from './b'"], "exports": ["a"]},
                    {"path": "src/b.ts", "code": "export const b = 2;", "exports": ["b"]}]})");
  std::string expected =
      "// file: src/a.ts\n// imports: ./b {b}\n// exports: a\nexport const a = 1;\n\n"
      "// file: src/b.ts\n// exports: b\nexport const b = 2;";
  EXPECT_EQ(RenderHandoff(out), expected);
  EXPECT_EQ(RenderHandoff(out), RenderHandoff(ExtractStructured(out.text)));
  // The handoff of fenced code reads back as the same files.
  auto back = ExtractStructured(
      "```ts\n" + RenderHandoff(ExtractStructured("```ts src/x.ts\nlet x = 1;\n```")) + "\n```");
  ASSERT_EQ(back.files.size(), 1u);
  EXPECT_EQ(back.files[0].path, "src/x.ts");
}

// --- JSON Schema ------------------------------------------------------------------------------

std::vector<std::string> Violations(const Json& instance, const Json& schema) {
  std::vector<std::string> out;
  for (const auto& v : CheckJsonSchema(instance, schema)) out.push_back(v.ToString());
  return out;
}

TEST(SchemaCheckTest, TypesAndPaths) {
  Json schema = Json::parse(R"({
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"$ref": "#/$defs/file"}}},
    "$defs": {"file": {"type": "object", "required": ["path"], "additionalProperties": false,
                       "properties": {"path": {"type": "string", "minLength": 1},
                                      "exports": {"type": "array", "items": {"type": "string"},
                                                  "uniqueItems": true}}}}})");
  EXPECT_TRUE(
      Violations(Json::parse(R"({"files": [{"path": "a", "exports": ["x"]}]})"), schema).empty());
  auto v =
      Violations(Json::parse(R"({"files": [{"path": "a"}, {"path": "", "exports": "x", "extra": 1},
                                {"exports": ["a", "a"]}]})"),
                 schema);
  std::vector<std::string> expected = {
      "$.files[1].exports: expected an array, got a string",
      "$.files[1].extra: property is not allowed (additionalProperties is false)",
      "$.files[1].path: string of length 0 is shorter than minLength 1",
      "$.files[2].path: required but missing",
      "$.files[2].exports: items 0 and 1 are equal (uniqueItems)"};
  EXPECT_EQ(v, expected);
  EXPECT_EQ(Violations(Json::array(), schema),
            (std::vector<std::string>{"$: expected an object, got an array"}));
}

TEST(SchemaCheckTest, Keywords) {
  EXPECT_EQ(Violations(5, Json::parse(R"({"minimum": 6})")),
            (std::vector<std::string>{"$: 5 is less than the minimum 6"}));
  EXPECT_EQ(Violations(6, Json::parse(R"({"exclusiveMaximum": 6})")).size(), 1u);
  EXPECT_EQ(Violations(6, Json::parse(R"({"maximum": 6, "exclusiveMaximum": true})")).size(), 1u);
  EXPECT_TRUE(Violations(6, Json::parse(R"({"maximum": 6})")).empty());
  EXPECT_EQ(Violations(1.5, Json::parse(R"({"type": "integer"})")),
            (std::vector<std::string>{"$: expected an integer, got a number"}));
  EXPECT_TRUE(Violations(2.0, Json::parse(R"({"type": "integer"})")).empty());
  EXPECT_TRUE(Violations(nullptr, Json::parse(R"({"type": ["string", "null"]})")).empty());
  EXPECT_EQ(Violations(1, Json::parse(R"({"type": ["string", "null"]})")),
            (std::vector<std::string>{"$: expected a string or null, got an integer"}));
  EXPECT_EQ(Violations("b", Json::parse(R"({"enum": ["a", 1]})")).size(), 1u);
  EXPECT_TRUE(Violations("a", Json::parse(R"({"enum": ["a", 1]})")).empty());
  EXPECT_EQ(Violations("x", Json::parse(R"({"const": "y"})")).size(), 1u);
  EXPECT_TRUE(Violations("abc-12", Json::parse(R"({"pattern": "[a-z]+-\\d+$"})")).empty());
  EXPECT_EQ(Violations("abc", Json::parse(R"({"pattern": "^\\d"})")).size(), 1u);
  EXPECT_EQ(Violations("x", Json::parse(R"({"pattern": "("})")).size(), 1u);  // no throw
  EXPECT_EQ(Violations("\xc3\xa9\xc3\xa9", Json::parse(R"({"maxLength": 2})")).size(), 0u);
  EXPECT_EQ(
      Violations(Json::array({1, 2, 3}), Json::parse(R"({"maxItems": 2, "minItems": 4})")).size(),
      2u);
  // Combinators.
  Json any = Json::parse(R"({"anyOf": [{"type": "string"}, {"type": "integer"}]})");
  EXPECT_TRUE(Violations(3, any).empty());
  auto v = Violations(true, any);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_NE(v[0].find("matches none of the 2 anyOf alternatives"), std::string::npos);
  Json one = Json::parse(R"({"oneOf": [{"type": "number"}, {"type": "integer"}]})");
  EXPECT_EQ(Violations(3, one).size(), 1u);  // both match
  EXPECT_TRUE(Violations(3.5, one).empty());
  Json all = Json::parse(R"({"allOf": [{"minimum": 1}, {"maximum": 2}]})");
  EXPECT_EQ(Violations(3, all).size(), 1u);
  // Tuple items, $ref to #/definitions, boolean schemas, unknown keywords, type case.
  Json tuple =
      Json::parse(R"({"prefixItems": [{"type": "string"}], "items": {"type": "integer"}})");
  EXPECT_EQ(Violations(Json::parse(R"(["a", 1, "b"])"), tuple),
            (std::vector<std::string>{"$[2]: expected an integer, got a string"}));
  Json defs = Json::parse(
      R"({"definitions": {"n": {"type": "number"}}, "properties": {"a b": {"$ref": "#/definitions/n"}}})");
  EXPECT_EQ(Violations(Json::parse(R"({"a b": "x"})"), defs),
            (std::vector<std::string>{"$[\"a b\"]: expected a number, got a string"}));
  EXPECT_EQ(Violations(1, Json(false)).size(), 1u);
  EXPECT_TRUE(Violations(1, Json(true)).empty());
  EXPECT_TRUE(Violations(1, Json::parse(R"({"x-unknown": 3, "format": "email"})")).empty());
  EXPECT_EQ(Violations(1, Json::parse(R"({"type": "STRING"})")).size(), 1u);
  EXPECT_EQ(Violations(1, Json::parse(R"({"$ref": "#/nowhere"})")).size(), 1u);
  // A $ref cycle ends with a violation, not a stack overflow.
  EXPECT_FALSE(Violations(1, Json::parse(R"({"$ref": "#"})")).empty());
}

}  // namespace
}  // namespace fgnet::network
