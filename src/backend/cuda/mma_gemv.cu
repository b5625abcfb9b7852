// The tensor-core GEMV of 5 to 16 rows (LaunchMmaGemvMany, LaunchMmaGeGLU in matmul_kernels.h).
//
// Past 4 rows the f32 GEMV (matmul.cu) reads every activation from shared memory once per W row,
// and those reads, not W's, bound it. Here a warp multiplies with mma.sync m16n8k16: up to 16 rows
// of x are the A operand, split into two BF16 terms x = hi + lo as the cuBLAS path does (about
// 2^-17 relative), and 8 rows of W the B operand, loaded from global memory straight into the
// fragments; the tensor cores accumulate in f32.
//
// A block of 8 warps computes tiles of 8 W rows (of each of T matrices: the GeGLU's gate and up)
// against all rows of x, striding over the tiles (RunTiles). Warp w takes the k-blocks (32
// columns) w, w + 8, w + 16, ...; lane (g, c) = (lane / 4, lane % 4) loads columns 8c .. 8c + 7 of
// the k-block of W row g (one 16-byte load) and of x rows g and g + 8. The k-block's two mma steps
// take columns 8c + 4j .. 8c + 4j + 3 (j = 0, 1) as fragment columns 2c, 2c + 1, 2c + 8, 2c + 9:
// the same permutation of the 16 columns on both operands, which leaves the products unchanged.
// The warps' partial sums are added in warp order through shared memory. A row's results depend
// only on its own activations: its sums take the same steps whatever the rows beside it.
//
// x is read from memory, or, for a residual input (ResidualInput), computed by every block into
// shared memory first, as the f32 GEMV stages it.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/device.h"
#include "backend/cuda/gemv_common.cuh"
#include "backend/cuda/gemv_epilogue.cuh"
#include "backend/cuda/kernel_support.cuh"
#include "backend/cuda/matmul_kernels.h"
#include "backend/cuda/residual_norm.cuh"

namespace fgnet::cuda {
namespace {

using internal::AllowDependents;
using internal::DependentLaunchSupported;
using internal::GeluTanhTimes;
using internal::GemvTargets;
using internal::Launch;
using internal::LocateTile;
using internal::LoraDelta;
using internal::MaxSharedMemoryPerBlock;
using internal::ResidualFrom;
using internal::ResidualNormRow;
using internal::RowsFrom;
using internal::SplitBF16;
using internal::TileRef;
using internal::WaitPrior;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTileRows = 8;   // W rows of a tile: the mma's n
constexpr int kStagedPad = 4;  // floats past each staged row (XSource)
constexpr int kResults = 128;  // a tile's 16 x 8 results: one per thread of the first four warps

// d += a b for the m16n8k16 fragments (BF16 inputs, f32 accumulation).
__device__ __forceinline__ void Mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                    std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // built for sm_80 and newer only
#endif
}

// Where a block reads x: `rows` rows of `in` values, `ld` apart, in global memory or (staged) in
// shared memory.
struct XSource {
  const float* x;
  int in;
  int ld;
  int rows;
  bool aligned;
  bool shared;
};

// Columns 8 chunk .. 8 chunk + 7 of x row `row` (zeros for a row past the rows or a chunk past the
// row).
__device__ __forceinline__ void LoadX8(const XSource& xs, int row, int chunk, float4 (&v)[2]) {
  v[0] = v[1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (row >= xs.rows || chunk >= xs.in / 8) return;
  const float* p =
      xs.x + static_cast<std::size_t>(row) * xs.ld + static_cast<std::size_t>(chunk) * 8;
  if (xs.shared) {
    v[0] = reinterpret_cast<const float4*>(p)[0];
    v[1] = reinterpret_cast<const float4*>(p)[1];
  } else if (xs.aligned) {
    v[0] = __ldg(reinterpret_cast<const float4*>(p));
    v[1] = __ldg(reinterpret_cast<const float4*>(p) + 1);
  } else {
    v[0] = make_float4(p[0], p[1], p[2], p[3]);
    v[1] = make_float4(p[4], p[5], p[6], p[7]);
  }
}

// Chunk c of the B k-blocks kb0, kb0 + kWarps, ... of the N W rows (zeros past the row), streamed
// past the caches.
template <int B, int N>
__device__ __forceinline__ void LoadW(uint4 (&wv)[B][N], const uint4* const (&w)[N], int chunks,
                                      int kb0, int c) {
#pragma unroll
  for (int u = 0; u < B; ++u) {
    const int chunk = (kb0 + u * kWarps) * 4 + c;
#pragma unroll
    for (int t = 0; t < N; ++t) wv[u][t] = chunk < chunks ? __ldcs(w[t] + chunk) : uint4{};
  }
}

// A lane's A fragments of the B k-blocks kb0, kb0 + kWarps, ...: [k-block][mma step j][register],
// the hi and lo terms.
template <int B>
struct XFragments {
  std::uint32_t hi[B][2][4];
  std::uint32_t lo[B][2][4];
};

template <int B>
__device__ __forceinline__ void LoadXFragments(XFragments<B>& f, const XSource& xs, int kb0, int g,
                                               int c) {
  float4 v[B][2][2];  // [k-block][x row g, g + 8][columns 0-3, 4-7 of the lane's 8]
#pragma unroll
  for (int u = 0; u < B; ++u) {
    const int chunk = (kb0 + u * kWarps) * 4 + c;
    LoadX8(xs, g, chunk, v[u][0]);
    LoadX8(xs, g + 8, chunk, v[u][1]);
  }
#pragma unroll
  for (int u = 0; u < B; ++u) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float4& r0 = v[u][0][j];
      const float4& r1 = v[u][1][j];
      SplitBF16(r0.x, r0.y, f.hi[u][j][0], f.lo[u][j][0]);
      SplitBF16(r1.x, r1.y, f.hi[u][j][1], f.lo[u][j][1]);
      SplitBF16(r0.z, r0.w, f.hi[u][j][2], f.lo[u][j][2]);
      SplitBF16(r1.z, r1.w, f.hi[u][j][3], f.lo[u][j][3]);
    }
  }
}

template <int B, int N>
__device__ __forceinline__ void MmaBatch(float (&acc)[N][4], const XFragments<B>& f,
                                         const uint4 (&wv)[B][N]) {
#pragma unroll
  for (int u = 0; u < B; ++u) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int t = 0; t < N; ++t) {
        const std::uint32_t b0 = j == 0 ? wv[u][t].x : wv[u][t].z;
        const std::uint32_t b1 = j == 0 ? wv[u][t].y : wv[u][t].w;
        Mma(acc[t], f.hi[u][j], b0, b1);
        Mma(acc[t], f.lo[u][j], b0, b1);
      }
    }
  }
}

// Where thread e < kResults's sums belong (the mma's accumulator layout): x row and tile row.
struct TileResult {
  int row;
  int col;
};

__device__ __forceinline__ TileResult ResultOf(int e) {
  const int lane = e & 31;
  const int i = e >> 5;
  return TileResult{(lane >> 2) + 8 * (i >> 1), 2 * (lane & 3) + (i & 1)};
}

// The shape of a tile kernel: B k-blocks of loads in flight per warp and tile, P tiles at a time
// per block.
template <int B, int P>
struct Shape {
  static constexpr int kBatch = B;
  static constexpr int kTiles = P;
};

// The block's tiles blockIdx.x, + gridDim.x, ... of x [rows, in] by T groups of 8 W rows, P at a
// time: rows_of(tile, g, w) points w[t] at the row of lane g of the tile's group t; after each
// tile, finish(tile, sum, result) runs in threads e < kResults with sum[t] the result of group t at
// `result` (ResultOf(e)). The first tiles' W loads are requested before waiting for the previous
// kernel, and the next tiles' while the block adds up the current ones. Where the warp's k-blocks
// fit one batch (in <= 256 S::kBatch), its x fragments are loaded once for all tiles.
//
// kStaged: the input is the residual input `res` (x null), which the block first stages in shared
// memory, a warp per row (ResidualNormRow, as RMSNormAddToNorm computes it), rows kStagedPad floats
// longer than `in` so that the fragment loads are free of bank conflicts; block 0 also writes the
// new residual rows.
template <typename S, int T, bool kStaged, typename RowsOf, typename Finish>
__device__ __forceinline__ void RunTiles(const float* __restrict__ x, int in, int rows,
                                         bool x_aligned, const ResidualInput& res, int tiles,
                                         const RowsOf& rows_of, const Finish& finish) {
  constexpr int B = S::kBatch;
  constexpr int P = S::kTiles;
  constexpr int N = P * T;                     // W rows a lane loads per k-block
  __shared__ float part[2][kWarps][N][4][32];  // two rounds' partial sums: one sync a round
  const int chunks = in / 8;
  const int blocks = (chunks + 3) / 4;
  const bool resident = blocks <= kWarps * B;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2;
  const int c = lane & 3;
  const int grid = static_cast<int>(gridDim.x);
  // Round r takes tiles first + p * grid, p < P.
  const auto point = [&](int first, const uint4*(&w)[N]) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const uint4* wt[T];
      rows_of(min(first + p * grid, tiles - 1), g, wt);
#pragma unroll
      for (int t = 0; t < T; ++t) w[p * T + t] = wt[t];
    }
  };
  int first = static_cast<int>(blockIdx.x);
  const uint4* w[N];
  uint4 wv[B][N];
  if (first < tiles) {
    point(first, w);
    LoadW<B, N>(wv, w, chunks, warp, c);
  }
  WaitPrior();
  AllowDependents();
  XSource xs{x, in, in, rows, x_aligned, false};
  if constexpr (kStaged) {
    extern __shared__ float4 staged[];
    float* xst = reinterpret_cast<float*>(staged);
    const int ld = in + kStagedPad;
    for (int r = warp; r < rows; r += kWarps) {
      const std::size_t off = static_cast<std::size_t>(r) * in;
      ResidualNormRow(res.delta + off, res.residual + off,
                      blockIdx.x == 0 ? res.updated + off : nullptr, res.post, res.pre, res.eps, in,
                      lane, [&](int i) -> float4& {
                        return reinterpret_cast<float4*>(xst + static_cast<std::size_t>(r) * ld)[i];
                      });
    }
    __syncthreads();
    xs = XSource{xst, in, ld, rows, true, true};
  }
  XFragments<B> f;
  if (resident) LoadXFragments<B>(f, xs, warp, g, c);
  for (int parity = 0; first < tiles; first += P * grid, parity ^= 1) {
    float acc[N][4] = {};
    for (int kb0 = warp; kb0 < blocks; kb0 += kWarps * B) {
      if (kb0 != warp) LoadW<B, N>(wv, w, chunks, kb0, c);
      if (!resident) LoadXFragments<B>(f, xs, kb0, g, c);
      MmaBatch<B, N>(acc, f, wv);
    }
    const int next = first + P * grid;
    if (next < tiles) {
      point(next, w);
      LoadW<B, N>(wv, w, chunks, warp, c);
    }
#pragma unroll
    for (int t = 0; t < N; ++t) {
#pragma unroll
      for (int i = 0; i < 4; ++i) part[parity][warp][t][i][lane] = acc[t][i];
    }
    __syncthreads();
    if (threadIdx.x < kResults) {
      const int e = static_cast<int>(threadIdx.x);
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const int tile = first + p * grid;
        if (tile >= tiles) break;
        float sum[T];
#pragma unroll
        for (int t = 0; t < T; ++t) {
          float s = 0.0f;
#pragma unroll
          for (int k = 0; k < kWarps; ++k) s += part[parity][k][p * T + t][e >> 5][e & 31];
          sum[t] = s;
        }
        finish(tile, sum, ResultOf(e));
      }
    }
  }
}

// y_i [rows, out_i] = x [rows, in] W_i^T (or +=) for the targets' tiles of 8 W rows, with each
// target's adapters' updates where kLora (HasLoraEpilogue; the instances without adapters carry
// none of that epilogue's code).
template <typename S, bool kStaged, bool kLora>
__global__ void __launch_bounds__(kThreads, 2)
    MmaGemvKernel(const float* __restrict__ x, int in, int rows, const GemvTargets targets,
                  int tiles, bool accumulate, bool x_aligned, const LoraRows lora,
                  const ResidualInput res) {
  const int chunks = in / 8;
  RunTiles<S, 1, kStaged>(
      x, in, rows, x_aligned, res, tiles,
      [&](int tile, int g, const uint4*(&w)[1]) {
        const TileRef t = LocateTile<kTileRows>(targets, tile);
        w[0] = t.w + static_cast<std::size_t>(min(t.o0 + g, t.out - 1)) * chunks;
      },
      [&](int tile, const float(&sum)[1], TileResult r) {
        const TileRef t = LocateTile<kTileRows>(targets, tile);
        const int o = t.o0 + r.col;
        if (r.row >= rows || o >= t.out) return;
        const LoraSite& site = targets.t[t.target].lora;
        float value = sum[0];
        if constexpr (kLora) {
          if (site.groups != nullptr) value += LoraDelta(lora, site, r.row, o);
        }
        float* dst = t.y + static_cast<std::size_t>(r.row) * t.out + o;
        *dst = accumulate ? *dst + value : value;
      });
}

// out [rows, n] = gelu_tanh(x W_gate^T) * (x W_up^T), tile b being W rows 8b .. 8b + 7 of both;
// with kLora (HasLoraEpilogue), the gate and up values get their sites' updates first.
template <bool kStaged, bool kLora>
__global__ void __launch_bounds__(kThreads, 2)
    MmaGeGLUKernel(const float* __restrict__ x, int in, int rows, const uint4* __restrict__ w_gate,
                   const uint4* __restrict__ w_up, int n, float* __restrict__ out, bool x_aligned,
                   const LoraRows lora, const LoraSite gate_site, const LoraSite up_site,
                   const ResidualInput res) {
  const int chunks = in / 8;
  RunTiles<Shape<4, 1>, 2, kStaged>(
      x, in, rows, x_aligned, res, (n + kTileRows - 1) / kTileRows,
      [&](int tile, int g, const uint4*(&w)[2]) {
        const std::size_t row = static_cast<std::size_t>(min(tile * kTileRows + g, n - 1)) * chunks;
        w[0] = w_gate + row;
        w[1] = w_up + row;
      },
      [&](int tile, const float(&sum)[2], TileResult r) {
        const int o = tile * kTileRows + r.col;
        if (r.row >= rows || o >= n) return;
        float gate = sum[0];
        float up = sum[1];
        if constexpr (kLora) {
          if (gate_site.groups != nullptr) gate += LoraDelta(lora, gate_site, r.row, o);
          if (up_site.groups != nullptr) up += LoraDelta(lora, up_site, r.row, o);
        }
        out[static_cast<std::size_t>(r.row) * n + o] = GeluTanhTimes(gate, up);
      });
}

// The rows of x one launch of `fn` takes: all of them, or with a residual input (staged) those
// whose staged rows fit in a block's shared memory beside the kernel's own.
Result<std::size_t> RowBatch(const void* fn, std::size_t rows, std::size_t in, bool staged) {
  if (!staged) return rows;
  FGNET_ASSIGN_OR_RETURN(const std::size_t max_smem, MaxSharedMemoryPerBlock());
  cudaFuncAttributes attributes{};
  FGNET_TRY(CudaCheck(cudaFuncGetAttributes(&attributes, fn), "cudaFuncGetAttributes"));
  const std::size_t row_bytes = (in + kStagedPad) * sizeof(float);
  const std::size_t free_bytes = max_smem - std::min(attributes.sharedSizeBytes, max_smem);
  if (free_bytes < row_bytes) {
    return MakeError("cuda::MatMul: a residual input's row of ", in,
                     " floats does not fit in shared memory (", max_smem, " bytes)");
  }
  return std::min(rows, free_bytes / row_bytes);
}

}  // namespace

namespace internal {

Status LaunchMmaGemvMany(const float* x, std::size_t rows, std::size_t in,
                         std::span<const MatMulContext::MatMulOutput> outputs, bool accumulate,
                         int multiprocessors, Stream stream, const LoraEpilogue* lora,
                         const ResidualInput* residual) {
  const bool staged = residual != nullptr && residual->delta != nullptr;
  int tiles = 0;
  GemvTargets targets = TargetsOf(outputs, 0, kTileRows, lora, &tiles);
  if (tiles == 0) return Ok();
  // Many tiles of a short row (the output matrix): two tiles a round, three k-blocks a warp, so
  // that more of W is in flight; otherwise four k-blocks (in <= 1024: one round of loads).
  const bool many = !staged && in <= 8 * 32 * 3 &&
                    static_cast<std::size_t>(tiles) > 4 * static_cast<std::size_t>(multiprocessors);
  const bool adapted = internal::HasLoraEpilogue(lora);
  const auto pick = [&](auto lora_tag) {
    constexpr bool kLora = decltype(lora_tag)::value;
    return staged ? MmaGemvKernel<Shape<4, 1>, true, kLora>
           : many ? MmaGemvKernel<Shape<3, 2>, false, kLora>
                  : MmaGemvKernel<Shape<4, 1>, false, kLora>;
  };
  const auto fn = adapted ? pick(std::true_type{}) : pick(std::false_type{});
  FGNET_ASSIGN_OR_RETURN(const std::size_t batch,
                         RowBatch(reinterpret_cast<const void*>(fn), rows, in, staged));
  for (std::size_t r0 = 0; r0 < rows; r0 += batch) {
    const std::size_t r = std::min(batch, rows - r0);
    if (r0 > 0) targets = TargetsOf(outputs, r0, kTileRows, lora, &tiles);
    const std::size_t smem = staged ? r * (in + kStagedPad) * sizeof(float) : 0;
    FGNET_ASSIGN_OR_RETURN(const unsigned grid,
                           ResidentGrid(reinterpret_cast<const void*>(fn), smem,
                                        static_cast<std::size_t>(tiles), multiprocessors));
    const float* xr = staged ? nullptr : x + r0 * in;
    Launch(fn, dim3(grid), kThreads, smem, stream, DependentLaunchSupported(), xr,
           static_cast<int>(in), static_cast<int>(r), targets, tiles, accumulate, Aligned16(xr),
           RowsFrom(lora, r0), ResidualFrom(residual, r0, in));
    FGNET_TRY(CudaLastError("cuda::MatMul (tensor-core GEMV kernel)"));
  }
  return Ok();
}

Status LaunchMmaGeGLU(const float* x, std::size_t rows, std::size_t in, const std::uint16_t* w_gate,
                      const std::uint16_t* w_up, std::size_t n, float* out, int multiprocessors,
                      Stream stream, const LoraEpilogue* lora, const ResidualInput* residual) {
  const bool staged = residual != nullptr && residual->delta != nullptr;
  const bool adapted = internal::HasLoraEpilogue(lora);
  const auto fn = staged ? (adapted ? MmaGeGLUKernel<true, true> : MmaGeGLUKernel<true, false>)
                         : (adapted ? MmaGeGLUKernel<false, true> : MmaGeGLUKernel<false, false>);
  const std::size_t tiles = (n + kTileRows - 1) / kTileRows;
  FGNET_ASSIGN_OR_RETURN(const std::size_t batch,
                         RowBatch(reinterpret_cast<const void*>(fn), rows, in, staged));
  for (std::size_t r0 = 0; r0 < rows; r0 += batch) {
    const std::size_t r = std::min(batch, rows - r0);
    const std::size_t smem = staged ? r * (in + kStagedPad) * sizeof(float) : 0;
    FGNET_ASSIGN_OR_RETURN(const unsigned grid, ResidentGrid(reinterpret_cast<const void*>(fn),
                                                             smem, tiles, multiprocessors));
    const float* xr = staged ? nullptr : x + r0 * in;
    Launch(fn, dim3(grid), kThreads, smem, stream, DependentLaunchSupported(), xr,
           static_cast<int>(in), static_cast<int>(r), reinterpret_cast<const uint4*>(w_gate),
           reinterpret_cast<const uint4*>(w_up), static_cast<int>(n), out + r0 * n, Aligned16(xr),
           RowsFrom(lora, r0), lora != nullptr ? lora->sites[0] : LoraSite{},
           lora != nullptr ? lora->sites[1] : LoraSite{}, ResidualFrom(residual, r0, in));
    FGNET_TRY(CudaLastError("cuda::MatMulGeGLU (tensor-core GEMV kernel)"));
  }
  return Ok();
}

}  // namespace internal
}  // namespace fgnet::cuda
