#include "tokenizer/added_tokens.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fgnet::tokenizer_internal {
namespace {

// Splits `text` and renders the result as "text|[id]|text...".
std::string Render(const AddedTokenMatcher& m, std::string_view text) {
  std::string out;
  m.Split(
      text,
      [&](std::string_view t) {
        EXPECT_FALSE(t.empty());
        out.push_back('\'');
        out.append(t);
        out.push_back('\'');
      },
      [&](std::int32_t id) {
        out.push_back('[');
        out.append(std::to_string(id));
        out.push_back(']');
      });
  return out;
}

TEST(AddedTokenMatcher, LeftmostThenLongest) {
  AddedTokenMatcher m;
  m.Add("ab", 1);
  m.Add("abc", 2);
  m.Add("bcd", 3);
  EXPECT_EQ(Render(m, "abcd"), "[2]'d'");  // at 0 both ab and abc match: longest wins
  EXPECT_EQ(Render(m, "xbcdab"), "'x'[3][1]");
  EXPECT_EQ(Render(m, "abab"), "[1][1]");
  EXPECT_EQ(Render(m, ""), "");
  EXPECT_EQ(Render(m, "zzz"), "'zzz'");
}

TEST(AddedTokenMatcher, AnEarlierStartBeatsALongerLaterMatch) {
  AddedTokenMatcher m;
  m.Add("bc", 1);
  m.Add("abcx", 2);
  m.Add("cdefgh", 3);
  EXPECT_EQ(Render(m, "abcy"), "'a'[1]'y'");          // abcx fails, so the match starts at b
  EXPECT_EQ(Render(m, "abcdefgh"), "'a'[1]'defgh'");  // bc starts before cdefgh
}

TEST(AddedTokenMatcher, RunsOfARepeatedCharacter) {
  AddedTokenMatcher m;
  m.Add("\n", 1);
  m.Add("\n\n", 2);
  m.Add("\n\n\n", 3);
  EXPECT_EQ(Render(m, "\n\n\n\n\n\n\n"), "[3][3][1]");
  EXPECT_EQ(Render(m, "a\n\nb"), "'a'[2]'b'");
}

}  // namespace
}  // namespace fgnet::tokenizer_internal
