// Plain scalar references of every CPU kernel (matmul.h, ops.h, attention.h): obviously correct
// loops, with double accumulation where a sum is involved. Used by the tests as ground truth; not
// tuned for speed. Same contracts as the kernels they mirror.
// Thread-safety: reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "backend/cpu/attention.h"
#include "backend/cpu/matmul.h"

namespace fgnet::cpu::reference {

// W[r, c] widened to f32 (a quantized element decoded by DequantizeRow, see quant.h).
float WeightAt(const WeightMatrix& w, std::size_t r, std::size_t c);
// out[0, w.cols) = row r of W in f32.
void RowAt(const WeightMatrix& w, std::size_t r, float* out);

void MatMul(const float* x, std::size_t n, std::size_t ldx, const WeightMatrix& w, float* y,
            std::size_t ldy);
void GemmF32(const float* a, std::size_t lda, std::size_t M, const float* b, std::size_t ldb,
             bool b_is_kn, std::size_t K, std::size_t N, float* c, std::size_t ldc,
             bool accumulate);
void RMSNorm(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
             float* y);
void RMSNormAddTo(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
                  float* residual);
void RoPE(float* x, std::size_t rows, std::size_t heads, std::size_t head_dim, const float* cos,
          const float* sin);
void GeluTanhMul(const float* gate, const float* up, std::size_t n, float* out);
void Softmax(float* x, std::size_t n);
void Softcap(float* x, std::size_t n, float cap);
void EmbedRows(const WeightMatrix& table, std::span<const std::int32_t> ids, float scale,
               float* out);
float Dot(const float* a, const float* b, std::size_t n);
void Attention(const float* q, std::size_t n, std::int64_t first_pos, std::span<const KVSpan> kv,
               const AttentionParams& params, float* out);

}  // namespace fgnet::cpu::reference
