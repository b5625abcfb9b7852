// Shared helpers of the CUDA attention tests (cuda_attention_test.cpp,
// cuda_attention_perf_test.cpp): random data, device buffers (uploaded, NaN-poisoned, downloaded)
// and the sliding window's first visible position.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <utility>
#include <vector>

#include "backend/cuda/device.h"

namespace fgnet::cuda {

inline bool HaveDevice() {
  auto devices = ListCudaDevices();
  return devices.ok() && !devices->empty();
}

inline std::vector<float> Random(std::mt19937& rng, std::size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

template <typename T>
DeviceBuffer<T> Upload(const std::vector<T>& v) {
  auto b = DeviceBuffer<T>::FromHost(v);
  EXPECT_TRUE(b.ok()) << b.error().message();
  return b.ok() ? std::move(*b) : DeviceBuffer<T>();
}

// Device buffer of n floats filled with NaN, so unwritten outputs fail the comparison.
inline DeviceBuffer<float> Poisoned(std::size_t n) {
  return Upload(std::vector<float>(std::max<std::size_t>(n, 1), std::nanf("")));
}

template <typename T>
std::vector<T> Download(const DeviceBuffer<T>& b) {
  auto v = b.ToHost();
  EXPECT_TRUE(v.ok()) << v.error().message();
  return v.ok() ? std::move(*v) : std::vector<T>();
}

inline int VisibleFrom(int pos, int window) {
  return window > 0 ? std::max(0, pos - window + 1) : 0;
}

}  // namespace fgnet::cuda
