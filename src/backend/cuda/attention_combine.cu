// The merge of a PagedAttention pass's slices that the split and tile kernels leave in the
// workspace (see attention.cu): a CTA per (row, head) and 64 dims, or, for passes with tiles and
// few slices per row, a warp per (row, head). Launched as a programmatic dependent on sm_90+.

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>

#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/kernel_support.cuh"

namespace fgnet::cuda::attention_internal {
namespace {

using internal::AllowDependents;
using internal::kFullMask;
using internal::Launch;
using internal::WaitPrior;

// The slices a row's keys were cut into by its regime (in_tile: the tile regime's).
__device__ int RowSlices(const Geometry& g, int row, bool in_tile) {
  if (in_tile) {
    int lo = 0;
    int hi = 0;
    TileRange(g, row / g.tile_rows, &lo, &hi);
    return Slices(hi - lo + 1, TileChunk(g, hi - lo + 1));
  }
  const int pos = g.row_pos[row];
  return Slices(pos - VisibleFrom(pos, g.window) + 1, g.chunk);
}

// Merges the slices of each (row, head) whose keys were cut into several slices (of either
// regime). Grid (rows * heads, head_dim / 64 rounded up): a CTA merges 64 dims; the slices'
// weights come from a block-wide max and sum of their (max, sum), then the warps take the slices
// in turn and their sums are added in shared memory.
constexpr int kCombineThreads = 256;
constexpr int kCombineWarps = kCombineThreads / 32;
constexpr int kCombineDims = 64;

// Block-wide max (is_max) or sum of v; every thread gets the result. scratch: kCombineWarps.
__device__ float BlockReduce(float v, bool is_max, float* scratch) {
  for (int o = 16; o > 0; o /= 2) {
    const float t = __shfl_xor_sync(kFullMask, v, o);
    v = is_max ? fmaxf(v, t) : v + t;
  }
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kCombineWarps; ++w) r = is_max ? fmaxf(r, scratch[w]) : r + scratch[w];
  __syncthreads();  // scratch is reused by the next call
  return r;
}

__global__ void __launch_bounds__(kCombineThreads) CombineKernel(Geometry g) {
  extern __shared__ float s_weight[];  // [stride_splits]
  __shared__ float s_scratch[kCombineWarps];
  __shared__ float s_acc[kCombineWarps][kCombineDims];
  // The next kernel (the o product, or its adapters' shrink) may start and request its weights
  // while the merge runs; it waits for the merge's results.
  WaitPrior();
  AllowDependents();
  const int row = blockIdx.x / g.heads;
  const int slices = RowSlices(g, row, RowInTile(g, row));
  if (slices <= 1) return;  // written to the output directly (uniform over the CTA)
  const int D = g.head_dim;
  const int stride = D + 2;
  const float* part = Partial(g, blockIdx.x, 0);
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < slices; s += blockDim.x) mx = fmaxf(mx, part[s * stride + D]);
  mx = BlockReduce(mx, true, s_scratch);
  float sum = 0.0f;
  for (int s = threadIdx.x; s < slices; s += blockDim.x) {
    const float w = expf(part[s * stride + D] - mx);  // 0 for a slice that saw no key
    s_weight[s] = w;
    sum += w * part[s * stride + D + 1];
  }
  sum = BlockReduce(sum, false, s_scratch);  // its barriers also publish s_weight
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int d0 = static_cast<int>(blockIdx.y) * kCombineDims;
  float o[kCombineDims / 32] = {};
  for (int s = warp; s < slices; s += kCombineWarps) {
    const float w = s_weight[s];
    const float* ps = part + s * stride + d0;
#pragma unroll
    for (int k = 0; k < kCombineDims / 32; ++k) {
      if (d0 + k * 32 + lane < D) o[k] += w * ps[k * 32 + lane];
    }
  }
#pragma unroll
  for (int k = 0; k < kCombineDims / 32; ++k) s_acc[warp][k * 32 + lane] = o[k];
  __syncthreads();
  const int d = d0 + static_cast<int>(threadIdx.x);
  if (threadIdx.x < kCombineDims && d < D) {
    float t = 0.0f;
    for (int w = 0; w < kCombineWarps; ++w) t += s_acc[w][threadIdx.x];
    StoreOut(g, static_cast<std::size_t>(blockIdx.x) * D + d, t / sum);
  }
}

// The same merge for passes with tiles whose rows have at most kFewSlices slices (prefill): a warp
// per (row, head), 8 per CTA; lane s weighs slice s, and each lane sums head_dim / 32 dims over
// the slices; no block-wide reductions. (Decode passes keep CombineKernel, whose CTAs spread a
// row's slices over 8 warps.)
constexpr int kFewSlices = 16;
constexpr int kCombineFewWarps = 8;

__global__ void __launch_bounds__(kCombineFewWarps * 32) CombineFewKernel(Geometry g) {
  WaitPrior();
  AllowDependents();
  const int lane = threadIdx.x % 32;
  const int rh = blockIdx.x * kCombineFewWarps + threadIdx.x / 32;  // (row, head)
  if (rh >= g.rows * g.heads) return;                               // uniform over the warp
  const int row = rh / g.heads;
  const bool in_tile =
      g.tile_rows > 0 &&
      __all_sync(kFullMask, TileRowsShareSequence(g, row / g.tile_rows, lane, 32)) != 0;
  const int slices = RowSlices(g, row, in_tile);
  if (slices <= 1) return;
  const int D = g.head_dim;
  const int stride = D + 2;
  const float* part = Partial(g, rh, 0);
  const float m_s = lane < slices ? part[lane * stride + D] : -INFINITY;
  float mx = m_s;
  for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, o));
  const float w_s = lane < slices ? expf(m_s - mx) : 0.0f;  // 0 for a slice that saw no key
  float sum = lane < slices ? w_s * part[lane * stride + D + 1] : 0.0f;
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(kFullMask, sum, o);
  float o[8] = {};
#pragma unroll
  for (int s = 0; s < kFewSlices; ++s) {
    if (s >= slices) break;
    const float w = __shfl_sync(kFullMask, w_s, s);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (k * 32 + lane < D) o[k] += w * part[s * stride + k * 32 + lane];
    }
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    if (k * 32 + lane < D)
      StoreOut(g, static_cast<std::size_t>(rh) * D + k * 32 + lane, o[k] / sum);
  }
}

}  // namespace

void LaunchCombine(Stream stream, bool pdl, const Geometry& g) {
  const auto pairs = static_cast<unsigned>(g.rows) * static_cast<unsigned>(g.heads);
  if (g.tile_rows == 0 || g.stride_splits > kFewSlices) {
    const dim3 grid(pairs, static_cast<unsigned>((g.head_dim + kCombineDims - 1) / kCombineDims));
    const std::size_t smem = static_cast<std::size_t>(g.stride_splits) * sizeof(float);
    Launch(CombineKernel, grid, kCombineThreads, smem, stream, pdl, g);
  } else {  // a pass with tiles, few slices per row
    Launch(CombineFewKernel, dim3((pairs + kCombineFewWarps - 1) / kCombineFewWarps),
           kCombineFewWarps * 32, 0, stream, pdl, g);
  }
}

}  // namespace fgnet::cuda::attention_internal
