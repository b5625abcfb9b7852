// The vocabulary as a grammar sees it: per token id either bytes of text, one special symbol
// (a control token such as <start_function_call>, <escape>, <end_of_turn> or <eos>), or nothing
// a grammar may ever produce (<unusedN>, <mask>, [multimodal], ids without a token). The text
// tokens are also arranged in a byte trie, walked once per grammar state to find the allowed
// tokens.
//
// Built once per tokenizer and shared (shared_ptr<const TokenVocabulary>) by every grammar.
// Thread-safety: immutable after construction.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace fgnet {

enum class TokenKind : std::uint8_t {
  kText,    // stands for bytes (at least one)
  kSymbol,  // one special symbol, never bytes
  kNever,   // never allowed by a grammar
};

// The text tokens' bytes in a trie, stored in preorder so that a walk is a forward scan:
// node i's parent is the closest earlier node of depth depth-1, and skipping node i's subtree
// means jumping to nodes[i].skip. The tokens whose bytes end at node i are
// token_ids[nodes[i].token_begin .. nodes[i + 1].token_begin) (a sentinel node ends the array).
struct TokenTrie {
  struct Node {
    std::uint32_t skip;         // index of the first node after this subtree
    std::uint32_t token_begin;  // into token_ids
    std::uint16_t depth;        // 1 for a token's first byte
    std::uint8_t byte;
  };
  std::vector<Node> nodes;  // preorder, plus a sentinel
  std::vector<std::int32_t> token_ids;
  int max_depth = 0;

  std::int32_t num_nodes() const { return static_cast<std::int32_t>(nodes.size()) - 1; }
};

class TokenVocabulary {
 public:
  // How tokens are classified:
  //  - byte-fallback tokens <0xNN> are that one byte;
  //  - special tokens, and FunctionGemma's control tokens (<start_function_call>, <escape>, ...,
  //    which its tokenizer.json does not flag as special) are one symbol each, named by their
  //    text;
  //  - <unusedN>, <mask> and [multimodal] (placeholders no model output should hold), empty
  //    tokens and tokens of 64 KiB or more are kNever;
  //  - every other token (added tokens such as "\n\n" or "<table>" included) is its text with
  //    U+2581 read as a space, which is what Tokenizer::Decode makes of it.
  static std::shared_ptr<const TokenVocabulary> FromTokenizer(const Tokenizer& tokenizer);

  // A vocabulary given token by token (tests, other tokenizers): kText entries hold bytes,
  // kSymbol entries the symbol's name (names must be unique), kNever entries are ignored.
  struct Entry {
    TokenKind kind = TokenKind::kNever;
    std::string text;
  };
  static std::shared_ptr<const TokenVocabulary> FromEntries(const std::vector<Entry>& entries);

  TokenVocabulary(const TokenVocabulary&) = delete;
  TokenVocabulary& operator=(const TokenVocabulary&) = delete;

  std::int32_t size() const { return static_cast<std::int32_t>(kinds_.size()); }
  TokenKind kind(std::int32_t id) const { return kinds_[id]; }
  // The bytes of a kText token, the name of a kSymbol token, "" otherwise.
  std::string_view text(std::int32_t id) const {
    return std::string_view(text_).substr(text_begin_[id], text_begin_[id + 1] - text_begin_[id]);
  }
  // The symbol index (0-based) of a kSymbol token, -1 otherwise.
  std::int32_t symbol(std::int32_t id) const { return symbol_of_[id]; }
  std::int32_t num_symbols() const { return static_cast<std::int32_t>(symbol_tokens_.size()); }
  std::int32_t symbol_token(std::int32_t symbol) const { return symbol_tokens_[symbol]; }
  std::string_view symbol_name(std::int32_t symbol) const { return text(symbol_tokens_[symbol]); }
  // The symbol named `name` (e.g. "<escape>"), if the vocabulary has it.
  std::optional<std::int32_t> FindSymbol(std::string_view name) const;
  const TokenTrie& trie() const { return trie_; }

 private:
  TokenVocabulary() = default;
  void Finish();

  std::vector<TokenKind> kinds_;
  std::string text_;
  std::vector<std::uint32_t> text_begin_;  // [size + 1]
  std::vector<std::int32_t> symbol_of_;
  std::vector<std::int32_t> symbol_tokens_;
  TokenTrie trie_;
};

}  // namespace fgnet
