// CUDA kernels of the elementwise and row-wise ops of the Gemma 3 forward pass, with the same
// contracts as their CPU counterparts (backend/cpu/ops.h), on device pointers:
//   EmbedRows      out[t, :] = f32(table[ids[t], :]) * scale (F32 or BF16 tables)
//   RMSNormAddTo   residual[r] += RMSNorm(x[r]) * scale (scale holds 1 + w), fused
//   RMSNorm        y[r] = RMSNorm(x[r]) * scale, optionally gathering rows of x
//   RMSNormAddToNorm  RMSNormAddTo, then RMSNorm of the new residual with another scale (the
//                  end of one block and the pre-norm of the next, in one launch)
//   GeluTanhMul    out[i] = gelu_tanh(gate[i]) * up[i] (the GeGLU of the MLP)
//   Softcap        x[i] = cap * tanh(x[i] / cap) (final logit softcapping)
//   FilterRows     a grammar's allowed tokens and a repetition penalty applied to logit rows
//   ArgmaxRows     out[r] = the index of row r's largest value (greedy decoding)
//   TopRows        the kTopRows largest values of each row with their indices (top-k sampling)
// Each launches on `stream` (null: the default stream) and returns the launch's error; results
// are ready once the stream is synchronised. Inputs must be valid (ids in range, sizes > 0 where a
// row is reduced): the callers check them, as on the CPU.
// Thread-safety: reentrant; concurrent calls on one stream are ordered by the stream.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"
#include "util/status.h"

struct CUstream_st;

namespace fgnet::cuda {

using Stream = CUstream_st*;

Status EmbedRows(DType table_dtype, const void* table, std::size_t table_cols,
                 const std::int32_t* ids, std::size_t n, float scale, float* out,
                 Stream stream = nullptr);

Status RMSNormAddTo(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                    float eps, float* residual, Stream stream = nullptr);

// residual[r] += RMSNorm(x[r]) * scale, then y[r] = RMSNorm(residual[r]) * next_scale, for
// `rows` rows of `dim`: RMSNormAddTo followed by RMSNorm(residual). Rows of a multiple of 4 (all
// pointers 16-byte aligned) take one kernel, a warp per row, each row's sums in the order of a
// GEMV's ResidualInput staging, so that the two give the same bits; other rows take the two
// kernels. y must not alias x.
Status RMSNormAddToNorm(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                        float eps, float* residual, const float* next_scale, float* y,
                        Stream stream = nullptr);
// RMSNormAddToNorm that also writes y as two BF16 terms, hi = bf16(y) [rows, dim] at `terms`
// and lo = bf16(y - hi) after it (round to nearest even): the split of a many-row product's
// input (MatMulContext::InputTerms). terms null: RMSNormAddToNorm. y null: the terms alone (for
// a product that reads nothing else of y), which needs the one-kernel rows; an error otherwise.
Status RMSNormAddToNormSplit(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                             float eps, float* residual, const float* next_scale, float* y,
                             std::uint16_t* terms, Stream stream = nullptr);

// A product's input given as the residual update before it (RMSNormAddToNorm folded into the
// product's staging of its input): row r is RMSNorm(u[r]) * pre, u[r] = residual[r] +
// RMSNorm(delta[r]) * post, and `updated` gets u. `updated` must be another buffer than `residual`
// (every block of the product reads residual; one writes updated). Device pointers to rows of the
// product's input size; delta null: no residual input.
struct ResidualInput {
  const float* delta = nullptr;
  const float* residual = nullptr;
  float* updated = nullptr;
  const float* post = nullptr;
  const float* pre = nullptr;
  float eps = 0.0f;
};

// y [n, dim] = RMSNorm(x[rows[i]]) * scale for i < n, or of x[i] when `rows` (device, [n]) is
// null. y must not alias x when rows are gathered.
Status RMSNorm(const float* x, std::size_t n, std::size_t dim, const float* scale, float eps,
               float* y, const std::int32_t* rows = nullptr, Stream stream = nullptr);

Status Softcap(float* x, std::size_t n, float cap, Stream stream = nullptr);

// What FilterRows does to one row: the tokens whose bit is clear in the bitset at words[allowed,
// allowed + ceil(cols / 64)) become -inf (allowed < 0: none), then each of the distinct ids
// ids[penalized, penalized + count) in [0, cols) gets the repetition penalty (v < 0 ? v * penalty
// : v / penalty). The device form of a model's LogitsFilter.
struct RowFilter {
  std::int32_t allowed = -1;
  std::int32_t penalized = 0, count = 0;
  float penalty = 1.0f;
};
// Applies filters[r] to row r of x [rows, cols] in place (two launches of fixed shape).
Status FilterRows(float* x, std::size_t rows, std::size_t cols, const RowFilter* filters,
                  const std::uint64_t* words, const std::int32_t* ids, Stream stream = nullptr);

// out [rows] = for each row of x [rows, cols], the index of its largest value, the lowest among
// equal ones (as the CPU sampler's ArgMax), or -1 when no value is a number above -inf. Long rows
// are cut into chunks reduced by blocks of their own, whose results a second launch combines in
// `workspace` (ArgmaxRowsWorkspace(rows, cols) bytes).
std::size_t ArgmaxRowsWorkspace(std::size_t rows, std::size_t cols);
Status ArgmaxRows(const float* x, std::size_t rows, std::size_t cols, std::int32_t* out,
                  void* workspace, Stream stream = nullptr);

// For each row of x [rows, cols]: its kTopRows largest values, ordered by value descending and then
// by index ascending (NaN counts as -inf; a row shorter than kTopRows is padded with -inf at index
// INT32_MAX), into values / indices [rows, kTopRows]. `workspace` holds TopRowsWorkspace(rows,
// cols) bytes. A few launches whatever the row length (1,024-value chunks sorted in shared memory,
// then their winners, and so on).
inline constexpr std::size_t kTopRows = 64;
std::size_t TopRowsWorkspace(std::size_t rows, std::size_t cols);
Status TopRows(const float* x, std::size_t rows, std::size_t cols, float* values,
               std::int32_t* indices, void* workspace, Stream stream = nullptr);

Status GeluTanhMul(const float* gate, const float* up, std::size_t n, float* out,
                   Stream stream = nullptr);
// GeluTanhMul that also writes out as two BF16 terms (hi at terms[0, n), lo at terms[n, 2n)), as
// RMSNormAddToNormSplit does; terms null: GeluTanhMul; out null: the terms alone.
Status GeluTanhMulSplit(const float* gate, const float* up, std::size_t n, float* out,
                        std::uint16_t* terms, Stream stream = nullptr);

}  // namespace fgnet::cuda
