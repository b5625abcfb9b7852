// A non-owning view of a dense, row-major tensor (weights are mmapped; activations live in
// buffers owned by their computation). Shapes are listed outermost first, as in safetensors:
// a Linear weight is [out_features, in_features].
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace fgnet {

struct TensorView {
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;

  std::int64_t num_elements() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  // Quantized tensors are rows of blocks along the last dimension.
  std::size_t num_bytes() const {
    if (shape.empty()) return DTypeRowBytes(dtype, 1);
    const std::int64_t cols = shape.back();
    return static_cast<std::size_t>(num_elements() / std::max<std::int64_t>(cols, 1)) *
           DTypeRowBytes(dtype, static_cast<std::size_t>(cols));
  }
  int rank() const { return static_cast<int>(shape.size()); }
  std::int64_t dim(int i) const { return shape[static_cast<std::size_t>(i)]; }
  bool empty() const { return data == nullptr; }

  template <class T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

// "[640, 1024]"
std::string ShapeToString(const std::vector<std::int64_t>& shape);

}  // namespace fgnet
