// Reading and writing NumPy .npy files (format version 1.0/2.0, little-endian, C order).
// fgnet writes float32 logits with it and the tests read reference arrays made by numpy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace fgnet {

struct NpyArray {
  std::string dtype;  // numpy descr, e.g. "<f4", "<i4", "<i8"
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;  // raw little-endian bytes, C order

  std::int64_t num_elements() const;
  // Returns the data as float32 (from <f4 or <f8) or an error naming the dtype.
  Result<std::vector<float>> AsFloat32() const;
  // Returns the data as int64 (from <i4, <i8, <u4) or an error naming the dtype.
  Result<std::vector<std::int64_t>> AsInt64() const;
};

Result<NpyArray> ReadNpy(const std::string& path);
Status WriteNpyFloat32(const std::string& path, const std::vector<std::int64_t>& shape,
                       const float* data);

}  // namespace fgnet
