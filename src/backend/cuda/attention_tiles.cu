// The tile regime of PagedAttention (see attention.cu): one CTA per tile of a prefill chunk's
// rows, kv head and slice of the tile's key range, an f32 flash-attention loop over key and value
// tiles in shared memory.

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/kernel_support.cuh"

namespace fgnet::cuda::attention_internal {
namespace {

using internal::kFullMask;

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

}  // namespace

bool EnableTileKernel(int dc, int optin) {
  const auto enable = [optin](auto kernel, std::size_t bytes) {
    return static_cast<std::size_t>(optin) >= bytes + 1024 &&
           cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(bytes)) == cudaSuccess;
  };
  switch (dc) {
    case 2:
      return enable(TileKernel<2>, TileSmemBytes<2>());
    case 4:
      return enable(TileKernel<4>, TileSmemBytes<4>());
    case 8:
      return enable(TileKernel<8>, TileSmemBytes<8>());
    default:
      return false;
  }
}

bool LaunchTileKernel(int dc, int tiles, int tile_splits, Stream stream, const Geometry& g) {
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(g.kv_heads),
                  static_cast<unsigned>(tile_splits));
  switch (dc) {
    case 2:
      TileKernel<2><<<grid, kTileThreads, TileSmemBytes<2>(), stream>>>(g);
      return true;
    case 4:
      TileKernel<4><<<grid, kTileThreads, TileSmemBytes<4>(), stream>>>(g);
      return true;
    case 8:
      TileKernel<8><<<grid, kTileThreads, TileSmemBytes<8>(), stream>>>(g);
      return true;
    default:
      return false;
  }
}

}  // namespace fgnet::cuda::attention_internal
