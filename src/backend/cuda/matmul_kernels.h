// The kernel launchers behind MatMulContext (backend/cuda/matmul.h), defined in matmul.cu; not
// part of the backend's interface.
// Thread-safety: reentrant; launches on one stream are ordered by the stream.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cuda/ops.h"
#include "util/status.h"

namespace fgnet::cuda::internal {

// Rows one GEMV launch handles (MatMulContext::kMaxGemvRows).
inline constexpr std::size_t kGemvMaxRows = 8;

// y [rows, out] = x [rows, in] W^T (or +=) for rows <= kGemvMaxRows; `in` a multiple of 8, W
// 16-byte aligned. `multiprocessors` sizes the grid. Rows whose activations do not fit in shared
// memory together are split over several launches.
Status LaunchGemv(const float* x, std::size_t rows, std::size_t in, const std::uint16_t* w_bf16,
                  std::size_t out, float* y, bool accumulate, int multiprocessors, Stream stream);

// out[i] = bf16(x[i]) (round to nearest even) for i < n.
Status LaunchToBF16(const float* x, std::size_t n, std::uint16_t* out, Stream stream);

}  // namespace fgnet::cuda::internal
