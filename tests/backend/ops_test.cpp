// Row-wise and elementwise kernels against the scalar references, on every SIMD target.

#include "backend/cpu/ops.h"

#include <cmath>
#include <numbers>
#include <vector>

#include "backend/cpu/reference.h"
#include "test_support.h"

namespace fgnet::cpu {
namespace {

using testing::RandomMatrix;
using testing::RandomVector;

class OpsTest : public testing::PerTarget {};
FGNET_INSTANTIATE_PER_TARGET(OpsTest);

constexpr std::size_t kLengths[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 256, 640, 1001};

void ExpectRelClose(const std::vector<float>& a, const std::vector<float>& b, double rel,
                    double abs, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_LE(std::fabs(a[i] - b[i]), rel * std::fabs(b[i]) + abs)
        << what << " at " << i << " of " << a.size() << ": " << a[i] << " vs " << b[i];
  }
}

TEST_P(OpsTest, RMSNormMatchesReference) {
  Philox rng(1);
  for (std::size_t dim : kLengths) {
    for (std::size_t rows : {1, 3}) {
      const std::vector<float> x = RandomVector(rng, rows * dim, -50.0f, 50.0f);
      const std::vector<float> scale = RandomVector(rng, dim, 0.5f, 1.5f);
      std::vector<float> y(rows * dim), ref(rows * dim);
      RMSNorm(x.data(), rows, dim, scale.data(), 1e-6f, y.data());
      reference::RMSNorm(x.data(), rows, dim, scale.data(), 1e-6f, ref.data());
      ExpectRelClose(y, ref, 2e-6, 1e-30, "RMSNorm");
      // In place.
      std::vector<float> z = x;
      RMSNorm(z.data(), rows, dim, scale.data(), 1e-6f, z.data());
      ExpectRelClose(z, ref, 2e-6, 1e-30, "RMSNorm in place");
    }
  }
}

TEST_P(OpsTest, RMSNormAddToMatchesReference) {
  Philox rng(2);
  for (std::size_t dim : kLengths) {
    const std::vector<float> x = RandomVector(rng, 2 * dim, -3.0f, 3.0f);
    const std::vector<float> scale = RandomVector(rng, dim, 0.5f, 1.5f);
    std::vector<float> y = RandomVector(rng, 2 * dim, -3.0f, 3.0f);
    std::vector<float> ref = y;
    RMSNormAddTo(x.data(), 2, dim, scale.data(), 1e-6f, y.data());
    reference::RMSNormAddTo(x.data(), 2, dim, scale.data(), 1e-6f, ref.data());
    ExpectRelClose(y, ref, 0.0, 2e-6 * 8, "RMSNormAddTo");
  }
}

TEST_P(OpsTest, RMSNormOfZerosIsZero) {
  std::vector<float> x(64, 0.0f), scale(64, 1.0f), y(64, 1.0f);
  RMSNorm(x.data(), 1, 64, scale.data(), 1e-6f, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST_P(OpsTest, RoPEMatchesReferenceExactly) {
  Philox rng(3);
  for (std::size_t head_dim : {2, 6, 16, 34, 64, 256}) {
    for (std::size_t heads : {1, 3}) {
      const std::size_t rows = 5;
      const std::size_t half = head_dim / 2;
      std::vector<float> inv(half);
      RopeInvFreq(10000.0, 1.0, head_dim, inv.data());
      std::vector<float> cos(rows * half), sin(rows * half);
      RopeTable(inv.data(), half, 1000, rows, cos.data(), sin.data());
      std::vector<float> x = RandomVector(rng, rows * heads * head_dim, -4.0f, 4.0f);
      std::vector<float> ref = x;
      RoPE(x.data(), rows, heads, head_dim, cos.data(), sin.data());
      reference::RoPE(ref.data(), rows, heads, head_dim, cos.data(), sin.data());
      // Same operations in the same order: bit-identical.
      ExpectRelClose(x, ref, 0.0, 0.0, "RoPE");
    }
  }
}

TEST_P(OpsTest, RopeTablesFollowTheFloat32Recipe) {
  // inv_freq = 1 / theta^(f32(2i) / f32(d)) in f32; angle = f32(pos) * inv_freq in f32.
  const std::size_t head_dim = 256, half = 128;
  std::vector<float> inv(half);
  RopeInvFreq(1'000'000.0, 1.0, head_dim, inv.data());
  EXPECT_EQ(inv[0], 1.0f);
  for (std::size_t i = 0; i < half; ++i) {
    const double expected = std::pow(1e6, -static_cast<double>(2 * i) / head_dim);
    EXPECT_NEAR(inv[i], expected, 1e-6 * expected) << i;
  }
  std::vector<float> scaled(half);
  RopeInvFreq(1'000'000.0, 8.0, head_dim, scaled.data());
  for (std::size_t i = 0; i < half; ++i) EXPECT_EQ(scaled[i], inv[i] / 8.0f);

  const std::int64_t pos = 12345;
  std::vector<float> cos(half), sin(half);
  RopeTable(inv.data(), half, pos, 1, cos.data(), sin.data());
  for (std::size_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * inv[i];  // rounded to f32 first
    EXPECT_EQ(cos[i], static_cast<float>(std::cos(static_cast<double>(angle)))) << i;
    EXPECT_EQ(sin[i], static_cast<float>(std::sin(static_cast<double>(angle)))) << i;
  }
  // Position 0: identity rotation.
  RopeTable(inv.data(), half, 0, 1, cos.data(), sin.data());
  for (std::size_t i = 0; i < half; ++i) {
    EXPECT_EQ(cos[i], 1.0f);
    EXPECT_EQ(sin[i], 0.0f);
  }
}

TEST_P(OpsTest, GeluTanhMulMatchesReference) {
  Philox rng(4);
  for (std::size_t n : kLengths) {
    const std::vector<float> gate = RandomVector(rng, n, -12.0f, 12.0f);
    const std::vector<float> up = RandomVector(rng, n, -3.0f, 3.0f);
    std::vector<float> y(n), ref(n);
    GeluTanhMul(gate.data(), up.data(), n, y.data());
    reference::GeluTanhMul(gate.data(), up.data(), n, ref.data());
    // gelu(x) for x << 0 is a tiny difference of nearly equal terms: absolute tolerance.
    ExpectRelClose(y, ref, 1e-5, 1e-6, "GeluTanhMul");
    // In place over gate.
    std::vector<float> z = gate;
    GeluTanhMul(z.data(), up.data(), n, z.data());
    ExpectRelClose(z, y, 0.0, 0.0, "GeluTanhMul in place");
  }
}

TEST_P(OpsTest, SoftmaxMatchesReference) {
  Philox rng(5);
  for (std::size_t n : kLengths) {
    for (float range : {1.0f, 30.0f, 300.0f}) {
      std::vector<float> x = RandomVector(rng, n, -range, range);
      std::vector<float> ref = x;
      Softmax(x.data(), n);
      reference::Softmax(ref.data(), n);
      ExpectRelClose(x, ref, 1e-5, 1e-12, "Softmax");
      double sum = 0.0;
      for (float v : x) sum += v;
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
  }
}

TEST_P(OpsTest, SoftcapMatchesReference) {
  Philox rng(6);
  for (std::size_t n : kLengths) {
    std::vector<float> x = RandomVector(rng, n, -200.0f, 200.0f);
    std::vector<float> ref = x;
    Softcap(x.data(), n, 30.0f);
    reference::Softcap(ref.data(), n, 30.0f);
    ExpectRelClose(x, ref, 1e-5, 1e-6, "Softcap");
    for (float v : x) EXPECT_LE(std::fabs(v), 30.0f);
  }
}

TEST_P(OpsTest, EmbedRowsIsExactForEveryDtype) {
  Philox rng(7);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (std::size_t cols : {1, 7, 16, 33, 640}) {
      const auto table = RandomMatrix(rng, dtype, 50, cols);
      const std::vector<std::int32_t> ids = {0, 49, 7, 7, 13};
      const float scale = std::sqrt(static_cast<float>(cols));
      std::vector<float> y(ids.size() * cols), ref(ids.size() * cols);
      EmbedRows(table.view(), ids, scale, y.data());
      reference::EmbedRows(table.view(), ids, scale, ref.data());
      ExpectRelClose(y, ref, 0.0, 0.0, "EmbedRows");
    }
  }
}

TEST_P(OpsTest, EmbedRowsDecodesQuantizedRowsExactly) {
  Philox rng(17);
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K}) {
    for (std::size_t blocks : {1, 3}) {
      const std::size_t cols = blocks * DTypeBlockElements(dtype);
      const auto table = RandomMatrix(rng, dtype, 41, cols, 2.0f);
      const std::vector<std::int32_t> ids = {0, 40, 7, 7, 13};
      for (float scale : {1.0f, std::sqrt(static_cast<float>(cols))}) {
        std::vector<float> y(ids.size() * cols), ref(ids.size() * cols);
        EmbedRows(table.view(), ids, scale, y.data());
        reference::EmbedRows(table.view(), ids, scale, ref.data());
        ExpectRelClose(y, ref, 0.0, 0.0, DTypeName(dtype).data());
        // The same values DequantizeRow gives.
        if (scale == 1.0f) {
          std::vector<float> row(cols);
          DequantizeRow(dtype, table.blocks.data() + 13 * DTypeRowBytes(dtype, cols), cols,
                        row.data());
          for (std::size_t i = 0; i < cols; ++i) ASSERT_EQ(y[4 * cols + i], row[i]) << i;
        }
      }
    }
  }
}

TEST_P(OpsTest, DotMatchesReference) {
  Philox rng(8);
  for (std::size_t n : kLengths) {
    const std::vector<float> a = RandomVector(rng, n);
    const std::vector<float> b = RandomVector(rng, n);
    EXPECT_NEAR(Dot(a.data(), b.data(), n), reference::Dot(a.data(), b.data(), n),
                1e-6 * std::sqrt(static_cast<double>(n)) * n)
        << n;
  }
}

}  // namespace
}  // namespace fgnet::cpu
