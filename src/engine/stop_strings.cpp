#include "engine/stop_strings.h"

#include <algorithm>

namespace fgnet {

StopStringMatcher::StopStringMatcher(const Tokenizer& tokenizer, std::vector<std::string> stops)
    : decoder_(tokenizer), stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

StopStringMatcher::Piece StopStringMatcher::Push(std::int32_t id) {
  Piece piece;
  if (stopped_) return piece;
  const std::size_t before = text_.size();
  text_ += decoder_.Push(id);
  // The earliest stop string that ends in the new text.
  std::size_t cut = std::string::npos;
  for (const std::string& s : stops_) {
    const std::size_t from = before >= s.size() - 1 ? before - (s.size() - 1) : 0;
    const std::size_t at = text_.find(s, from);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    text_.resize(cut);
    stopped_ = piece.stopped = true;
    if (cut > released_) piece.text = text_.substr(released_);
    released_ = text_.size();
    return piece;
  }
  // Hold back the longest tail that is a proper prefix of a stop string.
  std::size_t hold = 0;
  for (const std::string& s : stops_) {
    for (std::size_t n = std::min(s.size() - 1, text_.size()); n > hold; --n) {
      if (text_.compare(text_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  const std::size_t until = std::max(released_, text_.size() - hold);
  piece.text = text_.substr(released_, until - released_);
  released_ = until;
  return piece;
}

std::string StopStringMatcher::Finish() {
  if (stopped_) return {};
  text_ += decoder_.Flush();
  std::string rest = text_.substr(released_);
  released_ = text_.size();
  return rest;
}

}  // namespace fgnet
