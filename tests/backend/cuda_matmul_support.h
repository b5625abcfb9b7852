// Shared pieces of the CUDA matrix-product tests (cuda_matmul_test.cpp, cuda_lora_test.cpp,
// cuda_quant_matmul_test.cpp): a fast uniform generator, the fixture holding a MatMulContext,
// and the timing of the perf mode (FGNET_CUDA_PERF=1).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/device.h"
#include "backend/cuda/matmul.h"
#include "tensor/dtype.h"

namespace fgnet::cuda {

// Uniform values in [-scale, scale) from a counter-based generator (splitmix64): fast enough for
// the 168M weights of the output matrix.
class Uniform {
 public:
  explicit Uniform(std::uint64_t seed) : state_(seed) {}
  float Next(float scale = 1.0f) {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (static_cast<float>(z >> 40) * (1.0f / 8388608.0f) - 1.0f) * scale;
  }
  std::vector<float> Floats(std::size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = Next(scale);
    return v;
  }
  std::vector<std::uint16_t> BF16(std::size_t n, float scale = 1.0f) {
    std::vector<std::uint16_t> v(n);
    for (std::uint16_t& x : v) x = F32ToBF16(Next(scale));
    return v;
  }

 private:
  std::uint64_t state_;
};

class CudaMatMulTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto devices = ListCudaDevices();
    ASSERT_TRUE(devices.ok()) << devices.error().message();
    if (devices->empty()) GTEST_SKIP() << "no CUDA device";
    device_name_ = (*devices)[0].name;
    auto ctx = MatMulContext::Create();
    ASSERT_TRUE(ctx.ok()) << ctx.error().message();
    ctx_ = std::make_unique<MatMulContext>(std::move(*ctx));
  }

  template <typename T>
  DeviceBuffer<T> Upload(const std::vector<T>& v) {
    auto b = DeviceBuffer<T>::FromHost(v);
    EXPECT_TRUE(b.ok()) << b.error().message();
    return std::move(*b);
  }

  // Runs MatMul on the device; y starts as NaN, or as *y0 when accumulating.
  std::vector<float> RunMatMul(const std::vector<float>& x, std::size_t rows, std::size_t in,
                               const DeviceBuffer<std::uint16_t>& w, std::size_t out,
                               const std::vector<float>* y0) {
    DeviceBuffer<float> d_x = Upload(x);
    DeviceBuffer<float> d_y =
        Upload(y0 != nullptr ? *y0 : std::vector<float>(rows * out, std::nanf("")));
    const Status s = ctx_->MatMul(d_x.data(), rows, in, w.data(), out, d_y.data(), y0 != nullptr);
    EXPECT_TRUE(s.ok()) << s.error().message();
    auto got = d_y.ToHost();
    EXPECT_TRUE(got.ok()) << got.error().message();
    return got.ok() ? std::move(*got) : std::vector<float>();
  }

  std::string device_name_;
  std::unique_ptr<MatMulContext> ctx_;
  Uniform rng_{42};
};

// A product's input and output sizes.
struct Shape {
  std::size_t in, out;
};

// The buffer's values on the host (empty, with a test failure, when the copy fails).
inline std::vector<float> Download(const DeviceBuffer<float>& d) {
  auto h = d.ToHost();
  EXPECT_TRUE(h.ok()) << h.error().message();
  return h.ok() ? std::move(*h) : std::vector<float>();
}

// begin, begin + step, ... below end.
inline std::vector<std::int32_t> Range(std::int32_t begin, std::int32_t end,
                                       std::int32_t step = 1) {
  std::vector<std::int32_t> v;
  for (std::int32_t i = begin; i < end; i += step) v.push_back(i);
  return v;
}

// True when FGNET_CUDA_PERF=1 asks for the timing tests.
inline bool PerfRequested() {
  const char* env = std::getenv("FGNET_CUDA_PERF");
  return env != nullptr && std::string(env) == "1";
}

// Median time in microseconds of `launch()` (work it queues on `stream`) over `repeats` runs after
// one warm-up, each timed with CUDA events after the L2 cache was flushed by writing `flush` (so
// weights come from memory, as in a forward pass).
template <typename Launch>
inline double FlushedMedianMicros(Launch launch, cudaStream_t stream,
                                  DeviceBuffer<std::uint8_t>& flush, int repeats) {
  cudaEvent_t start, stop;
  EXPECT_EQ(cudaEventCreate(&start), cudaSuccess);
  EXPECT_EQ(cudaEventCreate(&stop), cudaSuccess);
  launch();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    EXPECT_EQ(cudaMemsetAsync(flush.data(), i & 0xff, flush.size(), stream), cudaSuccess);
    EXPECT_EQ(cudaEventRecord(start, stream), cudaSuccess);
    launch();
    EXPECT_EQ(cudaEventRecord(stop, stream), cudaSuccess);
    EXPECT_EQ(cudaEventSynchronize(stop), cudaSuccess);
    float ms = 0;
    EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
    times.push_back(ms * 1000.0);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// FlushedMedianMicros of `op` (returning a Status) on the default stream.
template <typename Op>
inline double MedianMicros(Op op, DeviceBuffer<std::uint8_t>& flush, int repeats = 21) {
  return FlushedMedianMicros(
      [&] {
        const Status s = op();
        EXPECT_TRUE(s.ok()) << s.error().message();
      },
      nullptr, flush, repeats);
}

}  // namespace fgnet::cuda
