// Regular-expression grammars on the tiny vocabulary: random walks checked with std::regex,
// specific cases, errors, and random patterns that must give a grammar or an error, never a
// crash. Walks on the Gemma 3 vocabulary are in mask_test.cpp.
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar_test_support.h"
#include "util/rng.h"

namespace fgnet {
namespace {

using testing::TinyToken;
using testing::TinyVocab;

std::shared_ptr<const Grammar> RegexGrammar(std::string_view pattern,
                                            std::shared_ptr<const TokenVocabulary> vocab) {
  GrammarOptions options;
  options.stop_ids = {TinyToken("<eos>")};
  auto g = Grammar::FromRegex(pattern, std::move(vocab), options);
  EXPECT_TRUE(g.ok()) << pattern << ": " << g.error().message();
  return g.ok() ? *g : nullptr;
}

std::string RegexError(std::string_view pattern) {
  auto g = Grammar::FromRegex(pattern, TinyVocab(), {});
  EXPECT_FALSE(g.ok()) << pattern;
  return g.ok() ? "" : g.error().message();
}

bool Matches(const Grammar& g, std::string_view text) {
  std::int32_t s = g.start_state();
  for (const char c : text) {
    s = g.Advance(s, static_cast<unsigned char>(c));  // TinyVocab: id b is byte b
    if (s == Grammar::kNoState) return false;
  }
  return g.IsAccepting(s);
}

// Walks under `pattern` must produce text std::regex (ECMAScript) matches in full.
void CheckWalks(std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab, int walks) {
  const auto g = RegexGrammar(pattern, vocab);
  ASSERT_NE(g, nullptr);
  const std::regex re{std::string(pattern)};
  Philox rng(std::hash<std::string_view>()(pattern));
  for (int i = 0; i < walks; ++i) {
    const std::int64_t budget =
        GrammarMatcher(g).MinTokens() + static_cast<std::int64_t>(rng.NextU32() % 40);
    const testing::Walk w = testing::RandomWalk(g, rng.NextU64(), budget, (i % 3) * 0.4);
    ASSERT_TRUE(w.complete);
    const std::string text = testing::TokensText(g->vocab(), w.tokens);
    ASSERT_TRUE(testing::IsValidUtf8(text));
    EXPECT_TRUE(std::regex_match(text, re)) << pattern << " vs '" << text << "'";
  }
}

TEST(RegexWalk, AsciiPatternsOnTinyVocab) {
  // ASCII-only languages, so that std::regex (which reads bytes) agrees on what matches.
  for (const char* pattern :
       {"[a-z]+", "\\d{3}-\\d{4}", "(foo|bar)+baz?", "a{2,5}b*", "[A-F0-9]{4}(:[A-F0-9]{4}){0,3}",
        "(\\w+ )*\\w+\\.", "x?y?z?", "^(true|false|null)$", "\\(\\d+\\)[+*/-]\\[\\]",
        "(?:ab|cd)(ef)?", "[\\d.]+e[+\\-]?\\d", "[\\x20-\\x7E]{0,12}"}) {
    SCOPED_TRACE(pattern);
    CheckWalks(pattern, TinyVocab(), 6);
  }
}

TEST(Regex, MatchesWhatItShould) {
  const auto g = RegexGrammar("^a(b|cd)*e?$", TinyVocab());
  ASSERT_NE(g, nullptr);
  for (const char* ok : {"a", "ab", "acd", "abcdb", "ae", "abbe"}) EXPECT_TRUE(Matches(*g, ok));
  for (const char* bad : {"", "b", "ac", "aee", "abe ", " a"}) EXPECT_FALSE(Matches(*g, bad));

  const auto counted = RegexGrammar("x{2,3}y{2}z{1,}", TinyVocab());
  EXPECT_TRUE(Matches(*counted, "xxyyz"));
  EXPECT_TRUE(Matches(*counted, "xxxyyzzz"));
  EXPECT_FALSE(Matches(*counted, "xyyz"));
  EXPECT_FALSE(Matches(*counted, "xxxxyyz"));
  EXPECT_FALSE(Matches(*counted, "xxyz"));
  EXPECT_FALSE(Matches(*counted, "xxyy"));

  // '.' is any character but a line terminator, as UTF-8; classes and their negations too.
  const auto dot = RegexGrammar(".[^a]\\S", TinyVocab());
  EXPECT_TRUE(Matches(*dot, "\xC3\xA9\xE2\x82\xAC!"));
  EXPECT_FALSE(Matches(*dot, "\nbc"));
  EXPECT_FALSE(Matches(*dot, "xab"));
  EXPECT_FALSE(Matches(*dot, "xb "));
  EXPECT_FALSE(Matches(*dot, "\xC3xb"));          // broken UTF-8
  EXPECT_FALSE(Matches(*dot, "\xED\xA0\x80xb"));  // a surrogate
  const auto unicode = RegexGrammar("[\xC3\xA9-\xC3\xBF\\u20AC]+", TinyVocab());
  EXPECT_TRUE(Matches(*unicode, "\xC3\xA9\xE2\x82\xAC\xC3\xBF"));
  EXPECT_FALSE(Matches(*unicode, "\xC3\xA8"));

  const auto named = RegexGrammar("(?:ab|cd)(?<tail>ef)?", TinyVocab());
  EXPECT_TRUE(Matches(*named, "cdef"));
  EXPECT_FALSE(Matches(*named, "cde"));

  // Lazy quantifiers match the same texts.
  const auto lazy = RegexGrammar("a+?b??", TinyVocab());
  EXPECT_TRUE(Matches(*lazy, "aaab"));

  // The empty pattern allows only the stop token.
  const auto empty = RegexGrammar("", TinyVocab());
  EXPECT_TRUE(empty->IsTerminal(empty->start_state()));
  EXPECT_EQ(empty->Mask(empty->start_state())->AllowedIds(),
            std::vector<std::int32_t>{TinyToken("<eos>")});
}

TEST(RegexErrors, Reported) {
  const std::pair<const char*, const char*> kCases[] = {
      {"a(?=b)", "regex offset 1: lookaround assertions are not supported"},
      {"(a)\\1", "regex offset 3: backreferences are not supported"},
      {"\\bword", "regex offset 0: word boundaries (\\b) are not supported"},
      {"(ab", "regex offset 0: unterminated group"},
      {"ab)", "regex offset 2: unbalanced ')'"},
      {"*a", "regex offset 0: nothing to repeat"},
      {"a**", "regex offset 2: nothing to repeat (a quantifier follows a quantifier)"},
      {"a{3,1}", "regex offset 1: quantifier {3,1} has its minimum above its maximum"},
      {"a{2000}", "regex offset 1: repetition count above the supported 1000"},
      {"a{x}",
       "regex offset 1: '{' does not start a quantifier {m}, {m,} or {m,n} (escape it "
       "as \\{)"},
      {"[a-", "regex offset 0: unterminated character class"},
      {"[z-a]", "regex offset 1: range out of order in character class"},
      {"[\\d-z]", "regex offset 1: a class escape (\\d, \\w, \\s) cannot bound a range"},
      {"ab\\", "regex offset 2: the pattern ends with '\\'"},
      {"\\q", "regex offset 0: unknown escape '\\q'"},
      {"a^b", "regex offset 1: '^' is only supported at the start of the pattern"},
      {"a$b", "regex offset 1: '$' is only supported at the end of the pattern"},
      {"\xC3(", "regex offset 0: the pattern is not valid UTF-8"},
      {"\\uD800", "regex offset 0: surrogate code points are not supported"},
      {"(?i)a", "regex offset 0: unsupported group syntax '(?'"},
      {"[]", "regex: the grammar matches no output at all"},
  };
  for (const auto& [pattern, message] : kCases) EXPECT_EQ(RegexError(pattern), message);
  const std::string big = RegexError("((a{1000}){1000}){1000}");
  EXPECT_NE(big.find("too many automaton states"), std::string::npos) << big;
}

TEST(RegexFuzz, RandomPatternsGiveGrammarsOrErrors) {
  static constexpr std::string_view kAtoms[] = {
      "a",   "b",        "\\d",  "\\w",   ".",    "[a-c]",   "[^x]", "(",     ")",   "|",   "*",
      "+",   "?",        "{2}",  "{1,3}", "{",    "}",       "[",    "]",     "\\",  "^",   "$",
      "(?:", "\xC3\xA9", "\xC3", "-",     "{0,}", "\\u00e9", "\\x4", "(?<n>", "(?=", "\\s", "\\S"};
  Philox rng(2024);
  int ok = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string pattern;
    const int n = 1 + static_cast<int>(rng.NextU32() % 10);
    for (int k = 0; k < n; ++k) pattern += kAtoms[rng.NextU32() % std::size(kAtoms)];
    auto g = Grammar::FromRegex(pattern, TinyVocab(), {{TinyToken("<eos>")}});
    if (!g.ok()) {
      EXPECT_FALSE(g.error().message().empty());
      EXPECT_EQ(g.error().message().find('\n'), std::string::npos);
      continue;
    }
    ++ok;
    const std::int64_t budget = GrammarMatcher(*g).MinTokens() + 5;
    const testing::Walk w = testing::RandomWalk(*g, i, budget, 0.3);
    EXPECT_TRUE(w.complete) << pattern;
  }
  EXPECT_GT(ok, 100);
}

}  // namespace
}  // namespace fgnet
