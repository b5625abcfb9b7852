// Device helpers shared by the GEMV kernels (matmul.cu, mma_gemv.cu, quant_matmul.cu) and the
// adapters' shrink (lora.cu): the block shape and the warp's butterfly reduce-scatter of its
// per-lane partial sums.
#pragma once

#include <cstddef>
#include <type_traits>

#include "backend/cuda/kernel_support.cuh"

namespace fgnet::cuda::internal {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;

__host__ __device__ constexpr int Pow2Ceil(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

__host__ __device__ constexpr int Log2(int n) {
  int l = 0;
  while ((1 << l) < n) ++l;
  return l;
}

// Butterfly reduce-scatter of M (a power of two, <= 32) values held by every lane of a warp: lane
// l ends with the warp's sum of value l >> (5 - log2 M), in M - 1 + 5 - log2 M shuffles (instead
// of 5 M for M separate reductions). Halving step: the lanes whose bit OFF is set keep the upper
// half of the values and receive their partner's upper half.
template <int N, int Off, int M>
struct ReduceStep {
  __device__ __forceinline__ static void Run(float (&v)[M], int lane) {
    if constexpr (Off >= 1) {
      if constexpr (N > 1) {
        const bool upper = (lane & Off) != 0;
#pragma unroll
        for (int i = 0; i < N / 2; ++i) {
          const float send = upper ? v[i] : v[i + N / 2];
          const float keep = upper ? v[i + N / 2] : v[i];
          v[i] = keep + __shfl_xor_sync(kFullMask, send, Off);
        }
        ReduceStep<N / 2, Off / 2, M>::Run(v, lane);
      } else {
        v[0] += __shfl_xor_sync(kFullMask, v[0], Off);
        ReduceStep<1, Off / 2, M>::Run(v, lane);
      }
    }
  }
};

template <int M>
__device__ __forceinline__ float ReduceScatter(float (&v)[M], int lane) {
  static_assert(M >= 1 && M <= 32 && (M & (M - 1)) == 0);
  ReduceStep<M, 16, M>::Run(v, lane);
  return v[0];
}

// a + w . (lo, hi), the 8 products added in order with fused multiply-adds: how every GEMV kernel
// accumulates 8 weights against 8 activations (lo = x[0..3], hi = x[4..7]).
__device__ __forceinline__ float Dot8(const float (&w)[8], const float4& lo, const float4& hi,
                                      float a) {
  a = fmaf(w[0], lo.x, a);
  a = fmaf(w[1], lo.y, a);
  a = fmaf(w[2], lo.z, a);
  a = fmaf(w[3], lo.w, a);
  a = fmaf(w[4], hi.x, a);
  a = fmaf(w[5], hi.y, a);
  a = fmaf(w[6], hi.z, a);
  return fmaf(w[7], hi.w, a);
}

// The instance of a kernel template for a row count known at run time: make(std::integral_constant<
// int, R>{}) for R = rows, 1 <= rows <= kMaxRows (larger counts get kMaxRows).
template <std::size_t kMaxRows, int R = 1, typename Make>
auto ForRows(int rows, const Make& make) {
  if constexpr (R >= static_cast<int>(kMaxRows)) {
    return make(std::integral_constant<int, R>{});
  } else {
    return rows <= R ? make(std::integral_constant<int, R>{})
                     : ForRows<kMaxRows, R + 1>(rows, make);
  }
}

}  // namespace fgnet::cuda::internal
