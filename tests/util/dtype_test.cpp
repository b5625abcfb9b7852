#include "tensor/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "util/rng.h"

namespace fgnet {
namespace {

TEST(DType, BF16RoundTripIsExactForBF16Values) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = BF16ToF32(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToBF16(f), h);
  }
}

TEST(DType, BF16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(F32ToBF16(1.00390625f), 0x3f80);
  EXPECT_EQ(F32ToBF16(1.01171875f), 0x3f82);
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DType, F16RoundTripIsExactForF16Values) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToF16(f), h) << std::hex << h;
  }
}

TEST(DType, F16KnownValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F32ToF16(70000.0f), 0x7c00);  // overflow to +inf
  Philox rng(3);
  for (int i = 0; i < 10000; ++i) {
    const float f = (rng.NextFloat() - 0.5f) * 100.0f;
    EXPECT_NEAR(F16ToF32(F32ToF16(f)), f, std::abs(f) * 1e-3f + 1e-7f);
  }
}

TEST(DType, SafetensorsNames) {
  EXPECT_EQ(ParseSafetensorsDType("BF16"), DType::kBF16);
  EXPECT_EQ(ParseSafetensorsDType("F32"), DType::kF32);
  EXPECT_FALSE(ParseSafetensorsDType("I64").has_value());
  EXPECT_EQ(DTypeName(DType::kF16), "F16");
}

}  // namespace
}  // namespace fgnet
