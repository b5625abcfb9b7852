// The GEMV kernel of the few-row matrix products and the BF16 rounding of the cuBLAS path's
// activations (backend/cuda/matmul.h); the grouped LoRA kernels are in lora.cu.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
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
using internal::kMaxDim;
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
  FGNET_ASSIGN_OR_RETURN(const std::size_t max_smem, MaxSharedMemoryPerBlock());
  cudaFuncAttributes attributes{};
  FGNET_TRY(CudaCheck(cudaFuncGetAttributes(&attributes, fn), "cudaFuncGetAttributes"));
  const std::size_t limit = max_smem - std::min(max_smem, attributes.sharedSizeBytes);
  FGNET_TRY(CudaCheck(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(limit)),
                      "cudaFuncSetAttribute"));
  limits[{fn, device}] = limit;
  return limit;
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

}  // namespace fgnet::cuda
