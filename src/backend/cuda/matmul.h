// CUDA matrix products of the forward pass: y = x W^T for f32 activations x [rows, in] and BF16
// weights W [out, in] (row-major, as checkpoints store them), f32 results; and the grouped LoRA
// updates of a pass whose rows use different adapters.
//
// Both paths multiply x rounded to BF16 by W, exactly, accumulating in f32: few rows (decode) run
// a GEMV kernel that streams W once at memory bandwidth, more rows (prefill) call cuBLAS (BF16
// inputs, f32 accumulation and output). A row's result therefore does not depend on how many rows
// share its pass, up to the order of the f32 sums; against f32 activations (the CPU backend) it
// differs by the BF16 rounding of x, well inside the tolerance of a BF16 model.
// Thread-safety: a MatMulContext is used by one thread (one stream) at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "backend/cuda/ops.h"
#include "util/status.h"

namespace fgnet::cuda {

// A cuBLAS handle bound to a stream, and the workspace of the BF16 path.
class MatMulContext {
 public:
  static Result<MatMulContext> Create(Stream stream = nullptr);
  MatMulContext(MatMulContext&&) noexcept;
  MatMulContext& operator=(MatMulContext&&) noexcept;
  ~MatMulContext();

  // Rows up to which MatMul takes the GEMV path.
  static constexpr std::size_t kMaxGemvRows = 8;

  // y [rows, out] = x [rows, in] W^T (accumulate: y += x W^T). `in` must be a multiple of 8.
  Status MatMul(const float* x, std::size_t rows, std::size_t in, const std::uint16_t* w_bf16,
                std::size_t out, float* y, bool accumulate = false);

  Stream stream() const;

  // Increases whenever the context's device memory moves (its BF16 workspace grows), so that a
  // caller knows when CUDA graphs that captured MatMul calls are stale.
  std::uint64_t generation() const;

 private:
  struct Impl;
  explicit MatMulContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One adapter's share of a grouped LoRA update at one linear layer: rows
// rows[first .. first + count) of the pass (row indices in `row_index`) get
// y[row] += scale[i] * B (A x[row]), A [rank, in], B [out, rank], f32, on the device.
struct LoraGroup {
  const float* a = nullptr;
  const float* b = nullptr;
  std::int32_t rank = 0;
  std::int32_t first = 0;  // into row_index / row_scale
  std::int32_t count = 0;
};

// The grouped shrink (t = A x) and expand (y += s B t) of every group at one site, in two
// launches whatever the number of groups. groups [num_groups], row_index / row_scale [total rows]
// and `workspace` (max_rank * total rows floats) are device memory. A row may appear in several
// groups (a weighted mix of adapters); their updates add up.
Status LoraApply(const float* x, std::size_t ldx, std::size_t in, float* y, std::size_t ldy,
                 std::size_t out, const LoraGroup* groups, std::int32_t num_groups,
                 std::int32_t max_rank, const std::int32_t* row_index, const float* row_scale,
                 std::int32_t total_rows, float* workspace, Stream stream = nullptr);

}  // namespace fgnet::cuda
