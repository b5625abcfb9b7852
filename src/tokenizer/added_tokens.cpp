#include "tokenizer/added_tokens.h"

#include <algorithm>

namespace fgnet::tokenizer_internal {

std::int32_t AddedTokenMatcher::Child(std::int32_t node, unsigned char byte) const {
  const auto& edges = nodes_[static_cast<std::size_t>(node)].edges;
  auto it = std::lower_bound(edges.begin(), edges.end(), byte,
                             [](const auto& e, unsigned char b) { return e.first < b; });
  if (it == edges.end() || it->first != byte) return -1;
  return it->second;
}

void AddedTokenMatcher::Add(std::string_view pattern, std::int32_t id) {
  if (pattern.empty()) return;
  std::int32_t node = 0;
  for (const char ch : pattern) {
    const auto byte = static_cast<unsigned char>(ch);
    std::int32_t next = Child(node, byte);
    if (next < 0) {
      next = static_cast<std::int32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& edges = nodes_[static_cast<std::size_t>(node)].edges;
      auto it = std::lower_bound(edges.begin(), edges.end(), byte,
                                 [](const auto& e, unsigned char b) { return e.first < b; });
      edges.insert(it, {byte, next});
    }
    node = next;
  }
  nodes_[static_cast<std::size_t>(node)].token = id;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

std::int32_t AddedTokenMatcher::LongestAt(std::string_view text, std::size_t pos,
                                          std::size_t* end) const {
  std::int32_t best = -1;
  std::int32_t node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    node = Child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    const std::int32_t token = nodes_[static_cast<std::size_t>(node)].token;
    if (token >= 0) {
      best = token;
      *end = i + 1;
    }
  }
  return best;
}

}  // namespace fgnet::tokenizer_internal
