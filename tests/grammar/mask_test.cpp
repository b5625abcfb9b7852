// Masks on the full Gemma 3 vocabulary: against brute force (every token's bytes stepped through
// the automaton), the budget rule, logits of other sizes, threads sharing one grammar, and
// regular-expression walks checked with std::regex.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <regex>
#include <thread>
#include <vector>

#include "grammar/grammar.h"
#include "grammar_test_support.h"

namespace fgnet {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

const char* const kSchema = R"({"type":"object","properties":{
    "title":{"type":"string","maxLength":20},"count":{"type":"integer"},
    "tags":{"type":"array","items":{"enum":["a","b"]}},"ok":{"type":"boolean"}},
  "required":["title"]})";

std::shared_ptr<const Grammar> JsonGrammar() {
  GrammarOptions options;
  options.stop_ids = testing::Gemma3StopIds();
  auto g = Grammar::FromJsonSchemaText(kSchema, testing::Gemma3Vocab(), options);
  EXPECT_TRUE(g.ok()) << g.error().message();
  return g.ok() ? *g : nullptr;
}

std::shared_ptr<const Grammar> RegexGrammar(std::string_view pattern) {
  auto g = Grammar::FromRegex(pattern, testing::Gemma3Vocab(), {testing::Gemma3StopIds()});
  EXPECT_TRUE(g.ok()) << g.error().message();
  return g.ok() ? *g : nullptr;
}

void BruteForceJsonSchema() {
  const auto g = JsonGrammar();
  ASSERT_NE(g, nullptr);
  const std::vector<std::int32_t> states = testing::StatesOfAWalk(g, 6);
  ASSERT_GE(states.size(), 4u);
  for (const std::int32_t state : states) testing::ExpectMaskEqualsBruteForce(*g, state);
}

void BruteForceRegex() {
  const auto g = RegexGrammar("[a-z ]{1,12}(\\.|!)");
  ASSERT_NE(g, nullptr);
  for (const std::int32_t state : testing::StatesOfAWalk(g, 4)) {
    testing::ExpectMaskEqualsBruteForce(*g, state);
  }
}

// What MaskLogits leaves allowed under every tight budget equals brute force: the mask's
// tokens whose end state is at most remaining - 1 symbols from acceptance.
void BudgetRule() {
  const auto g = JsonGrammar();
  ASSERT_NE(g, nullptr);
  std::vector<float> logits(g->vocab().size());
  for (const std::int32_t state : testing::StatesOfAWalk(g, 4)) {
    const std::int64_t d = g->Distance(state);
    const auto mask = g->Mask(state);
    for (std::int64_t remaining = std::max<std::int64_t>(d, 1);
         remaining <= mask->max_end_distance() + 1; ++remaining) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      mask->Apply(logits);  // what GrammarMatcher::MaskLogits does in `state`
      if (mask->max_end_distance() > remaining - 1) {
        g->MaskOverBudget(state, remaining - 1, logits);
      }
      for (std::int32_t t = 0; t < g->vocab().size(); ++t) {
        bool expected = mask->Allows(t);
        if (expected && !g->IsStopId(t)) {
          expected = g->Distance(g->Advance(state, t)) <= remaining - 1;
        }
        ASSERT_EQ(logits[t] == 0.0f, expected)
            << "state " << state << " remaining " << remaining << " token " << t;
      }
    }
  }
}

void OtherLogitSizes() {
  const auto g = JsonGrammar();
  ASSERT_NE(g, nullptr);
  GrammarMatcher m(g);
  // The model's output layer has 262144 rows: <image_soft_token> (262144) has no logit.
  std::vector<float> short_logits(262144, 1.0f);
  m.MaskLogits(short_logits, 50);
  EXPECT_EQ(short_logits[236782], 1.0f);   // "{"
  EXPECT_EQ(short_logits[236783], -kInf);  // "}"
  std::vector<float> long_logits(262200, 1.0f);
  m.MaskLogits(long_logits, 50);
  EXPECT_EQ(long_logits[236782], 1.0f);
  for (std::size_t i = 262145; i < long_logits.size(); ++i) ASSERT_EQ(long_logits[i], -kInf);
}

// Reference walks on one grammar, then the same walks from four threads on a fresh one.
void ThreadsShareOneGrammar() {
  const auto reference = JsonGrammar();
  ASSERT_NE(reference, nullptr);
  constexpr int kThreads = 4;
  std::vector<std::vector<std::int32_t>> expected(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    expected[t] = testing::RandomWalk(reference, 40 + t, 40, 0.3).tokens;
  }
  const auto shared = JsonGrammar();
  std::vector<std::vector<std::int32_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { got[t] = testing::RandomWalk(shared, 40 + t, 40, 0.3).tokens; });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(got[t], expected[t]) << t;
  EXPECT_GT(shared->stats().mask_hits, 0);
}

void RegexWalks() {
  for (const char* pattern : {"[a-z]+( [a-z]+){0,4}", "(yes|no|maybe)", "\\d{4}-\\d{2}-\\d{2}"}) {
    SCOPED_TRACE(pattern);
    const auto g = RegexGrammar(pattern);
    ASSERT_NE(g, nullptr);
    const std::regex re(pattern);
    for (int i = 0; i < 3; ++i) {
      const testing::Walk w =
          testing::RandomWalk(g, 70 + i, GrammarMatcher(g).MinTokens() + 10 * i, 0.3 * i);
      ASSERT_TRUE(w.complete);
      const std::string text = testing::TokensText(g->vocab(), w.tokens);
      EXPECT_EQ(testing::Gemma3Tokenizer()->Decode(w.tokens), text);
      EXPECT_TRUE(std::regex_match(text, re)) << text;
    }
  }
}

// One test (one process under ctest) for everything on the Gemma 3 vocabulary, which takes
// a while to load in sanitizer builds.
TEST(Masks, OnGemma3Vocabulary) {
  ASSERT_NE(testing::Gemma3Vocab(), nullptr);
  for (const auto& [name, fn] : std::initializer_list<std::pair<const char*, void (*)()>>{
           {"BruteForceJsonSchema", BruteForceJsonSchema},
           {"BruteForceRegex", BruteForceRegex},
           {"BudgetRule", BudgetRule},
           {"OtherLogitSizes", OtherLogitSizes},
           {"ThreadsShareOneGrammar", ThreadsShareOneGrammar},
           {"RegexWalks", RegexWalks}}) {
    SCOPED_TRACE(name);
    fn();
  }
}

}  // namespace
}  // namespace fgnet
