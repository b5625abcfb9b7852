// The CUDA kernels against the CPU scalar references (backend/cpu/reference.h) on random inputs,
// with device memory poisoned before each run. Skipped where no CUDA device is present (CI); run
// on a GPU machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/reference.h"
#include "backend/cuda/device.h"
#include "backend/cuda/ops.h"
#include "model/model.h"
#include "tensor/dtype.h"

namespace fgnet::cuda {
namespace {

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto devices = ListCudaDevices();
    ASSERT_TRUE(devices.ok()) << devices.error().message();
    if (devices->empty()) GTEST_SKIP() << "no CUDA device";
  }

  std::vector<float> Random(std::size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }

  // Device buffer of n floats filled with NaN, so unwritten outputs fail the comparison.
  DeviceBuffer<float> Poisoned(std::size_t n) {
    auto b = DeviceBuffer<float>::FromHost(std::vector<float>(n, std::nanf("")));
    EXPECT_TRUE(b.ok());
    return std::move(*b);
  }

  std::mt19937 rng_{1234};
};

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float rel) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], rel * (1.0f + std::fabs(want[i]))) << "at " << i;
  }
}

TEST_F(CudaOpsTest, DevicesReportTheirProperties) {
  auto devices = ListCudaDevices();
  ASSERT_TRUE(devices.ok());
  for (const CudaDeviceInfo& d : *devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.compute_major, 7);
    EXPECT_GT(d.memory_bytes, 0u);
    EXPECT_GT(d.multiprocessors, 0);
  }
}

TEST_F(CudaOpsTest, EmbedRowsMatchesTheReference) {
  const std::size_t vocab = 300, cols = 640;
  const std::vector<std::int32_t> ids = {2, 0, 299, 17, 17, 150};
  const std::vector<float> f32 = Random(vocab * cols);
  std::vector<std::uint16_t> bf16(f32.size());
  for (std::size_t i = 0; i < f32.size(); ++i) bf16[i] = F32ToBF16(f32[i]);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const void* host = dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : bf16.data();
    const std::size_t bytes = dtype == DType::kF32 ? f32.size() * 4 : bf16.size() * 2;
    auto table = DeviceMemory::Allocate(bytes);
    ASSERT_TRUE(table.ok());
    ASSERT_TRUE(table->CopyFromHost(host, bytes).ok());
    auto d_ids = DeviceBuffer<std::int32_t>::FromHost(ids);
    ASSERT_TRUE(d_ids.ok());
    DeviceBuffer<float> out = Poisoned(ids.size() * cols);
    ASSERT_TRUE(
        EmbedRows(dtype, table->data(), cols, d_ids->data(), ids.size(), 25.3f, out.data()).ok());
    std::vector<float> want(ids.size() * cols);
    cpu::reference::EmbedRows({.dtype = dtype, .data = host, .rows = vocab, .cols = cols}, ids,
                              25.3f, want.data());
    auto got = out.ToHost();
    ASSERT_TRUE(got.ok());
    ExpectNear(*got, want, 1e-6f);
  }
}

TEST_F(CudaOpsTest, RMSNormAddToMatchesTheReference) {
  for (std::size_t dim : {1u, 31u, 640u, 2048u}) {
    SCOPED_TRACE(dim);
    const std::size_t rows = 7;
    const std::vector<float> x = Random(rows * dim, 3.0f);
    const std::vector<float> scale = Random(dim);
    std::vector<float> want = Random(rows * dim);
    auto d_x = DeviceBuffer<float>::FromHost(x);
    auto d_scale = DeviceBuffer<float>::FromHost(scale);
    auto d_res = DeviceBuffer<float>::FromHost(want);
    ASSERT_TRUE(d_x.ok() && d_scale.ok() && d_res.ok());
    ASSERT_TRUE(RMSNormAddTo(d_x->data(), rows, dim, d_scale->data(), 1e-6f, d_res->data()).ok());
    cpu::reference::RMSNormAddTo(x.data(), rows, dim, scale.data(), 1e-6f, want.data());
    auto got = d_res->ToHost();
    ASSERT_TRUE(got.ok());
    ExpectNear(*got, want, 1e-5f);
  }
}

// The two BF16 terms written beside y [n] (hi [n], then lo [n]) are those of y's values:
// hi = bf16(v), lo = bf16(v - hi), rounded to nearest even (the split of a many-row product's
// input).
void ExpectTermsOf(const std::vector<float>& y, const DeviceBuffer<std::uint16_t>& terms) {
  auto got = terms.ToHost();
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 2 * y.size());
  for (std::size_t i = 0; i < y.size(); ++i) {
    const std::uint16_t hi = F32ToBF16(y[i]);
    ASSERT_EQ((*got)[i], hi) << "hi at " << i << " of " << y[i];
    ASSERT_EQ((*got)[y.size() + i], F32ToBF16(y[i] - BF16ToF32(hi)))
        << "lo at " << i << " of " << y[i];
  }
}

TEST_F(CudaOpsTest, RMSNormAddToNormMatchesTheTwoOpsAndTheReference) {
  for (std::size_t dim : {1u, 31u, 640u, 2048u, 20000u}) {
    SCOPED_TRACE(dim);
    const std::size_t rows = 5;
    const std::vector<float> x = Random(rows * dim, 3.0f);
    const std::vector<float> scale = Random(dim);
    const std::vector<float> next = Random(dim);
    const std::vector<float> residual = Random(rows * dim);
    auto d_x = DeviceBuffer<float>::FromHost(x);
    auto d_scale = DeviceBuffer<float>::FromHost(scale);
    auto d_next = DeviceBuffer<float>::FromHost(next);
    auto d_fused = DeviceBuffer<float>::FromHost(residual);
    auto d_apart = DeviceBuffer<float>::FromHost(residual);
    ASSERT_TRUE(d_x.ok() && d_scale.ok() && d_next.ok() && d_fused.ok() && d_apart.ok());
    DeviceBuffer<float> y_fused = Poisoned(rows * dim);
    DeviceBuffer<float> y_apart = Poisoned(rows * dim);
    ASSERT_TRUE(RMSNormAddToNorm(d_x->data(), rows, dim, d_scale->data(), 1e-6f, d_fused->data(),
                                 d_next->data(), y_fused.data())
                    .ok());
    ASSERT_TRUE(RMSNormAddTo(d_x->data(), rows, dim, d_scale->data(), 1e-6f, d_apart->data()).ok());
    ASSERT_TRUE(RMSNorm(d_apart->data(), rows, dim, d_next->data(), 1e-6f, y_apart.data()).ok());
    ExpectNear(*d_fused->ToHost(), *d_apart->ToHost(), 1e-6f);
    ExpectNear(*y_fused.ToHost(), *y_apart.ToHost(), 1e-6f);
    // With terms: the same results, and y's two BF16 terms beside them.
    auto d_split = DeviceBuffer<float>::FromHost(residual);
    auto terms = DeviceBuffer<std::uint16_t>::FromHost(std::vector<std::uint16_t>(2 * rows * dim));
    ASSERT_TRUE(d_split.ok() && terms.ok());
    DeviceBuffer<float> y_split = Poisoned(rows * dim);
    ASSERT_TRUE(RMSNormAddToNormSplit(d_x->data(), rows, dim, d_scale->data(), 1e-6f,
                                      d_split->data(), d_next->data(), y_split.data(),
                                      terms->data())
                    .ok());
    const std::vector<float> y = *y_split.ToHost();
    EXPECT_EQ(y, *y_fused.ToHost());
    EXPECT_EQ(*d_split->ToHost(), *d_fused->ToHost());
    ExpectTermsOf(y, *terms);
    // The terms alone: the same terms and residual (rows of a multiple of 4; others need y).
    auto d_only = DeviceBuffer<float>::FromHost(residual);
    auto terms_only =
        DeviceBuffer<std::uint16_t>::FromHost(std::vector<std::uint16_t>(2 * rows * dim));
    ASSERT_TRUE(d_only.ok() && terms_only.ok());
    const Status only =
        RMSNormAddToNormSplit(d_x->data(), rows, dim, d_scale->data(), 1e-6f, d_only->data(),
                              d_next->data(), nullptr, terms_only->data());
    if (dim % 4 != 0) {
      ASSERT_FALSE(only.ok());
      EXPECT_EQ(only.error().message(), "cuda::RMSNormAddToNormSplit: rows of " +
                                            std::to_string(dim) +
                                            " (or pointers not 16-byte aligned) need y");
      EXPECT_EQ(*d_only->ToHost(), residual);  // untouched
    } else {
      ASSERT_TRUE(only.ok());
      EXPECT_EQ(*d_only->ToHost(), *d_fused->ToHost());
      EXPECT_EQ(*terms_only->ToHost(), *terms->ToHost());
    }
    // And the CPU reference of the pair.
    std::vector<float> want_res = residual, want_y(rows * dim);
    cpu::reference::RMSNormAddTo(x.data(), rows, dim, scale.data(), 1e-6f, want_res.data());
    cpu::reference::RMSNorm(want_res.data(), rows, dim, next.data(), 1e-6f, want_y.data());
    ExpectNear(*y_fused.ToHost(), want_y, 1e-5f);
  }
}

TEST_F(CudaOpsTest, ArgmaxRowsFindsTheFirstLargestValue) {
  for (std::size_t cols : {1u, 97u, 4096u, 4097u, 262144u}) {
    SCOPED_TRACE(cols);
    const std::size_t rows = 5;
    std::vector<float> x = Random(rows * cols, 2.0f);
    // Row 1: the maximum twice, in different chunks; row 2: NaN and +inf; row 3: nothing above
    // -inf; row 4: the maximum in the last column.
    x[1 * cols + cols / 3] = 50.0f;
    x[1 * cols + cols - 1] = 50.0f;
    x[2 * cols + 0] = std::nanf("");
    x[2 * cols + cols / 2] = INFINITY;
    for (std::size_t c = 0; c < cols; ++c) x[3 * cols + c] = c % 2 == 0 ? -INFINITY : std::nanf("");
    x[4 * cols + cols - 1] = 60.0f;
    std::vector<std::int32_t> want(rows);
    for (std::size_t r = 0; r < rows; ++r) {
      std::int32_t best = -1;
      for (std::size_t c = 0; c < cols; ++c) {
        const float v = x[r * cols + c];
        if (v > (best < 0 ? -INFINITY : x[r * cols + static_cast<std::size_t>(best)]))
          best = static_cast<std::int32_t>(c);
      }
      want[r] = best;
    }
    auto d_x = DeviceBuffer<float>::FromHost(x);
    auto out = DeviceBuffer<std::int32_t>::FromHost(std::vector<std::int32_t>(rows, -7));
    auto ws = DeviceMemory::Allocate(ArgmaxRowsWorkspace(rows, cols));
    ASSERT_TRUE(d_x.ok() && out.ok() && ws.ok());
    ASSERT_TRUE(ArgmaxRows(d_x->data(), rows, cols, out->data(), ws->data()).ok());
    EXPECT_EQ(*out->ToHost(), want);
    EXPECT_EQ(want[3], -1);
  }
}

TEST_F(CudaOpsTest, TopRowsFindsTheLargestValuesInOrder) {
  for (std::size_t cols : {50u, 1000u, 1024u, 3000u, 262144u}) {
    SCOPED_TRACE(cols);
    const std::size_t rows = 3;
    std::vector<float> x = Random(rows * cols, 4.0f);
    // Ties (some across chunk boundaries), -inf and NaN among the largest.
    for (std::size_t r = 0; r < rows; ++r) {
      float* row = x.data() + r * cols;
      for (std::size_t i = 0; i < cols; i += 97) row[i] = 9.0f;
      row[cols - 1] = std::nanf("");
      row[cols / 2] = -INFINITY;
    }
    auto d_x = DeviceBuffer<float>::FromHost(x);
    ASSERT_TRUE(d_x.ok());
    DeviceBuffer<float> values = Poisoned(rows * kTopRows);
    auto indices = DeviceBuffer<std::int32_t>::Allocate(rows * kTopRows);
    auto ws = DeviceMemory::Allocate(TopRowsWorkspace(rows, cols));
    ASSERT_TRUE(indices.ok() && ws.ok());
    ASSERT_TRUE(TopRows(d_x->data(), rows, cols, values.data(), indices->data(), ws->data()).ok());
    const std::vector<float> got_v = *values.ToHost();
    const std::vector<std::int32_t> got_i = *indices->ToHost();
    for (std::size_t r = 0; r < rows; ++r) {
      // Reference: every (value, index), NaN as -inf, sorted by value then index.
      std::vector<std::pair<float, std::int32_t>> all;
      for (std::size_t i = 0; i < cols; ++i) {
        const float v = x[r * cols + i];
        all.push_back({std::isnan(v) ? -INFINITY : v, static_cast<std::int32_t>(i)});
      }
      std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      for (std::size_t k = 0; k < kTopRows; ++k) {
        const float want_v = k < cols ? all[k].first : -INFINITY;
        const std::int32_t want_i = k < cols ? all[k].second : 0x7fffffff;
        ASSERT_EQ(got_v[r * kTopRows + k], want_v) << "row " << r << " rank " << k;
        ASSERT_EQ(got_i[r * kTopRows + k], want_i) << "row " << r << " rank " << k;
      }
    }
  }
}

// A grammar's bitset and a repetition penalty on logit rows, as the model's LogitsFilter does them
// on the host: rows without a filter, with a mask only, a penalty only (negative, positive, -inf
// and NaN logits among the ids; ids past the row ignored), and both.
TEST_F(CudaOpsTest, FilterRowsMatchesTheLogitsFilter) {
  for (std::size_t cols : {97u, 4096u, 262144u}) {
    SCOPED_TRACE(cols);
    const std::size_t rows = 4;
    const std::size_t words = LogitsFilterWords(static_cast<std::int64_t>(cols));
    std::vector<float> x = Random(rows * cols, 3.0f);
    x[1 * cols + 3] = -INFINITY;
    x[2 * cols + 5] = std::nanf("");
    std::vector<std::uint64_t> bits(2 * words);
    for (std::uint64_t& w : bits) w = (static_cast<std::uint64_t>(rng_()) << 32) ^ rng_();
    std::vector<std::int32_t> ids;
    for (std::size_t i = 0; i < 300; ++i)
      ids.push_back(static_cast<std::int32_t>((i * 7919) % (cols + 50)));
    ids.push_back(3);  // the -inf of row 1 and the NaN of row 2 are penalised too
    ids.push_back(5);
    std::sort(ids.begin(), ids.end());  // distinct, as a filter's ids must be
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    const auto n_ids = static_cast<std::int32_t>(ids.size());
    // Row 0: nothing. Row 1: penalty 1.7 only. Row 2: mask only. Row 3: mask and penalty 0.6.
    const std::vector<RowFilter> filters = {{},
                                            {-1, 0, n_ids, 1.7f},
                                            {0, 0, 0, 1.0f},
                                            {static_cast<std::int32_t>(words), 0, n_ids, 0.6f}};
    std::vector<float> want = x;
    for (std::size_t r = 0; r < rows; ++r) {
      LogitsFilter f;
      if (filters[r].allowed >= 0)
        f.allowed = std::span<const std::uint64_t>(bits).subspan(
            static_cast<std::size_t>(filters[r].allowed), words);
      f.penalized =
          std::span<const std::int32_t>(ids).first(static_cast<std::size_t>(filters[r].count));
      f.repetition_penalty = filters[r].penalty;
      ApplyLogitsFilter(std::span<float>(want).subspan(r * cols, cols), f);
    }
    auto d_x = DeviceBuffer<float>::FromHost(x);
    auto d_filters = DeviceBuffer<RowFilter>::FromHost(filters);
    auto d_bits = DeviceBuffer<std::uint64_t>::FromHost(bits);
    auto d_ids = DeviceBuffer<std::int32_t>::FromHost(ids);
    ASSERT_TRUE(d_x.ok() && d_filters.ok() && d_bits.ok() && d_ids.ok());
    ASSERT_TRUE(
        FilterRows(d_x->data(), rows, cols, d_filters->data(), d_bits->data(), d_ids->data()).ok());
    const std::vector<float> got = *d_x->ToHost();
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(want[i])) {
        ASSERT_TRUE(std::isnan(got[i])) << "at " << i;
      } else {
        ASSERT_EQ(got[i], want[i]) << "at " << i;  // the same f32 operations: bit for bit
      }
    }
    EXPECT_GT(std::count(want.begin(), want.end(), -INFINITY), 2);
  }
}

TEST_F(CudaOpsTest, GeluTanhMulMatchesTheReference) {
  // 4 elements a thread (a multiple of 4), and one a thread.
  const std::size_t sizes[] = {2048 * 3 + 4, 2048 * 3 + 5};
  const std::vector<float> gate = Random(sizes[1], 4.0f);
  const std::vector<float> up = Random(sizes[1]);
  auto d_gate = DeviceBuffer<float>::FromHost(gate);
  auto d_up = DeviceBuffer<float>::FromHost(up);
  ASSERT_TRUE(d_gate.ok() && d_up.ok());
  std::vector<float> first;  // the first size's results
  for (std::size_t n : sizes) {
    SCOPED_TRACE(n);
    DeviceBuffer<float> out = Poisoned(n);
    ASSERT_TRUE(GeluTanhMul(d_gate->data(), d_up->data(), n, out.data()).ok());
    std::vector<float> want(n);
    cpu::reference::GeluTanhMul(gate.data(), up.data(), n, want.data());
    auto got = out.ToHost();
    ASSERT_TRUE(got.ok());
    ExpectNear(*got, want, 1e-5f);
    // Either way, the same bits.
    if (first.empty()) {
      first = *got;
    } else {
      EXPECT_EQ(std::vector<float>(got->begin(), got->begin() + first.size()), first);
    }
    // With terms: the same results, and their two BF16 terms beside them.
    auto terms = DeviceBuffer<std::uint16_t>::FromHost(std::vector<std::uint16_t>(2 * n));
    ASSERT_TRUE(terms.ok());
    DeviceBuffer<float> out_split = Poisoned(n);
    ASSERT_TRUE(
        GeluTanhMulSplit(d_gate->data(), d_up->data(), n, out_split.data(), terms->data()).ok());
    const std::vector<float> y = *out_split.ToHost();
    EXPECT_EQ(y, *got);
    ExpectTermsOf(y, *terms);
    // The terms alone.
    auto terms_only = DeviceBuffer<std::uint16_t>::FromHost(std::vector<std::uint16_t>(2 * n));
    ASSERT_TRUE(terms_only.ok());
    ASSERT_TRUE(
        GeluTanhMulSplit(d_gate->data(), d_up->data(), n, nullptr, terms_only->data()).ok());
    EXPECT_EQ(*terms_only->ToHost(), *terms->ToHost());
  }
}

// Argument errors are found before anything touches a device.
TEST(CudaOpsArgumentsTest, NothingToWriteIsAnError) {
  const Status norm =
      RMSNormAddToNormSplit(nullptr, 1, 640, nullptr, 1e-6f, nullptr, nullptr, nullptr, nullptr);
  ASSERT_FALSE(norm.ok());
  EXPECT_EQ(norm.error().message(),
            "cuda::RMSNormAddToNormSplit: neither y nor its terms to write");
  const Status gelu = GeluTanhMulSplit(nullptr, nullptr, 16, nullptr, nullptr);
  ASSERT_FALSE(gelu.ok());
  EXPECT_EQ(gelu.error().message(), "cuda::GeluTanhMulSplit: neither out nor its terms to write");
}

TEST(CudaOpsArgumentsTest, UnsupportedTableTypeIsAnError) {
  const Status s = EmbedRows(DType::kQ8_0, nullptr, 32, nullptr, 1, 1.0f, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "cuda::EmbedRows: Q8_0 tables are not supported (F32, BF16)");
}

}  // namespace
}  // namespace fgnet::cuda
