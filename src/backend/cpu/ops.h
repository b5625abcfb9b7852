// Elementwise and row-wise kernels of the Gemma 3 forward pass, on f32 activations. Each has a
// scalar twin in backend/cpu/reference.h; the SIMD versions are dispatched at run time.
// Rows are contiguous: a [rows, dim] buffer has row r at offset r * dim.
// Thread-safety: reentrant; single-threaded (callers split work themselves if they wish).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "backend/cpu/matmul.h"

namespace fgnet::cpu {

// y[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * scale for each of `rows` rows of `dim`, where
// `scale` [dim] is the f32 factor (1 + w) of Gemma's RMSNorm. x and y may be the same buffer.
// Per-head norms use rows = tokens * heads, dim = head_dim.
void RMSNorm(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
             float* y);

// residual[r] += RMSNorm(x[r]) for `rows` rows of `dim` (the post-attention / post-MLP norm
// followed by the residual add).
void RMSNormAddTo(const float* x, std::size_t rows, std::size_t dim, const float* scale, float eps,
                  float* residual);

// Rotary embedding, NeoX half-split pairing, in place on `rows` rows of `heads` heads of
// `head_dim` (row stride heads * head_dim). cos/sin: [rows, head_dim / 2], the table of each
// row's position (see RopeTable). For i < half: (x_i, x_{i+half}) becomes
// (x_i cos - x_{i+half} sin, x_{i+half} cos + x_i sin).
void RoPE(float* x, std::size_t rows, std::size_t heads, std::size_t head_dim, const float* cos,
          const float* sin);

// The f32 inverse frequencies of transformers' default / linear RoPE:
// inv_freq[i] = 1 / theta^(f32(2i) / f32(head_dim)) / f32(scaling), i < head_dim / 2.
void RopeInvFreq(double theta, double scaling, std::size_t head_dim, float* inv_freq);
// cos/sin [n, half] for positions first_pos .. first_pos + n - 1: angle = f32(pos) * inv_freq
// rounded to f32, then cos and sin of that f32 angle (correctly rounded via double).
void RopeTable(const float* inv_freq, std::size_t half, std::int64_t first_pos, std::size_t n,
               float* cos, float* sin);

// out[i] = gelu_tanh(gate[i]) * up[i], gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715
// x^3))). out may alias gate or up.
void GeluTanhMul(const float* gate, const float* up, std::size_t n, float* out);

// In-place softmax of x[0, n).
void Softmax(float* x, std::size_t n);

// In-place x = cap * tanh(x / cap).
void Softcap(float* x, std::size_t n, float cap);

// out[t, :] = f32(table[ids[t], :]) * scale, out: [ids.size(), table.cols]. Ids must be in range
// (the caller validates them).
void EmbedRows(const WeightMatrix& table, std::span<const std::int32_t> ids, float scale,
               float* out);

// Dot product of two f32 vectors of length n.
float Dot(const float* a, const float* b, std::size_t n);

// The Highway target (HWY_AVX3, HWY_AVX2, ...) that the kernels dispatch to right now, and its
// name ("AVX3", ...): for logs, benchmarks and the tests that run every target.
std::int64_t ActiveTarget();
const char* ActiveTargetName();

}  // namespace fgnet::cpu
