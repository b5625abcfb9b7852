// Exact BPE behaviour on a handmade tokenizer (tests/tokenizer/mini_tokenizer.h): merge order,
// byte fallback, unknown tokens, added tokens, normalisation and splitting.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mini_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace fgnet {
namespace {

using Ids = std::vector<std::int32_t>;
using testing::MiniTokenizerJson;

constexpr std::int32_t kUnk = 3;
constexpr std::int32_t kSpace = 260, kA = 261, kB = 262, kC = 263, kAB = 264, kBC = 265, kABC = 266,
                       kSpaceA = 267, kAA = 268, kNewline = 269, kNewline2 = 270,
                       kStartOfTurn = 271;
constexpr std::int32_t Byte(int b) { return 4 + b; }

Tokenizer Make(const Json& j) {
  auto tok = Tokenizer::FromJson(j.dump(), "mini.json");
  EXPECT_TRUE(tok.ok()) << tok.error().message();
  return std::move(tok).value();
}

TEST(Bpe, LowestRankMergesFirst) {
  const Tokenizer tok = Make(MiniTokenizerJson());
  EXPECT_EQ(tok.Encode("abc"), (Ids{kABC}));  // a+b (rank 0), then ab+c
  EXPECT_EQ(tok.Encode("bca"), (Ids{kBC, kA}));
  EXPECT_EQ(tok.Encode("abab"), (Ids{kAB, kAB}));
  Json j = MiniTokenizerJson();
  std::swap(j["model"]["merges"][0], j["model"]["merges"][1]);  // b+c now outranks a+b
  EXPECT_EQ(Make(j).Encode("abc"), (Ids{kA, kBC}));
}

TEST(Bpe, EqualRanksMergeLeftmostFirst) {
  const Tokenizer tok = Make(MiniTokenizerJson());
  EXPECT_EQ(tok.Encode("aaa"), (Ids{kAA, kA}));
  EXPECT_EQ(tok.Encode("aaaaa"), (Ids{kAA, kAA, kA}));
}

TEST(Bpe, LaterDuplicateMergeWins) {
  Json j = MiniTokenizerJson();
  j["model"]["merges"].push_back(Json::array({"a", "b"}));  // a+b now has the last rank
  EXPECT_EQ(Make(j).Encode("abc"), (Ids{kA, kBC}));
}

TEST(Bpe, SpacesBecomeU2581AndStayInOneWord) {
  const Tokenizer tok = Make(MiniTokenizerJson());
  EXPECT_EQ(tok.Encode(" a"), (Ids{kSpaceA}));
  EXPECT_EQ(tok.Encode("b a"), (Ids{kB, kSpaceA}));
  EXPECT_EQ(tok.Encode("\u2581a"), (Ids{kSpaceA}));  // raw U+2581 is the same after normalising
  EXPECT_EQ(tok.Encode("  "), (Ids{kSpace, kSpace}));
  EXPECT_EQ(tok.Decode(tok.Encode("b  a ")), "b  a ");
}

TEST(Bpe, ByteFallbackForCharactersOutsideTheVocabulary) {
  const Tokenizer tok = Make(MiniTokenizerJson());
  EXPECT_EQ(tok.Encode("z"), (Ids{Byte('z')}));
  EXPECT_EQ(tok.Encode("a\xC3\xA9"), (Ids{kA, Byte(0xC3), Byte(0xA9)}));
  EXPECT_EQ(tok.Decode(Ids{kA, Byte(0xC3), Byte(0xA9)}), "a\xC3\xA9");
  // Invalid UTF-8 input: each stray byte is its own character.
  EXPECT_EQ(tok.Encode("\xFF"
                       "a\xE4\xB8"),
            (Ids{Byte(0xFF), kA, Byte(0xE4), Byte(0xB8)}));
}

TEST(Bpe, UnknownCharactersFuseWhenByteFallbackIsOff) {
  Json j = MiniTokenizerJson();
  j["model"]["byte_fallback"] = false;
  EXPECT_EQ(Make(j).Encode("zzaz"), (Ids{kUnk, kA, kUnk}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(Make(j).Encode("zzaz"), (Ids{kUnk, kUnk, kA, kUnk}));
}

TEST(Bpe, AddedTokensAreMatchedLeftmostLongestInRawText) {
  const Tokenizer tok = Make(MiniTokenizerJson());
  EXPECT_EQ(tok.Encode("\n\n\n"), (Ids{kNewline2, kNewline}));
  EXPECT_EQ(tok.Encode("ab<start_of_turn>c\n"), (Ids{kAB, kStartOfTurn, kC, kNewline}));
  EXPECT_EQ(tok.Encode("a<start_of_tu"),
            (Ids{kA, Byte('<'), Byte('s'), Byte('t'), kA, Byte('r'), Byte('t'), Byte('_'),
                 Byte('o'), Byte('f'), Byte('_'), Byte('t'), Byte('u')}));
  // Added tokens are matched before normalisation: " " is not "\u2581".
  EXPECT_EQ(tok.Decode(Ids{kStartOfTurn, kA, kNewline}), "<start_of_turn>a\n");
  EXPECT_EQ(tok.Decode(Ids{kStartOfTurn, kA, kNewline}, /*skip_special=*/true), "a\n");
  EXPECT_TRUE(tok.IsSpecial(kStartOfTurn));
  EXPECT_FALSE(tok.IsSpecial(kNewline));
}

TEST(Bpe, AddedTokenPastTheModelVocabularyGetsTheNextId) {
  Json j = MiniTokenizerJson();
  j["added_tokens"].push_back({{"id", 272},
                               {"content", "<extra>"},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", false},
                               {"special", true}});
  const Tokenizer tok = Make(j);
  EXPECT_EQ(tok.vocab_size(), 273);
  EXPECT_EQ(tok.Encode("a<extra>"), (Ids{kA, 272}));
  EXPECT_EQ(tok.IdToToken(272), "<extra>");
  EXPECT_EQ(tok.TokenId("<extra>"), 272);
  EXPECT_EQ(tok.Decode(Ids{272, kA}), "<extra>a");
  EXPECT_EQ(tok.Decode(Ids{272, kA}, true), "a");
}

TEST(Bpe, SplitMergesEachDelimiterWithThePrecedingText) {
  Json j = MiniTokenizerJson();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"]["pattern"]["String"] = "b";
  const Tokenizer tok = Make(j);
  EXPECT_EQ(tok.Encode("abc"), (Ids{kAB, kC}));            // pieces "ab", "c"
  EXPECT_EQ(tok.Encode("bbc"), (Ids{kB, kB, kC}));         // "b", "b", "c"
  EXPECT_EQ(tok.Encode("abbc"), (Ids{kAB, kB, kC}));       // "ab", "b", "c"
  EXPECT_EQ(tok.Encode("cab"), (Ids{kC, kAB}));            // "cab": no merge c+ab
  EXPECT_EQ(tok.Encode("aabab"), (Ids{kA, kAB, kAB}));     // "aab", "ab"
  EXPECT_EQ(tok.Encode("a c"), (Ids{kA, Byte(' '), kC}));  // no normaliser: ' ' by bytes
}

// Words are merged separately where that cannot change the result (bpe.h); a merge that joins a
// character to a following U+2581 keeps them together.
TEST(Bpe, MergesAcrossAWordStartAreKept) {
  Json j = MiniTokenizerJson();
  j["model"]["vocab"][">"] = 272;
  j["model"]["vocab"][">\u2581"] = 273;
  j["model"]["merges"].insert(j["model"]["merges"].begin(), Json::array({">", "\u2581"}));
  const Tokenizer tok = Make(j);
  EXPECT_EQ(tok.Encode("z> a"), (Ids{Byte('z'), 273, kA}));
  EXPECT_EQ(tok.Encode("z>  a"), (Ids{Byte('z'), 273, kSpaceA}));
  EXPECT_EQ(tok.Encode("b a> a"), (Ids{kB, kSpaceA, 273, kA}));

  Json k = MiniTokenizerJson();
  k["model"]["vocab"]["ab\u2581"] = 272;
  k["model"]["merges"].insert(k["model"]["merges"].begin(), Json::array({"ab", "\u2581"}));
  EXPECT_EQ(Make(k).Encode("ab c"), (Ids{272, kC}));
  EXPECT_EQ(Make(k).Encode("c ab a"), (Ids{kC, kSpace, 272, kA}));
}

TEST(Bpe, LookupsAndSizes) {
  const Tokenizer tok = Make(MiniTokenizerJson());
  EXPECT_EQ(tok.vocab_size(), 272);
  EXPECT_EQ(tok.TokenId("abc"), kABC);
  EXPECT_EQ(tok.TokenId("<start_of_turn>"), kStartOfTurn);
  EXPECT_EQ(tok.TokenId("abcd"), std::nullopt);
  EXPECT_EQ(tok.IdToToken(kSpaceA), "\u2581a");
  EXPECT_EQ(tok.IdToToken(-1), "");
  EXPECT_EQ(tok.IdToToken(272), "");
  EXPECT_FALSE(tok.IsSpecial(-1));
  EXPECT_FALSE(tok.IsSpecial(1000));
  EXPECT_TRUE(tok.Encode("").empty());
  EXPECT_EQ(tok.Decode(Ids{}), "");
}

}  // namespace
}  // namespace fgnet
