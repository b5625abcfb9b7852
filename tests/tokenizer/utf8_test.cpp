#include "tokenizer/utf8.h"

#include <gtest/gtest.h>

namespace fgnet::tokenizer_internal {
namespace {

TEST(Utf8, ValidCharLengthAndCodePoint) {
  std::uint32_t cp = 0;
  EXPECT_EQ(ValidCharLength("a", 0, &cp), 1);
  EXPECT_EQ(cp, 0x61u);
  EXPECT_EQ(ValidCharLength("\xC3\xA9", 0, &cp), 2);
  EXPECT_EQ(cp, 0xE9u);
  EXPECT_EQ(ValidCharLength("\xE2\x96\x81", 0, &cp), 3);
  EXPECT_EQ(cp, 0x2581u);
  EXPECT_EQ(ValidCharLength("\xF0\x9F\x98\x80", 0, &cp), 4);
  EXPECT_EQ(cp, 0x1F600u);
  EXPECT_EQ(ValidCharLength("x\xC3\xA9", 1, &cp), 2);
}

TEST(Utf8, RejectsWhatRustRejects) {
  EXPECT_EQ(ValidCharLength("\x80", 0), 0);              // stray continuation byte
  EXPECT_EQ(ValidCharLength("\xC0\xAF", 0), 0);          // overlong
  EXPECT_EQ(ValidCharLength("\xE0\x80\xAF", 0), 0);      // overlong
  EXPECT_EQ(ValidCharLength("\xED\xA0\x80", 0), 0);      // surrogate U+D800
  EXPECT_EQ(ValidCharLength("\xF4\x90\x80\x80", 0), 0);  // above U+10FFFF
  EXPECT_EQ(ValidCharLength("\xF5\x80\x80\x80", 0), 0);
  EXPECT_EQ(ValidCharLength("\xFF", 0), 0);
  EXPECT_EQ(ValidCharLength("\xE4\xB8", 0), 0);  // truncated
  EXPECT_EQ(ValidCharLength("\xC3"
                            "a",
                            0),
            0);
}

TEST(Utf8, CheckClassifiesWholeStrings) {
  EXPECT_EQ(CheckUtf8(""), Utf8State::kComplete);
  EXPECT_EQ(CheckUtf8("a\xE4\xB8\xAD"), Utf8State::kComplete);
  EXPECT_EQ(CheckUtf8("a\xE4\xB8"), Utf8State::kIncomplete);
  EXPECT_EQ(CheckUtf8("\xF0"), Utf8State::kIncomplete);
  EXPECT_EQ(CheckUtf8("\xF0\x9F\x98"), Utf8State::kIncomplete);
  EXPECT_EQ(CheckUtf8("\xE4\xB8"
                      "a"),
            Utf8State::kInvalid);
  EXPECT_EQ(CheckUtf8("\xED\xA0"), Utf8State::kInvalid);  // can only become a surrogate
  EXPECT_EQ(CheckUtf8("\xE4\xB8\xAD\xFF"), Utf8State::kInvalid);
  EXPECT_TRUE(IsValidUtf8("héllo"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));
}

}  // namespace
}  // namespace fgnet::tokenizer_internal
