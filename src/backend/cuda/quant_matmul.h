// Block-quantized weights on the GPU: the layouts they are repacked into on upload, the decode
// GEMV that streams them, their dequantization (for the cuBLAS path of many-row products) and the
// embedding gather from a quantized table.
//
// The GGML block layouts of backend/cpu/quant.h interleave scales and values in blocks of 18 to
// 210 bytes, which no 16-byte load lines up with. On upload each matrix is split, losslessly, into
// a value array (rows of 16-byte chunks) and a scale array:
//
//   kInt8G32   (Q8_0)  int8 q per element, one f32 s per 32:           w = f32(q) * s
//   kInt8G16   (Q6_K)  int8 q (the 6-bit value - 32), one f32 s per 16: w = s * f32(q)
//                      with s = d * sc, the product the CPU computes
//   kUInt4G32  (Q4_0, Q4_K)  4-bit q, 16 bytes per 32 elements (elements 0-15 in the low nibbles,
//                      16-31 in the high ones), f32 (s, m) per 32:     w = s * f32(q) - m
//                      Q4_0: s = d, m = 8 d; Q4_K: s = d * sc, m = dmin * mn
//
// Every w is then the f32 value the CPU's DequantizeRow gives, bit for bit (but for the sign of a
// Q4_0 zero, which the CPU gets as (8 - 8) * d and the GPU as d * 8 - 8 d): the products are
// exact (at most 21 significant bits) except Q6_K's, which rounds as the CPU's does, and
// s * q - m has one rounding on both. The kernels widen weights to f32 in registers and multiply
// the f32 activations with them, so the GPU's products differ from the CPU's only by summation
// order. Bytes read per weight: 1.125 (Q8_0), 1.25 (Q6_K: 8-bit values, a scale per 16), 0.75
// (4-bit).
// Thread-safety: reentrant; launches on one stream are ordered by the stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backend/cuda/ops.h"
#include "tensor/dtype.h"
#include "util/status.h"

namespace fgnet::cuda {

enum class QuantLayout : std::uint8_t { kInt8G32, kInt8G16, kUInt4G32 };

// The layout a quantized DType is repacked into.
QuantLayout QuantLayoutFor(DType type);

// Elements per scale (32 or 16), value bytes per element row of `cols`, and scale floats per row
// (two per group for kUInt4G32).
std::size_t QuantGroupSize(QuantLayout layout);
std::size_t QuantRowBytes(QuantLayout layout, std::size_t cols);
std::size_t QuantRowScales(QuantLayout layout, std::size_t cols);

// A repacked matrix on the host, ready to upload.
struct PackedQuantMatrix {
  QuantLayout layout = QuantLayout::kInt8G32;
  std::vector<std::uint8_t> values;  // [rows, QuantRowBytes]
  std::vector<float> scales;         // [rows, QuantRowScales]
};

// Repacks `rows` rows of `cols` elements stored as `type` (Q8_0, Q4_0, Q4_K or Q6_K; cols a
// multiple of the type's block). Errors: another type, cols not a multiple of the block.
Result<PackedQuantMatrix> PackQuantMatrix(DType type, const void* data, std::size_t rows,
                                          std::size_t cols);

// The f32 values of row `row` of a packed matrix (the host reference of the kernels' decoding).
void UnpackQuantRow(const PackedQuantMatrix& m, std::size_t cols, std::size_t row, float* out);

// A repacked matrix [rows, cols] in device memory; `values` 16-byte aligned.
struct QuantMatrix {
  QuantLayout layout = QuantLayout::kInt8G32;
  const std::uint8_t* values = nullptr;
  const float* scales = nullptr;
  std::size_t rows = 0;
  std::size_t cols = 0;
};

// One product of a multi-output call: y [rows, w->rows] = x w^T.
struct QuantProduct {
  const QuantMatrix* w;
  float* y;
};

// out[t, :] = row ids[t] of `table` (its cols elements) times `scale`, as cpu::DequantRowScaled:
// (w * scale) rounded once, or w itself for scale 1.
Status EmbedRowsQuant(const QuantMatrix& table, const std::int32_t* ids, std::size_t n, float scale,
                      float* out, Stream stream = nullptr);

// out [n, cols] = rows first .. first + n - 1 of `m` as f32.
Status DequantizeRows(const QuantMatrix& m, std::size_t first, std::size_t n, float* out,
                      Stream stream = nullptr);

namespace internal {

// y_i [rows, w_i.rows] = x [rows, cols] w_i^T (or +=) for rows <= 8 and up to 4 products of one
// layout and input size (q, k and v): one launch per batch of rows whose activations fit in
// shared memory together. Each y_i equals what a launch for w_i alone computes, bit for bit.
// `multiprocessors` sizes the grid.
Status LaunchQuantGemv(const float* x, std::size_t rows, std::span<const QuantProduct> products,
                       bool accumulate, int multiprocessors, Stream stream);

}  // namespace internal

}  // namespace fgnet::cuda
