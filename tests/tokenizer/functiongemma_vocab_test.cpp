#include "tokenizer/functiongemma_vocab.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mini_tokenizer.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace fgnet {
namespace {

using Ids = std::vector<std::int32_t>;

// A small tokenizer with Gemma 3's layout around the control tokens: ids 0..45 are "<tN>",
// 46..52 are <unused40>..<unused46> (added, not special), then "a" 53, "b" 54, "ab" 55.
Json SmallGemmaLikeJson() {
  Json j = testing::MiniTokenizerJson();
  Json vocab = Json::object();
  for (int i = 0; i < 46; ++i) vocab["<t" + std::to_string(i) + ">"] = i;
  for (const FunctionGemmaControlToken& t : kFunctionGemmaControlTokens) {
    vocab[std::string(t.gemma3_name)] = t.id;
  }
  vocab["a"] = 53;
  vocab["b"] = 54;
  vocab["ab"] = 55;
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = Json::array({Json::array({"a", "b"})});
  j["model"]["unk_token"] = "<t3>";
  j["model"]["byte_fallback"] = false;
  j["added_tokens"] = Json::array();
  for (const FunctionGemmaControlToken& t : kFunctionGemmaControlTokens) {
    j["added_tokens"].push_back({{"id", t.id},
                                 {"content", t.gemma3_name},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", false}});
  }
  return j;
}

TEST(FunctionGemmaVocab, RenamesTheControlTokensInAddedTokensAndVocab) {
  auto json = MakeFunctionGemmaTokenizerJson(SmallGemmaLikeJson().dump(), "small.json");
  ASSERT_TRUE(json.ok()) << json.error().message();
  auto tok = Tokenizer::FromJson(*json, "derived.json");
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  for (const FunctionGemmaControlToken& t : kFunctionGemmaControlTokens) {
    EXPECT_EQ(tok->IdToToken(t.id), t.name);
    EXPECT_EQ(tok->TokenId(t.name), t.id);
    EXPECT_EQ(tok->TokenId(t.gemma3_name), std::nullopt);
    EXPECT_FALSE(tok->IsSpecial(t.id));
  }
  EXPECT_EQ(tok->Encode("x<start_function_call>ab<escape>"), (Ids{3, 48, 55, 52}));
  EXPECT_EQ(tok->Decode(Ids{48, 55, 52}), "<start_function_call>ab<escape>");

  // Deriving twice fails: id 46 is no longer <unused40>.
  auto twice = MakeFunctionGemmaTokenizerJson(*json, "derived.json");
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().message(),
            "derived.json: added_tokens: id 46 is \"<start_function_declaration>\", expected "
            "\"<unused40>\"");
}

TEST(FunctionGemmaVocab, ErrorsNameTheField) {
  // The handmade tokenizer has no ids 46..52 among its added tokens.
  auto missing = MakeFunctionGemmaTokenizerJson(testing::MiniTokenizerJson().dump(), "mini.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), "mini.json: added_tokens: no entry with id 46");

  auto bad = MakeFunctionGemmaTokenizerJson("{\"model\": ", "cut.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message().rfind("cut.json: invalid JSON", 0), 0u) << bad.error().message();

  Json wrong_id = SmallGemmaLikeJson();
  wrong_id["model"]["vocab"]["<unused41>"] = 60;
  auto vocab = MakeFunctionGemmaTokenizerJson(wrong_id.dump(), "small.json");
  ASSERT_FALSE(vocab.ok());
  EXPECT_EQ(vocab.error().message(), "small.json: model.vocab: '<unused41>' is not id 47");

  Json taken = SmallGemmaLikeJson();
  taken["model"]["vocab"]["<escape>"] = 61;
  auto present = MakeFunctionGemmaTokenizerJson(taken.dump(), "small.json");
  ASSERT_FALSE(present.ok());
  EXPECT_EQ(present.error().message(), "small.json: model.vocab: '<escape>' is already present");
}

// The real FunctionGemma tokenizer, derived from the npm Gemma 3 one.
TEST(FunctionGemmaVocab, ControlTokensAreAtomicInTheDerivedTokenizer) {
  const Tokenizer* fg = testing::FunctionGemmaTokenizer();
  ASSERT_NE(fg, nullptr);
  EXPECT_EQ(fg->vocab_size(), 262145);
  for (const FunctionGemmaControlToken& t : kFunctionGemmaControlTokens) {
    EXPECT_EQ(fg->Encode(t.name), (Ids{t.id})) << t.name;
    EXPECT_EQ(fg->TokenId(t.name), t.id) << t.name;
    EXPECT_EQ(fg->IdToToken(t.id), t.name);
    EXPECT_EQ(fg->Decode(Ids{t.id}), t.name);
    EXPECT_EQ(fg->TokenId(t.gemma3_name), std::nullopt);
    EXPECT_FALSE(fg->IsSpecial(t.id));  // as in Gemma 3's added tokens
  }
  const std::string call =
      "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>";
  const Ids ids = fg->Encode(call);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids.front(), 48);
  EXPECT_EQ(ids.back(), 49);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 52), 2);
  EXPECT_EQ(fg->Decode(ids), call);
}

}  // namespace
}  // namespace fgnet
