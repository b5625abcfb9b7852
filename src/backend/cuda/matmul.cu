// The GEMV kernel of the few-row matrix products, the BF16 rounding of the cuBLAS path's
// activations, and the grouped LoRA shrink / expand kernels (backend/cuda/matmul.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

#include "backend/cuda/device.h"
#include "backend/cuda/gemv_common.cuh"
#include "backend/cuda/gemv_epilogue.cuh"
#include "backend/cuda/matmul.h"
#include "backend/cuda/matmul_kernels.h"
#include "backend/cuda/residual_norm.cuh"

namespace fgnet::cuda {
namespace {

using internal::AllowDependents;
using internal::DependentLaunchSupported;
using internal::Dot8;
using internal::GeluTanhTimes;
using internal::GemvTargets;
using internal::kFullMask;
using internal::kGemvThreads;
using internal::kGemvWarps;
using internal::Launch;
using internal::LocateTile;
using internal::Log2;
using internal::LoraDelta;
using internal::Pow2Ceil;
using internal::ReduceScatter;
using internal::ResidualFrom;
using internal::RowsFrom;
using internal::TileRef;
using internal::WaitPrior;

// Eight BF16 values (one 16-byte load) widened to f32; widening is exact.
__device__ __forceinline__ void WidenBF16x8(const uint4& w, float (&f)[8]) {
  f[0] = __uint_as_float(w.x << 16);
  f[1] = __uint_as_float(w.x & 0xffff0000u);
  f[2] = __uint_as_float(w.y << 16);
  f[3] = __uint_as_float(w.y & 0xffff0000u);
  f[4] = __uint_as_float(w.z << 16);
  f[5] = __uint_as_float(w.z & 0xffff0000u);
  f[6] = __uint_as_float(w.w << 16);
  f[7] = __uint_as_float(w.w & 0xffff0000u);
}

// Lane `lane`'s chunks c0 + 32 u + lane of W rows o0 .. o0 + N - 1 into wv[u][J0 ..
// J0 + N - 1] (rows past `out` read the last row; chunks past the row read as zero), streamed past
// the caches.
template <int U, int NW, int J0, int N>
__device__ __forceinline__ void LoadWBatch(uint4 (&wv)[U][NW], const uint4* __restrict__ w, int o0,
                                           int out, int chunks, int c0, int lane) {
  static_assert(J0 + N <= NW);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const uint4* row = w + static_cast<std::size_t>(min(o0 + j, out - 1)) * chunks;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * 32 + lane;
      wv[u][J0 + j] = c < chunks ? __ldcs(row + c) : make_uint4(0, 0, 0, 0);
    }
  }
}

// Stages x [R, in] in shared memory as f32, permuted so that a warp's loads of
// lane-consecutive chunks are free of bank conflicts: float4 slot (r * 2 + h) * chunks + c holds
// x[r, 8c + 4h .. 8c + 4h + 3]. The caller synchronises the block afterwards.
template <int R>
__device__ __forceinline__ void StageX(const float* __restrict__ x, int in, float4* xs,
                                       bool x_aligned) {
  const int chunks = in / 8;
  if (x_aligned) {
    // Four 16-byte loads in flight per thread.
    const int in4 = in / 4;
    const int n4 = R * in4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int base = static_cast<int>(threadIdx.x); base < n4; base += 4 * kGemvThreads) {
      float4 v[4] = {};
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int e = base + u * kGemvThreads;
        if (e < n4) v[u] = __ldg(x4 + e);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int e = base + u * kGemvThreads;
        if (e < n4) {
          const int r = e / in4;
          const int k4 = e - r * in4;
          xs[(r * 2 + (k4 & 1)) * chunks + (k4 >> 1)] = v[u];
        }
      }
    }
  } else {
    float* xsf = reinterpret_cast<float*>(xs);
    for (int e = static_cast<int>(threadIdx.x); e < R * in; e += kGemvThreads) {
      const int r = e / in;
      const int k = e - r * in;
      xsf[((r * 2 + ((k >> 2) & 1)) * chunks + (k >> 3)) * 4 + (k & 3)] = x[e];
    }
  }
}

// Stages the R rows of a residual input (ResidualInput) in StageX's layout: warp w normalises rows
// w, w + kGemvWarps, ... (ResidualNormRow, holding the new residual in the row's slots between its
// two sums); block 0 also writes the new residual rows. The caller synchronises the block.
template <int R>
__device__ __forceinline__ void StageResidual(const ResidualInput& res, int in, float4* xs) {
  const int chunks = in / 8;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  for (int r = static_cast<int>(threadIdx.x) >> 5; r < R; r += kGemvWarps) {
    const std::size_t off = static_cast<std::size_t>(r) * in;
    internal::ResidualNormRow(
        res.delta + off, res.residual + off, blockIdx.x == 0 ? res.updated + off : nullptr,
        res.post, res.pre, res.eps, in, lane,
        [&](int i) -> float4& { return xs[(r * 2 + (i & 1)) * chunks + (i >> 1)]; });
  }
}

// The input of a GEMV kernel into shared memory: x (StageX), or the rows of `res` where it has a
// delta.
template <int R>
__device__ __forceinline__ void StageInput(const float* __restrict__ x, const ResidualInput& res,
                                           int in, float4* xs, bool x_aligned) {
  if (res.delta != nullptr) {
    StageResidual<R>(res, in, xs);
  } else {
    StageX<R>(x, in, xs, x_aligned);
  }
}

// acc[j * R + r] += the dot products of the batch's chunks of W row j (wv[.][j]) and x row r, in
// chunk order, the 8 values of a chunk in order. A lane's chunks, and so the order of every sum,
// do not depend on NW: a W row gives the same f32 result whatever the tile it is computed in.
template <int R, int NW, int U, int M>
__device__ __forceinline__ void AccumulateBatch(const uint4 (&wv)[U][NW], const float4* xs,
                                                int chunks, int c0, int lane, float (&acc)[M]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = c0 + u * 32 + lane;
    if (c < chunks) {
      float wf[NW][8];
#pragma unroll
      for (int j = 0; j < NW; ++j) WidenBF16x8(wv[u][j], wf[j]);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4 lo = xs[(r * 2) * chunks + c];
        const float4 hi = xs[(r * 2 + 1) * chunks + c];
#pragma unroll
        for (int j = 0; j < NW; ++j) acc[j * R + r] = Dot8(wf[j], lo, hi, acc[j * R + r]);
      }
    }
  }
}

// y_i [R, out_i] = x [R, in] W_i^T (or +=) for the targets' W_i [out_i, in], BF16 as 16-byte
// chunks of 8 values.
//
// The block stages x in shared memory (StageX). Each warp owns tiles of NW consecutive rows of one
// W (grid-stride over the tiles of all targets, so that x is staged once per block whatever the
// sizes); lane l reads chunks l, l + 32, ... of each row, U steps of 32 chunks per batch of loads
// in flight (8 chunks, 128 bytes, per lane), and accumulates the R x NW dot products in f32; one
// butterfly reduction per tile.
//
// kLora (HasLoraEpilogue: lora.row_entries set): each result gets its target's adapters' update
// (LoraDelta). The instances without that epilogue carry none of its code: the GEMVs without
// adapters run faster so.
template <int R, int NW, bool kLora>
__global__ void __launch_bounds__(kGemvThreads, 2)
    GemvKernel(const float* __restrict__ x, int in, const GemvTargets targets, int tiles,
               bool accumulate, bool x_aligned, const LoraRows lora, const ResidualInput res) {
  constexpr int U = 8 / NW;
  constexpr int M = Pow2Ceil(R * NW);
  constexpr int kShift = 5 - Log2(M);
  extern __shared__ float4 xs[];
  const int chunks = in / 8;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int first = static_cast<int>(blockIdx.x) * kGemvWarps + warp;
  const int stride = static_cast<int>(gridDim.x) * kGemvWarps;

  // The first batch of W is requested before x is staged, so that the two latencies overlap,
  // and (launched as a programmatic dependent) before the kernel that writes x has finished.
  uint4 wv[U][NW];
  if (first < tiles) {
    const TileRef t = LocateTile<NW>(targets, first);
    LoadWBatch<U, NW, 0, NW>(wv, t.w, t.o0, t.out, chunks, 0, lane);
  }
  WaitPrior();
  AllowDependents();
  StageInput<R>(x, res, in, xs, x_aligned);
  __syncthreads();

  for (int tile = first; tile < tiles; tile += stride) {
    const TileRef t = LocateTile<NW>(targets, tile);
    float acc[M];
#pragma unroll
    for (int i = 0; i < M; ++i) acc[i] = 0.0f;
    for (int c0 = 0; c0 < chunks; c0 += 32 * U) {
      if (c0 != 0 || tile != first)
        LoadWBatch<U, NW, 0, NW>(wv, t.w, t.o0, t.out, chunks, c0, lane);
      AccumulateBatch<R, NW, U, M>(wv, xs, chunks, c0, lane, acc);
    }

    const float v = ReduceScatter<M>(acc, lane);
    const int e = lane >> kShift;
    if ((lane & ((1 << kShift) - 1)) == 0 && e < R * NW) {
      const int j = e / R;
      const int r = e - j * R;
      const int o = t.o0 + j;
      if (o < t.out) {
        const LoraSite& site = targets.t[t.target].lora;
        float value = v;
        if constexpr (kLora) {
          if (site.groups != nullptr) value += LoraDelta(lora, site, r, o);
        }
        float* dst = t.y + static_cast<std::size_t>(r) * t.out + o;
        *dst = accumulate ? *dst + value : value;
      }
    }
  }
}

// out [R, n] = gelu_tanh(x W_gate^T) * (x W_up^T): GemvKernel's scheme where a warp's tile is NP
// rows o0 .. of W_gate together with the same rows of W_up (2 NP W rows), and the lane that ends
// with gate value (o, r) receives the up value of (o, r) from its partner lane by one shuffle.
// kLora (HasLoraEpilogue): the gate and up values get their sites' adapters' updates first.
template <int R, int NP, bool kLora>
__global__ void __launch_bounds__(kGemvThreads, 2)
    GeGLUKernel(const float* __restrict__ x, int in, const uint4* __restrict__ w_gate,
                const uint4* __restrict__ w_up, int n, float* __restrict__ out, bool x_aligned,
                const LoraRows lora, const LoraSite gate_site, const LoraSite up_site,
                const ResidualInput res) {
  constexpr int NW = 2 * NP;
  constexpr int U = 8 / NW;
  constexpr int M = Pow2Ceil(R * NW);
  constexpr int kShift = 5 - Log2(M);
  static_assert(R * NW <= 32);
  extern __shared__ float4 xs[];
  const int chunks = in / 8;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int tiles = (n + NP - 1) / NP;
  const int first = static_cast<int>(blockIdx.x) * kGemvWarps + warp;
  const int stride = static_cast<int>(gridDim.x) * kGemvWarps;

  uint4 wv[U][NW];
  if (first < tiles) {
    LoadWBatch<U, NW, 0, NP>(wv, w_gate, first * NP, n, chunks, 0, lane);
    LoadWBatch<U, NW, NP, NP>(wv, w_up, first * NP, n, chunks, 0, lane);
  }
  WaitPrior();
  AllowDependents();
  StageInput<R>(x, res, in, xs, x_aligned);
  __syncthreads();

  for (int tile = first; tile < tiles; tile += stride) {
    const int o0 = tile * NP;
    float acc[M];
#pragma unroll
    for (int i = 0; i < M; ++i) acc[i] = 0.0f;
    for (int c0 = 0; c0 < chunks; c0 += 32 * U) {
      if (c0 != 0 || tile != first) {
        LoadWBatch<U, NW, 0, NP>(wv, w_gate, o0, n, chunks, c0, lane);
        LoadWBatch<U, NW, NP, NP>(wv, w_up, o0, n, chunks, c0, lane);
      }
      AccumulateBatch<R, NW, U, M>(wv, xs, chunks, c0, lane, acc);
    }

    // Lane (e << kShift) holds value e = j * R + r: gate row o0 + j for j < NP, up row
    // o0 + j - NP otherwise.
    float v = ReduceScatter<M>(acc, lane);
    const int e = lane >> kShift;
    if (kLora && (lane & ((1 << kShift) - 1)) == 0 && e < R * NW) {
      const bool is_up = e >= R * NP;
      const int eu = is_up ? e - R * NP : e;
      const int o = o0 + eu / R;
      const LoraSite& site = is_up ? up_site : gate_site;
      if (o < n && site.groups != nullptr) v += LoraDelta(lora, site, eu - (eu / R) * R, o);
    }
    const float u = __shfl_down_sync(kFullMask, v, (NP * R) << kShift);
    if ((lane & ((1 << kShift) - 1)) == 0 && e < R * NP) {
      const int j = e / R;
      const int r = e - j * R;
      const int o = o0 + j;
      if (o < n) out[static_cast<std::size_t>(r) * n + o] = GeluTanhTimes(v, u);
    }
  }
}

using GemvFn = void (*)(const float*, int, const GemvTargets, int, bool, bool, const LoraRows,
                        const ResidualInput);
using GeGLUFn = void (*)(const float*, int, const uint4*, const uint4*, int, float*, bool,
                         const LoraRows, const LoraSite, const LoraSite, const ResidualInput);

// The kernels for R rows of NW W rows a warp: fewer rows than the tensor-core GEMV takes, while the
// R x NW sums fit a warp's reduction.
template <int NW>
constexpr std::size_t kGemvRowsFor = std::min<std::size_t>(MatMulContext::kMinTensorCoreRows - 1,
                                                           32 / NW);

template <int NW>
GemvFn GemvFor(int rows, bool lora) {
  return internal::ForRows<kGemvRowsFor<NW>>(rows, [lora](auto r) -> GemvFn {
    return lora ? GemvKernel<decltype(r)::value, NW, true>
                : GemvKernel<decltype(r)::value, NW, false>;
  });
}

template <int NP>
GeGLUFn GeGLUFor(int rows, bool lora) {
  return internal::ForRows<kGemvRowsFor<2 * NP>>(rows, [lora](auto r) -> GeGLUFn {
    return lora ? GeGLUKernel<decltype(r)::value, NP, true>
                : GeGLUKernel<decltype(r)::value, NP, false>;
  });
}

__global__ void ToBF16Kernel(const float* __restrict__ x, std::size_t n,
                             __nv_bfloat16* __restrict__ hi, __nv_bfloat16* __restrict__ lo) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    internal::SplitBF16(x[i], hi + i, lo + i);
  }
}

// Opts kernel `fn` in, once per device, for all the dynamic shared memory a block may take beside
// the kernel's static shared memory (past 48 KiB in all a kernel must opt in). The limit is the
// same whatever the launch, so that threads launching the kernel at once with different sizes do
// not undo each other's setting. Returns that limit.
Result<std::size_t> OptInSharedMemory(const void* fn) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, std::size_t> limits;
  int device = 0;
  FGNET_TRY(CudaCheck(cudaGetDevice(&device), "cudaGetDevice"));
  std::lock_guard<std::mutex> lock(mu);
  if (const auto it = limits.find({fn, device}); it != limits.end()) return it->second;
  FGNET_ASSIGN_OR_RETURN(const std::size_t max_smem, internal::MaxSharedMemoryPerBlock());
  cudaFuncAttributes attributes{};
  FGNET_TRY(CudaCheck(cudaFuncGetAttributes(&attributes, fn), "cudaFuncGetAttributes"));
  const std::size_t limit = max_smem - std::min(max_smem, attributes.sharedSizeBytes);
  FGNET_TRY(CudaCheck(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(limit)),
                      "cudaFuncSetAttribute"));
  limits[{fn, device}] = limit;
  return limit;
}

// ---- Grouped LoRA ----
// The groups' ranges of row_index must not overlap (entry i belongs to one group: its t[i] slot
// in the workspace is that group's). Groups that are not well formed (null matrices, rank outside
// [1, max_rank], a range outside [0, total_rows)) are skipped on the device: callers check them.

constexpr int kLoraRows = 8;         // rows of one group per block
constexpr int kMaxLoraSites = 4;     // sites one LoraShrink / LoraExpand launch takes
constexpr int kShrinkWarps = 8;      // rank rows per shrink block (one per warp)
constexpr int kExpandThreads = 256;  // outputs per expand block (one per thread)

__device__ __forceinline__ bool ValidGroup(const LoraGroup& g, int max_rank, int total_rows) {
  return g.a != nullptr && g.b != nullptr && g.rank > 0 && g.rank <= max_rank && g.first >= 0 &&
         g.count > 0 && g.count <= total_rows - g.first;
}

// Block (row chunk, rank chunk, group): warp q of the chunk computes t[i, q] = A[q, :] . x[row]
// for the chunk's (up to 8) rows of the group, lanes striding over `in`, into the slot of t
// (total_rows * max_rank floats each) of the group's run of groups_per_slot groups.
// Columns a shrink block takes at a time: its rows' x staged in shared memory (kLoraRows rows of
// min(in, kShrinkSpan) floats, dynamic), each lane holding its float4s of the warp's A row in
// registers, so that a product of up to kShrinkSpan columns (FunctionGemma's 640, 1024 and 2048)
// takes one round trip to memory past the previous kernel.
constexpr int kShrinkSpan = 2048;
constexpr int kShrinkSpanVecs = kShrinkSpan / 128;  // float4s of A a lane holds

// Lane l's columns 4 (l + 32 u) .. + 3 of A's span at k0 (zeros past len).
__device__ __forceinline__ void LoadASpan(const float* a, int k0, int len, int lane, bool a_vec,
                                          float4 (&av)[kShrinkSpanVecs]) {
#pragma unroll
  for (int u = 0; u < kShrinkSpanVecs; ++u) {
    const int k = 4 * (lane + 32 * u);
    if (k + 3 < len && a_vec) {
      av[u] = __ldg(reinterpret_cast<const float4*>(a + k0 + k));
    } else {
      av[u].x = k < len ? a[k0 + k] : 0.0f;
      av[u].y = k + 1 < len ? a[k0 + k + 1] : 0.0f;
      av[u].z = k + 2 < len ? a[k0 + k + 2] : 0.0f;
      av[u].w = k + 3 < len ? a[k0 + k + 3] : 0.0f;
    }
  }
}

// The floats of a shrink block's shared memory: kLoraRows rows of a span (a residual input's rows
// whole).
__host__ __device__ constexpr std::size_t ShrinkSpan(std::size_t in, bool residual) {
  return residual || in < kShrinkSpan ? in : std::size_t{kShrinkSpan};
}

// With a residual input (res.delta set; x null), the shrink's x is RMSNormAddToNorm of it
// (ResidualNormRow, the same bits): each block computes its rows whole into shared memory (in <=
// kMaxShrinkOfResidualIn), and the blocks of one more z (grid.z = groups + 1) write the normalised
// rows of all pass_rows rows to `normed` and the new residual rows to res.updated, a warp a row.
__global__ void __launch_bounds__(kShrinkWarps * 32)
    LoraShrinkKernel(const float* __restrict__ x, std::size_t ldx, int in,
                     const LoraGroup* __restrict__ groups, int max_rank,
                     const std::int32_t* __restrict__ row_index, int total_rows,
                     int groups_per_slot, float* __restrict__ t, const ResidualInput res,
                     float* __restrict__ normed, int pass_rows) {
  extern __shared__ float4 xs[];  // [kLoraRows][span / 4]
  __shared__ std::int32_t rows_of[kLoraRows];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const bool residual = res.delta != nullptr;
  if (residual && blockIdx.z == gridDim.z - 1) {
    // The residual input's rows, normalised, for the products that follow.
    WaitPrior();
    AllowDependents();
    const int r = static_cast<int>(blockIdx.x) * kLoraRows + warp;
    if (blockIdx.y != 0 || r >= pass_rows) return;
    const std::size_t off = static_cast<std::size_t>(r) * in;
    auto* y4 = reinterpret_cast<float4*>(normed + off);
    internal::ResidualNormRow(res.delta + off, res.residual + off, res.updated + off, res.post,
                              res.pre, res.eps, in, lane, [y4](int i) -> float4& { return y4[i]; });
    return;
  }
  // The groups, the rows' indices (the pass's arrays, uploaded before its first kernel) and the
  // first span of A come before the previous kernel's results (x). Every CTA waits before it
  // exits, so that this kernel never completes before its predecessor.
  const LoraGroup g = groups[blockIdx.z];
  const int b0 = static_cast<int>(blockIdx.x) * kLoraRows;
  const bool run = ValidGroup(g, max_rank, total_rows) && b0 < g.count;
  const int nb = run ? min(kLoraRows, g.count - b0) : 0;
  if (static_cast<int>(threadIdx.x) < nb) {
    rows_of[threadIdx.x] = row_index[g.first + b0 + static_cast<int>(threadIdx.x)];
  }
  const int q = static_cast<int>(blockIdx.y) * kShrinkWarps + warp;
  const bool active = run && q < g.rank;  // every warp stages x; the active ones multiply
  const float* a = active ? g.a + static_cast<std::size_t>(q) * in : nullptr;
  const bool a_vec = in % 4 == 0 && internal::Aligned16(g.a);
  const int span = static_cast<int>(ShrinkSpan(in, residual));
  float4 av[kShrinkSpanVecs];
  if (active) LoadASpan(a, 0, span, lane, a_vec, av);
  WaitPrior();
  AllowDependents();
  if (!run) return;
  __syncthreads();  // rows_of
  t += static_cast<std::size_t>(blockIdx.z / groups_per_slot) * total_rows * max_rank;
  float acc[kLoraRows];
#pragma unroll
  for (int b = 0; b < kLoraRows; ++b) acc[b] = 0.0f;
  const int span4 = (span + 3) / 4;  // a staged row's float4s
  if (residual) {
    if (warp < nb) {
      const std::size_t off = static_cast<std::size_t>(rows_of[warp]) * in;
      float4* row = xs + warp * span4;
      internal::ResidualNormRow(res.delta + off, res.residual + off, nullptr, res.post, res.pre,
                                res.eps, in, lane, [row](int i) -> float4& { return row[i]; });
    }
    __syncthreads();
  }
  const bool x_vec = !residual && in % 4 == 0 && ldx % 4 == 0 && internal::Aligned16(x);
  for (int k0 = 0; k0 < in; k0 += span) {
    const int len = min(span, in - k0);
    if (!residual) {
      if (k0 > 0) __syncthreads();  // the previous span is used up
      // Every load of the span at once: one round trip.
      if (x_vec) {
#pragma unroll 4
        for (int e = static_cast<int>(threadIdx.x); e < nb * span4; e += kShrinkWarps * 32) {
          const int b = e / span4;
          const int c = e - b * span4;
          xs[e] = 4 * c < len ? __ldg(reinterpret_cast<const float4*>(
                                    x + static_cast<std::size_t>(rows_of[b]) * ldx + k0 + 4 * c))
                              : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
      } else {
        float* xsf = reinterpret_cast<float*>(xs);
#pragma unroll 4
        for (int e = static_cast<int>(threadIdx.x); e < nb * 4 * span4; e += kShrinkWarps * 32) {
          const int b = e / (4 * span4);
          const int k = e - b * 4 * span4;
          xsf[e] = k < len ? x[static_cast<std::size_t>(rows_of[b]) * ldx + k0 + k] : 0.0f;
        }
      }
      __syncthreads();
    }
    if (!active) continue;
    // Lane l takes columns 4 (l + 32 u) .. + 3 of the span.
    if (k0 > 0) LoadASpan(a, k0, len, lane, a_vec, av);
#pragma unroll
    for (int u = 0; u < kShrinkSpanVecs; ++u) {
      const int c = lane + 32 * u;
      if (4 * c >= len) break;
#pragma unroll
      for (int b = 0; b < kLoraRows; ++b) {
        if (b < nb) {  // columns past len hold zeros on both sides
          const float4 xv = xs[b * span4 + c];
          acc[b] = fmaf(av[u].x, xv.x, acc[b]);
          acc[b] = fmaf(av[u].y, xv.y, acc[b]);
          acc[b] = fmaf(av[u].z, xv.z, acc[b]);
          acc[b] = fmaf(av[u].w, xv.w, acc[b]);
        }
      }
    }
  }
  if (!active) return;
  const float v = ReduceScatter<kLoraRows>(acc, lane);
  constexpr int kShift = 5 - Log2(kLoraRows);
  const int b = lane >> kShift;
  if ((lane & ((1 << kShift) - 1)) == 0 && b < nb) {
    t[static_cast<std::size_t>(g.first + b0 + b) * max_rank + q] = v;
  }
}

// Block (output chunk, row chunk, group): thread o computes B[o, :] . t[i] for the chunk's rows
// (t staged in shared memory) and adds row_scale[i] times it to y[row, o], atomically since a row
// may be in several groups (whose updates then add up in no fixed order: the last bits of such a
// row may differ between runs; a row in one group gets one add and is reproducible).
// The outputs of the expands of several sites in one launch (run s of groups_per_slot groups
// updates site s's y, reading slot s of t).
struct ExpandSites {
  float* y[kMaxLoraSites];
  std::size_t ldy[kMaxLoraSites];
  int out[kMaxLoraSites];
};

__global__ void __launch_bounds__(kExpandThreads)
    LoraExpandKernel(const ExpandSites sites, const LoraGroup* __restrict__ groups, int max_rank,
                     const std::int32_t* __restrict__ row_index,
                     const float* __restrict__ row_scale, int total_rows, int groups_per_slot,
                     const float* __restrict__ t) {
  extern __shared__ float ts[];  // [kLoraRows, max_rank]
  const LoraGroup g = groups[blockIdx.z];
  if (!ValidGroup(g, max_rank, total_rows)) return;
  const int site = static_cast<int>(blockIdx.z) / groups_per_slot;
  float* const y = sites.y[site];
  const std::size_t ldy = sites.ldy[site];
  const int out = sites.out[site];
  t += static_cast<std::size_t>(site) * total_rows * max_rank;
  if (static_cast<int>(blockIdx.x) * kExpandThreads >= out) return;
  const int b0 = static_cast<int>(blockIdx.y) * kLoraRows;
  if (b0 >= g.count) return;
  const int nb = min(kLoraRows, g.count - b0);
  for (int e = threadIdx.x; e < kLoraRows * g.rank; e += kExpandThreads) {
    const int b = e / g.rank;
    const int q = e - b * g.rank;
    ts[b * max_rank + q] =
        b < nb ? t[static_cast<std::size_t>(g.first + b0 + b) * max_rank + q] : 0.0f;
  }
  __syncthreads();
  const int o = static_cast<int>(blockIdx.x) * kExpandThreads + static_cast<int>(threadIdx.x);
  if (o >= out) return;
  const float* brow = g.b + static_cast<std::size_t>(o) * g.rank;
  float acc[kLoraRows];
#pragma unroll
  for (int b = 0; b < kLoraRows; ++b) acc[b] = 0.0f;
  for (int q = 0; q < g.rank; ++q) {
    const float bq = brow[q];
#pragma unroll
    for (int b = 0; b < kLoraRows; ++b) acc[b] = fmaf(bq, ts[b * max_rank + q], acc[b]);
  }
#pragma unroll
  for (int b = 0; b < kLoraRows; ++b) {
    if (b < nb) {
      const int i = g.first + b0 + b;
      atomicAdd(y + static_cast<std::size_t>(row_index[i]) * ldy + o, row_scale[i] * acc[b]);
    }
  }
}

constexpr std::size_t kMaxDim = static_cast<std::size_t>(std::numeric_limits<int>::max() / 16);

// Whether a GEMV of `rows` rows takes the tensor-core kernels (mma_gemv.cu).
constexpr bool TakesMma(std::size_t rows) { return rows >= MatMulContext::kMinTensorCoreRows; }

// A GEMV's input: x, or a residual input whose every pointer is set (and then no x).
Status CheckResidualInput(const char* what, const float* x, const ResidualInput* residual) {
  if (residual == nullptr || residual->delta == nullptr) {
    if (x == nullptr) return MakeError(what, ": no input");
    return Ok();
  }
  if (x != nullptr) return MakeError(what, ": both x and a residual input");
  if (residual->residual == nullptr || residual->updated == nullptr || residual->post == nullptr ||
      residual->pre == nullptr) {
    return MakeError(what, ": the residual input lacks a buffer");
  }
  if (residual->updated == residual->residual) {
    return MakeError(what, ": the residual input updates its residual in place");
  }
  const float* const buffers[] = {residual->delta, residual->residual, residual->updated,
                                  residual->post, residual->pre};
  for (const float* p : buffers) {
    if (!internal::Aligned16(p)) {
      return MakeError(what, ": the residual input's buffers are not 16-byte aligned");
    }
  }
  return Ok();
}

// The first row of a batch's x (null where the input is a residual input's).
const float* BatchX(const float* x, std::size_t r0, std::size_t in) {
  return x == nullptr ? nullptr : x + r0 * in;
}

Status CheckLoraSizes(const char* what, std::int32_t num_groups, std::int32_t max_rank,
                      std::int32_t total_rows) {
  if (max_rank <= 0 || max_rank > 1024) {
    return MakeError(what, ": max_rank ", max_rank, " is not in [1, 1024]");
  }
  if (num_groups > 65535) return MakeError(what, ": ", num_groups, " groups exceed 65535");
  if (total_rows > 65535 * kLoraRows) {
    // grid.y of the expand launch: 65535 chunks of 8 rows.
    return MakeError(what, ": ", total_rows, " rows exceed ", 65535 * kLoraRows);
  }
  return Ok();
}

// The shrink; with a residual input (x null), of its `pass_rows` rows normalised, which it also
// writes to `normed` (and the new residual to residual->updated).
Status LaunchShrink(const float* x, std::size_t ldx, std::size_t in, const LoraGroup* groups,
                    std::int32_t num_groups, std::int32_t groups_per_slot, std::int32_t max_rank,
                    const std::int32_t* row_index, std::int32_t total_rows, float* workspace,
                    Stream stream, const ResidualInput& residual = {}, float* normed = nullptr,
                    std::int32_t pass_rows = 0) {
  const bool norm = residual.delta != nullptr;
  const std::int32_t chunks = std::max(total_rows, norm ? pass_rows : 0);
  const dim3 grid(static_cast<unsigned>((chunks + kLoraRows - 1) / kLoraRows),
                  static_cast<unsigned>((max_rank + kShrinkWarps - 1) / kShrinkWarps),
                  static_cast<unsigned>(num_groups + (norm ? 1 : 0)));
  const std::size_t smem = kLoraRows * ((ShrinkSpan(in, norm) + 3) / 4) * sizeof(float4);
  FGNET_ASSIGN_OR_RETURN(const std::size_t limit,
                         OptInSharedMemory(reinterpret_cast<const void*>(LoraShrinkKernel)));
  if (smem > limit) {
    return MakeError("cuda::LoraApply: the shrink's ", smem,
                     " bytes of shared memory a block exceed the GPU's ", limit);
  }
  Launch(LoraShrinkKernel, grid, kShrinkWarps * 32, smem, stream, DependentLaunchSupported(), x,
         ldx, static_cast<int>(in), groups, max_rank, row_index, total_rows, groups_per_slot,
         workspace, residual, normed, static_cast<int>(pass_rows));
  return CudaLastError("cuda::LoraApply (shrink kernel)");
}

Status LaunchExpand(std::span<const LoraExpandSite> sites, const LoraGroup* groups,
                    std::int32_t num_groups, std::int32_t groups_per_slot, std::int32_t max_rank,
                    const std::int32_t* row_index, const float* row_scale, std::int32_t total_rows,
                    const float* workspace, Stream stream) {
  ExpandSites e{};
  std::size_t most = 0;
  for (std::size_t i = 0; i < sites.size(); ++i) {
    e.y[i] = sites[i].y;
    e.ldy[i] = sites[i].ldy;
    e.out[i] = static_cast<int>(sites[i].out);
    most = std::max(most, sites[i].out);
  }
  const dim3 grid(static_cast<unsigned>((most + kExpandThreads - 1) / kExpandThreads),
                  static_cast<unsigned>((total_rows + kLoraRows - 1) / kLoraRows),
                  static_cast<unsigned>(num_groups));
  const std::size_t smem = static_cast<std::size_t>(kLoraRows) * max_rank * sizeof(float);
  LoraExpandKernel<<<grid, kExpandThreads, smem, stream>>>(
      e, groups, max_rank, row_index, row_scale, total_rows, groups_per_slot, workspace);
  return CudaLastError("cuda::LoraApply (expand kernel)");
}

}  // namespace

namespace internal {

Status CheckGemvShape(const char* what, std::size_t rows, std::size_t in, std::size_t max_rows) {
  if (rows > max_rows) {
    return MakeError(what, ": the GEMV kernel takes at most ", max_rows, " rows, not ", rows);
  }
  if (in == 0 || in % 8 != 0) {
    return MakeError(what, ": the input size ", in, " is not a positive multiple of 8");
  }
  if (in > kMaxDim) return MakeError(what, ": the input size ", in, " is too large");
  return Ok();
}

Result<std::size_t> GemvRowBatch(const char* what, std::size_t rows, std::size_t in,
                                 std::size_t max_rows) {
  FGNET_TRY(CheckGemvShape(what, rows, in, max_rows));
  FGNET_ASSIGN_OR_RETURN(const std::size_t max_smem, MaxSharedMemoryPerBlock());
  const std::size_t row_bytes = in * sizeof(float);
  const std::size_t fit = max_smem / row_bytes;
  if (fit == 0) {
    return MakeError(what, ": an input row of ", in, " floats does not fit in shared memory (",
                     max_smem, " bytes)");
  }
  return std::min(rows, fit);
}

Result<std::size_t> MaxSharedMemoryPerBlock() {
  int device = 0;
  FGNET_TRY(CudaCheck(cudaGetDevice(&device), "cudaGetDevice"));
  int max_smem = 0;
  FGNET_TRY(
      CudaCheck(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                "cudaDeviceGetAttribute"));
  return static_cast<std::size_t>(max_smem);
}

Result<unsigned> ResidentGrid(const void* fn, std::size_t smem, std::size_t blocks,
                              int multiprocessors) {
  if (smem > 0) {
    FGNET_ASSIGN_OR_RETURN(const std::size_t limit, OptInSharedMemory(fn));
    if (smem > limit) {
      return MakeError("a GEMV launch needs ", smem,
                       " bytes of dynamic shared memory a block; the kernel may take ", limit);
    }
  }
  int per_sm = 0;
  FGNET_TRY(
      CudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kGemvThreads, smem),
                "cudaOccupancyMaxActiveBlocksPerMultiprocessor"));
  const std::size_t resident =
      static_cast<std::size_t>(std::max(per_sm, 1)) * static_cast<std::size_t>(multiprocessors);
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min(blocks, resident)));
}

Result<unsigned> GemvGrid(const void* fn, std::size_t smem, std::size_t tiles,
                          int multiprocessors) {
  return ResidentGrid(fn, smem, (tiles + kGemvWarps - 1) / kGemvWarps, multiprocessors);
}

Status LaunchGemv(const float* x, std::size_t rows, std::size_t in, const std::uint16_t* w_bf16,
                  std::size_t out, float* y, bool accumulate, int multiprocessors, Stream stream) {
  const MatMulContext::MatMulOutput output{w_bf16, out, y};
  return LaunchGemvMany(x, rows, in, std::span(&output, 1), accumulate, multiprocessors, stream);
}

Status LaunchGemvMany(const float* x, std::size_t rows, std::size_t in,
                      std::span<const MatMulContext::MatMulOutput> outputs, bool accumulate,
                      int multiprocessors, Stream stream, const LoraEpilogue* lora,
                      const ResidualInput* residual) {
  constexpr const char* kWhat = "cuda::MatMul";
  if (rows == 0) return Ok();
  FGNET_TRY(CheckResidualInput(kWhat, x, residual));
  if (outputs.size() > kGemvMaxOutputs) {
    return MakeError(kWhat, ": ", outputs.size(), " outputs exceed ", kGemvMaxOutputs);
  }
  std::size_t total_out = 0;
  for (const MatMulContext::MatMulOutput& o : outputs) {
    if (o.out == 0) continue;
    if (!internal::Aligned16(o.w)) {
      return MakeError(kWhat, ": the weights are not 16-byte aligned");
    }
    if (o.out > kMaxDim) return MakeError(kWhat, ": the output size ", o.out, " is too large");
    total_out += o.out;
  }
  if (total_out == 0) return Ok();
  if (total_out > kMaxDim) {
    return MakeError(kWhat, ": the outputs' sizes add up to ", total_out, ", too many");
  }
  if (TakesMma(rows)) {
    FGNET_TRY(CheckGemvShape(kWhat, rows, in));
    return LaunchMmaGemvMany(x, rows, in, outputs, accumulate, multiprocessors, stream, lora,
                             residual);
  }
  FGNET_ASSIGN_OR_RETURN(const std::size_t batch, GemvRowBatch(kWhat, rows, in));
  // Four W rows per warp where there are tiles enough to fill the GPU, else one.
  const bool wide = total_out / (4 * kGemvWarps) >= static_cast<std::size_t>(multiprocessors);
  const int nw = wide ? 4 : 1;
  const bool adapted = internal::HasLoraEpilogue(lora);
  for (std::size_t r0 = 0; r0 < rows; r0 += batch) {
    const std::size_t r = std::min(batch, rows - r0);
    int tiles = 0;
    const GemvTargets targets = internal::TargetsOf(outputs, r0, nw, lora, &tiles);
    const LoraRows lora_rows = RowsFrom(lora, r0);
    const GemvFn fn =
        wide ? GemvFor<4>(static_cast<int>(r), adapted) : GemvFor<1>(static_cast<int>(r), adapted);
    const std::size_t smem = r * in * sizeof(float);
    const float* xr = BatchX(x, r0, in);
    const bool x_aligned = internal::Aligned16(xr);
    FGNET_ASSIGN_OR_RETURN(const unsigned grid,
                           GemvGrid(reinterpret_cast<const void*>(fn), smem,
                                    static_cast<std::size_t>(tiles), multiprocessors));
    Launch(fn, grid, kGemvThreads, smem, stream, DependentLaunchSupported(), xr,
           static_cast<int>(in), targets, tiles, accumulate, x_aligned, lora_rows,
           ResidualFrom(residual, r0, in));
    FGNET_TRY(CudaLastError("cuda::MatMul (GEMV kernel)"));
  }
  return Ok();
}

Status LaunchGemvGeGLU(const float* x, std::size_t rows, std::size_t in,
                       const std::uint16_t* w_gate, const std::uint16_t* w_up, std::size_t n,
                       float* out, int multiprocessors, Stream stream, const LoraEpilogue* lora,
                       const ResidualInput* residual) {
  constexpr const char* kWhat = "cuda::MatMulGeGLU";
  if (rows == 0 || n == 0) return Ok();
  FGNET_TRY(CheckResidualInput(kWhat, x, residual));
  if (!internal::Aligned16(w_gate) || !internal::Aligned16(w_up)) {
    return MakeError(kWhat, ": the weights are not 16-byte aligned");
  }
  if (n > kMaxDim) return MakeError(kWhat, ": the output size ", n, " is too large");
  if (TakesMma(rows)) {
    FGNET_TRY(CheckGemvShape(kWhat, rows, in));
    return LaunchMmaGeGLU(x, rows, in, w_gate, w_up, n, out, multiprocessors, stream, lora,
                          residual);
  }
  FGNET_ASSIGN_OR_RETURN(const std::size_t batch, GemvRowBatch(kWhat, rows, in));
  // Two rows of each matrix per warp where there are tiles enough to fill the GPU, else one.
  const bool wide = n / (2 * kGemvWarps) >= static_cast<std::size_t>(multiprocessors);
  const int np = wide ? 2 : 1;
  const std::size_t tiles = (n + np - 1) / np;
  const bool adapted = internal::HasLoraEpilogue(lora);
  for (std::size_t r0 = 0; r0 < rows; r0 += batch) {
    const std::size_t r = std::min(batch, rows - r0);
    const GeGLUFn fn = wide ? GeGLUFor<2>(static_cast<int>(r), adapted)
                            : GeGLUFor<1>(static_cast<int>(r), adapted);
    const std::size_t smem = r * in * sizeof(float);
    const float* xr = BatchX(x, r0, in);
    const bool x_aligned = internal::Aligned16(xr);
    FGNET_ASSIGN_OR_RETURN(const unsigned grid, GemvGrid(reinterpret_cast<const void*>(fn), smem,
                                                         tiles, multiprocessors));
    Launch(fn, grid, kGemvThreads, smem, stream, DependentLaunchSupported(), xr,
           static_cast<int>(in), reinterpret_cast<const uint4*>(w_gate),
           reinterpret_cast<const uint4*>(w_up), static_cast<int>(n), out + r0 * n, x_aligned,
           RowsFrom(lora, r0), lora != nullptr ? lora->sites[0] : LoraSite{},
           lora != nullptr ? lora->sites[1] : LoraSite{}, ResidualFrom(residual, r0, in));
    FGNET_TRY(CudaLastError("cuda::MatMulGeGLU (GEMV kernel)"));
  }
  return Ok();
}

Status LaunchToBF16(const float* x, std::size_t n, std::uint16_t* hi, std::uint16_t* lo,
                    Stream stream) {
  if (n == 0) return Ok();
  constexpr int kThreads = 256;
  const auto blocks =
      static_cast<unsigned>(std::min<std::size_t>((n + kThreads - 1) / kThreads, 65536));
  ToBF16Kernel<<<blocks, kThreads, 0, stream>>>(x, n, reinterpret_cast<__nv_bfloat16*>(hi),
                                                reinterpret_cast<__nv_bfloat16*>(lo));
  return CudaLastError("cuda::MatMul (BF16 rounding kernel)");
}

}  // namespace internal

Status LoraApply(const float* x, std::size_t ldx, std::size_t in, float* y, std::size_t ldy,
                 std::size_t out, const LoraGroup* groups, std::int32_t num_groups,
                 std::int32_t max_rank, const std::int32_t* row_index, const float* row_scale,
                 std::int32_t total_rows, float* workspace, Stream stream) {
  if (num_groups <= 0 || total_rows <= 0 || in == 0 || out == 0) return Ok();
  FGNET_TRY(CheckLoraSizes("cuda::LoraApply", num_groups, max_rank, total_rows));
  if (in > kMaxDim || out > kMaxDim) {
    return MakeError("cuda::LoraApply: sizes in ", in, ", out ", out, " are too large");
  }
  FGNET_TRY(LaunchShrink(x, ldx, in, groups, num_groups, num_groups, max_rank, row_index,
                         total_rows, workspace, stream));
  const LoraExpandSite site{y, ldy, out};
  return LaunchExpand(std::span(&site, 1), groups, num_groups, num_groups, max_rank, row_index,
                      row_scale, total_rows, workspace, stream);
}

Status LoraShrink(const float* x, std::size_t ldx, std::size_t in, const LoraGroup* groups,
                  std::int32_t num_groups, std::int32_t groups_per_slot, std::int32_t max_rank,
                  const std::int32_t* row_index, std::int32_t total_rows, float* workspace,
                  Stream stream) {
  if (num_groups <= 0 || total_rows <= 0 || in == 0) return Ok();
  FGNET_TRY(CheckLoraSizes("cuda::LoraShrink", num_groups, max_rank, total_rows));
  if (groups_per_slot <= 0) {
    return MakeError("cuda::LoraShrink: ", groups_per_slot, " groups per slot");
  }
  if (in > kMaxDim) return MakeError("cuda::LoraShrink: the input size ", in, " is too large");
  return LaunchShrink(x, ldx, in, groups, num_groups, groups_per_slot, max_rank, row_index,
                      total_rows, workspace, stream);
}

Status LoraShrinkOfResidual(const ResidualInput& residual, std::size_t rows, std::size_t in,
                            float* normed, const LoraGroup* groups, std::int32_t num_groups,
                            std::int32_t groups_per_slot, std::int32_t max_rank,
                            const std::int32_t* row_index, std::int32_t total_rows,
                            float* workspace, Stream stream) {
  constexpr const char* kWhat = "cuda::LoraShrinkOfResidual";
  if (rows == 0) return Ok();
  if (residual.delta == nullptr || residual.residual == nullptr || residual.updated == nullptr ||
      residual.post == nullptr || residual.pre == nullptr || normed == nullptr) {
    return MakeError(kWhat, ": a residual input with every array, and `normed`, are needed");
  }
  if (residual.updated == residual.residual) {
    return MakeError(kWhat, ": the new residual rows must not overwrite the residual it reads");
  }
  using internal::Aligned16;
  if (in == 0 || in % 4 != 0 || in > kMaxShrinkOfResidualIn || !Aligned16(residual.delta) ||
      !Aligned16(residual.residual) || !Aligned16(residual.updated) || !Aligned16(residual.post) ||
      !Aligned16(residual.pre) || !Aligned16(normed)) {
    return MakeError(kWhat, ": rows of ", in, " values (a multiple of 4, at most ",
                     kMaxShrinkOfResidualIn, ", 16-byte aligned) are needed");
  }
  if (rows > static_cast<std::size_t>(65535) * kLoraRows) {
    return MakeError(kWhat, ": ", rows, " rows exceed ", 65535 * kLoraRows);
  }
  if (num_groups <= 0 || total_rows <= 0) {
    return MakeError(kWhat, ": no groups (use RMSNormAddToNorm)");
  }
  FGNET_TRY(CheckLoraSizes(kWhat, num_groups + 1, max_rank, total_rows));
  if (groups_per_slot <= 0) return MakeError(kWhat, ": ", groups_per_slot, " groups per slot");
  return LaunchShrink(nullptr, in, in, groups, num_groups, groups_per_slot, max_rank, row_index,
                      total_rows, workspace, stream, residual, normed,
                      static_cast<std::int32_t>(rows));
}

Status LoraExpand(std::span<const LoraExpandSite> sites, const LoraGroup* groups,
                  std::int32_t groups_per_slot, std::int32_t max_rank,
                  const std::int32_t* row_index, const float* row_scale, std::int32_t total_rows,
                  const float* workspace, Stream stream) {
  if (sites.empty() || total_rows <= 0 || groups_per_slot <= 0) return Ok();
  if (sites.size() > static_cast<std::size_t>(kMaxLoraSites)) {
    return MakeError("cuda::LoraExpand: ", sites.size(), " sites exceed ", kMaxLoraSites);
  }
  const auto num_groups = static_cast<std::int32_t>(sites.size()) * groups_per_slot;
  FGNET_TRY(CheckLoraSizes("cuda::LoraExpand", num_groups, max_rank, total_rows));
  for (const LoraExpandSite& site : sites) {
    if (site.out > kMaxDim) {
      return MakeError("cuda::LoraExpand: the output size ", site.out, " is too large");
    }
  }
  return LaunchExpand(sites, groups, num_groups, groups_per_slot, max_rank, row_index, row_scale,
                      total_rows, workspace, stream);
}

}  // namespace fgnet::cuda
