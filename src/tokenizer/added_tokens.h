// Finds added tokens in raw text the way `tokenizers` does for non-normalized added tokens:
// leftmost-longest matching (among matches starting earliest, the longest wins), scanning on
// after each match. Internal to the tokenizer library.
// Thread-safety: immutable after construction; Split may run concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace fgnet::tokenizer_internal {

class AddedTokenMatcher {
 public:
  // Adds a pattern (non-empty) for token `id`; a repeated pattern keeps the latest id.
  void Add(std::string_view pattern, std::int32_t id);

  // Calls on_text(std::string_view) for each run of text between matches (never empty) and
  // on_token(std::int32_t id) for each match, in order.
  template <class OnText, class OnToken>
  void Split(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
    std::size_t start = 0;  // start of the pending text run
    std::size_t pos = 0;
    while (pos < text.size()) {
      if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
        ++pos;
        continue;
      }
      std::size_t end = 0;
      const std::int32_t id = LongestAt(text, pos, &end);
      if (id < 0) {
        ++pos;
        continue;
      }
      if (pos > start) on_text(text.substr(start, pos - start));
      on_token(id);
      pos = end;
      start = end;
    }
    if (start < text.size()) on_text(text.substr(start));
  }

  bool empty() const { return nodes_.size() <= 1; }

 private:
  struct Node {
    std::int32_t token = -1;
    std::vector<std::pair<unsigned char, std::int32_t>> edges;  // sorted by byte
  };
  // The id of the longest pattern starting at text[pos] (-1 if none); *end receives its end.
  std::int32_t LongestAt(std::string_view text, std::size_t pos, std::size_t* end) const;
  std::int32_t Child(std::int32_t node, unsigned char byte) const;

  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_byte_{};
};

}  // namespace fgnet::tokenizer_internal
