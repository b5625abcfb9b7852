// CUDA kernels of the attention block over paged KV (see attention.h).
//
// PagedAttention has two regimes, chosen per group of rows on the device (the host does not see
// the rows' sequences):
//   * tiles: a pass's rows are cut into tiles of kTileQ / group consecutive rows. A tile whose
//     rows all belong to one sequence (a prefill chunk) is done by one CTA per kv head, which
//     holds the tile's queries (all query heads of the kv head) in shared memory and walks the
//     union of their visible keys in steps of kTileK keys, each key and value tile loaded once
//     into shared memory and used by every query of the tile (an f32 flash-attention loop);
//     long key ranges are cut into slices done by separate CTAs, so that the GPU is filled and
//     the tiles late in a long prompt do not set the pace;
//   * splits: every other row (decode rows, tiles of mixed sequences) is done flash-decoding
//     style by CTAs of (row, kv head, slice of the visible keys), each computing all the query
//     heads of its kv head so that a key or value row is read once; each warp keeps an online
//     softmax over its keys, and the CTA merges its warps.
// A row (or tile) whose keys took several slices leaves each slice's (max, sum, unnormalised
// output) in the workspace, and a combine kernel merges them; one slice writes the output.
// The number of slices comes from the rows, the longest visible range and the SM count, so that
// a pass of few rows still fills the GPU.
// The host side queries the device once (CurrentDevice) and makes no synchronising call, so that
// calls can be captured in CUDA graphs. On sm_90+ the split and combine kernels are launched as
// programmatic dependents (kernel_support.cuh). QKNormRope, QKNormRopeWriteKV and WriteKV are in
// kv_write.cu.

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

#include "backend/cuda/attention.h"
#include "backend/cuda/device.h"
#include "backend/cuda/kernel_support.cuh"

namespace fgnet::cuda {
namespace {

using internal::AllowDependents;
using internal::DependentLaunchSupported;
using internal::kFullMask;
using internal::Launch;
using internal::WaitPrior;

// ---------------------------------------------------------------------------------------------
// PagedAttention: what every kernel of a call shares.

struct Geometry {
  const float* q;
  float* out;
  float* workspace;
  const std::int32_t* row_seq;
  const std::int32_t* row_pos;
  const std::int32_t* seq_table;
  const std::int32_t* tables;
  const float* memory;
  std::int64_t block_floats;
  int block_size;
  int block_shift;            // log2(block_size) when a power of two, else -1
  std::int64_t layer_offset;  // slot * block_size * row
  std::int64_t row;
  int rows;
  int heads;
  int kv_heads;
  int head_dim;
  int group;  // heads / kv_heads
  int window;
  float scale;
  float softcap;
  int splits;         // most slices per row of the split regime
  int chunk;          // keys per slice of the split regime
  int tile_rows;      // rows per tile of the tile regime; 0 when the tile kernel does not run
  int tile_chunk;     // keys per slice of a tile's key range (at least; see TileChunk)
  int tile_splits;    // most slices per tile
  int stride_splits;  // slices per (row, head) in the workspace
};

// Tile regime: queries (rows x query heads of a kv head) per tile, keys per step.
constexpr int kTileQ = 64;
constexpr int kTileK = 32;
constexpr int kTileThreads = 256;
constexpr int kPStride = kTileQ + 4;
constexpr int kMinTileChunk = 64;  // fewest keys per slice of a tile
constexpr int kTileWaves = 4;      // tile CTAs per SM aimed at (2 are resident at a time)

__device__ __forceinline__ int VisibleFrom(int pos, int window) {
  return window > 0 ? max(0, pos - window + 1) : 0;
}

__device__ __forceinline__ float Score(float dot, float scale, float softcap) {
  float s = dot * scale;
  if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
  return s;
}

// Offset in `memory` of the key row of position p (table: the sequence's block table).
__device__ __forceinline__ std::int64_t KeyOffset(const Geometry& g, const std::int32_t* table,
                                                  int p) {
  int index = 0;
  int offset = 0;
  if (g.block_shift >= 0) {
    index = p >> g.block_shift;
    offset = p & (g.block_size - 1);
  } else {
    index = p / g.block_size;
    offset = p - index * g.block_size;
  }
  return static_cast<std::int64_t>(table[index]) * g.block_floats + g.layer_offset +
         static_cast<std::int64_t>(offset) * g.row;
}

// Whether the tile of rows [tile * tile_rows, ...) holds one sequence's rows only, so that the
// tile kernel does it. Called by every thread of the CTA.
__device__ bool TileIsUniform(const Geometry& g, int tile) {
  const int r0 = tile * g.tile_rows;
  const int n = min(g.tile_rows, g.rows - r0);
  const int seq = g.row_seq[r0];
  int same = 1;
  for (int i = threadIdx.x; i < n; i += blockDim.x) same &= g.row_seq[r0 + i] == seq;
  return __syncthreads_and(same) != 0;
}

// True when row `row` is done by the tile kernel. Called by every thread of the CTA.
__device__ bool RowInTile(const Geometry& g, int row) {
  return g.tile_rows > 0 && TileIsUniform(g, row / g.tile_rows);
}

// The union [*lo, *hi] of the visible ranges of a tile's rows.
__device__ void TileRange(const Geometry& g, int tile, int* lo, int* hi) {
  const int r0 = tile * g.tile_rows;
  const int n = min(g.tile_rows, g.rows - r0);
  *lo = INT_MAX;
  *hi = -1;
  for (int i = 0; i < n; ++i) {
    const int pos = g.row_pos[r0 + i];
    *lo = min(*lo, VisibleFrom(pos, g.window));
    *hi = max(*hi, pos);
  }
}

__device__ __forceinline__ int Slices(int keys, int chunk) { return (keys + chunk - 1) / chunk; }

// Keys per slice of a tile whose keys span `range` positions: tile_chunk, or more for a range
// longer than planned, so that no tile has more than tile_splits slices.
__device__ __forceinline__ int TileChunk(const Geometry& g, int range) {
  const int need = (range + g.tile_splits - 1) / g.tile_splits;
  return max(g.tile_chunk, (need + kTileK - 1) / kTileK * kTileK);
}

// Partial result of slice `slice` of (row, head): the unnormalised output [head_dim], its max and
// its sum.
__device__ __forceinline__ float* Partial(const Geometry& g, std::size_t row_head, int slice) {
  return g.workspace +
         (row_head * g.stride_splits + slice) * static_cast<std::size_t>(g.head_dim + 2);
}

// A lane's share of a head vector of up to 32 * kDC floats: kChunks vectors of kVec floats at
// dims Dim(lane, c), so that a warp's loads of a row are contiguous.
template <int kDC>
struct LaneDims {
  static constexpr int kVec = kDC >= 4 ? 4 : kDC;
  static constexpr int kChunks = kDC / kVec;
  static __device__ __forceinline__ int Dim(int lane, int c) { return c * 32 * kVec + lane * kVec; }
};

template <int kDC>
__device__ __forceinline__ void LoadLane(const float* p, int lane, int head_dim, float* dst) {
  using L = LaneDims<kDC>;
#pragma unroll
  for (int c = 0; c < L::kChunks; ++c) {
    const int d = L::Dim(lane, c);
    float* o = dst + c * L::kVec;
    if (d >= head_dim) {
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) o[e] = 0.0f;
    } else if constexpr (L::kVec == 4) {
      const float4 t = *reinterpret_cast<const float4*>(p + d);
      o[0] = t.x;
      o[1] = t.y;
      o[2] = t.z;
      o[3] = t.w;
    } else if constexpr (L::kVec == 2) {
      const float2 t = *reinterpret_cast<const float2*>(p + d);
      o[0] = t.x;
      o[1] = t.y;
    } else {
      o[0] = p[d];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Split regime. Grid (rows, kv_heads * subgroups, splits); kG query heads per CTA; head_dim up
// to 32 * kDC.

constexpr int kSplitWarps = 4;
constexpr int kSplitThreads = kSplitWarps * 32;
constexpr int kSplitUnroll = 4;  // keys per warp and step
// Slices: few keys each, so that a decode row's keys are spread over many SMs (short dependent
// chains of loads per warp), and about kSplitWaves CTAs per SM in all; at most kMaxSplits slices
// per row, so that the merge stays short.
constexpr int kMinChunk = 16;    // fewest keys per slice (one step of every warp)
constexpr int kSplitWaves = 2;   // split CTAs per SM aimed at
constexpr int kMaxSplits = 128;  // most slices per row

template <int kDC, int kG>
__global__ void __launch_bounds__(kSplitThreads) SplitKernel(Geometry g) {
  using L = LaneDims<kDC>;
  constexpr int kDp = 32 * kDC;
  __shared__ float s_ml[kSplitWarps][kG][2];
  __shared__ float s_acc[kSplitWarps][kG][kDp];

  WaitPrior();
  AllowDependents();
  const int row = blockIdx.x;
  if (RowInTile(g, row)) return;
  const int subgroups = g.group / kG;
  const int kvh = blockIdx.y / subgroups;
  const int head0 = kvh * g.group + (blockIdx.y % subgroups) * kG;
  const int pos = g.row_pos[row];
  const int first = VisibleFrom(pos, g.window);
  const int a = first + static_cast<int>(blockIdx.z) * g.chunk;
  if (a > pos) return;  // the row's range has fewer slices (uniform over the CTA)
  const bool one_slice = Slices(pos - first + 1, g.chunk) == 1;
  const int b = min(pos, a + g.chunk - 1);
  const std::int32_t* table = g.tables + g.seq_table[g.row_seq[row]];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int D = g.head_dim;
  const std::int64_t head_offset = static_cast<std::int64_t>(kvh) * D;
  const std::int64_t value_offset = g.block_floats / 2;

  float q[kG][kDC];
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    LoadLane<kDC>(g.q + (static_cast<std::size_t>(row) * g.heads + head0 + h) * D, lane, D, q[h]);
  }
  float m[kG];
  float l[kG];
  float acc[kG][kDC];
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int j = 0; j < kDC; ++j) acc[h][j] = 0.0f;
  }

  for (int k0 = a + warp * kSplitUnroll; k0 <= b; k0 += kSplitWarps * kSplitUnroll) {
    float kr[kSplitUnroll][kDC];
    float vr[kSplitUnroll][kDC];
#pragma unroll
    for (int u = 0; u < kSplitUnroll; ++u) {
      if (k0 + u <= b) {
        const float* key = g.memory + KeyOffset(g, table, k0 + u) + head_offset;
        LoadLane<kDC>(key, lane, D, kr[u]);
        LoadLane<kDC>(key + value_offset, lane, D, vr[u]);
      } else {
#pragma unroll
        for (int j = 0; j < kDC; ++j) kr[u][j] = vr[u][j] = 0.0f;
      }
    }
    float s[kSplitUnroll][kG];
#pragma unroll
    for (int u = 0; u < kSplitUnroll; ++u) {
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < kDC; ++j) dot += q[h][j] * kr[u][j];
        s[u][h] = dot;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
#pragma unroll
      for (int u = 0; u < kSplitUnroll; ++u) {
#pragma unroll
        for (int h = 0; h < kG; ++h) s[u][h] += __shfl_xor_sync(kFullMask, s[u][h], o);
      }
    }
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int u = 0; u < kSplitUnroll; ++u) {
        s[u][h] = k0 + u <= b ? Score(s[u][h], g.scale, g.softcap) : -INFINITY;
        mx = fmaxf(mx, s[u][h]);
      }
      const float m_new = fmaxf(m[h], mx);  // finite: key k0 is in range
      const float corr = expf(m[h] - m_new);
      l[h] *= corr;
#pragma unroll
      for (int j = 0; j < kDC; ++j) acc[h][j] *= corr;
#pragma unroll
      for (int u = 0; u < kSplitUnroll; ++u) {
        const float p = expf(s[u][h] - m_new);
        l[h] += p;
#pragma unroll
        for (int j = 0; j < kDC; ++j) acc[h][j] += p * vr[u][j];
      }
      m[h] = m_new;
    }
  }

  // Merge the warps (a warp without keys has m = -inf, l = 0, acc = 0).
#pragma unroll
  for (int h = 0; h < kG; ++h) {
#pragma unroll
    for (int c = 0; c < L::kChunks; ++c) {
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) {
        s_acc[warp][h][L::Dim(lane, c) + e] = acc[h][c * L::kVec + e];
      }
    }
    if (lane == 0) {
      s_ml[warp][h][0] = m[h];
      s_ml[warp][h][1] = l[h];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kG * D; idx += blockDim.x) {
    const int h = idx / D;
    const int d = idx % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) mx = fmaxf(mx, s_ml[w][h][0]);
    float sum = 0.0f;
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) {
      const float f = expf(s_ml[w][h][0] - mx);
      sum += f * s_ml[w][h][1];
      o += f * s_acc[w][h][d];
    }
    const std::size_t rh = static_cast<std::size_t>(row) * g.heads + head0 + h;
    if (one_slice) {
      g.out[rh * D + d] = o / sum;
    } else {
      float* part = Partial(g, rh, static_cast<int>(blockIdx.z));
      part[d] = o;
      if (d == 0) {
        part[D] = mx;
        part[D + 1] = sum;
      }
    }
  }
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
  WaitPrior();
  const int row = blockIdx.x / g.heads;
  int slices = 0;
  if (RowInTile(g, row)) {
    int lo = 0;
    int hi = 0;
    TileRange(g, row / g.tile_rows, &lo, &hi);
    slices = Slices(hi - lo + 1, TileChunk(g, hi - lo + 1));
  } else {
    const int pos = g.row_pos[row];
    slices = Slices(pos - VisibleFrom(pos, g.window) + 1, g.chunk);
  }
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
    g.out[static_cast<std::size_t>(blockIdx.x) * D + d] = t / sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Tile regime. Grid (tiles, kv_heads, slices of tile_chunk keys of the tile's key range); 256
// threads as 16 x 16: thread (ty, tx) holds the scores of queries ty * 4 .. + 3 against keys
// tx * 2, tx * 2 + 1 of a step, and the output of those queries at dims gr * 64 + tx * 4 .. + 3.
// Query i of a tile is row r0 + i / group, head kvh * group + i % group. head_dim up to 32 * kDC
// (kDC in {2, 4, 8}).

template <int kDC>
constexpr std::size_t TileSmemBytes() {
  return static_cast<std::size_t>(32 * kDC * kTileQ + 32 * kDC * kTileK + kTileK * kPStride) *
         sizeof(float);
}

template <int kDC>
__global__ void __launch_bounds__(kTileThreads, 2) TileKernel(Geometry g) {
  constexpr int kDp = 32 * kDC;
  constexpr int kGroups = kDp / 64;
  extern __shared__ float4 smem[];
  float* q_t = reinterpret_cast<float*>(smem);  // [kDp][kTileQ]
  float* kv = q_t + kDp * kTileQ;               // keys [kDp][kTileK], then values [kTileK][kDp]
  float* p_t = kv + kDp * kTileK;               // probabilities [kTileK][kPStride]
  __shared__ int s_pos[kTileQ];                 // each query's position (-1: no query)
  __shared__ int s_lo[kTileQ];                  // its first visible position
  __shared__ long long s_key[kTileK];           // each key's offset in memory (-1: not used)
  __shared__ int s_range[2];

  // Later tiles of a sequence see more keys: start them first.
  const int tile = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  if (!TileIsUniform(g, tile)) return;
  const int kvh = blockIdx.y;
  const int G = g.group;
  const int D = g.head_dim;
  const int r0 = tile * g.tile_rows;
  const int nr = min(g.tile_rows, g.rows - r0);
  const int nq = nr * G;
  const std::int32_t* table = g.tables + g.seq_table[g.row_seq[r0]];
  const std::int64_t head_offset = static_cast<std::int64_t>(kvh) * D;
  const std::int64_t value_offset = g.block_floats / 2;
  const int tid = threadIdx.x;

  if (tid == 0) {
    s_range[0] = INT_MAX;
    s_range[1] = -1;
  }
  __syncthreads();
  if (tid < kTileQ) {
    int pos = -1;
    int lo = INT_MAX;
    if (tid < nq) {
      pos = g.row_pos[r0 + tid / G];
      lo = VisibleFrom(pos, g.window);
      atomicMin(&s_range[0], lo);
      atomicMax(&s_range[1], pos);
    }
    s_pos[tid] = pos;
    s_lo[tid] = lo;
  }
  __syncthreads();
  // This CTA's slice [k_lo, k_hi] of the tile's keys [s_range[0], s_range[1]] (exit: uniform).
  const int range = s_range[1] - s_range[0] + 1;
  const int chunk = TileChunk(g, range);
  const int slices = Slices(range, chunk);
  const int slice = static_cast<int>(blockIdx.z);
  if (slice >= slices) return;
  const int k_lo = s_range[0] + slice * chunk;
  const int k_hi = min(s_range[1], k_lo + chunk - 1);
  for (int idx = tid; idx < kTileQ * kDp / 4; idx += kTileThreads) {
    const int i = idx % kTileQ;
    const int d4 = idx / kTileQ * 4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (i < nq && d4 < D) {
      const std::size_t qh = static_cast<std::size_t>(r0 + i / G) * g.heads + kvh * G + i % G;
      v = *reinterpret_cast<const float4*>(g.q + qh * D + d4);
    }
    q_t[(d4 + 0) * kTileQ + i] = v.x;
    q_t[(d4 + 1) * kTileQ + i] = v.y;
    q_t[(d4 + 2) * kTileQ + i] = v.z;
    q_t[(d4 + 3) * kTileQ + i] = v.w;
  }
  __syncthreads();
  const int ty = tid / 16;
  const int tx = tid % 16;
  float m[4];
  float l[4];
  float acc[4][kGroups * 4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < kGroups * 4; ++j) acc[i][j] = 0.0f;
  }

  for (int k0 = k_lo; k0 <= k_hi; k0 += kTileK) {
    if (tid < kTileK) {
      // A key no query of the tile sees is neither read nor used (its block may be absent).
      const int p = k0 + tid;
      bool seen = false;
      if (p <= k_hi) {
        for (int i = (nr - 1) * G; i >= 0 && !seen; i -= G) seen = s_lo[i] <= p && p <= s_pos[i];
      }
      s_key[tid] = seen ? KeyOffset(g, table, p) + head_offset : -1;
    }
    __syncthreads();
    for (int idx = tid; idx < kTileK * kDp / 4; idx += kTileThreads) {
      const int n = idx % kTileK;
      const int d4 = idx / kTileK * 4;
      const long long off = s_key[n];
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (off >= 0 && d4 < D) v = *reinterpret_cast<const float4*>(g.memory + off + d4);
      kv[(d4 + 0) * kTileK + n] = v.x;
      kv[(d4 + 1) * kTileK + n] = v.y;
      kv[(d4 + 2) * kTileK + n] = v.z;
      kv[(d4 + 3) * kTileK + n] = v.w;
    }
    __syncthreads();
    float s[4][2] = {};
#pragma unroll 16
    for (int d = 0; d < kDp; ++d) {
      const float4 qv = *reinterpret_cast<const float4*>(q_t + d * kTileQ + ty * 4);
      const float2 kk = *reinterpret_cast<const float2*>(kv + d * kTileK + tx * 2);
      s[0][0] += qv.x * kk.x;
      s[0][1] += qv.x * kk.y;
      s[1][0] += qv.y * kk.x;
      s[1][1] += qv.y * kk.y;
      s[2][0] += qv.z * kk.x;
      s[2][1] += qv.z * kk.y;
      s[3][0] += qv.w * kk.x;
      s[3][1] += qv.w * kk.y;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int p = k0 + tx * 2 + j;
        const bool visible =
            s_key[tx * 2 + j] >= 0 && s_lo[ty * 4 + i] <= p && p <= s_pos[ty * 4 + i];
        s[i][j] = visible ? Score(s[i][j], g.scale, g.softcap) : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      // The 16 threads of a query row are lanes of one half-warp.
#pragma unroll
      for (int o = 8; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, o));
      const float m_new = fmaxf(m[i], mx);
      float corr = 1.0f;
      float rs = 0.0f;
      if (m_new != -INFINITY) {
        corr = expf(m[i] - m_new);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          s[i][j] = expf(s[i][j] - m_new);
          rs += s[i][j];
        }
      } else {
        s[i][0] = s[i][1] = 0.0f;
      }
#pragma unroll
      for (int o = 8; o > 0; o /= 2) rs += __shfl_xor_sync(kFullMask, rs, o);
      l[i] = l[i] * corr + rs;
      m[i] = m_new;
#pragma unroll
      for (int j = 0; j < kGroups * 4; ++j) acc[i][j] *= corr;
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      *reinterpret_cast<float4*>(p_t + (tx * 2 + j) * kPStride + ty * 4) =
          make_float4(s[0][j], s[1][j], s[2][j], s[3][j]);
    }
    __syncthreads();  // keys no longer read
    for (int idx = tid; idx < kTileK * kDp / 4; idx += kTileThreads) {
      const int n = idx / (kDp / 4);
      const int d4 = idx % (kDp / 4) * 4;
      const long long off = s_key[n];
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (off >= 0 && d4 < D) {
        v = *reinterpret_cast<const float4*>(g.memory + off + value_offset + d4);
      }
      *reinterpret_cast<float4*>(kv + n * kDp + d4) = v;
    }
    __syncthreads();
#pragma unroll 4
    for (int n = 0; n < kTileK; ++n) {
      const float4 pv = *reinterpret_cast<const float4*>(p_t + n * kPStride + ty * 4);
      const float pr[4] = {pv.x, pv.y, pv.z, pv.w};
#pragma unroll
      for (int gr = 0; gr < kGroups; ++gr) {
        const float4 v = *reinterpret_cast<const float4*>(kv + n * kDp + gr * 64 + tx * 4);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          acc[i][gr * 4 + 0] += pr[i] * v.x;
          acc[i][gr * 4 + 1] += pr[i] * v.y;
          acc[i][gr * 4 + 2] += pr[i] * v.z;
          acc[i][gr * 4 + 3] += pr[i] * v.w;
        }
      }
    }
    __syncthreads();  // before the next step overwrites s_key, kv and p_t
  }

  // One slice: the output. Several: this slice's partial result (a query that saw none of the
  // slice's keys leaves m = -inf, l = 0, acc = 0, which the combine weighs by zero).
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int qi = ty * 4 + i;
    if (qi >= nq) continue;
    const std::size_t qh = static_cast<std::size_t>(r0 + qi / G) * g.heads + kvh * G + qi % G;
    float* dst = g.out + qh * D;
    float f = 1.0f / l[i];
    if (slices > 1) {
      dst = Partial(g, qh, slice);
      f = 1.0f;
      if (tx == 0) {
        dst[D] = m[i];
        dst[D + 1] = l[i];
      }
    }
#pragma unroll
    for (int gr = 0; gr < kGroups; ++gr) {
      const int d = gr * 64 + tx * 4;
      if (d >= D) continue;
      // Partial results are D + 2 floats apart: not 16-byte aligned.
      dst[d + 0] = acc[i][gr * 4 + 0] * f;
      dst[d + 1] = acc[i][gr * 4 + 1] * f;
      dst[d + 2] = acc[i][gr * 4 + 2] * f;
      dst[d + 3] = acc[i][gr * 4 + 3] * f;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

// What the host side needs of a device, queried once per device (the first call on it) and kept
// for the process: later calls make no device queries, so that they are cheap and fit in stream
// capture. The CUDA error state of a failed query is cleared so that it is not reported by a later
// launch.
struct DeviceInfo {
  int sms = 132;
  bool pdl = false;    // programmatic dependent launch (sm_90+)
  bool tiles[9] = {};  // TileKernel<kDC> has its shared memory (index kDC)
};

template <int kDC>
bool EnableTiles(int optin) {
  constexpr std::size_t bytes = TileSmemBytes<kDC>();
  return static_cast<std::size_t>(optin) >= bytes + 1024 &&
         cudaFuncSetAttribute(TileKernel<kDC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes)) == cudaSuccess;
}

DeviceInfo QueryDevice(int device) {
  DeviceInfo info;
  int sms = 0;
  int optin = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess &&
      sms > 0) {
    info.sms = sms;
  }
  info.pdl = DependentLaunchSupported();
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) ==
      cudaSuccess) {
    info.tiles[2] = EnableTiles<2>(optin);
    info.tiles[4] = EnableTiles<4>(optin);
    info.tiles[8] = EnableTiles<8>(optin);
  }
  cudaGetLastError();
  return info;
}

const DeviceInfo& CurrentDevice() {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static std::array<std::unique_ptr<DeviceInfo>, kMaxDevices> infos;
  static const DeviceInfo fallback;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    cudaGetLastError();
    return fallback;
  }
  std::lock_guard<std::mutex> lock(mu);
  if (!infos[device]) infos[device] = std::make_unique<DeviceInfo>(QueryDevice(device));
  return *infos[device];
}

// How a pass is cut: the split regime's slices and, where some sequence has several rows, the
// tile regime's tiles and their key slices. Both regimes' partial results share the workspace
// layout [rows][heads][stride_splits][head_dim + 2].
struct Plan {
  int kg = 1;  // query heads per split CTA
  int subgroups = 1;
  int splits = 1;
  int chunk = 1;
  int tile_rows = 0;  // 0: no tile regime
  int tiles = 0;
  int tile_splits = 1;
  int tile_chunk = 1;
  int stride_splits = 1;
};

std::int64_t CeilDiv(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

Plan MakePlan(const PassRows& pass, const AttentionShape& shape, int sms) {
  Plan p;
  const int group = shape.heads / shape.kv_heads;
  p.kg = group % 4 == 0 ? 4 : group % 2 == 0 ? 2 : 1;
  p.subgroups = group / p.kg;
  const std::int64_t max_keys = shape.window > 0
                                    ? std::min<std::int64_t>(pass.max_pos + 1, shape.window)
                                    : std::int64_t{pass.max_pos} + 1;
  // Split regime: about kSplitWaves CTAs per SM, slices of at least kMinChunk keys.
  const std::int64_t ctas = std::int64_t{pass.rows} * shape.kv_heads * p.subgroups;
  std::int64_t splits = CeilDiv(kSplitWaves * std::int64_t{sms}, ctas);
  splits = std::max<std::int64_t>(
      std::min({splits, CeilDiv(max_keys, kMinChunk), std::int64_t{kMaxSplits}}), 1);
  p.chunk = static_cast<int>(CeilDiv(max_keys, splits));
  p.splits = static_cast<int>(CeilDiv(max_keys, p.chunk));
  // Tile regime: a tile of consecutive positions spans at most max_pos + 1 keys, or
  // window + tile_rows - 1 on a sliding layer; such ranges are cut into slices (multiples of
  // kTileK keys, at least kMinTileChunk) so that the CTAs fill kTileWaves per SM. A tile with a
  // longer range takes longer slices (TileChunk).
  if (pass.rows > pass.num_seqs && group <= kTileQ) {
    p.tile_rows = kTileQ / group;
    p.tiles = static_cast<int>(CeilDiv(pass.rows, p.tile_rows));
    std::int64_t range = std::int64_t{pass.max_pos} + 1;
    if (shape.window > 0) range = std::min(range, std::int64_t{shape.window} + p.tile_rows - 1);
    std::int64_t ts =
        CeilDiv(kTileWaves * std::int64_t{sms}, std::int64_t{p.tiles} * shape.kv_heads);
    ts = std::max<std::int64_t>(std::min(ts, CeilDiv(range, kMinTileChunk)), 1);
    p.tile_chunk = static_cast<int>(CeilDiv(CeilDiv(range, ts), kTileK) * kTileK);
    p.tile_splits = static_cast<int>(CeilDiv(range, p.tile_chunk));
  }
  p.stride_splits = std::max(p.splits, p.tile_splits);
  return p;
}

Status CheckShape(const char* what, const AttentionShape& s) {
  if (s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0) {
    return MakeError(what, ": heads ", s.heads, " is not a positive multiple of kv_heads ",
                     s.kv_heads);
  }
  if (s.head_dim <= 0 || s.head_dim % 32 != 0 || s.head_dim > 256) {
    return MakeError(what, ": head_dim ", s.head_dim,
                     " is not supported (a multiple of 32, at most 256)");
  }
  return Ok();
}

template <int kDC>
void LaunchSplit(int kg, dim3 grid, Stream stream, bool pdl, const Geometry& g) {
  switch (kg) {
    case 4:
      Launch(SplitKernel<kDC, 4>, grid, kSplitThreads, 0, stream, pdl, g);
      break;
    case 2:
      Launch(SplitKernel<kDC, 2>, grid, kSplitThreads, 0, stream, pdl, g);
      break;
    default:
      Launch(SplitKernel<kDC, 1>, grid, kSplitThreads, 0, stream, pdl, g);
      break;
  }
}

// Launches the tile kernel if the device has the shared memory for it; false otherwise.
template <int kDC>
bool LaunchTiles(const Plan& plan, const DeviceInfo& info, Stream stream, const Geometry& g) {
  if (!info.tiles[kDC]) return false;
  const dim3 grid(static_cast<unsigned>(plan.tiles), static_cast<unsigned>(g.kv_heads),
                  static_cast<unsigned>(plan.tile_splits));
  TileKernel<kDC><<<grid, kTileThreads, TileSmemBytes<kDC>(), stream>>>(g);
  return true;
}

}  // namespace

std::size_t PagedAttentionWorkspace(const PassRows& pass, const AttentionShape& shape) {
  if (!CheckShape("", shape).ok() || pass.rows <= 0 || pass.max_pos < 0) return 0;
  const Plan p = MakePlan(pass, shape, CurrentDevice().sms);
  if (p.stride_splits <= 1) return 0;
  return static_cast<std::size_t>(pass.rows) * static_cast<std::size_t>(shape.heads) *
         static_cast<std::size_t>(p.stride_splits) * static_cast<std::size_t>(shape.head_dim + 2);
}

Status PagedAttention(const float* q, const PassRows& pass, const PagedLayer& layer,
                      const AttentionShape& shape, float* out, float* workspace, Stream stream) {
  FGNET_TRY(CheckShape("cuda::PagedAttention", shape));
  if (layer.row != std::int64_t{shape.kv_heads} * shape.head_dim) {
    return MakeError("cuda::PagedAttention: layer row ", layer.row, " is not kv_heads ",
                     shape.kv_heads, " * head_dim ", shape.head_dim);
  }
  if (layer.block_size <= 0 || layer.block_size > (1 << 30) || layer.slot < 0 ||
      layer.block_floats < 2 * (layer.slot + 1) * layer.block_size * layer.row) {
    return MakeError("cuda::PagedAttention: layer block_size ", layer.block_size, ", slot ",
                     layer.slot, " do not fit blocks of ", layer.block_floats, " floats");
  }
  if (pass.rows <= 0) return Ok();
  if (pass.max_pos < 0) {
    return MakeError("cuda::PagedAttention: max_pos ", pass.max_pos, " is negative");
  }
  const DeviceInfo& info = CurrentDevice();
  const Plan plan = MakePlan(pass, shape, info.sms);
  if (plan.stride_splits > 1 && workspace == nullptr) {
    return MakeError("cuda::PagedAttention: a workspace of ", PagedAttentionWorkspace(pass, shape),
                     " floats is needed");
  }
  Geometry g{};
  g.q = q;
  g.out = out;
  g.workspace = workspace;
  g.row_seq = pass.row_seq;
  g.row_pos = pass.row_pos;
  g.seq_table = pass.seq_table;
  g.tables = pass.tables;
  g.memory = layer.memory;
  g.block_floats = layer.block_floats;
  g.block_size = static_cast<int>(layer.block_size);
  g.block_shift = -1;
  for (int shift = 0; shift < 31; ++shift) {
    if ((std::int64_t{1} << shift) == layer.block_size) g.block_shift = shift;
  }
  g.layer_offset = layer.slot * layer.block_size * layer.row;
  g.row = layer.row;
  g.rows = pass.rows;
  g.heads = shape.heads;
  g.kv_heads = shape.kv_heads;
  g.head_dim = shape.head_dim;
  g.group = shape.heads / shape.kv_heads;
  g.window = shape.window;
  g.scale = shape.scale;
  g.softcap = shape.softcap;
  g.splits = plan.splits;
  g.chunk = plan.chunk;
  g.tile_rows = plan.tile_rows;
  g.tile_chunk = plan.tile_chunk;
  g.tile_splits = plan.tile_splits;
  g.stride_splits = plan.stride_splits;

  if (plan.tile_rows > 0) {
    bool launched = false;
    if (shape.head_dim <= 64) {
      launched = LaunchTiles<2>(plan, info, stream, g);
    } else if (shape.head_dim <= 128) {
      launched = LaunchTiles<4>(plan, info, stream, g);
    } else {
      launched = LaunchTiles<8>(plan, info, stream, g);
    }
    if (!launched) g.tile_rows = 0;
    FGNET_TRY(CudaLastError("cuda::PagedAttention (tiles)"));
  }

  // The split kernel follows the tile kernel in stream order (a plain launch), or the stream's
  // previous kernel programmatically.
  const bool split_pdl = info.pdl && g.tile_rows == 0;
  const dim3 grid(static_cast<unsigned>(pass.rows),
                  static_cast<unsigned>(shape.kv_heads * plan.subgroups),
                  static_cast<unsigned>(plan.splits));
  switch ((shape.head_dim + 31) / 32) {
    case 1:
      LaunchSplit<1>(plan.kg, grid, stream, split_pdl, g);
      break;
    case 2:
      LaunchSplit<2>(plan.kg, grid, stream, split_pdl, g);
      break;
    case 3:
    case 4:
      LaunchSplit<4>(plan.kg, grid, stream, split_pdl, g);
      break;
    default:
      LaunchSplit<8>(plan.kg, grid, stream, split_pdl, g);
      break;
  }
  FGNET_TRY(CudaLastError("cuda::PagedAttention (splits)"));
  if (plan.stride_splits > 1) {
    const dim3 grid_c(static_cast<unsigned>(pass.rows) * static_cast<unsigned>(shape.heads),
                      static_cast<unsigned>((shape.head_dim + kCombineDims - 1) / kCombineDims));
    const std::size_t smem = static_cast<std::size_t>(plan.stride_splits) * sizeof(float);
    Launch(CombineKernel, grid_c, kCombineThreads, smem, stream, info.pdl, g);
    FGNET_TRY(CudaLastError("cuda::PagedAttention (combine)"));
  }
  return Ok();
}

}  // namespace fgnet::cuda
