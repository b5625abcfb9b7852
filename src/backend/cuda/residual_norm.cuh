// The post-norm, residual add and pre-norm between two blocks of the forward pass, one row per
// warp: the device side of RMSNormAddToNorm (ops.cu), of the GEMV kernels that stage their input
// as a ResidualInput (matmul.cu, mma_gemv.cu) and of the adapters' shrink of one (lora.cu). All
// use this one function, so that every sum is taken in the same order and they give the same bits.
#pragma once

#include "backend/cuda/kernel_support.cuh"

namespace fgnet::cuda::internal {

// The warp's sum of v (xor butterfly: every lane gets the same bits).
__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float AddSquares(float s, const float4& v) {
  s += v.x * v.x;
  s += v.y * v.y;
  s += v.z * v.z;
  return s + v.w * v.w;
}

// r + d * inv * w and t * inv * w, the two steps of ResidualNormRow (every path the same
// expression, so the same bits).
__device__ __forceinline__ float4 AddScaled(const float4& r, const float4& d, float inv,
                                            const float4& w) {
  return make_float4(r.x + d.x * inv * w.x, r.y + d.y * inv * w.y, r.z + d.z * inv * w.z,
                     r.w + d.w * inv * w.w);
}

__device__ __forceinline__ float4 Scaled(const float4& t, float inv, const float4& w) {
  return make_float4(t.x * inv * w.x, t.y * inv * w.y, t.z * inv * w.z, t.w * inv * w.w);
}

// 16-byte loads a lane has in flight per array: a 640-wide row is one batch.
constexpr int kNormBatch = 5;

// One row of `dim` (a multiple of 4; every pointer 16-byte aligned) by one warp, lane `lane`
// taking the float4s lane, lane + 32, ... in batches of kNormBatch loads per array:
// u = residual + RMSNorm(delta) * post, written to `updated` unless it is null (it may be
// `residual` itself: a batch's loads come before its stores, each lane's to its own columns),
// then y = RMSNorm(u) * pre, handed to emit(i, y's float4 i). hold(i) returns a float4& that keeps
// u's float4 i between the two passes (it may be updated's own float4 when updated is null); a
// row of one batch keeps u in registers too, and hold(i) gets it all the same.
template <typename Hold, typename Emit>
__device__ __forceinline__ void ResidualNormRow(const float* delta, const float* residual,
                                                float* updated, const float* post, const float* pre,
                                                float eps, int dim, int lane, Hold&& hold,
                                                Emit&& emit) {
  const int n4 = dim / 4;
  const auto* d4 = reinterpret_cast<const float4*>(delta);
  const auto* r4 = reinterpret_cast<const float4*>(residual);
  const auto* post4 = reinterpret_cast<const float4*>(post);
  const auto* pre4 = reinterpret_cast<const float4*>(pre);
  auto* u4 = reinterpret_cast<float4*>(updated);
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (n4 <= 32 * kNormBatch) {
    // A row of one batch (the 640 of FunctionGemma-270M): every load at once, one round trip to
    // memory instead of three; the same sums in the same order as the loop below.
    float4 d[kNormBatch], u[kNormBatch], p[kNormBatch], q[kNormBatch];
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) {
      const int i = lane + 32 * j;
      const bool in = i < n4;
      d[j] = in ? d4[i] : zero;
      u[j] = in ? r4[i] : zero;
      p[j] = in ? post4[i] : zero;
      q[j] = in ? pre4[i] : zero;
    }
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) ss = AddSquares(ss, d[j]);
    const float inv = rsqrtf(WarpSum(ss) / static_cast<float>(dim) + eps);
    float ss2 = 0.0f;
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) {
      const int i = lane + 32 * j;
      if (i >= n4) break;
      u[j] = AddScaled(u[j], d[j], inv, p[j]);
      if (u4 != nullptr) u4[i] = u[j];
      hold(i) = u[j];
      ss2 = AddSquares(ss2, u[j]);
    }
    const float inv2 = rsqrtf(WarpSum(ss2) / static_cast<float>(dim) + eps);
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) {
      const int i = lane + 32 * j;
      if (i >= n4) break;
      emit(i, Scaled(u[j], inv2, q[j]));
    }
    return;
  }
  float ss = 0.0f;
  for (int i0 = lane; i0 < n4; i0 += 32 * kNormBatch) {
    float4 d[kNormBatch];
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) d[j] = i0 + 32 * j < n4 ? d4[i0 + 32 * j] : zero;
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) ss = AddSquares(ss, d[j]);
  }
  const float inv = rsqrtf(WarpSum(ss) / static_cast<float>(dim) + eps);
  float ss2 = 0.0f;
  for (int i0 = lane; i0 < n4; i0 += 32 * kNormBatch) {
    float4 d[kNormBatch], r[kNormBatch], p[kNormBatch];
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) {
      const int i = i0 + 32 * j;
      d[j] = i < n4 ? d4[i] : zero;
      r[j] = i < n4 ? r4[i] : zero;
      p[j] = i < n4 ? post4[i] : zero;
    }
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) {
      const int i = i0 + 32 * j;
      if (i >= n4) break;
      const float4 u = AddScaled(r[j], d[j], inv, p[j]);
      if (u4 != nullptr) u4[i] = u;
      hold(i) = u;
      ss2 = AddSquares(ss2, u);
    }
  }
  const float inv2 = rsqrtf(WarpSum(ss2) / static_cast<float>(dim) + eps);
  for (int i0 = lane; i0 < n4; i0 += 32 * kNormBatch) {
    float4 p[kNormBatch];
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) p[j] = i0 + 32 * j < n4 ? pre4[i0 + 32 * j] : zero;
#pragma unroll
    for (int j = 0; j < kNormBatch; ++j) {
      if (i0 + 32 * j >= n4) break;
      emit(i0 + 32 * j, Scaled(hold(i0 + 32 * j), inv2, p[j]));
    }
  }
}

// ResidualNormRow whose y(i) (a float4&) keeps u's float4 i and then gets y's in its place.
template <typename Y>
__device__ __forceinline__ void ResidualNormRow(const float* delta, const float* residual,
                                                float* updated, const float* post, const float* pre,
                                                float eps, int dim, int lane, Y&& y) {
  ResidualNormRow(delta, residual, updated, post, pre, eps, dim, lane, y,
                  [&y](int i, const float4& v) { y(i) = v; });
}

}  // namespace fgnet::cuda::internal
