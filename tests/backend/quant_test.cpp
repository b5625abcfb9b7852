// The block layouts (hand-built blocks decode to known values), the quantizers' round-trip error
// and determinism, and the row conversions of the float types.

#include "backend/cpu/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensor/dtype.h"
#include "util/rng.h"

namespace fgnet::cpu {
namespace {

void PutHalf(std::uint8_t* p, float v) {
  const std::uint16_t h = F32ToF16(v);
  std::memcpy(p, &h, 2);
}

std::vector<float> Decode(DType type, const std::vector<std::uint8_t>& bytes) {
  const std::size_t n = bytes.size() / DTypeBlockBytes(type) * DTypeBlockElements(type);
  std::vector<float> out(n);
  DequantizeRow(type, bytes.data(), n, out.data());
  return out;
}

// Roughly Gaussian values (sum of uniforms) with a few outliers, as weights look.
std::vector<float> WeightLike(Philox& rng, std::size_t n, float stddev) {
  std::vector<float> v(n);
  for (float& x : v) {
    float s = 0.0f;
    for (int i = 0; i < 4; ++i) s += rng.NextFloat() - 0.5f;
    x = s * stddev * std::sqrt(3.0f);
    if (rng.NextFloat() < 0.01f) x *= 6.0f;
  }
  return v;
}

TEST(QuantLayoutTest, BlockSizesMatchTheDTypes) {
  EXPECT_EQ(DTypeBlockBytes(DType::kQ8_0), 34u);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ4_0), 18u);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ4_K), 144u);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ6_K), 210u);
  EXPECT_EQ(q6_k::kD + 2, DTypeBlockBytes(DType::kQ6_K));
  EXPECT_EQ(q4_k::kQs + 128, DTypeBlockBytes(DType::kQ4_K));
}

TEST(QuantLayoutTest, HalfToFloatMatchesF16ToF32ForEveryValue) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float a = HalfToFloat(static_cast<std::uint16_t>(h));
    const float b = F16ToF32(static_cast<std::uint16_t>(h));
    std::uint32_t ba, bb;
    std::memcpy(&ba, &a, 4);
    std::memcpy(&bb, &b, 4);
    ASSERT_EQ(ba, bb) << "half bits " << h;
  }
}

TEST(QuantLayoutTest, Q8_0HandBuiltBlock) {
  std::vector<std::uint8_t> b(34);
  PutHalf(b.data(), 0.5f);
  for (int i = 0; i < 32; ++i)
    b[2 + i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(i - 16));
  const std::vector<float> y = Decode(DType::kQ8_0, b);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * static_cast<float>(i - 16)) << i;
}

TEST(QuantLayoutTest, Q4_0HandBuiltBlockLowNibblesFirst) {
  std::vector<std::uint8_t> b(18);
  PutHalf(b.data(), 0.25f);
  // Byte i: low nibble i, high nibble 15 - i.
  for (int i = 0; i < 16; ++i) b[2 + i] = static_cast<std::uint8_t>(i | (15 - i) << 4);
  const std::vector<float> y = Decode(DType::kQ4_0, b);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], 0.25f * static_cast<float>(i - 8)) << i;
    EXPECT_EQ(y[16 + i], 0.25f * static_cast<float>(15 - i - 8)) << 16 + i;
  }
}

TEST(QuantLayoutTest, Q4KScalePackingRoundTripsAndMatchesTheBitLayout) {
  const int sc[8] = {1, 2, 63, 17, 33, 48, 5, 62};
  const int m[8] = {60, 0, 31, 32, 16, 63, 47, 9};
  std::uint8_t packed[12] = {};
  PackQ4KScalesMins(sc, m, packed);
  for (int j = 0; j < 8; ++j) {
    int s2, m2;
    UnpackQ4KScaleMin(packed, j, &s2, &m2);
    EXPECT_EQ(s2, sc[j]) << j;
    EXPECT_EQ(m2, m[j]) << j;
  }
  // Sub-block 4: low 4 bits of its scale in byte 8's low nibble, top 2 bits in byte 0's top bits.
  EXPECT_EQ(packed[8] & 15, 33 & 15);
  EXPECT_EQ(packed[0] >> 6, 33 >> 4);
  EXPECT_EQ(packed[0] & 63, 1);
  // Sub-block 5's min: byte 9's high nibble and byte 5's top bits.
  EXPECT_EQ(packed[9] >> 4, 63 & 15);
  EXPECT_EQ(packed[5] >> 6, 63 >> 4);
}

TEST(QuantLayoutTest, Q4_KHandBuiltBlock) {
  std::vector<std::uint8_t> b(144);
  PutHalf(b.data() + q4_k::kD, 0.5f);
  PutHalf(b.data() + q4_k::kDmin, 0.25f);
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = 1 + 7 * j;  // 1 .. 50, past 15 from j = 3 on (uses the high bits)
    m[j] = 60 - 5 * j;
  }
  PackQ4KScalesMins(sc, m, b.data() + q4_k::kScales);
  // Byte l of group g: low nibble l % 16, high nibble (l + g) % 16.
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 32; ++l) {
      b[q4_k::kQs + 32 * g + l] = static_cast<std::uint8_t>((l % 16) | ((l + g) % 16) << 4);
    }
  }
  const std::vector<float> y = Decode(DType::kQ4_K, b);
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 32; ++l) {
      const int j0 = 2 * g, j1 = 2 * g + 1;
      const float lo = (0.5f * sc[j0]) * static_cast<float>(l % 16) - 0.25f * m[j0];
      const float hi = (0.5f * sc[j1]) * static_cast<float>((l + g) % 16) - 0.25f * m[j1];
      EXPECT_EQ(y[64 * g + l], lo) << "element " << 64 * g + l;
      EXPECT_EQ(y[64 * g + 32 + l], hi) << "element " << 64 * g + 32 + l;
    }
  }
}

TEST(QuantLayoutTest, Q6_KHandBuiltBlock) {
  // Element e gets q = e % 64 (so every 6-bit value appears), sub-block j scale j - 8.
  std::vector<std::uint8_t> b(210, 0);
  for (int e = 0; e < 256; ++e) {
    const int q = e % 64;
    const int h = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
    std::uint8_t& low = b[q6_k::kQl + 64 * h + l + (quarter % 2) * 32];
    low = static_cast<std::uint8_t>(low | (q & 15) << (quarter / 2 * 4));
    std::uint8_t& high = b[q6_k::kQh + 32 * h + l];
    high = static_cast<std::uint8_t>(high | (q >> 4) << (2 * quarter));
  }
  for (int j = 0; j < 16; ++j) {
    b[q6_k::kScales + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(j - 8));
  }
  PutHalf(b.data() + q6_k::kD, 0.125f);
  const std::vector<float> y = Decode(DType::kQ6_K, b);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 16;
    const float want = (0.125f * static_cast<float>(j - 8)) * static_cast<float>(e % 64 - 32);
    EXPECT_EQ(y[e], want) << "element " << e;
  }
}

TEST(QuantLayoutTest, Q6_KFieldsAsGgmlPlacesThem) {
  // Element 0: ql[0] low nibble, qh[0] bits 0-1, scale 0. Element 32: ql[32] low, qh[0] bits
  // 2-3, scale 2. Element 64: ql[0] high, qh[0] bits 4-5, scale 4. Element 96: ql[32] high,
  // qh[0] bits 6-7, scale 6. Element 128: ql[64], qh[32], scale 8.
  std::vector<std::uint8_t> b(210, 0);
  b[q6_k::kQl + 0] = 0x21;   // element 0 low 1, element 64 low 2
  b[q6_k::kQl + 32] = 0x43;  // element 32 low 3, element 96 low 4
  b[q6_k::kQh + 0] = 0xE4;   // 0b11'10'01'00: high bits 0, 1, 2, 3 for elements 0, 32, 64, 96
  b[q6_k::kQl + 64] = 0x05;
  b[q6_k::kQh + 32] = 0x03;
  for (int j = 0; j < 16; ++j) b[q6_k::kScales + j] = static_cast<std::uint8_t>(j + 1);
  PutHalf(b.data() + q6_k::kD, 1.0f);
  const std::vector<float> y = Decode(DType::kQ6_K, b);
  EXPECT_EQ(y[0], 1.0f * (1 + 0 * 16 - 32));
  EXPECT_EQ(y[32], 3.0f * (3 + 1 * 16 - 32));
  EXPECT_EQ(y[64], 5.0f * (2 + 2 * 16 - 32));
  EXPECT_EQ(y[96], 7.0f * (4 + 3 * 16 - 32));
  EXPECT_EQ(y[128], 9.0f * (5 + 3 * 16 - 32));
  EXPECT_EQ(y[1], 1.0f * (0 - 32));
  EXPECT_EQ(y[16], 2.0f * (0 - 32));
}

double RelativeRmsError(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    err += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
    ref += static_cast<double>(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

struct RoundTripCase {
  DType type;
  double max_relative_rms;  // measured value plus a margin
  double max_relative_abs;  // largest |error| over the largest |x|
};

TEST(QuantRoundTripTest, ErrorWithinBoundsPerType) {
  // Measured: Q8_0 0.0075 / 0.0039, Q4_0 0.121 / 0.062, Q4_K 0.084 / 0.046, Q6_K 0.022 / 0.014.
  const RoundTripCase cases[] = {{DType::kQ8_0, 0.009, 0.005}, {DType::kQ4_0, 0.14, 0.075},
                                 {DType::kQ4_K, 0.095, 0.055}, {DType::kQ6_K, 0.027, 0.017},
                                 {DType::kBF16, 0.004, 0.004}, {DType::kF16, 0.001, 0.001},
                                 {DType::kF32, 0.0, 0.0}};
  for (const RoundTripCase& c : cases) {
    Philox rng(11);
    const std::size_t n = 256 * 64;
    const std::vector<float> x = WeightLike(rng, n, 0.02f);
    std::vector<std::uint8_t> bytes(DTypeRowBytes(c.type, n));
    QuantizeRow(c.type, x.data(), n, bytes.data());
    std::vector<float> y(n);
    DequantizeRow(c.type, bytes.data(), n, y.data());
    const double rel = RelativeRmsError(x, y);
    double amax = 0, max_err = 0;
    for (std::size_t i = 0; i < n; ++i) {
      amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
      max_err = std::max(max_err, std::fabs(static_cast<double>(x[i]) - y[i]));
    }
    std::printf("%-5s relative RMS error %.5f, max |error| / max |x| %.5f\n",
                DTypeName(c.type).data(), rel, max_err / amax);
    EXPECT_LE(rel, c.max_relative_rms) << DTypeName(c.type);
    EXPECT_LE(max_err / amax, c.max_relative_abs) << DTypeName(c.type);
  }
}

TEST(QuantRoundTripTest, KQuantsBeatTheSimpleTypesOfFewerBits) {
  // Q4_K (4.5 bits) must be more accurate than Q4_0 (4.5 bits) and Q6_K (6.5 bits) more than
  // both: a quantizer that loses its search would fail this.
  Philox rng(3);
  const std::size_t n = 256 * 32;
  const std::vector<float> x = WeightLike(rng, n, 1.0f);
  double err[4];
  const DType types[4] = {DType::kQ4_0, DType::kQ4_K, DType::kQ6_K, DType::kQ8_0};
  for (int t = 0; t < 4; ++t) {
    std::vector<std::uint8_t> bytes(DTypeRowBytes(types[t], n));
    QuantizeRow(types[t], x.data(), n, bytes.data());
    std::vector<float> y(n);
    DequantizeRow(types[t], bytes.data(), n, y.data());
    err[t] = RelativeRmsError(x, y);
  }
  EXPECT_LT(err[1], err[0]);
  EXPECT_LT(err[2], err[1] / 3);
  EXPECT_LT(err[3], err[2]);
}

TEST(QuantRoundTripTest, ExactValuesSurvive) {
  // Blocks whose values are integers times the scale the quantizer picks come back exactly.
  {
    std::vector<float> x(64);
    for (int i = 0; i < 64; ++i) x[i] = static_cast<float>((i * 37) % 255 - 127) / 64.0f;
    x[0] = 127.0f / 64.0f;  // amax of each block: d = 1/64
    x[32] = -127.0f / 64.0f;
    std::vector<std::uint8_t> bytes(DTypeRowBytes(DType::kQ8_0, 64));
    QuantizeRow(DType::kQ8_0, x.data(), 64, bytes.data());
    std::vector<float> y(64);
    DequantizeRow(DType::kQ8_0, bytes.data(), 64, y.data());
    for (int i = 0; i < 64; ++i) ASSERT_EQ(y[i], x[i]) << "Q8_0 element " << i;
  }
  {
    std::vector<float> x(64);
    for (int i = 0; i < 64; ++i) x[i] = static_cast<float>((i * 5) % 16 - 8) * 0.25f;
    x[7] = -2.0f;  // the value of largest magnitude of each block: d = 0.25
    x[40] = -2.0f;
    std::vector<std::uint8_t> bytes(DTypeRowBytes(DType::kQ4_0, 64));
    QuantizeRow(DType::kQ4_0, x.data(), 64, bytes.data());
    std::vector<float> y(64);
    DequantizeRow(DType::kQ4_0, bytes.data(), 64, y.data());
    for (int i = 0; i < 64; ++i) ASSERT_EQ(y[i], x[i]) << "Q4_0 element " << i;
  }
}

TEST(QuantRoundTripTest, ConstantBlocks) {
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K}) {
    for (float v : {0.0f, 0.75f, -3.0f}) {
      const std::vector<float> c(256, v);
      std::vector<std::uint8_t> bytes(DTypeRowBytes(t, 256));
      QuantizeRow(t, c.data(), 256, bytes.data());
      std::vector<float> y(256);
      DequantizeRow(t, bytes.data(), 256, y.data());
      for (int i = 0; i < 256; ++i) {
        ASSERT_NEAR(y[i], v, std::fabs(v) * 1e-3) << DTypeName(t) << " constant " << v;
      }
    }
  }
}

TEST(QuantRoundTripTest, Deterministic) {
  Philox rng(8);
  const std::size_t n = 512;
  const std::vector<float> x = WeightLike(rng, n, 0.1f);
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K}) {
    std::vector<std::uint8_t> a(DTypeRowBytes(t, n), 0xAA), b(DTypeRowBytes(t, n), 0x55);
    QuantizeRow(t, x.data(), n, a.data());
    QuantizeRow(t, x.data(), n, b.data());
    EXPECT_EQ(a, b) << DTypeName(t);
  }
}

TEST(QuantRoundTripTest, HugeValuesGiveFiniteScales) {
  std::vector<float> x(256, 0.0f);
  x[3] = 3e38f;
  x[200] = -1e9f;
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K}) {
    std::vector<std::uint8_t> bytes(DTypeRowBytes(t, 256));
    QuantizeRow(t, x.data(), 256, bytes.data());
    std::vector<float> y(256);
    DequantizeRow(t, bytes.data(), 256, y.data());
    for (float v : y) ASSERT_TRUE(std::isfinite(v)) << DTypeName(t);
  }
}

TEST(QuantDeathTest, RowLengthMustBeAMultipleOfTheBlock) {
  std::vector<float> x(48);
  std::vector<std::uint8_t> bytes(64);
  EXPECT_DEATH(QuantizeRow(DType::kQ8_0, x.data(), 48, bytes.data()), "");
  EXPECT_DEATH(DequantizeRow(DType::kQ4_K, bytes.data(), 32, x.data()), "");
}

}  // namespace
}  // namespace fgnet::cpu
