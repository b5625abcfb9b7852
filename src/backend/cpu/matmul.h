// Matrix multiplication with a weight matrix: y[n, out] = x[n, in] . W^T, W [out, in] row-major
// in F32, BF16 or F16, or block-quantized (Q8_0, Q4_0, Q4_K, Q6_K: rows of blocks, in a multiple
// of the block size; layouts in quant.h). Weights are widened exactly to f32 in registers and
// products are accumulated in f32 with FMA; activations stay f32. A quantized matrix is never
// dequantized as a whole: the decode regime decodes each block in registers, the prefill regime
// only the rows of the panel it packs. The activations are not quantized (no int8 dot
// products): the only error is the weights' own, for more arithmetic per byte of weights.
//
// Two regimes, chosen by n:
//   * n < 12 (decode, short chunks): the weight rows are read one after the other -- one
//     sequential stream per thread, which the hardware prefetcher follows at full memory
//     bandwidth -- and each row is dotted with up to four tokens at a time;
//   * n >= 12 (prefill): panels of weight rows are widened and transposed to f32 once per call
//     and a register-blocked micro-kernel (6 tokens x 64 output rows with AVX-512) reuses every
//     loaded vector many times, so the speed is the FMA throughput.
// Work is split over output rows with the ThreadPool (runs of rows claimed dynamically, long
// runs first); the SIMD code is dispatched at run time (Highway) to the best instruction set the
// CPU supports.
// Thread-safety: the functions are reentrant given distinct Workspaces and outputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "backend/cpu/workspace.h"
#include "tensor/dtype.h"
#include "tensor/tensor.h"
#include "util/thread_pool.h"

namespace fgnet::cpu {

// A row-major weight matrix [rows = out_features, cols = in_features]; rows are `cols` apart.
struct WeightMatrix {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  std::size_t rows = 0;
  std::size_t cols = 0;

  // Views a rank-2 TensorView (FGNET_CHECKs the rank).
  static WeightMatrix FromTensor(const TensorView& t);
  std::size_t num_bytes() const { return rows * DTypeRowBytes(dtype, cols); }
};

// One product of a MatMulMany call: y [n, ldy] receives x . w^T in its first w->rows columns.
struct MatMulOutput {
  const WeightMatrix* w = nullptr;
  float* y = nullptr;
  std::size_t ldy = 0;
};

// y[t, j] = sum_k x[t, k] * W[j, k] for t < n, j < w.rows. x: [n, ldx] with ldx >= w.cols;
// y: [n, ldy] with ldy >= w.rows. x and y must not overlap.
void MatMul(const float* x, std::size_t n, std::size_t ldx, const WeightMatrix& w, float* y,
            std::size_t ldy, ThreadPool& pool, Workspace& ws);

// Several products of the same x (e.g. the q, k and v projections) in one parallel loop. All
// weights must have w->cols == the same in_features.
void MatMulMany(const float* x, std::size_t n, std::size_t ldx, std::span<const MatMulOutput> outs,
                ThreadPool& pool, Workspace& ws);

// Internal building block, exposed for the tests: C[m, j] (+)= sum_k A[m, k] * B[k, j] for
// m < M, j < N, where B is given transposed as a row-major f32 matrix Bt [N, K] (rows `ldb`
// apart), i.e. C = A . Bt^T, or with `b_is_kn` as a row-major f32 matrix B [K, N] (rows `ldb`
// apart). Single-threaded; packs panels into ws.ForThread(0).
void GemmF32(const float* a, std::size_t lda, std::size_t M, const float* b, std::size_t ldb,
             bool b_is_kn, std::size_t K, std::size_t N, float* c, std::size_t ldc, bool accumulate,
             Workspace& ws);

// GemmF32 packing into caller-provided space of GemmPanelFloats(K) floats, so that several
// threads of a parallel loop can each run one (e.g. with Workspace::ForThread).
std::size_t GemmPanelFloats(std::size_t K);

// y[t, j] = x[t] . w[j] for an f32 row-major w [rows, K], on the calling thread: a few tokens
// stream the rows (each read once), more run GemmF32WithPanel with `panel` (GemmPanelFloats(K)
// floats). For the small products of run-time LoRA inside a parallel loop.
inline constexpr std::size_t kOnThreadPackingTokens = 8;
void MatMulF32OnThread(const float* x, std::size_t n, std::size_t ldx, const float* w,
                       std::size_t rows, std::size_t K, float* y, std::size_t ldy, float* panel);
void GemmF32WithPanel(const float* a, std::size_t lda, std::size_t M, const float* b,
                      std::size_t ldb, bool b_is_kn, std::size_t K, std::size_t N, float* c,
                      std::size_t ldc, bool accumulate, float* panel);

}  // namespace fgnet::cpu
