// Stop strings over streamed text: the generated text is cut before the first occurrence of any
// stop string, and text that might still become the start of one is held back from the stream.
// Thread-safety: one per sequence.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace fgnet {

class StopStringMatcher {
 public:
  StopStringMatcher(const Tokenizer& tokenizer, std::vector<std::string> stops);

  struct Piece {
    std::string text;      // newly releasable text
    bool stopped = false;  // a stop string was found (text ends before it)
  };
  // Adds one generated id.
  Piece Push(std::int32_t id);
  // The text held back, at the end of generation (unless stopped).
  std::string Finish();
  // All text so far, cut at a stop string.
  const std::string& text() const { return text_; }

 private:
  StreamDecoder decoder_;
  std::vector<std::string> stops_;
  std::string text_;
  std::size_t released_ = 0;
  bool stopped_ = false;
};

}  // namespace fgnet
