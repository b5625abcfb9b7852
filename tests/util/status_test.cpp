#include "util/status.h"

#include <gtest/gtest.h>

namespace fgnet {
namespace {

Result<int> ParsePositive(int v) {
  if (v <= 0) return MakeError("value ", v, " is not positive");
  return v;
}

Result<int> Doubled(int v) {
  FGNET_ASSIGN_OR_RETURN(int x, ParsePositive(v));
  return 2 * x;
}

Status CheckBoth(int a, int b) {
  FGNET_TRY(ParsePositive(a));
  FGNET_TRY(ParsePositive(b));
  return Ok();
}

TEST(Status, ValueAndErrorPropagate) {
  EXPECT_EQ(*Doubled(4), 8);
  const auto bad = Doubled(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "value -1 is not positive");
  EXPECT_TRUE(CheckBoth(1, 2).ok());
  EXPECT_EQ(CheckBoth(1, 0).error().message(), "value 0 is not positive");
}

TEST(Status, ContextIsPrepended) {
  EXPECT_EQ(Error("bad dtype").WithContext("model.safetensors").message(),
            "model.safetensors: bad dtype");
}

TEST(StatusDeathTest, CheckPrintsBothValues) {
  EXPECT_DEATH(FGNET_CHECK_EQ(1 + 1, 3), "1 \\+ 1 == 3 \\(2 vs 3\\)");
}

}  // namespace
}  // namespace fgnet
