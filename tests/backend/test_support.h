// Shared helpers of the backend tests: random data, weight matrices of each dtype, and a gtest
// fixture that runs a test once per SIMD target compiled in and supported by this CPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/quant.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "tensor/dtype.h"
#include "util/rng.h"

namespace fgnet::cpu::testing {

inline std::vector<float> RandomVector(Philox& rng, std::size_t n, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::vector<float> v(n);
  for (float& x : v) x = lo + (hi - lo) * rng.NextFloat();
  return v;
}

// A weight matrix with its own storage.
struct OwnedMatrix {
  DType dtype = DType::kF32;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<float> f32;
  std::vector<std::uint16_t> half;
  std::vector<std::uint8_t> blocks;  // quantized types

  WeightMatrix view() const {
    const void* data = dtype == DType::kF32 ? static_cast<const void*>(f32.data())
                       : IsQuantized(dtype) ? static_cast<const void*>(blocks.data())
                                            : static_cast<const void*>(half.data());
    return WeightMatrix{dtype, data, rows, cols};
  }
};

inline OwnedMatrix RandomMatrix(Philox& rng, DType dtype, std::size_t rows, std::size_t cols,
                                float scale = 1.0f) {
  OwnedMatrix m;
  m.dtype = dtype;
  m.rows = rows;
  m.cols = cols;
  const std::vector<float> v = RandomVector(rng, rows * cols, -scale, scale);
  if (dtype == DType::kF32) {
    m.f32 = v;
  } else if (IsQuantized(dtype)) {
    const std::size_t row_bytes = DTypeRowBytes(dtype, cols);
    m.blocks.resize(rows * row_bytes);
    for (std::size_t r = 0; r < rows; ++r) {
      QuantizeRow(dtype, v.data() + r * cols, cols, m.blocks.data() + r * row_bytes);
    }
  } else {
    m.half.resize(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      m.half[i] = dtype == DType::kBF16 ? F32ToBF16(v[i]) : F32ToF16(v[i]);
    }
  }
  return m;
}

// Runs each TEST_P once per Highway target that was compiled and that this CPU supports, with
// dispatch restricted to that target.
class PerTarget : public ::testing::TestWithParam<std::int64_t> {
 protected:
  void SetUp() override {
    hwy::SetSupportedTargetsForTest(GetParam());
    ASSERT_EQ(ActiveTarget(), GetParam())
        << "dispatch did not switch to " << hwy::TargetName(GetParam());
  }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

inline std::string TargetParamName(const ::testing::TestParamInfo<std::int64_t>& info) {
  return hwy::TargetName(info.param);
}

#define FGNET_INSTANTIATE_PER_TARGET(suite)                                            \
  INSTANTIATE_TEST_SUITE_P(Targets, suite,                                             \
                           ::testing::ValuesIn(::hwy::SupportedAndGeneratedTargets()), \
                           ::fgnet::cpu::testing::TargetParamName)

}  // namespace fgnet::cpu::testing
