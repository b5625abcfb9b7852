// The automaton pieces on small inputs: UTF-8 ranges, distances, object lanes, the DFA limit,
// the mask cache and TokenMask.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar/lazy_dfa.h"
#include "grammar/nfa.h"
#include "grammar/utf8_ranges.h"
#include "grammar_test_support.h"
#include "util/rng.h"

namespace fgnet {
namespace {

using grammar_detail::AddUtf8Edges;
using grammar_detail::AppendUtf8;
using grammar_detail::kDeadState;
using grammar_detail::LazyDfa;
using grammar_detail::Nfa;
using grammar_detail::NfaBuilder;
using testing::TinyToken;
using testing::TinyVocab;

std::int32_t RunDfa(const LazyDfa& dfa, std::string_view bytes) {
  std::int32_t s = dfa.start();
  for (const char c : bytes) {
    s = dfa.Next(s, static_cast<unsigned char>(c));
    if (s == kDeadState) return s;
  }
  return s;
}

bool Matches(const Grammar& g, std::string_view text) {
  std::int32_t s = g.start_state();
  for (const char c : text) {
    s = g.Advance(s, static_cast<unsigned char>(c));  // TinyVocab: id b is byte b
    if (s == Grammar::kNoState) return false;
  }
  return g.IsAccepting(s);
}

TEST(Utf8Ranges, AcceptExactlyOneValidCharacter) {
  NfaBuilder b(256, 1000);
  const std::int32_t s = b.NewState(), e = b.NewState();
  const auto all = grammar_detail::NormalizeCodepoints({{0, grammar_detail::kMaxCodepoint}});
  AddUtf8Edges(b, s, e, all);
  auto nfa = Nfa::Build(std::move(b), {s, e});
  ASSERT_TRUE(nfa.ok());
  const LazyDfa dfa(std::make_shared<const Nfa>(std::move(nfa).value()), 100);
  std::string enc;
  for (std::uint32_t cp = 0; cp <= grammar_detail::kMaxCodepoint; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    enc.clear();
    AppendUtf8(cp, &enc);
    const std::int32_t end = RunDfa(dfa, enc);
    ASSERT_NE(end, kDeadState) << cp;
    ASSERT_TRUE(dfa.accepting(end)) << cp;
  }
  // Random byte strings: accepted exactly when they are one valid character.
  Philox rng(3);
  for (int i = 0; i < 200000; ++i) {
    std::string bytes(1 + rng.NextU32() % 4, '\0');
    for (char& c : bytes)
      c = static_cast<char>(rng.NextU32() % 2 ? 0x80 + rng.NextU32() % 128 : rng.NextU32());
    std::size_t chars = 0;
    for (const char c : bytes) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    const bool expected = testing::IsValidUtf8(bytes) && chars == 1;
    const std::int32_t end = RunDfa(dfa, bytes);
    ASSERT_EQ(end != kDeadState && dfa.accepting(end), expected) << i;
  }
  // Every edge is to a live state, and distances count the bytes left.
  EXPECT_EQ(dfa.distance(dfa.start()), 1);
  EXPECT_EQ(dfa.distance(RunDfa(dfa, "\xF0")), 3);
  EXPECT_EQ(dfa.distance(RunDfa(dfa, "\xF0\x90")), 2);
}

TEST(Automaton, DistancesAndTerminalStates) {
  auto g = Grammar::FromRegex("abc|de(f|gh)?", TinyVocab(), {{TinyToken("<eos>")}});
  ASSERT_TRUE(g.ok()) << g.error().message();
  const Grammar& gr = **g;
  const std::int32_t s = gr.start_state();
  EXPECT_EQ(gr.Distance(s), 2);
  const std::int32_t a = gr.Advance(s, 'a');
  EXPECT_EQ(gr.Distance(a), 2);
  const std::int32_t de = gr.Advance(gr.Advance(s, 'd'), 'e');
  EXPECT_EQ(gr.Distance(de), 0);
  EXPECT_TRUE(gr.IsAccepting(de));
  EXPECT_FALSE(gr.IsTerminal(de));
  const std::int32_t abc = gr.Advance(gr.Advance(a, 'b'), 'c');
  EXPECT_TRUE(gr.IsTerminal(abc));
  EXPECT_EQ(gr.Advance(s, TinyToken("ab")), gr.Advance(a, 'b'));  // multi-byte token
  EXPECT_EQ(gr.Advance(s, TinyToken("abc")), abc);
  EXPECT_EQ(gr.Advance(s, TinyToken("<escape>")), Grammar::kNoState);
  EXPECT_EQ(gr.Advance(s, TinyToken("<eos>")), Grammar::kNoState);  // a stop id is not text
  GrammarMatcher m(*g);
  EXPECT_EQ(m.MinTokens(), 2);
  EXPECT_FALSE(m.Accept(270).ok());  // a kNever token
  EXPECT_FALSE(m.Accept(-1).ok());
  EXPECT_FALSE(m.Accept(100000).ok());
  EXPECT_TRUE(m.Accept(TinyToken("abc")).ok());
  EXPECT_TRUE(m.IsTerminal());
  m.Reset();
  EXPECT_EQ(m.state(), s);
}

TEST(Automaton, OptionalMembersKeepOrderAndCommas) {
  auto g = Grammar::FromJsonSchemaText(
      R"({"properties":{"a":{"type":"null"},"b":{"type":"null"},"c":{"type":"null"}},
          "required":["b"]})",
      TinyVocab(), {});
  ASSERT_TRUE(g.ok()) << g.error().message();
  for (const char* ok : {R"({"b":null})", R"({"a":null,"b":null})", R"({"b":null,"c":null})",
                         R"({"a":null,"b":null,"c":null})"}) {
    EXPECT_TRUE(Matches(**g, ok)) << ok;
  }
  for (const char* bad :
       {"{}", R"({"a":null})", R"({"c":null})", R"({"a":null,"c":null})", R"({"b":null,"a":null})",
        R"({,"b":null})", R"({"b":null,})", R"({"a":null"b":null})", R"({"b":null,"b":null})"}) {
    EXPECT_FALSE(Matches(**g, bad)) << bad;
  }
  // Fifty optional members: the automaton stays linear (no 2^50 blow-up).
  std::string props;
  for (int i = 0; i < 50; ++i) {
    if (i > 0) props.push_back(',');
    props.append("\"p").append(std::to_string(i)).append("\":{\"type\":\"integer\"}");
  }
  auto wide = Grammar::FromJsonSchemaText("{\"properties\":{" + props + "}}", TinyVocab(), {});
  ASSERT_TRUE(wide.ok()) << wide.error().message();
  EXPECT_LT((*wide)->stats().nfa_states, 50 * 40);
  EXPECT_TRUE(Matches(**wide, R"({"p3":1,"p49":-20})"));
  EXPECT_FALSE(Matches(**wide, R"({"p49":1,"p3":2})"));
}

TEST(Automaton, DfaLimitMasksInsteadOfGrowing) {
  GrammarOptions options;
  options.stop_ids = {TinyToken("<eos>")};
  options.max_dfa_states = 4;
  auto g = Grammar::FromRegex("[a-z]{10}", TinyVocab(), options);
  ASSERT_TRUE(g.ok());
  GrammarMatcher m(*g);
  std::vector<float> logits(TinyVocab()->size());
  Status last = Ok();
  for (int i = 0; i < 10 && last.ok(); ++i) {
    m.MaskLogits(logits, 100);
    last = m.Accept('q');
  }
  EXPECT_FALSE(last.ok());
  EXPECT_TRUE((*g)->stats().dfa_full);
  EXPECT_EQ((*g)->stats().dfa_states, 4);
}

TEST(Automaton, MaskCacheIsBoundedAndCounts) {
  GrammarOptions options;
  options.stop_ids = {TinyToken("<eos>")};
  options.max_cached_masks = 2;
  auto g = Grammar::FromRegex("[a-z]{6}", TinyVocab(), options);
  ASSERT_TRUE(g.ok());
  std::vector<float> logits(TinyVocab()->size());
  for (int round = 0; round < 2; ++round) {
    GrammarMatcher m(*g);
    for (int i = 0; i < 6; ++i) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      m.MaskLogits(logits, 100);
      EXPECT_EQ(logits['q'], 0.0f);
      EXPECT_EQ(logits['Q'], -std::numeric_limits<float>::infinity());
      ASSERT_TRUE(m.Accept('q').ok());
    }
  }
  const GrammarStats s = (*g)->stats();
  EXPECT_LE(s.cached_masks, 2);
  EXPECT_EQ(s.mask_hits + s.mask_misses, 12);
  EXPECT_GE(s.mask_misses, 6);
  EXPECT_GT(s.cached_mask_bytes, 0);
}

TEST(Automaton, LimitsAreChecked) {
  GrammarOptions options;
  options.max_dfa_states = 0;
  auto g = Grammar::FromRegex("a", TinyVocab(), options);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.error().message(), "regex: max_dfa_states 0 is outside [1, 16777216]");
  options = {};
  options.max_nfa_states = 10;
  g = Grammar::FromJsonSchemaText(R"({"type":"string"})", TinyVocab(), options);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.error().message(),
            "schema: the grammar needs more than 10 automaton states (lower maxLength / maxItems "
            "or simplify the schema)");
  g = Grammar::FromRegex("abcdefghijklmnop", TinyVocab(), options);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message().find("too many automaton states"), std::string::npos);
}

TEST(TokenMask, SparseAndDenseApply) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (const std::int32_t count : {5, 5000}) {
    std::vector<std::int32_t> ids;
    for (std::int32_t i = 0; i < count; ++i) ids.push_back(i * 7 + 3);
    const TokenMask mask(ids, 100000, 4);
    EXPECT_EQ(mask.count(), count);
    EXPECT_EQ(mask.AllowedIds(), ids);
    for (const std::size_t size : {std::size_t{100000}, std::size_t{99990}, std::size_t{100010}}) {
      std::vector<float> logits(size);
      for (std::size_t i = 0; i < size; ++i) logits[i] = static_cast<float>(i);
      mask.Apply(logits);
      for (std::size_t i = 0; i < size; ++i) {
        const bool allowed = i < 100000 && i % 7 == 3 && i / 7 < static_cast<std::size_t>(count);
        ASSERT_EQ(logits[i], allowed ? static_cast<float>(i) : -kInf) << count << " " << i;
      }
    }
    EXPECT_TRUE(mask.Allows(3));
    EXPECT_FALSE(mask.Allows(4));
    EXPECT_FALSE(mask.Allows(-1));
    EXPECT_FALSE(mask.Allows(100000));
  }
}

}  // namespace
}  // namespace fgnet
