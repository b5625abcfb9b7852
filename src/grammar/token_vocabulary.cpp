#include "grammar/token_vocabulary.h"

#include <algorithm>
#include <array>
#include <numeric>
#include <string_view>

#include "tokenizer/function_call.h"
#include "util/status.h"

namespace fgnet {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581
constexpr std::size_t kMaxTokenBytes = 65535;

// Control tokens that are one symbol even where a tokenizer.json does not flag them special.
constexpr std::array<std::string_view, 9> kControlTokens = {kStartOfTurn,
                                                            kEndOfTurn,
                                                            kStartFunctionDeclaration,
                                                            kEndFunctionDeclaration,
                                                            kStartFunctionCall,
                                                            kEndFunctionCall,
                                                            kStartFunctionResponse,
                                                            kEndFunctionResponse,
                                                            kEscape};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xNN>" -> NN.
std::optional<std::uint8_t> ByteFallbackValue(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return std::nullopt;
  const int hi = HexValue(token[3]);
  const int lo = HexValue(token[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<std::uint8_t>(hi * 16 + lo);
}

bool IsPlaceholder(std::string_view token) {
  if (token == "<mask>" || token == "[multimodal]") return true;
  constexpr std::string_view kUnused = "<unused";
  if (!token.starts_with(kUnused) || !token.ends_with(">")) return false;
  const std::string_view digits = token.substr(kUnused.size(), token.size() - kUnused.size() - 1);
  return !digits.empty() &&
         std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string ReplaceSpaceMarkers(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  std::size_t pos = 0;
  while (pos < token.size()) {
    if (token.substr(pos).starts_with(kSpaceMarker)) {
      out.push_back(' ');
      pos += kSpaceMarker.size();
    } else {
      out.push_back(token[pos++]);
    }
  }
  return out;
}

}  // namespace

std::shared_ptr<const TokenVocabulary> TokenVocabulary::FromTokenizer(const Tokenizer& tokenizer) {
  std::vector<Entry> entries(tokenizer.vocab_size());
  for (std::int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string_view token = tokenizer.IdToToken(id);
    Entry& e = entries[id];
    if (token.empty()) continue;
    const bool control =
        std::find(kControlTokens.begin(), kControlTokens.end(), token) != kControlTokens.end();
    if (tokenizer.IsSpecial(id) || control) {
      e.kind = TokenKind::kSymbol;
      e.text = std::string(token);
    } else if (IsPlaceholder(token)) {
      continue;
    } else if (const auto byte = ByteFallbackValue(token)) {
      e.kind = TokenKind::kText;
      e.text = std::string(1, static_cast<char>(*byte));
    } else {
      e.kind = TokenKind::kText;
      e.text = ReplaceSpaceMarkers(token);
    }
  }
  return FromEntries(entries);
}

std::shared_ptr<const TokenVocabulary> TokenVocabulary::FromEntries(
    const std::vector<Entry>& entries) {
  std::shared_ptr<TokenVocabulary> v(new TokenVocabulary());
  const std::size_t n = entries.size();
  v->kinds_.resize(n, TokenKind::kNever);
  v->symbol_of_.assign(n, -1);
  v->text_begin_.resize(n + 1);
  for (std::size_t id = 0; id < n; ++id) {
    const Entry& e = entries[id];
    TokenKind kind = e.kind;
    // Empty tokens stand for nothing; the trie keeps depths in 16 bits.
    if (e.text.empty() || e.text.size() >= kMaxTokenBytes) kind = TokenKind::kNever;
    v->text_begin_[id] = static_cast<std::uint32_t>(v->text_.size());
    if (kind == TokenKind::kNever) continue;
    // Duplicate symbol names make the first one win.
    if (kind == TokenKind::kSymbol && v->FindSymbol(e.text).has_value()) continue;
    v->kinds_[id] = kind;
    v->text_ += e.text;
    if (kind == TokenKind::kSymbol) {
      v->symbol_of_[id] = static_cast<std::int32_t>(v->symbol_tokens_.size());
      v->symbol_tokens_.push_back(static_cast<std::int32_t>(id));
    }
  }
  v->text_begin_[n] = static_cast<std::uint32_t>(v->text_.size());
  v->Finish();
  return v;
}

std::optional<std::int32_t> TokenVocabulary::FindSymbol(std::string_view name) const {
  for (std::size_t s = 0; s < symbol_tokens_.size(); ++s) {
    if (text(symbol_tokens_[s]) == name) return static_cast<std::int32_t>(s);
  }
  return std::nullopt;
}

void TokenVocabulary::Finish() {
  // Text tokens in byte order give the trie's preorder.
  std::vector<std::int32_t> order;
  for (std::int32_t id = 0; id < size(); ++id) {
    if (kinds_[id] == TokenKind::kText) order.push_back(id);
  }
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    const std::string_view ta = text(a), tb = text(b);
    return ta != tb ? ta < tb : a < b;
  });
  TokenTrie& t = trie_;
  std::vector<std::uint32_t> path;  // node index per depth - 1
  std::string_view prev;
  for (const std::int32_t id : order) {
    const std::string_view s = text(id);
    std::size_t common = 0;
    while (common < std::min({prev.size(), s.size(), path.size()}) && prev[common] == s[common]) {
      ++common;
    }
    while (path.size() > common) {
      t.nodes[path.back()].skip = static_cast<std::uint32_t>(t.nodes.size());
      path.pop_back();
    }
    for (std::size_t d = common; d < s.size(); ++d) {
      path.push_back(static_cast<std::uint32_t>(t.nodes.size()));
      t.nodes.push_back({0, static_cast<std::uint32_t>(t.token_ids.size()),
                         static_cast<std::uint16_t>(d + 1), static_cast<std::uint8_t>(s[d])});
    }
    t.token_ids.push_back(id);
    t.max_depth = std::max(t.max_depth, static_cast<int>(s.size()));
    prev = s;
  }
  while (!path.empty()) {
    t.nodes[path.back()].skip = static_cast<std::uint32_t>(t.nodes.size());
    path.pop_back();
  }
  const auto end = static_cast<std::uint32_t>(t.nodes.size());
  t.nodes.push_back({end, static_cast<std::uint32_t>(t.token_ids.size()), 0, 0});
}

}  // namespace fgnet
