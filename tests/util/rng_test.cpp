#include "util/rng.h"

#include <gtest/gtest.h>

namespace fgnet {
namespace {

TEST(Philox, KnownAnswer) {
  // Random123's known-answer test for philox4x32-10 with counter = key = 0.
  Philox rng(0, 0);
  const auto block = rng.Block(0);
  EXPECT_EQ(block[0], 0x6627e8d5u);
  EXPECT_EQ(block[1], 0xe169c58du);
  EXPECT_EQ(block[2], 0xbc57ac4cu);
  EXPECT_EQ(block[3], 0x9b00dbd8u);
}

TEST(Philox, SeedsAndStreamsAreReproducibleAndIndependent) {
  Philox a(42, 7), b(42, 7), c(42, 8), d(43, 7);
  int same_c = 0, same_d = 0;
  for (int i = 0; i < 1000; ++i) {
    const auto va = a.NextU32();
    ASSERT_EQ(va, b.NextU32());
    same_c += va == c.NextU32();
    same_d += va == d.NextU32();
  }
  EXPECT_LT(same_c, 3);
  EXPECT_LT(same_d, 3);
}

TEST(Philox, FloatsAreUniformInUnitInterval) {
  Philox rng(1);
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const float f = rng.NextFloat();
    ASSERT_GE(f, 0.0f);
    ASSERT_LT(f, 1.0f);
    sum += f;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.01);
}

}  // namespace
}  // namespace fgnet
