// The quantized weights of backend/cuda/quant_matmul.h: repacking (bit-exact against the CPU's
// dequantization; runs without a GPU), dequantization and the quantized embedding gather
// (bit-exact), the quantized products against double references and their multi-output form
// against single products, and bad matrices. PerfQuantized prints GEMV timings against the BF16
// GEMV when FGNET_CUDA_PERF=1.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/quant.h"
#include "backend/cuda/device.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/quant_matmul.h"
#include "cuda_matmul_support.h"
#include "tensor/dtype.h"

namespace fgnet::cuda {
namespace {

// A random [rows, cols] matrix quantized to `type` with the CPU's quantizer, its f32 values as the
// CPU dequantizes them, and its repacked form.
struct QuantCase {
  DType type;
  std::size_t rows, cols;
  std::vector<std::uint8_t> blocks;
  std::vector<float> values;  // [rows, cols]
  PackedQuantMatrix packed;
};

QuantCase MakeQuantCase(DType type, std::size_t rows, std::size_t cols, Uniform& rng) {
  QuantCase c{type, rows, cols, {}, {}, {}};
  const std::size_t row_bytes = DTypeRowBytes(type, cols);
  c.blocks.resize(rows * row_bytes);
  c.values.resize(rows * cols);
  for (std::size_t r = 0; r < rows; ++r) {
    std::vector<float> x = rng.Floats(cols, 0.1f);
    if (r % 7 == 3) x[r % cols] = 0.9f;  // an outlier in some blocks
    cpu::QuantizeRow(type, x.data(), cols, c.blocks.data() + r * row_bytes);
    cpu::DequantizeRow(type, c.blocks.data() + r * row_bytes, cols, c.values.data() + r * cols);
  }
  auto packed = PackQuantMatrix(type, c.blocks.data(), rows, cols);
  EXPECT_TRUE(packed.ok()) << packed.error().message();
  if (packed.ok()) c.packed = std::move(*packed);
  return c;
}

// Equal bit for bit, except that a zero may have either sign (Q4_0's (8 - 8) * d is -0 on the CPU
// for a negative d, s * 8 - m is +0 on the GPU).
bool SameValue(float a, float b) {
  return a == 0.0f ? b == 0.0f : std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

constexpr DType kQuantTypes[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K};

// Runs without a GPU: the repacked layouts hold exactly the CPU's values.
TEST(QuantPackTest, RepackedMatricesHoldTheCpusValuesBitForBit) {
  Uniform rng(7);
  for (DType type : kQuantTypes) {
    SCOPED_TRACE(DTypeName(type));
    const QuantCase c = MakeQuantCase(type, 13, 512, rng);
    std::vector<float> row(c.cols);
    for (std::size_t r = 0; r < c.rows; ++r) {
      UnpackQuantRow(c.packed, c.cols, r, row.data());
      for (std::size_t k = 0; k < c.cols; ++k) {
        ASSERT_TRUE(SameValue(row[k], c.values[r * c.cols + k]))
            << "row " << r << " element " << k << ": " << row[k] << " vs "
            << c.values[r * c.cols + k];
      }
    }
    EXPECT_EQ(c.packed.values.size(), c.rows * QuantRowBytes(c.packed.layout, c.cols));
    EXPECT_EQ(c.packed.scales.size(), c.rows * QuantRowScales(c.packed.layout, c.cols));
  }
}

TEST(QuantPackTest, RejectsFloatTypesAndPartialBlocks) {
  const std::vector<std::uint8_t> bytes(4096);
  auto f = PackQuantMatrix(DType::kBF16, bytes.data(), 2, 64);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message().find("BF16 is not a block-quantized type"), std::string::npos)
      << f.error().message();
  auto partial = PackQuantMatrix(DType::kQ4_K, bytes.data(), 2, 96);
  ASSERT_FALSE(partial.ok());
  EXPECT_NE(partial.error().message().find("rows of 96 elements are not whole Q4_K blocks of 256"),
            std::string::npos)
      << partial.error().message();
}

// The packed matrix uploaded, and its device view.
struct DeviceQuant {
  DeviceBuffer<std::uint8_t> values;
  DeviceBuffer<float> scales;
  QuantMatrix view;
};

DeviceQuant UploadQuant(const QuantCase& c) {
  DeviceQuant d;
  auto values = DeviceBuffer<std::uint8_t>::FromHost(c.packed.values);
  auto scales = DeviceBuffer<float>::FromHost(c.packed.scales);
  EXPECT_TRUE(values.ok() && scales.ok());
  if (!values.ok() || !scales.ok()) return d;
  d.values = std::move(*values);
  d.scales = std::move(*scales);
  d.view = {c.packed.layout, d.values.data(), d.scales.data(), c.rows, c.cols};
  return d;
}

TEST_F(CudaMatMulTest, DequantizedRowsAndEmbeddingsEqualTheCpusBitForBit) {
  for (DType type : kQuantTypes) {
    SCOPED_TRACE(DTypeName(type));
    const QuantCase c = MakeQuantCase(type, 37, 768, rng_);
    DeviceQuant d = UploadQuant(c);
    DeviceBuffer<float> out = Upload(std::vector<float>(c.rows * c.cols, std::nanf("")));
    ASSERT_TRUE(DequantizeRows(d.view, 5, 30, out.data()).ok());
    auto got = out.ToHost();
    ASSERT_TRUE(got.ok());
    for (std::size_t i = 0; i < 30 * c.cols; ++i) {
      ASSERT_TRUE(SameValue((*got)[i], c.values[5 * c.cols + i])) << "element " << i;
    }
    const std::vector<std::int32_t> ids = {36, 0, 5, 5, 17};
    DeviceBuffer<std::int32_t> d_ids = Upload(ids);
    const float scale = 25.298221f;  // sqrt(640)
    ASSERT_TRUE(EmbedRowsQuant(d.view, d_ids.data(), ids.size(), scale, out.data()).ok());
    got = out.ToHost();
    ASSERT_TRUE(got.ok());
    for (std::size_t t = 0; t < ids.size(); ++t) {
      for (std::size_t k = 0; k < c.cols; ++k) {
        const float want = c.values[static_cast<std::size_t>(ids[t]) * c.cols + k] * scale;
        ASSERT_TRUE(SameValue((*got)[t * c.cols + k], want)) << "token " << t << " element " << k;
      }
    }
  }
}

TEST_F(CudaMatMulTest, QuantizedProductsMatchTheReference) {
  // GEMV rows 1-8 (one and four W rows per warp), and the dequantize + f32 cuBLAS path.
  const Shape shapes[] = {{256, 7}, {768, 300}, {512, 16901}};
  for (DType type : kQuantTypes) {
    for (const Shape& s : shapes) {
      const QuantCase c = MakeQuantCase(type, s.out, s.in, rng_);
      DeviceQuant d = UploadQuant(c);
      for (std::size_t rows : {1u, 2u, 5u, 8u, 9u, 40u}) {
        for (bool accumulate : {false, true}) {
          SCOPED_TRACE(testing::Message() << DTypeName(type) << " in " << s.in << " out " << s.out
                                          << " rows " << rows << " accumulate " << accumulate);
          const std::vector<float> x = rng_.Floats(rows * s.in);
          const std::vector<float> y0 = rng_.Floats(rows * s.out, 4.0f);
          DeviceBuffer<float> d_x = Upload(x);
          DeviceBuffer<float> d_y =
              Upload(accumulate ? y0 : std::vector<float>(rows * s.out, std::nanf("")));
          const Status st = ctx_->MatMul(d_x.data(), rows, d.view, d_y.data(), accumulate);
          ASSERT_TRUE(st.ok()) << st.error().message();
          auto got = d_y.ToHost();
          ASSERT_TRUE(got.ok());
          const std::size_t stride = s.out > 1000 ? 97 : 1;
          for (std::size_t o = 0; o < s.out; o += stride) {
            for (std::size_t r = 0; r < rows; ++r) {
              double sum = accumulate ? y0[r * s.out + o] : 0.0;
              double mag = std::fabs(sum);
              for (std::size_t k = 0; k < s.in; ++k) {
                const double term = static_cast<double>(x[r * s.in + k]) * c.values[o * s.in + k];
                sum += term;
                mag += std::fabs(term);
              }
              ASSERT_NEAR((*got)[r * s.out + o], sum, 3e-5 * mag + 1e-30)
                  << "row " << r << " output " << o;
            }
          }
        }
      }
    }
  }
}

TEST_F(CudaMatMulTest, QuantizedMatMulManyEqualsSeparateProducts) {
  for (DType type : {DType::kQ8_0, DType::kQ4_K}) {
    const QuantCase a = MakeQuantCase(type, 1024, 512, rng_);
    const QuantCase b = MakeQuantCase(type, 256, 512, rng_);
    const QuantCase c = MakeQuantCase(type, 77, 512, rng_);
    DeviceQuant da = UploadQuant(a), db = UploadQuant(b), dc = UploadQuant(c);
    for (std::size_t rows : {1u, 3u, 8u, 12u}) {
      SCOPED_TRACE(testing::Message() << DTypeName(type) << " rows " << rows);
      DeviceBuffer<float> x = Upload(rng_.Floats(rows * 512));
      std::vector<DeviceBuffer<float>> many, one;
      for (const DeviceQuant* d : {&da, &db, &dc}) {
        many.push_back(Upload(std::vector<float>(rows * d->view.rows, std::nanf(""))));
        one.push_back(Upload(std::vector<float>(rows * d->view.rows, std::nanf(""))));
      }
      const QuantProduct products[] = {
          {&da.view, many[0].data()}, {&db.view, many[1].data()}, {&dc.view, many[2].data()}};
      ASSERT_TRUE(ctx_->MatMulMany(x.data(), rows, products).ok());
      ASSERT_TRUE(ctx_->MatMul(x.data(), rows, da.view, one[0].data()).ok());
      ASSERT_TRUE(ctx_->MatMul(x.data(), rows, db.view, one[1].data()).ok());
      ASSERT_TRUE(ctx_->MatMul(x.data(), rows, dc.view, one[2].data()).ok());
      for (std::size_t i = 0; i < 3; ++i) {
        auto got = many[i].ToHost();
        auto want = one[i].ToHost();
        ASSERT_TRUE(got.ok() && want.ok());
        for (std::size_t e = 0; e < got->size(); ++e) {
          ASSERT_EQ(std::bit_cast<std::uint32_t>((*got)[e]),
                    std::bit_cast<std::uint32_t>((*want)[e]))
              << "output " << i << " element " << e;
        }
      }
    }
  }
}

TEST_F(CudaMatMulTest, QuantizedProductsRejectBadMatrices) {
  const QuantCase c = MakeQuantCase(DType::kQ8_0, 4, 64, rng_);
  DeviceQuant d = UploadQuant(c);
  DeviceBuffer<float> x = Upload(rng_.Floats(64));
  DeviceBuffer<float> y = Upload(std::vector<float>(4));
  QuantMatrix bad = d.view;
  bad.cols = 48;
  Status s = ctx_->MatMul(x.data(), 1, bad, y.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("not whole blocks of 32"), std::string::npos)
      << s.error().message();
  bad = d.view;
  bad.values += 1;
  s = ctx_->MatMul(x.data(), 1, bad, y.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("not 16-byte aligned"), std::string::npos)
      << s.error().message();
  s = DequantizeRows(d.view, 3, 2, y.data());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("outside the matrix's 4"), std::string::npos)
      << s.error().message();
}

TEST_F(CudaMatMulTest, PerfQuantized) {
  if (!PerfRequested()) GTEST_SKIP() << "set FGNET_CUDA_PERF=1";
  struct Named {
    const char* name;
    std::size_t out, in;
  };
  const Named shapes[] = {{"q", 1024, 640}, {"down", 640, 2048}, {"lm_head", 262144, 640}};
  auto flush = DeviceBuffer<std::uint8_t>::Allocate(256u << 20);
  ASSERT_TRUE(flush.ok());
  DeviceBuffer<float> d_x = Upload(rng_.Floats(64 * 2048));
  auto d_y = DeviceBuffer<float>::Allocate(64 * 262144);
  ASSERT_TRUE(d_y.ok());
  std::printf("device: %s (L2 flushed before each timed run; median of 21)\n",
              device_name_.c_str());
  std::printf("| shape | type | rows | time us | GB/s (bytes read) |\n|---|---|---|---|---|\n");
  for (const Named& s : shapes) {
    DeviceBuffer<std::uint16_t> d_w = Upload(rng_.BF16(s.out * s.in, 0.05f));
    const double bf16_us = MedianMicros(
        [&] { return ctx_->MatMul(d_x.data(), 1, s.in, d_w.data(), s.out, d_y->data()); }, *flush);
    std::printf("| %s | BF16 | 1 | %.2f | %.0f |\n", s.name, bf16_us,
                static_cast<double>(s.out * s.in * 2) / bf16_us * 1e-3);
    for (DType type : kQuantTypes) {
      if (s.in % DTypeBlockElements(type) != 0) continue;
      const QuantCase c = MakeQuantCase(type, s.out, s.in, rng_);
      DeviceQuant d = UploadQuant(c);
      const double bytes =
          static_cast<double>(c.packed.values.size() + c.packed.scales.size() * sizeof(float));
      for (std::size_t rows : {1u, 8u, 64u}) {
        const double us = MedianMicros(
            [&] { return ctx_->MatMul(d_x.data(), rows, d.view, d_y->data()); }, *flush);
        std::printf("| %s | %s | %zu | %.2f | %.0f |\n", s.name,
                    std::string(DTypeName(type)).c_str(), rows, us, bytes / us * 1e-3);
      }
    }
  }
}

}  // namespace
}  // namespace fgnet::cuda
