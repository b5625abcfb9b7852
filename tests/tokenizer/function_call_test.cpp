#include "tokenizer/function_call.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tokenizer/text_util.h"
#include "util/rng.h"

namespace fgnet {
namespace {

// Equality that also requires the same kind of number (integer vs float), which nlohmann's ==
// does not check.
bool StrictEqual(const Json& a, const Json& b) {
  const bool a_float = a.is_number_float(), b_float = b.is_number_float();
  if (a.is_number() && b.is_number()) {
    if (a_float != b_float) return false;
    return a == b;
  }
  if (a.type() != b.type()) return false;
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      const auto jt = b.find(it.key());
      if (jt == b.end() || !StrictEqual(it.value(), *jt)) return false;
    }
    return true;
  }
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!StrictEqual(a[i], b[i])) return false;
    }
    return true;
  }
  return a == b;
}

std::string Format(const Json& v, bool escape_keys = false) {
  const Result<std::string> r = FormatFunctionValue(v, escape_keys);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : std::string();
}

TEST(FunctionValue, Scalars) {
  EXPECT_EQ(Format("Tokyo"), "<escape>Tokyo<escape>");
  EXPECT_EQ(Format(""), "<escape><escape>");
  EXPECT_EQ(Format(42), "42");
  EXPECT_EQ(Format(-7), "-7");
  EXPECT_EQ(Format(std::uint64_t{18446744073709551615u}), "18446744073709551615");
  EXPECT_EQ(Format(2.0), "2.0");
  EXPECT_EQ(Format(true), "true");
  EXPECT_EQ(Format(false), "false");
  EXPECT_EQ(Format(nullptr), "null");
}

TEST(FunctionValue, FloatsPrintLikePythonRepr) {
  // Expected strings are Python 3's repr() of the same doubles.
  const std::vector<std::pair<double, std::string>> cases = {
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1.0, "1.0"},
      {0.5, "0.5"},
      {-7.25, "-7.25"},
      {100.0, "100.0"},
      {0.1, "0.1"},
      {0.30000000000000004, "0.30000000000000004"},
      {0.0001, "0.0001"},
      {9.999e-05, "9.999e-05"},
      {1e-05, "1e-05"},
      {1.5e-07, "1.5e-07"},
      {123456.789, "123456.789"},
      {1000000000000000.0, "1000000000000000.0"},
      {1e+16, "1e+16"},
      {9999999999999998.0, "9999999999999998.0"},
      {1.2345678901234568e+16, "1.2345678901234568e+16"},
      {1e+22, "1e+22"},
      {1.7976931348623157e+308, "1.7976931348623157e+308"},
      {5e-324, "5e-324"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
      {3.141592653589793, "3.141592653589793"},
      {-2.5e-10, "-2.5e-10"},
      {6.02214076e+23, "6.02214076e+23"},
      {1e+100, "1e+100"},
      {1.2345678901234567e+19, "1.2345678901234567e+19"},
      {0.0001234, "0.0001234"},
      {10928588.983213553, "10928588.983213553"},
      {1.4186613525849614e+134, "1.4186613525849614e+134"},
      {-7.571968556055867e-74, "-7.571968556055867e-74"},
      {-2.1520217579844227e+32, "-2.1520217579844227e+32"},
      {0.1399601630397701, "0.1399601630397701"},
      {1.01853664031722e-244, "1.01853664031722e-244"},
  };
  for (const auto& [value, expected] : cases) {
    EXPECT_EQ(FormatPythonFloat(value), expected) << value;
    EXPECT_EQ(Format(value), expected);
  }
}

TEST(FunctionValue, ObjectsSortKeysLikeDictsortAndArraysKeepOrder) {
  const Json v = {{"b", 1}, {"A", 2}, {"a", 3}, {"_x", 4}, {"B2", Json::array({3, "x", nullptr})}};
  // dictsort folds case: "_x" (0x5f) sorts before letters, "A" and "a" tie and keep byte order.
  EXPECT_EQ(Format(v), "{_x:4,A:2,a:3,b:1,B2:[3,<escape>x<escape>,null]}");
  EXPECT_EQ(Format(v, /*escape_keys=*/true),
            "{<escape>_x<escape>:4,<escape>A<escape>:2,<escape>a<escape>:3,<escape>b<escape>:1,"
            "<escape>B2<escape>:[3,<escape>x<escape>,null]}");
  EXPECT_EQ(Format(Json::object()), "{}");
  EXPECT_EQ(Format(Json::array()), "[]");
  EXPECT_EQ(Format(Json::parse(R"({"o":{"z":[{"k":true}],"y":{}}})")), "{o:{y:{},z:[{k:true}]}}");
}

TEST(FunctionValue, RejectsWhatCannotBeReadBack) {
  EXPECT_FALSE(FormatFunctionValue("a<escape>b", false).ok());
  EXPECT_FALSE(FormatFunctionValue(std::nan(""), false).ok());
  EXPECT_FALSE(FormatFunctionValue(INFINITY, false).ok());
  for (const char* key : {"", "a:b", "a,b", "a{", "}", "[", "]", "<x", " lead", "trail\n"}) {
    const Result<std::string> r = FormatFunctionValue(Json{{key, 1}}, false);
    EXPECT_FALSE(r.ok()) << "key '" << key << "'";
  }
  // The same keys are fine when escaped (except those holding "<escape>").
  EXPECT_TRUE(FormatFunctionValue(Json{{"a:b", 1}}, true).ok());
  EXPECT_FALSE(FormatFunctionValue(Json{{"<escape>", 1}}, true).ok());
  Json deep = 1;
  for (int i = 0; i < kMaxFunctionValueDepth + 1; ++i) deep = Json::array({deep});
  const Result<std::string> r = FormatFunctionValue(deep, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("nested deeper"), std::string::npos);
}

TEST(FunctionCallRender, MatchesTheDocumentedFormat) {
  const FunctionCall call{"get_weather", {{"unit", "c"}, {"city", "Tokyo"}}};
  const Result<std::string> r = RenderFunctionCall(call);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(
      *r,
      "<start_function_call>call:get_weather{city:<escape>Tokyo<escape>,unit:<escape>c<escape>}"
      "<end_function_call>");
  const Result<std::string> empty = RenderFunctionCall({"turn_on_flashlight", Json::object()});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "<start_function_call>call:turn_on_flashlight{}<end_function_call>");
  EXPECT_FALSE(RenderFunctionCall({"", Json::object()}).ok());
  EXPECT_FALSE(RenderFunctionCall({"bad name", Json::object()}).ok());
  EXPECT_FALSE(RenderFunctionCall({"f", Json::array()}).ok());
}

TEST(FunctionResponseRender, ObjectsAndScalars) {
  const Result<std::string> r =
      RenderFunctionResponse("get_weather", {{"weather", "sunny"}, {"temperature", 15}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r,
            "response:get_weather{temperature:15,weather:<escape>sunny<escape>}"
            "<end_function_response>");
  const Result<std::string> s = RenderFunctionResponse("get_time", "2026-02-12T14:47:00");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s,
            "response:get_time{value:<escape>2026-02-12T14:47:00<escape>}<end_function_response>");
  EXPECT_FALSE(RenderFunctionResponse("", Json::object()).ok());
}

Result<ParsedModelOutput> Parse(std::string_view text) { return ParseModelOutput(text); }

TEST(ParseModelOutput, DocumentedCall) {
  const auto r = Parse(
      "<start_function_call>call:get_current_weather{location:<escape>Tokyo, Japan<escape>}"
      "<end_function_call>");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->calls.size(), 1u);
  EXPECT_EQ(r->calls[0].name, "get_current_weather");
  EXPECT_EQ(r->calls[0].arguments, Json({{"location", "Tokyo, Japan"}}));
  EXPECT_EQ(r->text, "");
  EXPECT_EQ(
      FunctionCallsToJson(r->calls),
      Json::parse(R"([{"name":"get_current_weather","arguments":{"location":"Tokyo, Japan"}}])"));
}

TEST(ParseModelOutput, ParallelCallsAndSurroundingText) {
  const auto r = Parse(
      "Let me check.<start_function_call>call:get_weather{city:<escape>Tokyo<escape>}"
      "<end_function_call><start_function_call>call:get_stock_price{ticker:<escape>GOOG<escape>}"
      "<end_function_call> Done.");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->calls.size(), 2u);
  EXPECT_EQ(r->calls[0].name, "get_weather");
  EXPECT_EQ(r->calls[1].name, "get_stock_price");
  EXPECT_EQ(r->calls[1].arguments, Json({{"ticker", "GOOG"}}));
  EXPECT_EQ(r->text, "Let me check. Done.");
}

TEST(ParseModelOutput, PlainTextHasNoCalls) {
  const auto r = Parse("It is sunny and 15 degrees in Tokyo.");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->calls.empty());
  EXPECT_EQ(r->text, "It is sunny and 15 degrees in Tokyo.");
}

TEST(ParseModelOutput, AllValueKinds) {
  const auto r = Parse(
      "<start_function_call>call:f{i:42,neg:-17,big:18446744073709551615,huge:"
      "123456789012345678901234567890,f:0.5,nf:-2.5e-3,e:1e+20,E:6.02E23,t:true,fa:false,n:null,"
      "py:True,pn:None,arr:[1,[2,[]],{}],obj:{inner:{x:<escape>y<escape>}},"
      "s:<escape>braces {}, commas, \"quotes\", colons: and\nnewlines, ünïcödé ✓ 東京<escape>}"
      "<end_function_call>");
  ASSERT_TRUE(r.ok()) << r.error().message();
  const Json& a = r->calls.at(0).arguments;
  EXPECT_TRUE(a["i"].is_number_integer());
  EXPECT_EQ(a["i"].get<std::int64_t>(), 42);
  EXPECT_EQ(a["neg"].get<std::int64_t>(), -17);
  EXPECT_EQ(a["big"].get<std::uint64_t>(), 18446744073709551615u);
  EXPECT_TRUE(a["huge"].is_number_float());
  EXPECT_DOUBLE_EQ(a["huge"].get<double>(), 1.2345678901234568e29);
  EXPECT_TRUE(a["f"].is_number_float());
  EXPECT_EQ(a["f"].get<double>(), 0.5);
  EXPECT_EQ(a["nf"].get<double>(), -2.5e-3);
  EXPECT_EQ(a["e"].get<double>(), 1e20);
  EXPECT_EQ(a["E"].get<double>(), 6.02e23);
  EXPECT_EQ(a["t"], true);
  EXPECT_EQ(a["fa"], false);
  EXPECT_TRUE(a["n"].is_null());
  EXPECT_EQ(a["py"], true);
  EXPECT_TRUE(a["pn"].is_null());
  EXPECT_EQ(a["arr"], Json::parse("[1,[2,[]],{}]"));
  EXPECT_EQ(a["obj"], Json::parse(R"({"inner":{"x":"y"}})"));
  EXPECT_EQ(a["s"], "braces {}, commas, \"quotes\", colons: and\nnewlines, ünïcödé ✓ 東京");
}

TEST(ParseModelOutput, ToleratesWhitespaceAndEscapedKeys) {
  const auto r = Parse(
      "<start_function_call>\ncall:create_event{ datetime : <escape>2026-11-20T10:00:00<escape>,"
      " title:<escape>Review<escape> , <escape>odd key: {x}<escape>:[ 1 , 2 ] }\n"
      "<end_function_call>");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->calls.at(0).arguments, Json({{"datetime", "2026-11-20T10:00:00"},
                                            {"title", "Review"},
                                            {"odd key: {x}", Json::array({1, 2})}}));
}

struct BadCase {
  std::string text;
  std::string expected;  // a substring of the error message
};

TEST(ParseModelOutput, MalformedCallsNameOffsetAndProblem) {
  const std::vector<BadCase> cases = {
      {"<start_function_call>create_calendar_event<end_of_turn>",
       "offset 21: function call at offset 0: expected 'call:'"},
      {"<start_function_call>call:{a:1}<end_function_call>", "expected a function name"},
      {"<start_function_call>call:f<end_function_call>", "expected '{' after the function name"},
      {"<start_function_call>call:f{a:1}", "expected <end_function_call>"},
      {"<start_function_call>call:f{a:1}}<end_function_call>", "expected <end_function_call>"},
      {"<start_function_call>call:f{a 1}<end_function_call>", "expected ':' after key 'a 1'"},
      {"<start_function_call>call:f{a:}<end_function_call>", "offset 30: function call 'f'"},
      {"<start_function_call>call:f{a:red}<end_function_call>", "expected a value"},
      {"<start_function_call>call:f{a:<escape>open}<end_function_call>", "unterminated string"},
      {"<start_function_call>call:f{a:[1,2}<end_function_call>", "expected ',' or ']' in array"},
      {"<start_function_call>call:f{a:{b:1]}<end_function_call>", "expected ',' or '}'"},
      {"<start_function_call>call:f{a:1,a:2}<end_function_call>", "duplicate key 'a'"},
      {"<start_function_call>call:f{a:1,}<end_function_call>", "expected a key"},
      {"<start_function_call>call:f{a:1.2.3}<end_function_call>", "malformed number '1.2.3'"},
      {"<start_function_call>call:f{a:12abc}<end_function_call>", "malformed number"},
      {"<start_function_call>call:f{a:1e999}<end_function_call>", "out of range"},
      {"<start_function_call>call:f{a:-}<end_function_call>", "malformed number '-'"},
      {"<start_function_call>call:f{a:[1,2", "unterminated array opened at offset 30"},
      {"text<end_function_call>", "offset 4: <end_function_call> without a matching"},
      {"<start_function_call>call:f{a:truex}<end_function_call>", "expected a value"},
  };
  for (const BadCase& c : cases) {
    const auto r = Parse(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.error().message().find(c.expected), std::string::npos)
        << "input: " << c.text << "\nerror: " << r.error().message();
    EXPECT_EQ(r.error().message().rfind("offset ", 0), 0u) << r.error().message();
  }
}

TEST(ParseModelOutput, DeepNestingIsAnErrorNotACrash) {
  std::string text = "<start_function_call>call:f{a:";
  text.append(100000, '[');
  const auto r = Parse(text);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("nesting deeper"), std::string::npos);
}

TEST(ParseFunctionArguments, WholeTextMustBeOneObject) {
  const Result<Json> ok = ParseFunctionArguments("  {a:1,b:[<escape>x<escape>]}\n");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, Json::parse(R"({"a":1,"b":["x"]})"));
  EXPECT_FALSE(ParseFunctionArguments("{a:1} extra").ok());
  EXPECT_FALSE(ParseFunctionArguments("[1]").ok());
  EXPECT_FALSE(ParseFunctionArguments("").ok());
}

// Renders `args` as a call, parses it back and checks it is the same JSON (numbers keep kind).
void ExpectRoundTrip(const Json& args) {
  const Result<std::string> text = RenderFunctionCall({"tool", args});
  ASSERT_TRUE(text.ok()) << text.error().message() << "\n" << args.dump();
  const auto parsed = ParseModelOutput(*text);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message() << "\n" << *text;
  ASSERT_EQ(parsed->calls.size(), 1u);
  EXPECT_EQ(parsed->calls[0].name, "tool");
  EXPECT_TRUE(StrictEqual(parsed->calls[0].arguments, args))
      << "original: " << args.dump() << "\nrendered: " << *text
      << "\nparsed:   " << parsed->calls[0].arguments.dump();
  EXPECT_EQ(parsed->text, "");
}

TEST(FunctionCallRoundTrip, HandPickedShapes) {
  const std::vector<Json> shapes = {
      Json::object(),
      {{"city", "Tokyo"}},
      {{"n", 0}, {"m", -1}, {"x", 1.5}, {"y", -0.0}, {"z", 1e-300}, {"w", 2.0}},
      {{"u", std::uint64_t{18446744073709551615u}}, {"i", std::int64_t{-9223372036854775807 - 1}}},
      {{"flags", {true, false, nullptr}}},
      {{"s", ""}, {"t", " padded "}, {"nl", "a\nb\r\nc\t"}},
      {{"tricky", "{}[],:<end_function_call><start_function_call>call:x{}\"'\\"}},
      {{"unicode", "héllo wörld ✓ 東京 😀"}},
      {{"nested", {{"a", {{"b", {{"c", Json::array({1, Json::array({2, Json::object()})})}}}}}}}},
      {{"Mixed", 1}, {"mixed", 2}, {"key with spaces", 3}, {"ключ", 4}},
      Json::parse(
          R"({"items":[{"name":"a","qty":2,"price":9.99},{"name":"b","qty":1,"price":0.5}]})"),
  };
  for (const Json& s : shapes) ExpectRoundTrip(s);
}

// A random JSON value from a seeded Philox stream: scalars of every kind, strings with any
// characters (except the sequence "<escape>"), objects and arrays nested up to `depth`.
class RandomJson {
 public:
  explicit RandomJson(std::uint64_t seed) : rng_(seed) {}

  Json Value(int depth) {
    const std::uint32_t kind = rng_.NextU32() % (depth > 0 ? 9u : 7u);
    switch (kind) {
      case 0:
        return String();
      case 1:
        return static_cast<std::int64_t>(rng_.NextU64());
      case 2:
        return static_cast<std::int64_t>(rng_.NextU32() % 2000) - 1000;
      case 3: {
        double d;
        do {
          const std::uint64_t bits = rng_.NextU64();
          std::memcpy(&d, &bits, sizeof(d));
        } while (!std::isfinite(d));
        return d;
      }
      case 4:
        return (static_cast<double>(rng_.NextU32() % 100000) - 50000.0) / 64.0;
      case 5:
        return rng_.NextU32() % 2 == 0;
      case 6:
        return rng_.NextU32() % 3 == 0 ? Json(nullptr) : Json(rng_.NextU64() | (1ull << 63));
      case 7:
        return Object(depth - 1);
      default: {
        Json arr = Json::array();
        const int n = static_cast<int>(rng_.NextU32() % 5);
        for (int i = 0; i < n; ++i) arr.push_back(Value(depth - 1));
        return arr;
      }
    }
  }

  Json Object(int depth) {
    Json obj = Json::object();
    const int n = static_cast<int>(rng_.NextU32() % 6);
    for (int i = 0; i < n; ++i) obj[Key()] = Value(depth);
    return obj;
  }

 private:
  std::string String() {
    static const std::vector<std::string> kPieces = {
        "a",  "Z", "0",    " ",  "{",    "}",   "[", "]",       ",",       ":",
        "\"", "'", "\\",   "\n", "\t",   "<",   ">", "<escape", "escape>", "<end_function_call>",
        "é",  "✓", "東京", "😀",  "\x01", "\x7f"};
    std::string s;
    const int n = static_cast<int>(rng_.NextU32() % 12);
    for (int i = 0; i < n; ++i) s += kPieces[rng_.NextU32() % kPieces.size()];
    if (s.find("<escape>") != std::string::npos) return "x";
    return s;
  }
  std::string Key() {
    static const std::vector<std::string> kPieces = {"a", "B", "c",  "_",   "1",   "-",
                                                     ".", "é", "東", "key", "Key", " "};
    // Starts and ends with a non-space piece; spaces only inside.
    std::string k = kPieces[rng_.NextU32() % (kPieces.size() - 1)];
    const int n = static_cast<int>(rng_.NextU32() % 4);
    for (int i = 0; i < n; ++i) k += kPieces[rng_.NextU32() % kPieces.size()];
    k += kPieces[rng_.NextU32() % (kPieces.size() - 1)];
    return k;
  }

  Philox rng_;
};

TEST(FunctionCallRoundTrip, SeededRandomValues) {
  RandomJson gen(20250101);
  for (int i = 0; i < 2000; ++i) {
    const Json args = gen.Object(4);
    ExpectRoundTrip(args);
    if (HasFailure()) break;
  }
}

// Random truncations and mutations of valid outputs never crash; every error starts with
// "offset N:" where N lies within the text.
TEST(ParseModelOutput, FuzzTruncationsAndMutations) {
  RandomJson gen(7);
  Philox rng(99);
  const std::string alphabet = "{}[],:<>escapt_01-.e \n\"";
  int errors = 0;
  for (int i = 0; i < 400; ++i) {
    std::string text = "Sure. ";
    const int calls = 1 + static_cast<int>(rng.NextU32() % 3);
    for (int c = 0; c < calls; ++c) {
      const Result<std::string> call =
          RenderFunctionCall({"fn" + std::to_string(c), gen.Object(3)});
      ASSERT_TRUE(call.ok());
      text += *call;
    }
    for (int m = 0; m < 25; ++m) {
      std::string t = text;
      const std::uint32_t op = rng.NextU32() % 4;
      const std::size_t at = rng.NextU32() % (t.size() + 1);
      if (op == 0) {
        t.resize(at);  // truncation
      } else if (op == 1 && at < t.size()) {
        t[at] = alphabet[rng.NextU32() % alphabet.size()];
      } else if (op == 2) {
        t.insert(at, 1, alphabet[rng.NextU32() % alphabet.size()]);
      } else if (at < t.size()) {
        t.erase(at, 1 + rng.NextU32() % 8);
      }
      const auto r = ParseModelOutput(t);
      if (r.ok()) continue;
      ++errors;
      const std::string& msg = r.error().message();
      ASSERT_EQ(msg.rfind("offset ", 0), 0u) << msg;
      const std::size_t offset = std::stoul(msg.substr(7));
      ASSERT_LE(offset, t.size()) << msg;
    }
  }
  EXPECT_GT(errors, 1000);  // the mutations do break most outputs
}

TEST(ParseModelOutput, EveryTruncationOfACallIsAnError) {
  const std::string text =
      "ok <start_function_call>call:f{a:[1,{b:<escape>x,y<escape>}],c:-1.5e3}<end_function_call>";
  const std::size_t block = text.find("<start_function_call>");
  for (std::size_t n = 0; n < text.size(); ++n) {
    const auto r = ParseModelOutput(std::string_view(text).substr(0, n));
    if (n < block + kStartFunctionCall.size()) {
      // No complete <start_function_call> yet: plain text.
      EXPECT_TRUE(r.ok()) << n;
    } else {
      EXPECT_FALSE(r.ok()) << "prefix of length " << n << " parsed";
    }
  }
  EXPECT_TRUE(ParseModelOutput(text).ok());
}

}  // namespace
}  // namespace fgnet
