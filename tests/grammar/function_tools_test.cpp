// FunctionGemma call grammars on FunctionGemma's vocabulary: random walks whose output must
// parse with ParseModelOutput into calls of the declared functions, specific masks, errors.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar_test_support.h"
#include "tokenizer/function_call.h"
#include "util/rng.h"

namespace fgnet {
namespace {

using testing::FunctionGemmaStopIds;
using testing::FunctionGemmaTokenizer;
using testing::FunctionGemmaVocab;

constexpr std::int32_t kStartCall = 48;
constexpr std::int32_t kEndCall = 49;
constexpr std::int32_t kStartResponse = 50;
constexpr std::int32_t kEscapeId = 52;

const char* const kTools = R"([
  {"type":"function","function":{"name":"get_weather","description":"Current weather",
    "parameters":{"type":"object","properties":{
      "city":{"type":"string","description":"City name"},
      "unit":{"type":"string","enum":["celsius","fahrenheit"]}},
    "required":["city"]}}},
  {"type":"function","function":{"name":"set_alarm","parameters":{"type":"object",
    "properties":{"hour":{"type":"integer"},"minute":{"type":"integer"},
      "label":{"type":"string","maxLength":8},"Repeat":{"type":"boolean"}},
    "required":["hour","minute"]}}},
  {"name":"search","parameters":{"type":"OBJECT","properties":{
      "query":{"type":"STRING"},
      "filters":{"type":"object","properties":{"lang":{"type":"string","enum":["en","fr"]},
        "max_results":{"type":"integer"}}},
      "tags":{"type":"array","items":{"type":"string"},"maxItems":3},
      "score":{"type":"number"}},
    "required":["query"]}},
  {"type":"function","function":{"name":"ping"}}
])";

std::shared_ptr<const Grammar> ToolsGrammar(const Json& tools) {
  auto vocab = FunctionGemmaVocab();
  if (!vocab) return nullptr;
  GrammarOptions options;
  options.stop_ids = FunctionGemmaStopIds();
  auto g = Grammar::FromFunctionTools(tools, vocab, options);
  EXPECT_TRUE(g.ok()) << g.error().message();
  return g.ok() ? *g : nullptr;
}

std::string ToolsError(const Json& tools) {
  auto g = Grammar::FromFunctionTools(tools, testing::TinyVocab(), {});
  EXPECT_FALSE(g.ok()) << tools.dump();
  return g.ok() ? "" : g.error().message();
}

std::int32_t Id(std::string_view vocab_string) {
  const auto id = FunctionGemmaTokenizer()->TokenId(vocab_string);
  EXPECT_TRUE(id.has_value()) << vocab_string;
  return id.value_or(0);
}

// Feeds text one byte-fallback token at a time; control-token names are fed as their token.
std::int32_t Feed(const Grammar& g, std::int32_t state, std::string_view text) {
  static constexpr std::string_view kControls[] = {kStartFunctionCall, kEndFunctionCall, kEscape};
  std::size_t pos = 0;
  while (pos < text.size() && state != Grammar::kNoState) {
    bool fed = false;
    for (const std::string_view c : kControls) {
      if (text.substr(pos).starts_with(c)) {
        state = g.Advance(state, Id(c));
        pos += c.size();
        fed = true;
        break;
      }
    }
    if (fed) continue;
    static constexpr char kHex[] = "0123456789ABCDEF";
    const auto b = static_cast<unsigned char>(text[pos++]);
    state = g.Advance(state, Id(std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">"));
  }
  return state;
}

void OutputsParseAsDeclaredCalls() {
  const Json tools = Json::parse(kTools);
  const auto g = ToolsGrammar(tools);
  ASSERT_NE(g, nullptr);
  Philox rng(11);
  const double biases[] = {0.0, 0.4, 0.8};
  for (int i = 0; i < 12; ++i) {
    const std::int64_t budget =
        GrammarMatcher(g).MinTokens() + static_cast<std::int64_t>(rng.NextU32() % 80);
    const testing::Walk w = testing::RandomWalk(g, 100 + i, budget, biases[i % 3]);
    ASSERT_TRUE(w.complete);
    const std::string text = FunctionGemmaTokenizer()->Decode(w.tokens);
    EXPECT_EQ(text, testing::TokensText(g->vocab(), w.tokens));
    ASSERT_TRUE(testing::IsValidUtf8(text)) << text;
    const Result<ParsedModelOutput> parsed = ParseModelOutput(text);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message() << "\n" << text;
    EXPECT_EQ(parsed->text, "") << text;
    ASSERT_FALSE(parsed->calls.empty()) << text;
    for (const FunctionCall& call : parsed->calls) {
      const Json* params = nullptr;
      for (const Json& tool : tools) {
        const Json& fn = tool.contains("function") ? tool["function"] : tool;
        if (fn["name"] == call.name) params = &fn;
      }
      ASSERT_NE(params, nullptr) << "undeclared function " << call.name;
      const Json schema = params->value("parameters", Json::object());
      EXPECT_EQ(testing::ValidateJson(call.arguments, schema, schema), "") << text;
      // Only declared parameters.
      for (auto it = call.arguments.begin(); it != call.arguments.end(); ++it) {
        EXPECT_TRUE(schema.contains("properties") && schema["properties"].contains(it.key()))
            << it.key() << " in " << text;
      }
    }
  }
}

void CallsStartAndEndWithControlTokens() {
  const auto g = ToolsGrammar(Json::parse(kTools));
  ASSERT_NE(g, nullptr);
  const std::int32_t s = g->start_state();
  const auto start_mask = g->Mask(s);
  EXPECT_EQ(start_mask->AllowedIds(), std::vector<std::int32_t>{kStartCall});
  const std::int32_t call = Feed(*g, s, "<start_function_call>call:");
  ASSERT_NE(call, Grammar::kNoState);
  EXPECT_EQ(Feed(*g, call, "get_time{"), Grammar::kNoState);  // undeclared
  const std::int32_t done = Feed(*g, call, "ping{}<end_function_call>");
  ASSERT_NE(done, Grammar::kNoState);
  EXPECT_TRUE(g->IsAccepting(done));
  EXPECT_FALSE(g->IsTerminal(done));  // another call may follow
  EXPECT_TRUE(g->Mask(done)->Allows(kStartResponse));
  EXPECT_TRUE(g->Mask(done)->Allows(kStartCall));
  EXPECT_FALSE(g->Mask(done)->Allows(Id("Sure")));
  const std::int32_t open = Feed(*g, call, "get_weather{city:<escape>Paris");
  ASSERT_NE(open, Grammar::kNoState);
  EXPECT_FALSE(g->Mask(open)->Allows(kStartResponse));
  EXPECT_FALSE(g->Mask(open)->Allows(kEndCall));
  EXPECT_TRUE(g->Mask(open)->Allows(kEscapeId));
  // Two calls in a row.
  EXPECT_NE(Feed(*g, done,
                 "<start_function_call>call:get_weather{city:<escape>Oslo<escape>,"
                 "unit:<escape>celsius<escape>}<end_function_call>"),
            Grammar::kNoState);
  EXPECT_EQ(Feed(*g, call, "get_weather{unit:<escape>celsius<escape>}"), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, call, "get_weather{city:<escape>x<escape>,unit:<escape>kelvin<escape>"),
            Grammar::kNoState);
  EXPECT_EQ(Feed(*g, call, "get_weather{city:\"Paris\""), Grammar::kNoState);  // no quotes
  EXPECT_EQ(Feed(*g, call, "get_weather{ city"), Grammar::kNoState);           // no spaces
}

void KeysInDictsortOrder() {
  const auto g = ToolsGrammar(Json::parse(kTools));
  ASSERT_NE(g, nullptr);
  const std::int32_t call = Feed(*g, g->start_state(), "<start_function_call>call:set_alarm");
  // dictsort folds case: hour < label < minute < Repeat.
  EXPECT_NE(Feed(*g, call,
                 "{hour:7,label:<escape>wake<escape>,minute:30,Repeat:true}<end_function_call>"),
            Grammar::kNoState);
  EXPECT_NE(Feed(*g, call, "{hour:-1,minute:0}<end_function_call>"), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, call, "{minute:30,hour:7}"), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, call, "{Repeat:true,hour:7"), Grammar::kNoState);
  EXPECT_EQ(Feed(*g, call, "{hour:7.5"), Grammar::kNoState);  // integer
  // label: at most 8 characters.
  EXPECT_EQ(Feed(*g, call, "{hour:7,label:<escape>123456789"), Grammar::kNoState);
  const std::int32_t search = Feed(*g, g->start_state(), "<start_function_call>call:search");
  EXPECT_NE(Feed(*g, search,
                 "{filters:{lang:<escape>fr<escape>,max_results:5},query:<escape>a<escape>,"
                 "score:1e-05,tags:[<escape>x<escape>,<escape>y<escape>]}<end_function_call>"),
            Grammar::kNoState);
  EXPECT_EQ(Feed(*g, search, "{query:<escape>a<escape>,tags:[1"), Grammar::kNoState);
}

void StringTextCannotSpellTheEscapeToken() {
  const auto g = ToolsGrammar(Json::parse(kTools));
  ASSERT_NE(g, nullptr);
  const std::int32_t text =
      Feed(*g, g->start_state(), "<start_function_call>call:get_weather{city:<escape>a<escape");
  ASSERT_NE(text, Grammar::kNoState);
  EXPECT_FALSE(g->Mask(text)->Allows(Id(">")));  // would read as the closing <escape>
  EXPECT_TRUE(g->Mask(text)->Allows(Id("<")));
  EXPECT_TRUE(g->Mask(text)->Allows(kEscapeId));
  EXPECT_NE(Feed(*g, text, "<escape>}<end_function_call>"), Grammar::kNoState);
  // "<<escape" still cannot be completed; "<escap>" can.
  const std::int32_t again = Feed(*g, text, "<<escape");
  ASSERT_NE(again, Grammar::kNoState);
  EXPECT_FALSE(g->Mask(again)->Allows(Id(">")));
  EXPECT_NE(Feed(*g, text, "s<escap>\n\xE2\x82\xAC<escape>}"), Grammar::kNoState);
}

void ControlTokensAreSymbols() {
  const auto vocab = FunctionGemmaVocab();
  for (std::int32_t id = 46; id <= 52; ++id) EXPECT_EQ(vocab->kind(id), TokenKind::kSymbol) << id;
  EXPECT_EQ(vocab->text(kEscapeId), "<escape>");
  ASSERT_TRUE(vocab->FindSymbol("<escape>").has_value());
  EXPECT_EQ(vocab->symbol_token(*vocab->FindSymbol("<escape>")), kEscapeId);
  EXPECT_EQ(vocab->symbol_name(vocab->symbol(kStartCall)), "<start_function_call>");
}

// Every token of the vocabulary stepped through the automaton, against the cached masks, in a
// few states met on a walk.
void MasksEqualBruteForce() {
  const auto g = ToolsGrammar(Json::parse(kTools));
  ASSERT_NE(g, nullptr);
  const std::vector<std::int32_t> states = testing::StatesOfAWalk(g, 6);
  ASSERT_GE(states.size(), 4u);
  for (const std::int32_t state : states) testing::ExpectMaskEqualsBruteForce(*g, state);
}

// One test (one process under ctest) for everything on FunctionGemma's vocabulary, which takes
// a while to build in sanitizer builds.
TEST(FunctionTools, OnFunctionGemmaVocabulary) {
  ASSERT_NE(FunctionGemmaVocab(), nullptr);
  for (const auto& [name, fn] : std::initializer_list<std::pair<const char*, void (*)()>>{
           {"ControlTokensAreSymbols", ControlTokensAreSymbols},
           {"OutputsParseAsDeclaredCalls", OutputsParseAsDeclaredCalls},
           {"CallsStartAndEndWithControlTokens", CallsStartAndEndWithControlTokens},
           {"KeysInDictsortOrder", KeysInDictsortOrder},
           {"StringTextCannotSpellTheEscapeToken", StringTextCannotSpellTheEscapeToken},
           {"MasksEqualBruteForce", MasksEqualBruteForce}}) {
    SCOPED_TRACE(name);
    fn();
  }
}

TEST(FunctionToolsErrors, Reported) {
  const std::pair<const char*, const char*> kCases[] = {
      {R"({"name":"f"})", "tools: expected a non-empty list of tools"},
      {R"([])", "tools: expected a non-empty list of tools"},
      {R"([{"name":"f"},{"type":"function","function":{"name":"f"}}])",
       "tools[1].function.name: 'f' is declared twice"},
      {R"([{"name":"get weather"}])",
       "tools[0].name: 'get weather' is empty or holds whitespace, braces or angle brackets"},
      {R"([{"description":"no name"}])", "tools[0].name: expected a string"},
      {R"([{"type":"function","function":{"name":"f","parameters":{"type":"object",
          "properties":{"x":{"type":"integer","minimum":1}}}}}])",
       "tools[0].function.parameters.properties.x: keyword 'minimum' is not supported"},
      {R"([{"name":"f","parameters":{"type":"object","properties":{"a,b":{"type":"string"}}}}])",
       "tools[0].parameters.properties.a,b: property name 'a,b' cannot be written as a bare key "
       "(empty, surrounding whitespace, or one of : , { } [ ] <)"},
      {R"([{"name":"f","parameters":{"type":"string"}}])",
       "tools[0].parameters.type: must be \"object\""},
      {R"([{"name":"f","parameters":{"type":"object","properties":{"e":{"enum":["<escape>"]}}}}])",
       "tools[0].parameters.properties.e.enum[0]: string contains the control text <escape> and "
       "cannot be written as a value"},
  };
  for (const auto& [tools, message] : kCases) EXPECT_EQ(ToolsError(Json::parse(tools)), message);

  // A vocabulary without the function-calling tokens (Gemma 3's own) cannot write calls.
  std::vector<TokenVocabulary::Entry> bytes_only;
  for (int b = 0; b < 256; ++b) bytes_only.push_back({TokenKind::kText, std::string(1, char(b))});
  auto plain =
      Grammar::FromFunctionTools(Json::parse(kTools), TokenVocabulary::FromEntries(bytes_only), {});
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(plain.error().message(),
            "tools: the vocabulary has no <start_function_call> token (function calls need "
            "FunctionGemma's tokenizer)");
}

TEST(FunctionToolsFuzz, RandomParametersGiveParsableCallsOrErrors) {
  Philox rng(5);
  const auto vocab = testing::TinyVocab();
  GrammarOptions options;
  options.stop_ids = {testing::TinyToken("<eos>")};
  int ok = 0;
  for (int i = 0; i < 500; ++i) {
    // Mostly an object of random properties; sometimes a random schema of any kind.
    Json params = testing::RandomSchema(rng, 3);
    if (rng.NextU32() % 4 != 0) {
      static const char* const kNames[] = {"a", "B", "c_d", "q", "Zz", "x y", "k:v"};
      Json props = Json::object();
      Json required = Json::array();
      for (std::uint32_t k = rng.NextU32() % 4; k > 0; --k) {
        const std::string name = kNames[rng.NextU32() % std::size(kNames)];
        props[name] = testing::RandomSchema(rng, 2);
        if (rng.NextU32() % 2) required.push_back(name);
      }
      params = Json{{"type", "object"}, {"properties", props}, {"required", required}};
    }
    const Json tools =
        Json::array({Json{{"name", "f"}, {"parameters", params}}, Json{{"name", "g_2"}}});
    SCOPED_TRACE(tools.dump());
    auto g = Grammar::FromFunctionTools(tools, vocab, options);
    if (!g.ok()) {
      EXPECT_TRUE(g.error().message().starts_with("tools")) << g.error().message();
      EXPECT_EQ(g.error().message().find('\n'), std::string::npos);
      continue;
    }
    ++ok;
    const std::int64_t budget = GrammarMatcher(*g).MinTokens() + rng.NextU32() % 30;
    const testing::Walk w = testing::RandomWalk(*g, i, budget, 0.3);
    ASSERT_TRUE(w.complete);
    const std::string text = testing::TokensText(*vocab, w.tokens);
    const Result<ParsedModelOutput> parsed = ParseModelOutput(text);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message() << "\n" << text;
    EXPECT_EQ(parsed->text, "");
    for (const FunctionCall& call : parsed->calls) {
      const Json schema = call.name == "f" && !params.is_null() ? params : Json::object();
      EXPECT_EQ(testing::ValidateJson(call.arguments, schema, schema), "") << text;
    }
  }
  EXPECT_GT(ok, 100);
}

}  // namespace
}  // namespace fgnet
