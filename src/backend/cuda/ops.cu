#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device.h"
#include "backend/cuda/kernel_support.cuh"
#include "backend/cuda/matmul_kernels.h"
#include "backend/cuda/ops.h"
#include "backend/cuda/residual_norm.cuh"

namespace fgnet::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float Bf16ToFloat(std::uint16_t bits) {
  return __uint_as_float(static_cast<unsigned>(bits) << 16);
}

// One block per output row; threads stride over the columns.
template <typename T>
__global__ void EmbedRowsKernel(const T* table, std::size_t cols, const std::int32_t* ids,
                                float scale, float* out) {
  const std::size_t t = blockIdx.x;
  const T* row = table + static_cast<std::size_t>(ids[t]) * cols;
  float* dst = out + t * cols;
  for (std::size_t c = threadIdx.x; c < cols; c += blockDim.x) {
    if constexpr (sizeof(T) == 2) {
      dst[c] = Bf16ToFloat(row[c]) * scale;
    } else {
      dst[c] = row[c] * scale;
    }
  }
}

// Sum over the block; every thread gets the result.
__device__ float BlockSum(float v) {
  __shared__ float partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  __syncthreads();  // partial may be reused by a later call in the same kernel
  return total;
}

__global__ void RMSNormAddToKernel(const float* x, std::size_t dim, const float* scale, float eps,
                                   float* residual) {
  internal::WaitPrior();
  internal::AllowDependents();
  const std::size_t r = blockIdx.x;
  const float* xr = x + r * dim;
  float* rr = residual + r * dim;
  float sum = 0;
  for (std::size_t c = threadIdx.x; c < dim; c += blockDim.x) sum += xr[c] * xr[c];
  const float total = BlockSum(sum);
  const float inv = rsqrtf(total / static_cast<float>(dim) + eps);
  for (std::size_t c = threadIdx.x; c < dim; c += blockDim.x) rr[c] += xr[c] * inv * scale[c];
}

// residual[r] += RMSNorm(x[r]) * scale, then y[r] = RMSNorm(residual[r]) * next_scale: the
// post-norm and residual add of one block followed by the pre-norm of the next. A warp per row
// (ResidualNormRow); y holds the new residual row between the two reductions.
constexpr int kNormRowsPerBlock = kThreads / 32;

// v's two BF16 terms (internal::SplitBF16) as four consecutive values at hi and at lo.
__device__ __forceinline__ void StoreTerms(float4 v, __nv_bfloat16* hi, __nv_bfloat16* lo) {
  uint2 h, l;
  internal::SplitBF16(v.x, v.y, h.x, l.x);
  internal::SplitBF16(v.z, v.w, h.y, l.y);
  *reinterpret_cast<uint2*>(hi) = h;
  *reinterpret_cast<uint2*>(lo) = l;
}

// y null (terms only): u is kept in the residual row between the two sums, and y goes straight
// to its terms.
__global__ void __launch_bounds__(kThreads)
    RMSNormAddToNormKernel(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                           float eps, float* residual, const float* next_scale, float* y,
                           __nv_bfloat16* terms) {
  internal::WaitPrior();
  internal::AllowDependents();
  const std::size_t r = static_cast<std::size_t>(blockIdx.x) * kNormRowsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  float* ur = residual + r * dim;
  __nv_bfloat16* hi = terms != nullptr ? terms + r * dim : nullptr;
  __nv_bfloat16* lo = terms != nullptr ? hi + rows * dim : nullptr;
  if (y == nullptr) {
    auto* u4 = reinterpret_cast<float4*>(ur);
    internal::ResidualNormRow(
        x + r * dim, ur, nullptr, scale, next_scale, eps, static_cast<int>(dim), lane,
        [u4](int i) -> float4& { return u4[i]; },
        [hi, lo](int i, const float4& v) { StoreTerms(v, hi + 4 * i, lo + 4 * i); });
    return;
  }
  auto* yr = reinterpret_cast<float4*>(y + r * dim);
  internal::ResidualNormRow(
      x + r * dim, ur, ur, scale, next_scale, eps, static_cast<int>(dim), lane,
      [yr](int i) -> float4& { return yr[i]; },
      [yr, hi, lo](int i, const float4& v) {
        yr[i] = v;
        if (hi != nullptr) StoreTerms(v, hi + 4 * i, lo + 4 * i);
      });
}

// y[r] = RMSNorm(x[rows ? rows[r] : r]) * scale. Launched as a programmatic dependent, like the
// residual norms: the product after the last layer's norms requests the output matrix meanwhile.
__global__ void RMSNormKernel(const float* x, const std::int32_t* rows, std::size_t dim,
                              const float* scale, float eps, float* y) {
  internal::WaitPrior();
  internal::AllowDependents();
  const std::size_t r = blockIdx.x;
  const float* xr = x + (rows != nullptr ? static_cast<std::size_t>(rows[r]) : r) * dim;
  float* yr = y + r * dim;
  float sum = 0;
  for (std::size_t c = threadIdx.x; c < dim; c += blockDim.x) sum += xr[c] * xr[c];
  const float total = BlockSum(sum);
  const float inv = rsqrtf(total / static_cast<float>(dim) + eps);
  for (std::size_t c = threadIdx.x; c < dim; c += blockDim.x) yr[c] = xr[c] * inv * scale[c];
}

__global__ void SoftcapKernel(float* x, std::size_t n, float cap) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

// True if (v, i) ranks before (best_v, best_i): larger, or equal with a lower index; NaN never.
__device__ bool Better(float v, int i, float best_v, int best_i) {
  return v > best_v || (v == best_v && i < best_i && best_i >= 0);
}

// Keeps (v, i) as the best when it ranks before it; index -1 holds nothing.
__device__ void KeepBetter(float v, int i, float& best_v, int& best_i) {
  if (i >= 0 && (best_i < 0 || Better(v, i, best_v, best_i))) {
    best_v = v;
    best_i = i;
  }
}

// The warp's best (value, index) of the pairs its lanes hold; every lane gets it.
__device__ void WarpBest(float& best_v, int& best_i) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, best_v, offset);
    const int i = __shfl_xor_sync(0xffffffffu, best_i, offset);
    KeepBetter(v, i, best_v, best_i);
  }
}

// The block's best (value, index) of the pairs its threads hold; thread 0 gets it.
__device__ void BlockBest(float& best_v, int& best_i) {
  WarpBest(best_v, best_i);
  __shared__ float values[kThreads / 32];
  __shared__ int indices[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    values[warp] = best_v;
    indices[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) KeepBetter(values[w], indices[w], best_v, best_i);
  }
}

// Columns one ArgmaxChunkKernel block reduces.
constexpr std::size_t kArgmaxChunk = 4096;

// Grid (chunks, rows): block c writes the best (value, index) of columns [c * kArgmaxChunk, ...)
// of its row (index -1: none above -inf) to values / indices [row, chunk].
__global__ void ArgmaxChunkKernel(const float* x, std::size_t cols, float* values,
                                  std::int32_t* indices) {
  const float* row = x + static_cast<std::size_t>(blockIdx.y) * cols;
  const std::size_t begin = static_cast<std::size_t>(blockIdx.x) * kArgmaxChunk;
  const std::size_t end = begin + kArgmaxChunk < cols ? begin + kArgmaxChunk : cols;
  float best_v = -INFINITY;
  int best_i = -1;
  for (std::size_t c = begin + threadIdx.x; c < end; c += blockDim.x) {
    const float v = row[c];
    if (v > best_v) {  // strided ascending: the first of equal values is the lowest index
      best_v = v;
      best_i = static_cast<int>(c);
    }
  }
  BlockBest(best_v, best_i);
  if (threadIdx.x == 0) {
    const std::size_t at = static_cast<std::size_t>(blockIdx.y) * gridDim.x + blockIdx.x;
    values[at] = best_v;
    indices[at] = best_i;
  }
}

// One warp per row: the best of the row's chunk results, in chunk order.
__global__ void ArgmaxCombineKernel(const float* values, const std::int32_t* indices, int chunks,
                                    std::int32_t* out) {
  const std::size_t first = static_cast<std::size_t>(blockIdx.x) * chunks;
  float best_v = -INFINITY;
  int best_i = -1;
  for (int c = threadIdx.x; c < chunks; c += 32) {
    KeepBetter(values[first + c], indices[first + c], best_v, best_i);
  }
  WarpBest(best_v, best_i);
  if (threadIdx.x == 0) out[blockIdx.x] = best_i;
}

// Blocks per row of MaskRowsKernel: enough to fill the GPU for a few rows of a 262k vocabulary.
constexpr unsigned kMaskBlocksPerRow = 64;

// Grid (kMaskBlocksPerRow, rows): the row's disallowed tokens become -inf.
__global__ void MaskRowsKernel(float* x, std::size_t cols, const RowFilter* filters,
                               const std::uint64_t* words) {
  const RowFilter f = filters[blockIdx.y];
  if (f.allowed < 0) return;
  float* row = x + static_cast<std::size_t>(blockIdx.y) * cols;
  const std::uint64_t* bits = words + f.allowed;
  for (std::size_t c = blockIdx.x * blockDim.x + threadIdx.x; c < cols;
       c += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    if ((bits[c / 64] >> (c % 64) & 1) == 0) row[c] = -INFINITY;
  }
}

// One block per row: the repetition penalty on the row's listed ids (after MaskRowsKernel).
__global__ void PenalizeRowsKernel(float* x, std::size_t cols, const RowFilter* filters,
                                   const std::int32_t* ids) {
  const RowFilter f = filters[blockIdx.x];
  if (f.penalty == 1.0f) return;
  float* row = x + static_cast<std::size_t>(blockIdx.x) * cols;
  for (int i = threadIdx.x; i < f.count; i += blockDim.x) {
    const std::int32_t id = ids[f.penalized + i];
    if (id < 0 || static_cast<std::size_t>(id) >= cols) continue;
    const float v = row[id];
    row[id] = v < 0.0f ? v * f.penalty : v / f.penalty;
  }
}

constexpr int kTopChunk = 1024;  // values one block sorts
constexpr int kTopThreads = kTopChunk / 2;

// True if (a, ia) ranks before (b, ib): larger value, or equal value and lower index.
__device__ bool RanksBefore(float a, int ia, float b, int ib) {
  return a > b || (a == b && ia < ib);
}

// Block (chunk, row): sorts values [chunk * 1024, +1024) of the row (with their indices: `ids`,
// or the positions when null) in shared memory, bitonically, and writes the first kTopRows.
__global__ void ChunkTopKernel(const float* values, const std::int32_t* ids, int n,
                               float* out_values, std::int32_t* out_ids, int out_stride) {
  __shared__ float key[kTopChunk];
  __shared__ int idx[kTopChunk];
  const int chunk = static_cast<int>(blockIdx.x);
  const std::size_t row = blockIdx.y;
  const float* v = values + row * static_cast<std::size_t>(n);
  const std::int32_t* id = ids != nullptr ? ids + row * static_cast<std::size_t>(n) : nullptr;
  for (int t = static_cast<int>(threadIdx.x); t < kTopChunk; t += kTopThreads) {
    const int i = chunk * kTopChunk + t;
    if (i < n) {
      const float x = v[i];
      key[t] = isnan(x) ? -INFINITY : x;
      idx[t] = id != nullptr ? id[i] : i;
    } else {
      key[t] = -INFINITY;
      idx[t] = 0x7fffffff;
    }
  }
  for (int size = 2; size <= kTopChunk; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      __syncthreads();
      const int t = static_cast<int>(threadIdx.x);
      const int i = 2 * t - (t & (stride - 1));
      const int j = i + stride;
      // Runs of `size` alternate direction; the last (size == kTopChunk) is descending.
      const bool first_ranks_first = (i & size) == 0;
      const bool ordered = RanksBefore(key[i], idx[i], key[j], idx[j]);
      if (ordered != first_ranks_first) {
        const float k = key[i];
        key[i] = key[j];
        key[j] = k;
        const int x = idx[i];
        idx[i] = idx[j];
        idx[j] = x;
      }
    }
  }
  __syncthreads();
  for (int t = static_cast<int>(threadIdx.x); t < static_cast<int>(kTopRows); t += kTopThreads) {
    const std::size_t at = row * static_cast<std::size_t>(out_stride) +
                           static_cast<std::size_t>(chunk) * kTopRows + static_cast<std::size_t>(t);
    out_values[at] = key[t];
    out_ids[at] = idx[t];
  }
}

__device__ __forceinline__ float GeluTanhTimes(float g, float u) {
  const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
  return 0.5f * g * (1.0f + tanhf(inner)) * u;
}

// An element a thread.
__global__ void GeluTanhMulKernel(const float* gate, const float* up, std::size_t n, float* out,
                                  __nv_bfloat16* terms) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float y = GeluTanhTimes(gate[i], up[i]);
  if (out != nullptr) out[i] = y;
  if (terms != nullptr) internal::SplitBF16(y, terms + i, terms + n + i);
}

// Four elements a thread, 16-byte loads and stores (n a multiple of 4; gate, up and out 16-byte
// aligned, terms 8-byte aligned): the same results.
__global__ void GeluTanhMul4Kernel(const float4* gate, const float4* up, std::size_t n, float4* out,
                                   __nv_bfloat16* terms) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n / 4) return;
  const float4 g = gate[i];
  const float4 u = up[i];
  const float4 y = make_float4(GeluTanhTimes(g.x, u.x), GeluTanhTimes(g.y, u.y),
                               GeluTanhTimes(g.z, u.z), GeluTanhTimes(g.w, u.w));
  if (out != nullptr) out[i] = y;
  if (terms != nullptr) StoreTerms(y, terms + 4 * i, terms + n + 4 * i);
}

}  // namespace

Status EmbedRows(DType table_dtype, const void* table, std::size_t table_cols,
                 const std::int32_t* ids, std::size_t n, float scale, float* out, Stream stream) {
  if (n == 0) return Ok();
  const auto grid = static_cast<unsigned>(n);
  switch (table_dtype) {
    case DType::kF32:
      EmbedRowsKernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(table), table_cols,
                                                     ids, scale, out);
      break;
    case DType::kBF16:
      EmbedRowsKernel<<<grid, kThreads, 0, stream>>>(static_cast<const std::uint16_t*>(table),
                                                     table_cols, ids, scale, out);
      break;
    default:
      return MakeError("cuda::EmbedRows: ", DTypeName(table_dtype),
                       " tables are not supported (F32, BF16)");
  }
  return CudaLastError("cuda::EmbedRows");
}

Status RMSNormAddTo(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                    float eps, float* residual, Stream stream) {
  if (rows == 0) return Ok();
  internal::Launch(RMSNormAddToKernel, dim3(static_cast<unsigned>(rows)), kThreads, 0, stream,
                   internal::DependentLaunchSupported(), x, dim, scale, eps, residual);
  return CudaLastError("cuda::RMSNormAddTo");
}

Status RMSNorm(const float* x, std::size_t n, std::size_t dim, const float* scale, float eps,
               float* y, const std::int32_t* rows, Stream stream) {
  if (n == 0) return Ok();
  internal::Launch(RMSNormKernel, dim3(static_cast<unsigned>(n)), kThreads, 0, stream,
                   internal::DependentLaunchSupported(), x, rows, dim, scale, eps, y);
  return CudaLastError("cuda::RMSNorm");
}

Status RMSNormAddToNorm(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                        float eps, float* residual, const float* next_scale, float* y,
                        Stream stream) {
  return RMSNormAddToNormSplit(x, rows, dim, scale, eps, residual, next_scale, y, nullptr, stream);
}

Status RMSNormAddToNormSplit(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                             float eps, float* residual, const float* next_scale, float* y,
                             std::uint16_t* terms, Stream stream) {
  if (y == nullptr && terms == nullptr) {
    return MakeError("cuda::RMSNormAddToNormSplit: neither y nor its terms to write");
  }
  if (rows == 0) return Ok();
  // The fused kernel reads rows as float4s (and writes the terms 8 bytes at a time); other rows
  // take the two kernels, then the split.
  using internal::Aligned16;
  if (dim % 4 != 0 || dim > 0x7fffffffu || !Aligned16(x) || !Aligned16(scale) ||
      !Aligned16(residual) || !Aligned16(next_scale) || !Aligned16(y) ||
      reinterpret_cast<std::uintptr_t>(terms) % 8 != 0) {
    if (y == nullptr) {
      return MakeError("cuda::RMSNormAddToNormSplit: rows of ", dim,
                       " (or pointers not 16-byte aligned) need y");
    }
    FGNET_TRY(RMSNormAddTo(x, rows, dim, scale, eps, residual, stream));
    FGNET_TRY(RMSNorm(residual, rows, dim, next_scale, eps, y, nullptr, stream));
    if (terms == nullptr) return Ok();
    return internal::LaunchToBF16(y, rows * dim, terms, terms + rows * dim, stream);
  }
  const auto blocks = static_cast<unsigned>((rows + kNormRowsPerBlock - 1) / kNormRowsPerBlock);
  internal::Launch(RMSNormAddToNormKernel, dim3(blocks), kThreads, 0, stream,
                   internal::DependentLaunchSupported(), x, rows, dim, scale, eps, residual,
                   next_scale, y, reinterpret_cast<__nv_bfloat16*>(terms));
  return CudaLastError("cuda::RMSNormAddToNorm");
}

Status Softcap(float* x, std::size_t n, float cap, Stream stream) {
  if (n == 0) return Ok();
  const auto blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  SoftcapKernel<<<blocks, kThreads, 0, stream>>>(x, n, cap);
  return CudaLastError("cuda::Softcap");
}

Status FilterRows(float* x, std::size_t rows, std::size_t cols, const RowFilter* filters,
                  const std::uint64_t* words, const std::int32_t* ids, Stream stream) {
  if (rows == 0) return Ok();
  MaskRowsKernel<<<dim3(kMaskBlocksPerRow, static_cast<unsigned>(rows)), kThreads, 0, stream>>>(
      x, cols, filters, words);
  FGNET_TRY(CudaLastError("cuda::FilterRows"));
  PenalizeRowsKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, cols, filters, ids);
  return CudaLastError("cuda::FilterRows");
}

std::size_t ArgmaxRowsWorkspace(std::size_t rows, std::size_t cols) {
  const std::size_t chunks = (cols + kArgmaxChunk - 1) / kArgmaxChunk;
  return rows * chunks * (sizeof(float) + sizeof(std::int32_t));
}

Status ArgmaxRows(const float* x, std::size_t rows, std::size_t cols, std::int32_t* out,
                  void* workspace, Stream stream) {
  if (rows == 0) return Ok();
  if (cols == 0 || cols > 0x7fffffffu) return MakeError("cuda::ArgmaxRows: ", cols, " columns");
  const std::size_t chunks = (cols + kArgmaxChunk - 1) / kArgmaxChunk;
  if (rows > 65535) return MakeError("cuda::ArgmaxRows: ", rows, " rows exceed 65535");
  auto* values = static_cast<float*>(workspace);
  auto* indices = reinterpret_cast<std::int32_t*>(values + rows * chunks);
  ArgmaxChunkKernel<<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(rows)), kThreads, 0,
                      stream>>>(x, cols, values, indices);
  FGNET_TRY(CudaLastError("cuda::ArgmaxRows"));
  ArgmaxCombineKernel<<<static_cast<unsigned>(rows), 32, 0, stream>>>(
      values, indices, static_cast<int>(chunks), out);
  return CudaLastError("cuda::ArgmaxRows");
}

std::size_t TopRowsWorkspace(std::size_t rows, std::size_t cols) {
  const std::size_t first = (cols + kTopChunk - 1) / kTopChunk * kTopRows;  // level 1's length
  // Two levels' worth, each as values then indices.
  return 2 * rows * first * (sizeof(float) + sizeof(std::int32_t)) + 512;
}

Status TopRows(const float* x, std::size_t rows, std::size_t cols, float* values,
               std::int32_t* indices, void* workspace, Stream stream) {
  if (rows == 0) return Ok();
  if (cols == 0 || cols > 0x7fffffffu) return MakeError("cuda::TopRows: ", cols, " columns");
  const std::size_t level = (cols + kTopChunk - 1) / kTopChunk * kTopRows;
  char* ws = static_cast<char*>(workspace);
  const std::size_t half = rows * level * (sizeof(float) + sizeof(std::int32_t));
  float* buf_values[2] = {reinterpret_cast<float*>(ws), reinterpret_cast<float*>(ws + half)};
  std::int32_t* buf_ids[2] = {
      reinterpret_cast<std::int32_t*>(ws + rows * level * sizeof(float)),
      reinterpret_cast<std::int32_t*>(ws + half + rows * level * sizeof(float))};
  const float* in_values = x;
  const std::int32_t* in_ids = nullptr;
  std::size_t n = cols;
  for (int pass = 0;; ++pass) {
    const std::size_t chunks = (n + kTopChunk - 1) / kTopChunk;
    const bool last = chunks == 1;
    float* out_values = last ? values : buf_values[pass % 2];
    std::int32_t* out_ids = last ? indices : buf_ids[pass % 2];
    const std::size_t out_n = last ? kTopRows : chunks * kTopRows;
    ChunkTopKernel<<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(rows)), kTopThreads,
                     0, stream>>>(in_values, in_ids, static_cast<int>(n), out_values, out_ids,
                                  static_cast<int>(out_n));
    FGNET_TRY(CudaLastError("cuda::TopRows"));
    if (last) return Ok();
    in_values = out_values;
    in_ids = out_ids;
    n = out_n;
  }
}

Status GeluTanhMul(const float* gate, const float* up, std::size_t n, float* out, Stream stream) {
  return GeluTanhMulSplit(gate, up, n, out, nullptr, stream);
}

Status GeluTanhMulSplit(const float* gate, const float* up, std::size_t n, float* out,
                        std::uint16_t* terms, Stream stream) {
  if (out == nullptr && terms == nullptr) {
    return MakeError("cuda::GeluTanhMulSplit: neither out nor its terms to write");
  }
  if (n == 0) return Ok();
  auto* t = reinterpret_cast<__nv_bfloat16*>(terms);
  using internal::Aligned16;
  if (n % 4 == 0 && Aligned16(gate) && Aligned16(up) && Aligned16(out) &&
      reinterpret_cast<std::uintptr_t>(terms) % 8 == 0) {
    const auto blocks = static_cast<unsigned>((n / 4 + kThreads - 1) / kThreads);
    GeluTanhMul4Kernel<<<blocks, kThreads, 0, stream>>>(reinterpret_cast<const float4*>(gate),
                                                        reinterpret_cast<const float4*>(up), n,
                                                        reinterpret_cast<float4*>(out), t);
  } else {
    const auto blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
    GeluTanhMulKernel<<<blocks, kThreads, 0, stream>>>(gate, up, n, out, t);
  }
  return CudaLastError("cuda::GeluTanhMul");
}

}  // namespace fgnet::cuda
