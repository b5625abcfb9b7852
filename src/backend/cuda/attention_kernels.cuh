// What the attention kernels of a PagedAttention call share (attention.cu: the split regime and
// the host side; attention_combine.cu: the merge of slices; attention_tiles.cu: the tile regime):
// the call's geometry, the visibility, score and KV addressing rules, and the entry points of the
// kernels in the other files. Not part of the backend's interface.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/attention.h"
#include "backend/cuda/kernel_support.cuh"
#include "backend/cuda/ops.h"
#include "util/status.h"

namespace fgnet::cuda::attention_internal {

// ---------------------------------------------------------------------------------------------
// PagedAttention: what every kernel of a call shares.

struct Geometry {
  const float* q;
  float* out;
  // The output's two BF16 terms beside it (hi, then lo at rows * heads * head_dim), or null.
  __nv_bfloat16* out_terms;
  float* workspace;
  const std::int32_t* row_seq;
  const std::int32_t* row_pos;
  const std::int32_t* seq_table;
  const std::int32_t* tables;
  const void* memory;  // f32 keys and values, or bf16 ones where `bf16`
  // The keys and values of a one-sequence pass with tiles and f32 keys, split into bf16 planes
  // (SplitKeysKernel); null when the tile kernel splits them itself.
  __nv_bfloat16* planes;
  bool rows_split;  // the rows' own keys are in `planes` already (AttentionExtras::rows_split)
  bool bf16;        // `memory` holds __nv_bfloat16 (else float)
  std::int64_t block_elements;
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

// Tile regime: queries (rows x query heads of a kv head) per tile, keys per step, threads (a warp
// per 16 queries and half of a step's keys).
constexpr int kTileQ = 64;
constexpr int kTileK = 32;
constexpr int kTileThreads = 256;
constexpr int kMinTileChunk = 64;  // fewest keys per slice of a tile
// SplitKeysKernel: positions per CTA (one a warp: a position's loads wait on its block's entry),
// threads.
constexpr int kSplitKeys = 8;
constexpr int kSplitKeysThreads = 256;
// Tile CTAs per SM aimed at (a tile CTA holds its SM alone: its shared memory). One wave: a
// CTA's fixed work (its queries, loaded and split into planes) weighs more than a longer key
// range. On an H200, a 2048-token prefill (f32 KV, `fgnet bench`) gave 298k-305k tokens/s at 1
// against 274k-286k at 4 and 247k-273k at 8 (two calls).
constexpr int kTileWaves = 1;

__device__ __forceinline__ int VisibleFrom(int pos, int window) {
  return window > 0 ? max(0, pos - window + 1) : 0;
}

__device__ __forceinline__ float Score(float dot, float scale, float softcap) {
  float s = dot * scale;
  if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
  return s;
}

// The index in its sequence's block table of the block holding position p.
__device__ __forceinline__ int BlockIndex(const Geometry& g, int p) {
  return g.block_shift >= 0 ? p >> g.block_shift : p / g.block_size;
}

// Offset in `memory` of the key row of position p (table: the sequence's block table).
__device__ __forceinline__ std::int64_t KeyOffset(const Geometry& g, const std::int32_t* table,
                                                  int p) {
  const int index = BlockIndex(g, p);
  const int offset = g.block_shift >= 0 ? p & (g.block_size - 1) : p - index * g.block_size;
  return static_cast<std::int64_t>(table[index]) * g.block_elements + g.layer_offset +
         static_cast<std::int64_t>(offset) * g.row;
}

// Offset in the planes (PagedAttentionPlanes) of position p's split key and value for kv head kvh:
// k hi, v hi, k lo, v lo of head_dim each.
__device__ __forceinline__ std::int64_t PlaneOffset(int p, int kvh, int kv_heads, int head_dim) {
  return (static_cast<std::int64_t>(p) * kv_heads + kvh) * 4 * head_dim;
}
__device__ __forceinline__ std::int64_t PlaneOffset(const Geometry& g, int p, int kvh) {
  return PlaneOffset(p, kvh, g.kv_heads, g.head_dim);
}

// Whether the rows i, i + stride, ... of tile `tile` belong to its first row's sequence: one
// thread's share of TileIsUniform (a CTA) or of CombineFewKernel's check (a warp).
__device__ inline int TileRowsShareSequence(const Geometry& g, int tile, int i, int stride) {
  const int r0 = tile * g.tile_rows;
  const int n = min(g.tile_rows, g.rows - r0);
  const int seq = g.row_seq[r0];
  int same = 1;
  for (; i < n; i += stride) same &= g.row_seq[r0 + i] == seq;
  return same;
}

// Whether the tile of rows [tile * tile_rows, ...) holds one sequence's rows only, so that the
// tile kernel does it. Called by every thread of the CTA.
__device__ inline bool TileIsUniform(const Geometry& g, int tile) {
  return __syncthreads_and(TileRowsShareSequence(g, tile, threadIdx.x, blockDim.x)) != 0;
}

// True when row `row` is done by the tile kernel. Called by every thread of the CTA.
__device__ inline bool RowInTile(const Geometry& g, int row) {
  return g.tile_rows > 0 && TileIsUniform(g, row / g.tile_rows);
}

// The union [*lo, *hi] of the visible ranges of a tile's rows.
__device__ inline void TileRange(const Geometry& g, int tile, int* lo, int* hi) {
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

// Element i of the output (of rows * heads * head_dim) is v, and its terms where g.out_terms.
__device__ __forceinline__ void StoreOut(const Geometry& g, std::size_t i, float v) {
  g.out[i] = v;
  if (g.out_terms != nullptr) {
    const std::size_t n = static_cast<std::size_t>(g.rows) * g.heads * g.head_dim;
    internal::SplitBF16(v, g.out_terms + i, g.out_terms + n + i);
  }
}

// Elements i .. i + 3 of the output (i a multiple of 4) are v, and their terms where g.out_terms.
__device__ __forceinline__ void StoreOut(const Geometry& g, std::size_t i, const float4& v) {
  *reinterpret_cast<float4*>(g.out + i) = v;
  if (g.out_terms != nullptr) {
    const std::size_t n = static_cast<std::size_t>(g.rows) * g.heads * g.head_dim;
    uint2 hi;
    uint2 lo;
    internal::SplitBF16(v.x, v.y, hi.x, lo.x);
    internal::SplitBF16(v.z, v.w, hi.y, lo.y);
    *reinterpret_cast<uint2*>(g.out_terms + i) = hi;
    *reinterpret_cast<uint2*>(g.out_terms + n + i) = lo;
  }
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

// Loads of 1, 2 or 4 consecutive elements (of keys, values or queries) as f32; 4 elements are
// 16-byte aligned (f32) or 8-byte aligned (bf16).
__device__ __forceinline__ float Load1(const float* p) { return *p; }
__device__ __forceinline__ float Load1(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float2 Load2(const float* p) {
  return *reinterpret_cast<const float2*>(p);
}
__device__ __forceinline__ float2 Load2(const __nv_bfloat16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}
__device__ __forceinline__ float4 Load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ float4 Load4(const __nv_bfloat16* p) {
  // A bf16 is the high half of the f32 it stands for; element 0 is the low half of word 0.
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                     __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
}

template <int kDC, typename T>
__device__ __forceinline__ void LoadLane(const T* p, int lane, int head_dim, float* dst) {
  using L = LaneDims<kDC>;
#pragma unroll
  for (int c = 0; c < L::kChunks; ++c) {
    const int d = L::Dim(lane, c);
    float* o = dst + c * L::kVec;
    if (d >= head_dim) {
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) o[e] = 0.0f;
    } else if constexpr (L::kVec == 4) {
      const float4 t = Load4(p + d);
      o[0] = t.x;
      o[1] = t.y;
      o[2] = t.z;
      o[3] = t.w;
    } else if constexpr (L::kVec == 2) {
      const float2 t = Load2(p + d);
      o[0] = t.x;
      o[1] = t.y;
    } else {
      o[0] = Load1(p + d);
    }
  }
}

// Gives TileKernel<kDC, source> (kDC in {2, 4, 8}, every source) its shared memory when `optin`
// bytes a block allow it; false when they do not (the split regime then does the tiles' rows).
bool EnableTileKernel(int dc, int optin);
// Launches TileKernel<dc, source> over `tiles` tiles x kv heads x `tile_splits` slices, the source
// as g.bf16 and g.planes say; false for a dc without a kernel.
bool LaunchTileKernel(int dc, int tiles, int tile_splits, Stream stream, const Geometry& g);
// Fills g.planes (f32 keys, one sequence) for positions up to `positions` - 1.
void LaunchSplitKeys(int positions, Stream stream, const Geometry& g);
// Merges the slices of every (row, head) of the pass that took several (attention_combine.cu;
// g.stride_splits > 1), as a programmatic dependent where `pdl`.
void LaunchCombine(Stream stream, bool pdl, const Geometry& g);

// The checks every kernel over a PagedLayer makes of it: a KV type it reads (f32 or bf16), and a
// block size, row and slot within blocks of block_elements. `what` names the call.
Status CheckPagedLayer(const char* what, const PagedLayer& layer);

}  // namespace fgnet::cuda::attention_internal
