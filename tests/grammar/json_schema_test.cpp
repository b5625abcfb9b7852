// JSON Schema grammars on the real Gemma 3 vocabulary: random walks whose output must parse and
// validate, specific masks, and the errors for what is not supported.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar_test_support.h"
#include "util/rng.h"

namespace fgnet {
namespace {

using testing::Gemma3StopIds;
using testing::Gemma3Tokenizer;
using testing::Gemma3Vocab;

std::shared_ptr<const Grammar> SchemaGrammar(std::string_view schema_text) {
  auto vocab = Gemma3Vocab();
  if (!vocab) return nullptr;
  GrammarOptions options;
  options.stop_ids = Gemma3StopIds();
  auto g = Grammar::FromJsonSchemaText(schema_text, vocab, options);
  EXPECT_TRUE(g.ok()) << g.error().message();
  return g.ok() ? *g : nullptr;
}

std::string SchemaError(std::string_view schema_text) {
  auto vocab = testing::TinyVocab();
  auto g = Grammar::FromJsonSchemaText(schema_text, vocab, {});
  EXPECT_FALSE(g.ok()) << schema_text;
  return g.ok() ? "" : g.error().message();
}

std::int32_t Id(std::string_view vocab_string) {
  const auto id = Gemma3Tokenizer()->TokenId(vocab_string);
  EXPECT_TRUE(id.has_value()) << vocab_string;
  return id.value_or(0);
}

std::int32_t ByteId(unsigned char b) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  return Id(std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">");
}

// The state after `text`, fed one byte-fallback token at a time; kNoState if rejected.
std::int32_t Feed(const Grammar& g, std::int32_t state, std::string_view text) {
  for (const char c : text) {
    if (state == Grammar::kNoState) return state;
    state = g.Advance(state, ByteId(static_cast<unsigned char>(c)));
  }
  return state;
}

bool Allows(const Grammar& g, std::int32_t state, std::int32_t token) {
  return g.Mask(state)->Allows(token);
}

// Random walks under `schema_text`; every output must be compact, valid UTF-8 JSON that the
// schema accepts, and Tokenizer::Decode must give the bytes the grammar saw.
void CheckWalks(std::string_view schema_text, int walks, std::uint64_t seed) {
  const auto g = SchemaGrammar(schema_text);
  ASSERT_NE(g, nullptr);
  const Json schema = Json::parse(schema_text);
  Philox rng(seed);
  const double biases[] = {0.0, 0.3, 0.8};
  for (int i = 0; i < walks; ++i) {
    const std::int64_t budget =
        GrammarMatcher(g).MinTokens() + static_cast<std::int64_t>(rng.NextU32() % 60);
    const testing::Walk w = testing::RandomWalk(g, seed * 1000 + i, budget, biases[i % 3]);
    ASSERT_TRUE(w.complete);
    const std::string text = testing::TokensText(g->vocab(), w.tokens);
    EXPECT_EQ(Gemma3Tokenizer()->Decode(w.tokens), text);
    ASSERT_TRUE(testing::IsValidUtf8(text)) << text;
    EXPECT_FALSE(testing::HasWhitespaceOutsideStrings(text)) << text;
    const Result<Json> parsed = ParseJson(text, "output");
    ASSERT_TRUE(parsed.ok()) << parsed.error().message() << "\n" << text;
    EXPECT_EQ(testing::ValidateJson(*parsed, schema, schema), "") << text;
  }
}

void WalkNestedObject() {
  CheckWalks(R"({"type":"object","properties":{
      "name":{"type":"string","minLength":1,"maxLength":12},
      "age":{"type":"integer"},
      "score":{"type":"number"},
      "active":{"type":"boolean"},
      "address":{"type":"object","properties":{"city":{"type":"string"},
                 "zip":{"type":"string","maxLength":5}},"required":["city"]},
      "nickname":{"type":["string","null"]}},
    "required":["name","age"]})",
             6, 1);
}

void WalkArrays() {
  CheckWalks(R"({"type":"array","minItems":1,"maxItems":4,"items":{"type":"object",
      "properties":{"id":{"type":"integer"},
                    "tags":{"type":"array","items":{"type":"string","maxLength":4},"maxItems":3}},
      "required":["id"]}})",
             6, 2);
}

void WalkEnumsAndConst() {
  CheckWalks(R"({"type":"object","properties":{
      "color":{"enum":["red","green","blue"]},
      "size":{"type":"string","enum":["S","M","L",3]},
      "mixed":{"enum":[1,"two",null,true,{"a":[1,2]},2.5,"quote\"and\\slash"]},
      "fixed":{"const":"v1"}},
    "required":["color","fixed"]})",
             6, 3);
}

void WalkOptionalProperties() {
  CheckWalks(R"({"type":"object","properties":{
      "a":{"type":"integer"},"b":{"type":"boolean"},"c":{"type":"null"},
      "d":{"type":"integer"},"e":{"type":"boolean"},"f":{"type":"null"}}})",
             9, 4);
}

void WalkStringsWithEscapes() {
  CheckWalks(R"({"type":"object","properties":{
      "text":{"type":"string"},"quote":{"type":"string","minLength":2,"maxLength":6}},
    "required":["text","quote"]})",
             6, 5);
}

void WalkRefsAnyOfAndScalars() {
  CheckWalks(R"({"$defs":{"point":{"type":"object","properties":{"x":{"type":"number"},
      "y":{"type":"number"}},"required":["x","y"]}},
    "anyOf":[{"$ref":"#/$defs/point"},
             {"type":"array","items":{"$ref":"#/$defs/point"},"maxItems":2},
             {"type":"null"}]})",
             6, 6);
  CheckWalks(R"({"type":"number"})", 3, 7);
  CheckWalks(R"({"type":["integer","boolean"]})", 3, 8);
  CheckWalks(R"({"description":"anything"})", 6, 9);
  CheckWalks(R"({"type":"object","properties":{"meta":{"type":"object"},"list":{"type":"array"}},
    "required":["meta","list"]})",
             3, 10);
}

void PropertiesFollowTheDocumentOrder() {
  const auto g = SchemaGrammar(
      R"({"properties":{"zeta":{"type":"integer"},"alpha":{"type":"integer"},
          "mid":{"type":"integer"}},"required":["zeta","alpha","mid"]})");
  ASSERT_NE(g, nullptr);
  const std::int32_t s = g->start_state();
  EXPECT_NE(Feed(*g, s, R"({"zeta":1,"alpha":2,"mid":3})"), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, s, R"({"alpha":2)"), Grammar::kNoState);
  // A Json object iterates its keys sorted: that order is what FromJsonSchema sees.
  auto sorted = Grammar::FromJsonSchema(
      Json::parse(R"({"properties":{"zeta":{"type":"integer"},"alpha":{"type":"integer"}},
                      "required":["zeta","alpha"]})"),
      Gemma3Vocab(), {});
  ASSERT_TRUE(sorted.ok());
  EXPECT_NE(Feed(**sorted, (*sorted)->start_state(), R"({"alpha":2,"zeta":1})"), Grammar::kNoState);
}

void RequiredAndExtraPropertiesAreMasked() {
  const auto g = SchemaGrammar(
      R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},
          "required":["b"],"additionalProperties":false})");
  ASSERT_NE(g, nullptr);
  const std::int32_t open = Feed(*g, g->start_state(), "{");
  ASSERT_NE(open, Grammar::kNoState);
  EXPECT_FALSE(Allows(*g, open, Id("}")));  // "b" is required
  EXPECT_TRUE(Allows(*g, open, Id("\"")));
  EXPECT_FALSE(Allows(*g, g->start_state(), Id("{}")));
  const std::int32_t quote = Feed(*g, open, "\"");
  EXPECT_TRUE(Allows(*g, quote, Id("a")));
  EXPECT_TRUE(Allows(*g, quote, Id("b")));
  EXPECT_FALSE(Allows(*g, quote, Id("c")));  // not declared
  EXPECT_FALSE(Allows(*g, quote, Id("ab")));
  // After "b" nothing may follow but "}" (a is before b in schema order).
  const std::int32_t after_b = Feed(*g, open, R"("b":7)");
  ASSERT_NE(after_b, Grammar::kNoState);
  EXPECT_TRUE(Allows(*g, after_b, Id("}")));
  EXPECT_FALSE(Allows(*g, after_b, Id(",")));
  EXPECT_TRUE(Allows(*g, after_b, Id("7")));  // the number may go on
  // After "a" a comma (then "b") is required.
  const std::int32_t after_a = Feed(*g, open, R"("a":1)");
  EXPECT_FALSE(Allows(*g, after_a, Id("}")));
  EXPECT_TRUE(Allows(*g, after_a, Id(",")));
  EXPECT_EQ(Feed(*g, open, R"("a":1,"a")"), Grammar::kNoState);
  // No whitespace anywhere.
  EXPECT_FALSE(Allows(*g, open, Id("▁")));
  EXPECT_FALSE(Allows(*g, open, Id("\n")));
}

void StopOnlyWhenCompleteAndOnlyStopWhenTerminal() {
  const auto g = SchemaGrammar(R"({"type":"object","properties":{"a":{"type":"integer"}},
                                   "required":["a"]})");
  ASSERT_NE(g, nullptr);
  GrammarMatcher m(g);
  std::vector<float> logits(g->vocab().size());
  for (const char c : std::string(R"({"a":12)")) {
    ASSERT_TRUE(m.Accept(ByteId(static_cast<unsigned char>(c))).ok());
  }
  EXPECT_FALSE(m.IsComplete());
  m.MaskLogits(logits, 100);
  EXPECT_EQ(logits[1], -INFINITY);
  EXPECT_EQ(logits[106], -INFINITY);
  EXPECT_FALSE(m.Accept(106).ok());
  ASSERT_TRUE(m.Accept(Id("}")).ok());
  EXPECT_TRUE(m.IsComplete());
  EXPECT_TRUE(m.IsTerminal());
  EXPECT_EQ(m.MinTokens(), 0);
  std::fill(logits.begin(), logits.end(), 0.0f);
  m.MaskLogits(logits, 100);
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const bool stop = i == 1 || i == 106;
    ASSERT_EQ(logits[i] == 0.0f, stop) << i;
  }
  EXPECT_FALSE(m.Accept(Id("}")).ok());
  ASSERT_TRUE(m.Accept(106).ok());
  EXPECT_TRUE(m.stopped());
  EXPECT_FALSE(m.Accept(1).ok());
}

void NumbersFollowJsonSyntax() {
  const auto g = SchemaGrammar(R"({"type":"object","properties":{"i":{"type":"integer"},
      "n":{"type":"number"}},"required":["i","n"]})");
  ASSERT_NE(g, nullptr);
  const std::int32_t i = Feed(*g, g->start_state(), R"({"i":)");
  EXPECT_FALSE(Allows(*g, i, Id("+")));
  EXPECT_FALSE(Allows(*g, i, Id(".")));
  EXPECT_TRUE(Allows(*g, i, Id("-")));
  const std::int32_t zero = Feed(*g, i, "0");
  EXPECT_FALSE(Allows(*g, zero, Id("1")));  // no leading zeros
  EXPECT_FALSE(Allows(*g, zero, Id(".")));  // integers have no fraction
  EXPECT_TRUE(Allows(*g, zero, Id(",")));
  EXPECT_EQ(Feed(*g, i, "-,"), Grammar::kNoState);
  // At most 18 digits, so that every integer fits in int64.
  const std::int32_t long_int = Feed(*g, i, "123456789012345678");
  ASSERT_NE(long_int, Grammar::kNoState);
  EXPECT_FALSE(Allows(*g, long_int, Id("9")));
  const std::int32_t n = Feed(*g, i, R"(1,"n":)");
  EXPECT_NE(Feed(*g, n, "-0.5e+12}"), Grammar::kNoState);
  EXPECT_NE(Feed(*g, n, "3E-7}"), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, n, "1.}"), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, n, "1e}"), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, n, "1e100"), Grammar::kNoState);  // exponents of at most 2 digits
  EXPECT_EQ(Feed(*g, n, ".5"), Grammar::kNoState);
}

void StringsEscapeAndStayValidUtf8() {
  const auto g = SchemaGrammar(R"({"type":"string"})");
  ASSERT_NE(g, nullptr);
  const std::int32_t s = Feed(*g, g->start_state(), "\"");
  EXPECT_TRUE(Allows(*g, s, Id("\\")));
  EXPECT_FALSE(Allows(*g, s, Id("\n")));  // raw control characters
  EXPECT_FALSE(Allows(*g, s, ByteId(0x1F)));
  EXPECT_TRUE(Allows(*g, s, ByteId(0x7F)));
  const std::int32_t esc = Feed(*g, s, "\\");
  for (const char* ok : {"n", "\"", "\\", "/", "b", "f", "r", "t", "u"}) {
    EXPECT_TRUE(Allows(*g, esc, Id(ok))) << ok;
  }
  EXPECT_FALSE(Allows(*g, esc, Id("a")));
  EXPECT_FALSE(Allows(*g, esc, Id("x")));
  const std::int32_t d = Feed(*g, esc, "uD");
  EXPECT_TRUE(Allows(*g, d, Id("7")));
  EXPECT_FALSE(Allows(*g, d, Id("8")));  // no surrogate escapes
  EXPECT_NE(Feed(*g, esc, "u00e9\""), Grammar::kNoState);
  // UTF-8: no lone continuation bytes, overlong forms, surrogates or code points past U+10FFFF.
  EXPECT_FALSE(Allows(*g, s, ByteId(0x80)));
  EXPECT_FALSE(Allows(*g, s, ByteId(0xC0)));
  EXPECT_FALSE(Allows(*g, s, ByteId(0xC1)));
  EXPECT_FALSE(Allows(*g, s, ByteId(0xF5)));
  const std::int32_t lead = Feed(*g, s, "\xC3");
  ASSERT_NE(lead, Grammar::kNoState);
  EXPECT_FALSE(Allows(*g, lead, Id("\"")));
  EXPECT_FALSE(g->IsAccepting(Feed(*g, lead, "\xA9")));
  EXPECT_TRUE(Allows(*g, lead, ByteId(0xA9)));
  EXPECT_FALSE(Allows(*g, Feed(*g, s, "\xED"), ByteId(0xA0)));  // U+D800
  EXPECT_FALSE(Allows(*g, Feed(*g, s, "\xF4"), ByteId(0x90)));  // past U+10FFFF
  EXPECT_FALSE(Allows(*g, Feed(*g, s, "\xE0"), ByteId(0x80)));  // overlong
}

void LengthsCountCodepoints() {
  const auto g = SchemaGrammar(R"({"type":"string","minLength":2,"maxLength":3})");
  ASSERT_NE(g, nullptr);
  const std::int32_t one = Feed(*g, g->start_state(), "\"\xC3\xA9");
  ASSERT_NE(one, Grammar::kNoState);
  EXPECT_FALSE(Allows(*g, one, Id("\"")));  // one character so far
  EXPECT_TRUE(Allows(*g, one, Id("ab")));
  EXPECT_FALSE(Allows(*g, one, Id("red")));
  const std::int32_t two = Feed(*g, one, "\\n");
  EXPECT_TRUE(Allows(*g, two, Id("\"")));  // an escape is one character
  const std::int32_t three = Feed(*g, two, "\xE2\x82\xAC");
  ASSERT_NE(three, Grammar::kNoState);
  EXPECT_FALSE(Allows(*g, three, Id("a")));
  EXPECT_TRUE(Allows(*g, three, Id("\"")));
}

void EnumValuesAreCanonicalJson() {
  const auto g = SchemaGrammar(R"({"enum":["red","green",{"k":1},[true,null],-2.5]})");
  ASSERT_NE(g, nullptr);
  const std::int32_t s = g->start_state();
  for (const char* ok : {"\"red\"", "\"green\"", "{\"k\":1}", "[true,null]", "-2.5"}) {
    const std::int32_t end = Feed(*g, s, ok);
    ASSERT_NE(end, Grammar::kNoState) << ok;
    EXPECT_TRUE(g->IsTerminal(end)) << ok;
  }
  EXPECT_EQ(Feed(*g, s, "\"blue\""), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, s, "{\"k\": 1}"), Grammar::kNoState);
  EXPECT_TRUE(Allows(*g, Feed(*g, s, "\""), Id("red")));
  EXPECT_FALSE(Allows(*g, Feed(*g, s, "\""), Id("b")));
}

void TightBudgetForcesCompletion() {
  const auto g = SchemaGrammar(R"({"type":"object","properties":{"note":{"type":"string"},
      "n":{"type":"integer"}},"required":["note","n"]})");
  ASSERT_NE(g, nullptr);
  GrammarMatcher m(g);
  for (const char c : std::string(R"({"note":"hello)")) {
    ASSERT_TRUE(m.Accept(ByteId(static_cast<unsigned char>(c))).ok());
  }
  const std::int64_t need = m.MinTokens();  // "," "n" ... : closing quote, key, digit, brace
  EXPECT_EQ(need, static_cast<std::int64_t>(std::string(R"(","n":0})").size()));
  std::vector<float> logits(g->vocab().size(), 0.0f);
  m.MaskLogits(logits, need);
  // Every allowed token leads to a state that can still finish in need - 1 tokens.
  std::int64_t allowed = 0;
  for (std::size_t t = 0; t < logits.size(); ++t) {
    if (logits[t] != 0.0f) continue;
    ++allowed;
    const std::int32_t next = g->Advance(m.state(), static_cast<std::int32_t>(t));
    ASSERT_NE(next, Grammar::kNoState);
    EXPECT_LE(g->Distance(next), need - 1) << g->vocab().text(static_cast<std::int32_t>(t));
  }
  EXPECT_GT(allowed, 0);
  EXPECT_EQ(logits[Id("a")], -INFINITY);  // more text would not fit
  EXPECT_EQ(logits[Id("\"")], 0.0f);
  EXPECT_EQ(logits[Id("\",")], 0.0f);
  // With room to spare the string may go on.
  std::fill(logits.begin(), logits.end(), 0.0f);
  m.MaskLogits(logits, need + 1);
  EXPECT_EQ(logits[Id("a")], 0.0f);
  // Below the minimum, the tokens that get closest are kept rather than none.
  std::fill(logits.begin(), logits.end(), 0.0f);
  m.MaskLogits(logits, 1);
  EXPECT_EQ(logits[Id("a")], -INFINITY);
  EXPECT_GT(std::count(logits.begin(), logits.end(), 0.0f), 0);
  EXPECT_GE(g->stats().budget_walks, 2);
}

// One test (one process under ctest) for everything on the Gemma 3 vocabulary, which takes
// a while to load in sanitizer builds.
TEST(JsonSchema, OnGemma3Vocabulary) {
  ASSERT_NE(Gemma3Vocab(), nullptr);
  for (const auto& [name, fn] : std::initializer_list<std::pair<const char*, void (*)()>>{
           {"WalkNestedObject", WalkNestedObject},
           {"WalkArrays", WalkArrays},
           {"WalkEnumsAndConst", WalkEnumsAndConst},
           {"WalkOptionalProperties", WalkOptionalProperties},
           {"WalkStringsWithEscapes", WalkStringsWithEscapes},
           {"WalkRefsAnyOfAndScalars", WalkRefsAnyOfAndScalars},
           {"PropertiesFollowTheDocumentOrder", PropertiesFollowTheDocumentOrder},
           {"RequiredAndExtraPropertiesAreMasked", RequiredAndExtraPropertiesAreMasked},
           {"StopOnlyWhenCompleteAndOnlyStopWhenTerminal",
            StopOnlyWhenCompleteAndOnlyStopWhenTerminal},
           {"NumbersFollowJsonSyntax", NumbersFollowJsonSyntax},
           {"StringsEscapeAndStayValidUtf8", StringsEscapeAndStayValidUtf8},
           {"LengthsCountCodepoints", LengthsCountCodepoints},
           {"EnumValuesAreCanonicalJson", EnumValuesAreCanonicalJson},
           {"TightBudgetForcesCompletion", TightBudgetForcesCompletion},
       }) {
    SCOPED_TRACE(name);
    fn();
  }
}

TEST(JsonSchemaErrors, UnsupportedKeywordsNameTheirPath) {
  const std::pair<const char*, const char*> kCases[] = {
      {R"({"type":"object","properties":{"age":{"type":"integer","minimum":0}}})",
       "schema.properties.age: keyword 'minimum' is not supported"},
      {R"({"type":"string","pattern":"a+"})", "schema: keyword 'pattern' is not supported"},
      {R"({"type":"string","format":"date"})", "schema: keyword 'format' is not supported"},
      {R"({"oneOf":[{"type":"string"}]})", "schema: keyword 'oneOf' is not supported"},
      {R"({"allOf":[{"type":"string"}]})", "schema: keyword 'allOf' is not supported"},
      {R"({"not":{"type":"string"}})", "schema: keyword 'not' is not supported"},
      {R"({"type":"object","patternProperties":{}})",
       "schema: keyword 'patternProperties' is not supported"},
      {R"({"type":"array","items":{"type":"number","multipleOf":2}})",
       "schema.items: keyword 'multipleOf' is not supported"},
      {R"({"anyOf":[{"type":"integer"},{"type":"number","maximum":3}]})",
       "schema.anyOf[1]: keyword 'maximum' is not supported"},
      {R"({"$defs":{"x":{"type":"string","uniqueItems":true}},"$ref":"#/$defs/x"})",
       "schema.$defs.x: keyword 'uniqueItems' is not supported"},
      {R"({"type":"string","nullable":true})", "schema: keyword 'nullable' is not supported"},
  };
  for (const auto& [schema, message] : kCases) EXPECT_EQ(SchemaError(schema), message);
}

TEST(JsonSchemaErrors, BadSchemas) {
  const std::pair<const char*, const char*> kCases[] = {
      {R"({"$defs":{"node":{"type":"object","properties":{"next":{"$ref":"#/$defs/node"}}}},
          "$ref":"#/$defs/node"})",
       "schema.$defs.node.properties.next.$ref: recursive reference '#/$defs/node' is not "
       "supported"},
      {R"({"$ref":"#/$defs/missing"})", "schema.$ref: '#/$defs/missing' is not defined"},
      {R"({"$ref":"http://example.com/s.json"})",
       "schema.$ref: only '#/$defs/NAME' and '#/definitions/NAME' are supported, got "
       "'http://example.com/s.json'"},
      {R"({"$ref":"#/$defs/x","type":"string","$defs":{"x":{}}})",
       "schema: keyword 'type' alongside '$ref' is not supported"},
      {R"({"type":"object","properties":{"a":{}},"required":["b"]})",
       "schema.required: property 'b' is not declared in properties (only declared properties "
       "are generated)"},
      {R"({"type":"string","maxLength":100000})",
       "schema.maxLength: 100000 is larger than the supported maximum 10000"},
      {R"({"type":"string","minLength":-1})",
       "schema.minLength: expected a non-negative integer, got -1"},
      {R"({"type":"array","minItems":3,"maxItems":2})",
       "schema: minItems 3 is larger than maxItems 2"},
      {R"({"type":"strin"})", "schema.type: unknown type \"strin\""},
      {R"({"type":"array","items":[{"type":"string"}]})",
       "schema.items: a list of item schemas (tuple form) is not supported"},
      {R"({"enum":[]})", "schema.enum: expected a non-empty list"},
      {R"({"type":"string","enum":[1,2]})", "schema: no enum value has the type \"string\""},
      {R"({"properties":{"a":3}})",
       "schema.properties.a: expected a schema (an object or a boolean), got number"},
      {"false", "schema: the grammar matches no output at all"},
      {R"({"type":"object","properties":{"a":false},"required":["a"]})",
       "schema: the grammar matches no output at all"},
      {"{\"type\":", "schema: not valid JSON text"},
      {R"({"properties":{"a\nb":{"minimum":1}}})",  // messages stay on one line
       "schema.properties.a\\x0Ab: keyword 'minimum' is not supported"},
  };
  for (const auto& [schema, message] : kCases) EXPECT_EQ(SchemaError(schema), message);

  const std::string big = SchemaError(
      R"({"type":"array","maxItems":10000,"items":{"type":"string","maxLength":10000}})");
  EXPECT_NE(big.find("the grammar needs more than"), std::string::npos) << big;

  std::string deep = "{\"type\":\"integer\"}";
  for (int i = 0; i < 300; ++i) deep = "{\"properties\":{\"a\":" + deep + "}}";
  EXPECT_NE(SchemaError(deep).find("nested deeper than"), std::string::npos);

  auto bad_stop = Grammar::FromJsonSchemaText("{}", testing::TinyVocab(), {{99999}});
  ASSERT_FALSE(bad_stop.ok());
  EXPECT_EQ(bad_stop.error().message(),
            "schema: stop id 99999 is outside the vocabulary of 271 tokens");
}

TEST(JsonSchemaFuzz, RandomSchemasGiveValidOutputOrErrors) {
  Philox rng(99);
  const auto vocab = testing::TinyVocab();
  int ok = 0, errors = 0;
  for (int i = 0; i < 1000; ++i) {
    const Json schema = testing::RandomSchema(rng, 3);
    SCOPED_TRACE(schema.dump());
    auto g = Grammar::FromJsonSchema(schema, vocab, {{testing::TinyToken("<eos>")}});
    if (!g.ok()) {
      ++errors;
      EXPECT_FALSE(g.error().message().empty());
      EXPECT_EQ(g.error().message().find('\n'), std::string::npos);
      EXPECT_TRUE(g.error().message().starts_with("schema")) << g.error().message();
      continue;
    }
    ++ok;
    const std::int64_t budget = GrammarMatcher(*g).MinTokens() + rng.NextU32() % 20;
    const testing::Walk w = testing::RandomWalk(*g, i, budget, 0.3);
    ASSERT_TRUE(w.complete);
    const std::string text = testing::TokensText(*vocab, w.tokens);
    const Result<Json> parsed = ParseJson(text, "output");
    ASSERT_TRUE(parsed.ok()) << parsed.error().message() << "\n" << text;
    EXPECT_EQ(testing::ValidateJson(*parsed, schema, schema), "") << text;
  }
  EXPECT_GT(ok, 200);
  EXPECT_GT(errors, 100);
}

}  // namespace
}  // namespace fgnet
