// StreamDecoder on the handmade tokenizer (mini_tokenizer.h); the parity test also streams every
// corpus line of the real tokenizers.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "mini_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace fgnet {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";
constexpr std::int32_t kEos = 1, kA = 261, kAB = 264, kSpaceA = 267, kNewline = 269,
                       kStartOfTurn = 271;
constexpr std::int32_t Byte(int b) { return 4 + b; }

const Tokenizer& Mini() {
  static const Tokenizer tok = [] {
    auto t = Tokenizer::FromJson(testing::MiniTokenizerJson().dump(), "mini.json");
    EXPECT_TRUE(t.ok()) << t.error().message();
    return std::move(t).value();
  }();
  return tok;
}

std::vector<std::string> PushAll(StreamDecoder* stream, const std::vector<std::int32_t>& ids) {
  std::vector<std::string> out;
  for (const std::int32_t id : ids) out.push_back(stream->Push(id));
  return out;
}

std::string StreamAll(const Tokenizer& tok, const std::vector<std::int32_t>& ids, bool skip) {
  StreamDecoder stream(tok, skip);
  std::string text;
  for (const std::int32_t id : ids) text += stream.Push(id);
  return text + stream.Flush();
}

TEST(StreamDecoder, EmitsACharacterOnceItsBytesAreComplete) {
  StreamDecoder stream(Mini());
  EXPECT_EQ(PushAll(&stream, {Byte(0xE4), Byte(0xB8), Byte(0xAD), kSpaceA, kAB}),
            (std::vector<std::string>{"", "", "中", " a", "ab"}));
  EXPECT_EQ(stream.Flush(), "");
}

TEST(StreamDecoder, UnfinishedCharacterBecomesReplacementCharacters) {
  const std::vector<std::int32_t> ids = {Byte(0xE4), Byte(0xB8), kA};
  StreamDecoder stream(Mini());
  EXPECT_EQ(PushAll(&stream, ids), (std::vector<std::string>{"", "", kFffd + kFffd + "a"}));
  EXPECT_EQ(Mini().Decode(ids), kFffd + kFffd + "a");
  EXPECT_EQ(stream.Push(Byte(0xF0)), "");
  EXPECT_EQ(stream.Flush(), kFffd);
  EXPECT_EQ(stream.Flush(), "");
}

TEST(StreamDecoder, InvalidRunIsReplacedByteByByteLikeDecode) {
  // C3 followed by 41 is invalid; the rest of the run stays invalid, as Decode treats the run as
  // a whole.
  const std::vector<std::int32_t> ids = {Byte(0xC3), Byte(0x41), Byte(0xC3), Byte(0xA9), kA};
  StreamDecoder stream(Mini());
  EXPECT_EQ(PushAll(&stream, ids),
            (std::vector<std::string>{"", kFffd + kFffd, kFffd, kFffd, "a"}));
  EXPECT_EQ(Mini().Decode(ids), kFffd + kFffd + kFffd + kFffd + "a");
}

TEST(StreamDecoder, DocumentedDifferenceWhenARunTurnsInvalidAfterACompleteCharacter) {
  const std::vector<std::int32_t> ids = {Byte(0x41), Byte(0xFF)};
  StreamDecoder stream(Mini());
  EXPECT_EQ(PushAll(&stream, ids), (std::vector<std::string>{"A", kFffd}));
  EXPECT_EQ(Mini().Decode(ids), kFffd + kFffd);  // the whole run is invalid for Decode
}

TEST(StreamDecoder, SkipsSpecialTokensAndUnknownIdsLikeDecode) {
  const std::vector<std::int32_t> ids = {Byte(0xE4), kEos, Byte(0xB8), Byte(0xAD), 999999, -5};
  for (const bool skip : {false, true}) {
    EXPECT_EQ(StreamAll(Mini(), ids, skip), Mini().Decode(ids, skip)) << "skip=" << skip;
  }
  EXPECT_EQ(Mini().Decode(ids, true), "中");
  EXPECT_EQ(Mini().Decode(ids, false), kFffd + "<eos>" + kFffd + kFffd);
}

// Random mixtures of text tokens, special tokens and complete characters spelled in byte tokens:
// the stream's concatenation equals Decode.
TEST(StreamDecoder, ConcatenationEqualsDecodeOnRandomStreams) {
  const std::vector<std::string> chars = {"中", "😀", "é", "\n", "𝔸", "A"};
  const std::vector<std::int32_t> tokens = {kA, kAB, kSpaceA, kNewline, 260, 266};
  const std::vector<std::int32_t> specials = {0, kEos, 2, 3, kStartOfTurn};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<std::int32_t> ids;
    const int n = 1 + static_cast<int>(rng() % 30);
    for (int k = 0; k < n; ++k) {
      switch (rng() % 3) {
        case 0:
          for (const char c : chars[rng() % chars.size()]) {
            ids.push_back(Byte(static_cast<unsigned char>(c)));
          }
          break;
        case 1:
          ids.push_back(tokens[rng() % tokens.size()]);
          break;
        default:
          ids.push_back(specials[rng() % specials.size()]);
      }
    }
    for (const bool skip : {false, true}) {
      ASSERT_EQ(StreamAll(Mini(), ids, skip), Mini().Decode(ids, skip))
          << "trial " << trial << " skip_special=" << skip;
    }
  }
}

}  // namespace
}  // namespace fgnet
