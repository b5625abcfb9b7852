// TokenVocabulary from the real Gemma 3 tokenizer: how tokens are classified, that text tokens hold
// exactly what Tokenizer::Decode makes of them, and that the trie holds every text token once.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "grammar/token_vocabulary.h"
#include "grammar_test_support.h"

namespace fgnet {
namespace {

void ClassifiesGemma3Tokens() {
  const auto vocab = testing::Gemma3Vocab();
  const Tokenizer* tok = testing::Gemma3Tokenizer();
  ASSERT_NE(vocab, nullptr);
  EXPECT_EQ(vocab->size(), 262145);
  for (const std::int32_t id : {0, 1, 2, 105, 106, 262144}) {
    EXPECT_EQ(vocab->kind(id), TokenKind::kSymbol) << id;
  }
  EXPECT_EQ(vocab->text(106), "<end_of_turn>");
  EXPECT_EQ(vocab->FindSymbol("<end_of_turn>"), vocab->symbol(106));
  EXPECT_FALSE(vocab->FindSymbol("<escape>").has_value());
  for (const std::int32_t id : {3 + 1, 5, 6, 52, 104}) {  // <mask>, [multimodal], <unusedN>
    EXPECT_EQ(vocab->kind(id), TokenKind::kNever) << id << " " << tok->IdToToken(id);
  }
  EXPECT_EQ(vocab->text(*tok->TokenId("<0x41>")), "A");
  EXPECT_EQ(vocab->text(*tok->TokenId("<0x0A>")), "\n");
  EXPECT_EQ(vocab->text(*tok->TokenId("\xE2\x96\x81hello")), " hello");
  EXPECT_EQ(vocab->text(108), "\n\n");
  EXPECT_EQ(vocab->kind(168), TokenKind::kText);
  EXPECT_EQ(vocab->text(168), "<table>");
  EXPECT_EQ(vocab->text(139), "   ");
}

void TextIsWhatDecodeGives() {
  const auto vocab = testing::Gemma3Vocab();
  const Tokenizer* tok = testing::Gemma3Tokenizer();
  ASSERT_NE(vocab, nullptr);
  std::int64_t checked = 0;
  for (std::int32_t id = 0; id < vocab->size(); ++id) {
    if (vocab->kind(id) != TokenKind::kText) continue;
    const std::string_view text = vocab->text(id);
    if (!testing::IsValidUtf8(text)) continue;  // lone bytes decode to U+FFFD on their own
    const std::int32_t ids[] = {id};
    ASSERT_EQ(tok->Decode(ids), text) << id;
    ++checked;
  }
  EXPECT_GT(checked, 255000);  // all but byte tokens >= 0x80 and placeholders
}

void TrieHoldsEveryTextTokenOnce() {
  const auto vocab = testing::Gemma3Vocab();
  ASSERT_NE(vocab, nullptr);
  const TokenTrie& trie = vocab->trie();
  std::vector<int> seen(vocab->size(), 0);
  std::string path;
  for (std::int32_t i = 0; i < trie.num_nodes(); ++i) {
    const TokenTrie::Node& node = trie.nodes[i];
    ASSERT_GE(node.depth, 1);
    ASSERT_LE(static_cast<std::size_t>(node.depth), path.size() + 1) << i;
    path.resize(node.depth - 1);
    path.push_back(static_cast<char>(node.byte));
    // The subtree is exactly the following nodes that are deeper.
    ASSERT_GT(node.skip, static_cast<std::uint32_t>(i));
    ASSERT_TRUE(node.skip == static_cast<std::uint32_t>(trie.num_nodes()) ||
                trie.nodes[node.skip].depth <= node.depth);
    if (static_cast<std::uint32_t>(i + 1) < node.skip) {
      ASSERT_GT(trie.nodes[i + 1].depth, node.depth);
    }
    for (std::uint32_t k = node.token_begin; k < trie.nodes[i + 1].token_begin; ++k) {
      const std::int32_t id = trie.token_ids[k];
      ASSERT_EQ(vocab->text(id), path) << id;
      ++seen[id];
    }
  }
  for (std::int32_t id = 0; id < vocab->size(); ++id) {
    ASSERT_EQ(seen[id], vocab->kind(id) == TokenKind::kText ? 1 : 0) << id;
  }
}

// One test (one process under ctest): the Gemma 3 vocabulary takes a while to load in sanitizer
// builds. FunctionGemma's control tokens are checked in function_tools_test.cpp.
TEST(TokenVocabulary, Gemma3) {
  ASSERT_NE(testing::Gemma3Vocab(), nullptr);
  for (const auto& [name, fn] : std::initializer_list<std::pair<const char*, void (*)()>>{
           {"ClassifiesGemma3Tokens", ClassifiesGemma3Tokens},
           {"TextIsWhatDecodeGives", TextIsWhatDecodeGives},
           {"TrieHoldsEveryTextTokenOnce", TrieHoldsEveryTextTokenOnce}}) {
    SCOPED_TRACE(name);
    fn();
  }
}

}  // namespace
}  // namespace fgnet
