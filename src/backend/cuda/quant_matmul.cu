// The kernels of backend/cuda/quant_matmul.h: the quantized decode GEMV, dequantization and the
// quantized embedding gather.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>

#include "backend/cuda/device.h"
#include "backend/cuda/gemv_common.cuh"
#include "backend/cuda/matmul_kernels.h"
#include "backend/cuda/quant_matmul.h"

namespace fgnet::cuda {
namespace {

using internal::Dot8;
using internal::kGemvThreads;
using internal::kGemvWarps;
using internal::Log2;
using internal::Pow2Ceil;
using internal::ReduceScatter;

// One 16-byte chunk of values of a layout: how many elements it holds, the scale group it belongs
// to, and its decoding to f32 (the formulas of quant_matmul.h).
template <QuantLayout L>
struct Chunk;

// The signed byte b (0-3) of `word`, as a float.
__device__ __forceinline__ float SignedByte(unsigned word, int b) {
  return static_cast<float>(static_cast<int>(word << (24 - 8 * b)) >> 24);
}

// Byte b (0-3) of `word` (at most 2^23) as a float without an int-to-float conversion: the byte
// is placed in the low mantissa bits of 2^23 (one byte permute) and 2^23 subtracted, exactly.
// Measured faster than the conversion for the 4-bit values (two per byte), slower for bytes.
__device__ __forceinline__ float UnsignedByteAsFloat(unsigned word, int b) {
  return __fsub_rn(__uint_as_float(__byte_perm(word, 0x4b000000u, 0x7440u + b)), 8388608.0f);
}

template <>
struct Chunk<QuantLayout::kInt8G32> {
  static constexpr int kValues = 16;
  using Scale = float;
  __device__ static int Group(int c) { return c >> 1; }
  // Values 8 piece .. 8 piece + 7 of the chunk.
  __device__ static void Decode8(const uint4& q, Scale s, int piece, float (&w)[8]) {
    const unsigned lo = piece == 0 ? q.x : q.z, hi = piece == 0 ? q.y : q.w;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = __fmul_rn(SignedByte(lo, i), s);
      w[i + 4] = __fmul_rn(SignedByte(hi, i), s);
    }
  }
};

template <>
struct Chunk<QuantLayout::kInt8G16> {
  static constexpr int kValues = 16;
  using Scale = float;
  __device__ static int Group(int c) { return c; }
  __device__ static void Decode8(const uint4& q, Scale s, int piece, float (&w)[8]) {
    const unsigned lo = piece == 0 ? q.x : q.z, hi = piece == 0 ? q.y : q.w;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = __fmul_rn(s, SignedByte(lo, i));
      w[i + 4] = __fmul_rn(s, SignedByte(hi, i));
    }
  }
};

template <>
struct Chunk<QuantLayout::kUInt4G32> {
  static constexpr int kValues = 32;
  using Scale = float2;  // (s, m)
  __device__ static int Group(int c) { return c; }
  // Pieces 0 and 1 are the low nibbles of bytes 0-7 and 8-15 (values 0-15), pieces 2 and 3 their
  // high nibbles (values 16-31).
  __device__ static void Decode8(const uint4& q, Scale s, int piece, float (&w)[8]) {
    const int shift = piece >= 2 ? 4 : 0;
    const unsigned lo = (((piece & 1) == 0 ? q.x : q.z) >> shift) & 0x0f0f0f0fu;
    const unsigned hi = (((piece & 1) == 0 ? q.y : q.w) >> shift) & 0x0f0f0f0fu;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // s * q is exact, so the fused multiply-add rounds once, as the CPU's s * q - m does.
      w[i] = fmaf(s.x, UnsignedByteAsFloat(lo, i), -s.y);
      w[i + 4] = fmaf(s.x, UnsignedByteAsFloat(hi, i), -s.y);
    }
  }
};

template <QuantLayout L>
__device__ __forceinline__ const typename Chunk<L>::Scale* ScalesOf(const float* scales) {
  return reinterpret_cast<const typename Chunk<L>::Scale*>(scales);
}

// Stages x [R, in] in shared memory as f32, permuted so that lanes reading consecutive chunks
// read consecutive float4 slots: slot (r * P + p) * chunks + c holds x[r, V c + 4 p .. + 3], P =
// V / 4. The caller synchronises the block afterwards.
template <int R, int V>
__device__ __forceinline__ void StageChunkedX(const float* __restrict__ x, int in, float4* xs) {
  constexpr int P = V / 4;
  const int chunks = in / V;
  float* xsf = reinterpret_cast<float*>(xs);
  for (int e = static_cast<int>(threadIdx.x); e < R * in; e += kGemvThreads) {
    const int r = e / in;
    const int k = e - r * in;
    const int k4 = k >> 2;
    const int c = k4 / P;
    const int p = k4 - c * P;
    xsf[((r * P + p) * chunks + c) * 4 + (k & 3)] = x[e];
  }
}

// The outputs of one launch: their tiles of NW W rows are numbered consecutively, output i's
// ending before tile_end (rows past `out` are clamped, their results not written). All share one
// layout and `in`.
struct QuantTarget {
  const uint4* values;
  const float* scales;
  float* y;
  int out;
  int tile_end;
};

constexpr int kMaxQuantTargets = 4;

struct QuantTargets {
  QuantTarget t[kMaxQuantTargets];
  int count;
};

struct QuantTile {
  const uint4* values;
  const float* scales;
  float* y;
  int out;
  int o0;  // first W row of the tile in its output
};

template <int NW>
__device__ __forceinline__ QuantTile LocateQuantTile(const QuantTargets& g, int tile) {
  QuantTile t{g.t[0].values, g.t[0].scales, g.t[0].y, g.t[0].out, tile * NW};
#pragma unroll
  for (int i = 1; i < kMaxQuantTargets; ++i) {
    if (i < g.count && tile >= g.t[i - 1].tile_end) {
      t = QuantTile{g.t[i].values, g.t[i].scales, g.t[i].y, g.t[i].out,
                    (tile - g.t[i - 1].tile_end) * NW};
    }
  }
  return t;
}

// y_i [R, out_i] = x [R, in] W_i^T (or +=) for repacked quantized W_i of one layout. GemvKernel's
// scheme (matmul.cu): the block stages x once; each warp owns tiles of NW consecutive W rows (grid
// stride over the tiles of all targets); lane l reads chunks l, l + 32, ... of each row, U chunks
// per row per batch of loads in flight. A chunk is decoded 8 values at a time for the NW rows
// together, so that each x value read from shared memory serves NW rows; sums run in chunk order,
// the values of a chunk in order, whatever NW. One butterfly reduction per tile.
template <QuantLayout L, int R, int NW>
__global__ void __launch_bounds__(kGemvThreads, 2)
    QuantGemvKernel(const float* __restrict__ x, int in, const QuantTargets targets, int tiles,
                    bool accumulate) {
  using C = Chunk<L>;
  using Scale = typename C::Scale;
  constexpr int V = C::kValues;
  constexpr int P = V / 4;
  constexpr int U = 8 / NW;
  constexpr int M = Pow2Ceil(R * NW);
  constexpr int kShift = 5 - Log2(M);
  extern __shared__ float4 xs[];
  const int chunks = in / V;
  const int groups = C::Group(chunks - 1) + 1;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int first = static_cast<int>(blockIdx.x) * kGemvWarps + warp;
  const int stride = static_cast<int>(gridDim.x) * kGemvWarps;

  StageChunkedX<R, V>(x, in, xs);
  __syncthreads();

  for (int tile = first; tile < tiles; tile += stride) {
    const QuantTile t = LocateQuantTile<NW>(targets, tile);
    const Scale* s = ScalesOf<L>(t.scales);
    float acc[M];
#pragma unroll
    for (int i = 0; i < M; ++i) acc[i] = 0.0f;
    for (int c0 = 0; c0 < chunks; c0 += 32 * U) {
      uint4 wv[U][NW];
      Scale sv[U][NW];
#pragma unroll
      for (int j = 0; j < NW; ++j) {
        const int row = min(t.o0 + j, t.out - 1);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int c = c0 + u * 32 + lane;
          if (c < chunks) {
            wv[u][j] = __ldcs(t.values + static_cast<std::size_t>(row) * chunks + c);
            sv[u][j] = __ldg(s + static_cast<std::size_t>(row) * groups + C::Group(c));
          }
        }
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + u * 32 + lane;
        if (c >= chunks) continue;
#pragma unroll
        for (int piece = 0; piece < V / 8; ++piece) {
          float w[NW][8];
#pragma unroll
          for (int j = 0; j < NW; ++j) C::Decode8(wv[u][j], sv[u][j], piece, w[j]);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const float4 lo = xs[(r * P + 2 * piece) * chunks + c];
            const float4 hi = xs[(r * P + 2 * piece + 1) * chunks + c];
#pragma unroll
            for (int j = 0; j < NW; ++j) acc[j * R + r] = Dot8(w[j], lo, hi, acc[j * R + r]);
          }
        }
      }
    }

    const float v = ReduceScatter<M>(acc, lane);
    const int e = lane >> kShift;
    if ((lane & ((1 << kShift) - 1)) == 0 && e < R * NW) {
      const int j = e / R;
      const int r = e - j * R;
      const int o = t.o0 + j;
      if (o < t.out) {
        float* dst = t.y + static_cast<std::size_t>(r) * t.out + o;
        *dst = accumulate ? *dst + v : v;
      }
    }
  }
}

// out[t, :] = row rows[t] of the matrix as f32 (times `scale` unless it is 1), one chunk per
// thread; rows == nullptr means rows first + t.
template <QuantLayout L>
__global__ void DequantKernel(const uint4* __restrict__ values, const float* __restrict__ scales,
                              int cols, const std::int32_t* __restrict__ rows, int first, int n,
                              float scale, float* __restrict__ out) {
  using C = Chunk<L>;
  constexpr int V = C::kValues;
  const int chunks = cols / V;
  const int groups = C::Group(chunks - 1) + 1;
  const std::int64_t total = static_cast<std::int64_t>(n) * chunks;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const auto t = static_cast<int>(i / chunks);
    const int c = static_cast<int>(i - static_cast<std::int64_t>(t) * chunks);
    const std::int64_t row = rows != nullptr ? rows[t] : first + t;
    const uint4 q = __ldg(values + row * chunks + c);
    const typename C::Scale sc = __ldg(ScalesOf<L>(scales) + row * groups + C::Group(c));
    float4* dst = reinterpret_cast<float4*>(out + static_cast<std::int64_t>(t) * cols + c * V);
#pragma unroll
    for (int piece = 0; piece < V / 8; ++piece) {
      float w[8];
      C::Decode8(q, sc, piece, w);
      if (scale != 1.0f) {
#pragma unroll
        for (int i = 0; i < 8; ++i) w[i] = __fmul_rn(w[i], scale);
      }
      dst[2 * piece] = make_float4(w[0], w[1], w[2], w[3]);
      dst[2 * piece + 1] = make_float4(w[4], w[5], w[6], w[7]);
    }
  }
}

using QuantGemvFn = void (*)(const float*, int, const QuantTargets, int, bool);

template <QuantLayout L, int NW>
QuantGemvFn QuantGemvFor(int rows) {
  return internal::ForRows<internal::kQuantGemvMaxRows>(
      rows, [](auto r) -> QuantGemvFn { return QuantGemvKernel<L, decltype(r)::value, NW>; });
}

template <int NW>
QuantGemvFn QuantGemvFor(QuantLayout layout, int rows) {
  switch (layout) {
    case QuantLayout::kInt8G32:
      return QuantGemvFor<QuantLayout::kInt8G32, NW>(rows);
    case QuantLayout::kInt8G16:
      return QuantGemvFor<QuantLayout::kInt8G16, NW>(rows);
    case QuantLayout::kUInt4G32:
      break;
  }
  return QuantGemvFor<QuantLayout::kUInt4G32, NW>(rows);
}

constexpr std::size_t kMaxDim = static_cast<std::size_t>(std::numeric_limits<int>::max() / 32);

Status CheckMatrix(const char* what, const QuantMatrix& m) {
  if (m.values == nullptr || m.scales == nullptr) return MakeError(what, ": a null matrix");
  if (m.cols == 0 || m.cols % QuantGroupSize(m.layout) != 0 || m.cols % 32 != 0) {
    return MakeError(what, ": rows of ", m.cols, " elements are not whole blocks of 32");
  }
  if (m.rows > kMaxDim || m.cols > kMaxDim) {
    return MakeError(what, ": the matrix [", m.rows, ", ", m.cols, "] is too large");
  }
  if (!internal::Aligned16(m.values) || reinterpret_cast<std::uintptr_t>(m.scales) % 8 != 0) {
    return MakeError(what, ": the values are not 16-byte aligned or the scales 8-byte aligned");
  }
  return Ok();
}

Status LaunchDequant(const QuantMatrix& m, const std::int32_t* rows, std::size_t first,
                     std::size_t n, float scale, float* out, Stream stream, const char* what) {
  FGNET_TRY(CheckMatrix(what, m));
  if (n == 0) return Ok();
  if (rows == nullptr && (first > m.rows || n > m.rows - first)) {
    return MakeError(what, ": rows ", first, " .. ", first + n, " are outside the matrix's ",
                     m.rows);
  }
  if (!internal::Aligned16(out)) {
    return MakeError(what, ": the output is not 16-byte aligned");
  }
  constexpr int kThreads = 256;
  const std::size_t chunks = n * (m.cols / (m.layout == QuantLayout::kUInt4G32 ? 32 : 16));
  const auto blocks =
      static_cast<unsigned>(std::min<std::size_t>((chunks + kThreads - 1) / kThreads, 65536));
  const auto* values = reinterpret_cast<const uint4*>(m.values);
  const int cols = static_cast<int>(m.cols);
  const int f = static_cast<int>(first);
  const int count = static_cast<int>(n);
  switch (m.layout) {
    case QuantLayout::kInt8G32:
      DequantKernel<QuantLayout::kInt8G32>
          <<<blocks, kThreads, 0, stream>>>(values, m.scales, cols, rows, f, count, scale, out);
      break;
    case QuantLayout::kInt8G16:
      DequantKernel<QuantLayout::kInt8G16>
          <<<blocks, kThreads, 0, stream>>>(values, m.scales, cols, rows, f, count, scale, out);
      break;
    case QuantLayout::kUInt4G32:
      DequantKernel<QuantLayout::kUInt4G32>
          <<<blocks, kThreads, 0, stream>>>(values, m.scales, cols, rows, f, count, scale, out);
      break;
  }
  return CudaLastError(what);
}

}  // namespace

Status EmbedRowsQuant(const QuantMatrix& table, const std::int32_t* ids, std::size_t n, float scale,
                      float* out, Stream stream) {
  if (ids == nullptr && n > 0) return MakeError("cuda::EmbedRowsQuant: null ids");
  return LaunchDequant(table, ids, 0, n, scale, out, stream, "cuda::EmbedRowsQuant");
}

Status DequantizeRows(const QuantMatrix& m, std::size_t first, std::size_t n, float* out,
                      Stream stream) {
  return LaunchDequant(m, nullptr, first, n, 1.0f, out, stream, "cuda::DequantizeRows");
}

namespace internal {

Status LaunchQuantGemv(const float* x, std::size_t rows, std::span<const QuantProduct> products,
                       bool accumulate, int multiprocessors, Stream stream) {
  constexpr const char* kWhat = "cuda::MatMul (quantized)";
  if (products.size() > static_cast<std::size_t>(kMaxQuantTargets)) {
    return MakeError(kWhat, ": ", products.size(), " outputs exceed ", kMaxQuantTargets);
  }
  if (products.empty() || rows == 0) return Ok();
  const QuantMatrix& m0 = *products[0].w;
  std::size_t total_out = 0;
  for (const QuantProduct& p : products) {
    FGNET_TRY(CheckMatrix(kWhat, *p.w));
    if (p.w->layout != m0.layout || p.w->cols != m0.cols) {
      return MakeError(kWhat, ": the matrices of one launch differ in layout or input size");
    }
    total_out += p.w->rows;
  }
  if (total_out == 0) return Ok();
  if (total_out > kMaxDim) {
    return MakeError(kWhat, ": the outputs' sizes add up to ", total_out, ", too many");
  }
  FGNET_ASSIGN_OR_RETURN(const std::size_t batch,
                         GemvRowBatch(kWhat, rows, m0.cols, internal::kQuantGemvMaxRows));
  // Four W rows per warp where there are tiles enough to fill the GPU, else one.
  const bool wide = total_out / (4 * kGemvWarps) >= static_cast<std::size_t>(multiprocessors);
  const int nw = wide ? 4 : 1;
  for (std::size_t r0 = 0; r0 < rows; r0 += batch) {
    const std::size_t r = std::min(batch, rows - r0);
    QuantTargets targets{};
    int tiles = 0;
    for (const QuantProduct& p : products) {
      if (p.w->rows == 0) continue;
      const int out = static_cast<int>(p.w->rows);
      tiles += (out + nw - 1) / nw;
      targets.t[targets.count++] = QuantTarget{reinterpret_cast<const uint4*>(p.w->values),
                                               p.w->scales, p.y + r0 * p.w->rows, out, tiles};
    }
    const QuantGemvFn fn = wide ? QuantGemvFor<4>(m0.layout, static_cast<int>(r))
                                : QuantGemvFor<1>(m0.layout, static_cast<int>(r));
    const std::size_t smem = r * m0.cols * sizeof(float);
    FGNET_ASSIGN_OR_RETURN(const unsigned grid,
                           GemvGrid(reinterpret_cast<const void*>(fn), smem,
                                    static_cast<std::size_t>(tiles), multiprocessors));
    fn<<<grid, kGemvThreads, smem, stream>>>(x + r0 * m0.cols, static_cast<int>(m0.cols), targets,
                                             tiles, accumulate);
    FGNET_TRY(CudaLastError("cuda::MatMul (quantized GEMV kernel)"));
  }
  return Ok();
}

}  // namespace internal

}  // namespace fgnet::cuda
