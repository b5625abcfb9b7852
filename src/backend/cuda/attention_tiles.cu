// The tile regime of PagedAttention (see attention.cu): one CTA per tile of a prefill chunk's
// rows, kv head and slice of the tile's key range, a flash-attention loop over key and value tiles
// in shared memory with the products on tensor cores (f32 operands as two bf16 terms).

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/kernel_support.cuh"

namespace fgnet::cuda::attention_internal {
namespace {

using internal::kFullMask;
using internal::SplitBF16;

// ---------------------------------------------------------------------------------------------
// Tile regime. Grid (tiles, kv_heads, slices of tile_chunk keys of the tile's key range); 8 warps,
// warp w taking queries 16 (w % 4) .. + 15 of the tile against keys 16 (w / 4) .. + 15 of every
// step of kTileK keys, with its own softmax state (the two warps of a query group merge theirs at
// the end). Query i of a tile is row r0 + i / group, head kvh * group + i % group. head_dim up
// to 32 * kDC (kDC in {2, 4, 8}).
//
// Scores and outputs are products on tensor cores (mma.sync m16n8k16, bf16 inputs, f32
// accumulators) whose f32 operands are split into two bf16 terms, x = hi + lo with
// hi = bf16(x), lo = bf16(x - hi), and multiplied as hi*hi + lo*hi + hi*lo: about 16 significant
// bits of each operand, so that a score or an output differs from the f32 sum by about 1e-5 of
// its terms' scale. bf16 keys and values are exact in one term (two products instead of three).
// The online softmax runs on the accumulators in registers (f32).
//
// A step's keys and values are copied asynchronously (cp.async) while the tensor cores work on
// the previous step, as bf16 planes: straight from bf16 blocks, from the planes SplitKeysKernel
// made of a one-sequence pass's f32 keys, or else from f32 blocks and split in shared memory
// (Source). Fragments are read from the planes with ldmatrix (transposed for the values).

using Bf16 = __nv_bfloat16;

// Where a step's key and value planes come from.
enum class Source {
  kConvert,  // f32 keys and values in the blocks, copied and split in shared memory
  kPlanes,   // f32 keys and values split beforehand into the workspace (SplitKeysKernel)
  kBF16,     // bf16 keys and values in the blocks: the planes themselves
};

// Shared memory, in bf16 elements: the tile's queries (hi and lo planes, [kTileQ][kDp + 8]), then
// kBuffers buffers of a step's planes (k hi, v hi and, for f32 keys, k lo, v lo; [kTileK][kDp + 8]
// each), then for kConvert the step's keys and values as they are in the blocks (f32,
// [kTileK][kDp + 4] each). A direct source has two buffers: the next step's planes are copied
// while this step's are used. Rows are 16-byte aligned and their padding puts the 8 rows of an
// ldmatrix in distinct banks.
template <int kDC, Source kSource>
struct TileSmem {
  static constexpr int kDp = 32 * kDC;
  static constexpr int kStride = kDp + 8;      // bf16 planes
  static constexpr int kRawStride = kDp + 4;   // f32 rows
  static constexpr int kQ = kTileQ * kStride;  // elements of one plane
  static constexpr int kKV = kTileK * kStride;
  static constexpr int kPlanes = kSource == Source::kBF16 ? 2 : 4;
  static constexpr int kBuffers = kSource == Source::kConvert ? 1 : 2;
  static constexpr int kRaw = kSource == Source::kConvert ? kTileK * kRawStride : 0;  // floats
  static constexpr std::size_t kBytes =
      (2 * kQ + kBuffers * kPlanes * kKV) * sizeof(Bf16) + 2 * kRaw * sizeof(float);
};

// 16 bytes from global to shared memory without passing through registers; zeros when !fill.
__device__ __forceinline__ void CopyAsync16(void* dst, const void* src, bool fill) {
  const auto to = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(src),
               "r"(fill ? 16 : 0));
}
__device__ __forceinline__ void CopyAsyncCommit() { asm volatile("cp.async.commit_group;\n"); }
__device__ __forceinline__ void CopyAsyncWait() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// Four 8x8 bf16 matrices from shared memory, lane 8 i + r giving row r of matrix i; `trans`
// transposes each.
template <bool kTrans>
__device__ __forceinline__ void LoadMatrices(std::uint32_t (&r)[4], const Bf16* row) {
  const auto at = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(at));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(at));
  }
}

// c += a b for a 16x16 (row-major) and b 16x8 (column-major) bf16 fragment.
__device__ __forceinline__ void Mma(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                    std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Eight consecutive elements at `src` (16-byte aligned) as bf16 at hi (and lo, for f32 ones).
__device__ __forceinline__ void SplitRow8(const float* src, Bf16* hi, Bf16* lo) {
  const float4 x = *reinterpret_cast<const float4*>(src);
  const float4 y = *reinterpret_cast<const float4*>(src + 4);
  uint4 h, l;
  SplitBF16(x.x, x.y, h.x, l.x);
  SplitBF16(x.z, x.w, h.y, l.y);
  SplitBF16(y.x, y.y, h.z, l.z);
  SplitBF16(y.z, y.w, h.w, l.w);
  *reinterpret_cast<uint4*>(hi) = h;
  *reinterpret_cast<uint4*>(lo) = l;
}
template <int kDC, Source kSource>
__global__ void __launch_bounds__(kTileThreads, 1) TileKernel(Geometry g) {
  static_assert(kTileThreads == 256 && kTileK == 32 && kTileQ == 64,
                "4 query groups x 2 halves of a step's keys");
  using S = TileSmem<kDC, kSource>;
  constexpr int kDp = S::kDp;
  constexpr bool kKVLo = kSource != Source::kBF16;  // keys and values have a low term
  constexpr bool kConvert = kSource == Source::kConvert;
  extern __shared__ float4 smem[];
  Bf16* qs_hi = reinterpret_cast<Bf16*>(smem);
  Bf16* qs_lo = qs_hi + S::kQ;
  Bf16* planes = qs_lo + S::kQ;  // [kBuffers][kPlanes][kKV]: k hi, v hi (, k lo, v lo)
  float* raw = reinterpret_cast<float*>(planes + S::kBuffers * S::kPlanes * S::kKV);  // kConvert
  __shared__ int s_pos[kTileQ];  // each query's position (-1: no query)
  __shared__ int s_lo[kTileQ];   // its first visible position
  // Each key's offset (-1: not used) in the blocks, or in the planes for kPlanes, for three steps
  // (step i in slot i % 3): the current one, the next one being copied, the one after found.
  __shared__ long long s_key[3][kTileK];
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

  // The queries arrive asynchronously (f32, [kTileQ][kDp + 4]) in the memory of the key and value
  // planes and buffers, which the first step has not used yet.
  float* q_raw = reinterpret_cast<float*>(planes);
  static_assert(kTileQ * (kDp + 4) * sizeof(float) <= S::kBytes - 2 * S::kQ * sizeof(Bf16));
  {
    constexpr int kRowCopies = kDp / 4;  // 16-byte copies per query
    constexpr int kRowsPerPass = kTileThreads / kRowCopies;
    const int d4 = tid % kRowCopies * 4;
    // Query i = tid / kRowCopies + k * kRowsPerPass is head h of row `row` of the tile.
    int row = tid / kRowCopies / G;
    int h = tid / kRowCopies % G;
    for (int i = tid / kRowCopies; i < kTileQ; i += kRowsPerPass) {
      const bool fill = i < nq && d4 < D;
      const std::size_t qh = static_cast<std::size_t>(r0 + row) * g.heads + kvh * G + h;
      CopyAsync16(q_raw + i * (kDp + 4) + d4, g.q + (fill ? qh * D + d4 : 0), fill);
      for (h += kRowsPerPass; h >= G; h -= G) ++row;
    }
    CopyAsyncCommit();
  }

  // The keys of step k0 that some query of the tile sees (a key no query sees is neither read
  // nor used: its block may be absent), into s_key[slot]. Called by warp 0.
  const auto find_keys = [&](int k0, int slot) {
    const int p = k0 + tid;
    bool seen = false;
    if (p <= k_hi) {
      for (int i = (nr - 1) * G; i >= 0 && !seen; i -= G) seen = s_lo[i] <= p && p <= s_pos[i];
    }
    long long at = -1;
    if (seen) {
      at = kSource == Source::kPlanes ? PlaneOffset(g, p, kvh)
                                      : KeyOffset(g, table, p) + static_cast<std::int64_t>(kvh) * D;
    }
    s_key[slot][tid] = at;
  };
  // Starts the copy of the step whose keys are in s_key[slot]: for kConvert, the f32 keys and
  // values into `raw`; else the planes into buffer `buf`. Zeros for keys not seen and dims past
  // D. A thread copies the same 16 bytes of every row it copies (rows: a key's plane or row).
  const auto fetch = [&](int slot, int buf) {
    constexpr int kElement = kSource == Source::kConvert ? 4 : 2;  // bytes
    constexpr int kRowCopies = kDp * kElement / 16;
    constexpr int kRowsPerPass = kTileThreads / kRowCopies;
    constexpr int kCopied = kConvert ? 2 : S::kPlanes;  // rows per key
    static_assert(kTileThreads % kRowCopies == 0 && kTileK % kRowsPerPass == 0);
    const int d = tid % kRowCopies * (16 / kElement);
    const bool in_head = d < D;
    // Plane j of a key: at j * plane_stride from its offset (k hi, v hi, k lo, v lo).
    const std::int64_t plane_stride = kSource == Source::kPlanes ? D : g.block_elements / 2;
    constexpr int kKeys = kTileK / kRowsPerPass;  // keys this thread copies
    long long key[kKeys];
#pragma unroll
    for (int k = 0; k < kKeys; ++k) key[k] = s_key[slot][tid / kRowCopies + k * kRowsPerPass];
#pragma unroll
    for (int j = 0; j < kCopied * kKeys; ++j) {
      const int plane = j / kKeys;
      const int n = tid / kRowCopies + j % kKeys * kRowsPerPass;
      const bool fill = key[j % kKeys] >= 0 && in_head;
      const std::int64_t at = fill ? key[j % kKeys] + plane * plane_stride + d : 0;
      if constexpr (!kConvert) {
        const Bf16* from =
            kSource == Source::kPlanes ? g.planes : static_cast<const Bf16*>(g.memory);
        CopyAsync16(planes + (buf * S::kPlanes + plane) * S::kKV + n * S::kStride + d, from + at,
                    fill);
      } else {
        CopyAsync16(raw + (plane * kTileK + n) * S::kRawStride + d,
                    static_cast<const float*>(g.memory) + at, fill);
      }
    }
    CopyAsyncCommit();
  };
  // kConvert: splits the copied keys and values into the planes of buffer 0.
  const auto convert = [&]() {
    constexpr int kRowSplits = kDp / 8;  // SplitRow8 calls per row
    constexpr int kRowsPerPass = kTileThreads / kRowSplits;
    static_assert(kTileThreads % kRowSplits == 0 && kTileK % kRowsPerPass == 0);
    const int d = tid % kRowSplits * 8;
#pragma unroll
    for (int j = 0; j < 2 * kTileK / kRowsPerPass; ++j) {
      const int half = j / (kTileK / kRowsPerPass);  // 0: keys, 1: values
      const int n = tid / kRowSplits + j % (kTileK / kRowsPerPass) * kRowsPerPass;
      SplitRow8(raw + (half * kTileK + n) * S::kRawStride + d,
                planes + half * S::kKV + n * S::kStride + d,
                planes + (2 + half) * S::kKV + n * S::kStride + d);
    }
  };

  // Fragment coordinates: this thread's rows qa, qb = qa + 8 of the warp's queries, its column
  // pair 2 * tq (+ 8), and the row this lane addresses in an ldmatrix.
  const int lane = tid % 32;
  const int gq = lane / 4;
  const int tq = lane % 4;
  const int q0 = tid / 32 % 4 * 16;  // the warp's first query
  const int qa = q0 + gq;
  const int qb = qa + 8;
  const int kw = tid / 32 / 4 * 16;                  // the warp's first key of a step
  const int lm_row = lane % 8 + (lane / 8 % 2) * 8;  // A (queries) and V: matrices 0, 1 stacked
  const int lm_col = lane / 16 * 8;
  const int lk_row = lane % 8 + lane / 16 * 8;  // K: matrices 0, 2 stacked
  const int lk_col = lane / 8 % 2 * 8;

  if (tid < kTileK) {
    find_keys(k_lo, 0);
    if (!kConvert && k_lo + kTileK <= k_hi) find_keys(k_lo + kTileK, 1);
  }
  CopyAsyncWait();
  __syncthreads();
  for (int idx = tid; idx < kTileQ * kDp / 8; idx += kTileThreads) {
    const int i = idx / (kDp / 8);
    const int d = idx % (kDp / 8) * 8;
    SplitRow8(q_raw + i * (kDp + 4) + d, qs_hi + i * S::kStride + d, qs_lo + i * S::kStride + d);
  }
  __syncthreads();
  fetch(0, 0);
  // Whether every key a step gives this warp is visible to each of its queries (then the scores
  // need no mask): the keys k0 + kw .. + 15 lie within [max lo, min pos] of its queries.
  int all_lo = max(s_lo[qa], s_lo[qb]);
  int all_pos = min(s_pos[qa], s_pos[qb]);
  for (int o = 4; o < 32; o *= 2) {
    all_lo = max(all_lo, __shfl_xor_sync(kFullMask, all_lo, o));
    all_pos = min(all_pos, __shfl_xor_sync(kFullMask, all_pos, o));
  }

  float o[kDp / 8][4];  // output dims nt * 8 + 2 * tq (+ 1) of rows qa ([0], [1]), qb ([2], [3])
#pragma unroll
  for (int nt = 0; nt < kDp / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.0f, 0.0f};  // this thread's share of the row sums

  int slot = 0;
  int buf = 0;
  for (int k0 = k_lo; k0 <= k_hi; k0 += kTileK, slot = slot == 2 ? 0 : slot + 1) {
    CopyAsyncWait();
    __syncthreads();  // the step's copies have landed; the previous step is done
    const int next = slot == 2 ? 0 : slot + 1;
    if constexpr (kConvert) {
      if (tid < kTileK && k0 + kTileK <= k_hi) find_keys(k0 + kTileK, next);
      convert();
      __syncthreads();  // planes written, raw buffers free, the next step's keys found
      if (k0 + kTileK <= k_hi) fetch(next, 0);
    } else {
      // The next step's planes go to the other buffer (the previous step's, done); its keys were
      // found a step ago. The keys of the step after go to the previous step's slot.
      if (k0 + kTileK <= k_hi) fetch(next, buf ^ 1);
      if (tid < kTileK && k0 + 2 * kTileK <= k_hi)
        find_keys(k0 + 2 * kTileK, next == 2 ? 0 : next + 1);
    }
    const Bf16* ks_hi = planes + buf * S::kPlanes * S::kKV;
    const Bf16* vs_hi = ks_hi + S::kKV;
    const Bf16* ks_lo = vs_hi + S::kKV;
    const Bf16* vs_lo = ks_lo + S::kKV;
    if constexpr (!kConvert) buf ^= 1;

    // Scores of rows qa, qb against the warp's 16 keys: n-tile nt holds keys kw + nt * 8 +
    // 2 * tq (+ 1); the three products accumulate apart (independent chains).
    float s[2][4], s_lh[2][4], s_hl[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) s[nt][j] = s_lh[nt][j] = s_hl[nt][j] = 0.0f;
    }
#pragma unroll 4
    for (int kk = 0; kk < kDp; kk += 16) {
      std::uint32_t a_hi[4], a_lo[4], b_hi[4], b_lo[4];
      LoadMatrices<false>(a_hi, qs_hi + (q0 + lm_row) * S::kStride + kk + lm_col);
      LoadMatrices<false>(a_lo, qs_lo + (q0 + lm_row) * S::kStride + kk + lm_col);
      LoadMatrices<false>(b_hi, ks_hi + (kw + lk_row) * S::kStride + kk + lk_col);
      Mma(s[0], a_hi, b_hi[0], b_hi[1]);
      Mma(s[1], a_hi, b_hi[2], b_hi[3]);
      Mma(s_lh[0], a_lo, b_hi[0], b_hi[1]);
      Mma(s_lh[1], a_lo, b_hi[2], b_hi[3]);
      if constexpr (kKVLo) {
        LoadMatrices<false>(b_lo, ks_lo + (kw + lk_row) * S::kStride + kk + lk_col);
        Mma(s_hl[0], a_hi, b_lo[0], b_lo[1]);
        Mma(s_hl[1], a_hi, b_lo[2], b_lo[3]);
      }
    }

    // Online softmax of rows qa (r = 0) and qb (r = 1); a row's 4 threads are lanes of a quad.
    float mx[2] = {-INFINITY, -INFINITY};
    const bool all_visible = all_lo <= k0 + kw && k0 + kw + 15 <= all_pos;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int n = kw + nt * 8 + 2 * tq + (j & 1);
        const int q = j < 2 ? qa : qb;
        const int p = k0 + n;
        const bool visible = all_visible || (s_key[slot][n] >= 0 && s_lo[q] <= p && p <= s_pos[q]);
        const float dot = s[nt][j] + s_lh[nt][j] + s_hl[nt][j];
        s[nt][j] = visible ? Score(dot, g.scale, g.softcap) : -INFINITY;
        mx[j >> 1] = fmaxf(mx[j >> 1], s[nt][j]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      float corr = 1.0f;
      float rs = 0.0f;
      if (m_new != -INFINITY) {
        corr = expf(m[r] - m_new);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
          for (int j = 2 * r; j < 2 * r + 2; ++j) {
            s[nt][j] = expf(s[nt][j] - m_new);
            rs += s[nt][j];
          }
        }
      } else {
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) s[nt][2 * r] = s[nt][2 * r + 1] = 0.0f;
      }
      l[r] = l[r] * corr + rs;
      m[r] = m_new;
      if (__any_sync(kFullMask, corr != 1.0f)) {  // some row's maximum moved
#pragma unroll
        for (int nt = 0; nt < kDp / 8; ++nt) {
          o[nt][2 * r] *= corr;
          o[nt][2 * r + 1] *= corr;
        }
      }
    }

    // Outputs: the probabilities of the warp's 16 keys are the A fragment of its two score
    // n-tiles (f: (qa, qb) x (keys, keys + 8)); the values' fragments come 16 dims at a time.
    std::uint32_t a_hi[4], a_lo[4];
#pragma unroll
    for (int f = 0; f < 4; ++f) {
      const float* pr = &s[f / 2][(f % 2) * 2];
      SplitBF16(pr[0], pr[1], a_hi[f], a_lo[f]);
    }
#pragma unroll
    for (int nt = 0; nt < kDp / 8; nt += 2) {
      std::uint32_t b_hi[4], b_lo[4];
      const int at = (kw + lm_row) * S::kStride + nt * 8 + lm_col;
      LoadMatrices<true>(b_hi, vs_hi + at);
      Mma(o[nt], a_hi, b_hi[0], b_hi[1]);
      Mma(o[nt + 1], a_hi, b_hi[2], b_hi[3]);
      Mma(o[nt], a_lo, b_hi[0], b_hi[1]);
      Mma(o[nt + 1], a_lo, b_hi[2], b_hi[3]);
      if constexpr (kKVLo) {
        LoadMatrices<true>(b_lo, vs_lo + at);
        Mma(o[nt], a_hi, b_lo[0], b_lo[1]);
        Mma(o[nt + 1], a_hi, b_lo[2], b_lo[3]);
      }
    }
  }

  // Row sums over the quad; then the second warp of each query group hands its state (m, l, o)
  // to the first through shared memory (the query planes are free now), which merges them.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
  }
  static_assert((kTileQ * (kDp + 4) + 2 * kTileQ) * sizeof(float) <= S::kBytes);
  float* merge_o = reinterpret_cast<float*>(smem);  // [kTileQ][kDp + 4]
  float* merge_ml = merge_o + kTileQ * (kDp + 4);   // [kTileQ][2]
  __syncthreads();                                  // every warp is done with the planes
  if (kw != 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int q = r == 0 ? qa : qb;
#pragma unroll
      for (int nt = 0; nt < kDp / 8; ++nt) {
        *reinterpret_cast<float2*>(merge_o + q * (kDp + 4) + nt * 8 + 2 * tq) =
            make_float2(o[nt][2 * r], o[nt][2 * r + 1]);
      }
      if (tq == 0) {
        merge_ml[2 * q] = m[r];
        merge_ml[2 * q + 1] = l[r];
      }
    }
  }
  __syncthreads();

  // The first warp of each query group merges. One slice: the output, into merge_o in place of
  // the second warp's (each thread its own pairs). Several: this slice's partial result (a query
  // that saw none of the slice's keys leaves m = -inf, l = 0, o = 0, which the combine weighs by
  // zero).
  if (kw == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int qi = r == 0 ? qa : qb;
      const float m2 = merge_ml[2 * qi];
      const float mm = fmaxf(m[r], m2);
      const float f1 = mm == -INFINITY ? 0.0f : expf(m[r] - mm);
      const float f2 = mm == -INFINITY ? 0.0f : expf(m2 - mm);
      const float ll = l[r] * f1 + merge_ml[2 * qi + 1] * f2;
      if (qi >= nq) continue;
      const std::size_t qh = static_cast<std::size_t>(r0 + qi / G) * g.heads + kvh * G + qi % G;
      float* part = slices > 1 ? Partial(g, qh, slice) : nullptr;
      const float f = slices > 1 ? 1.0f : 1.0f / ll;
      if (part != nullptr && tq == 0) {
        part[D] = mm;
        part[D + 1] = ll;
      }
#pragma unroll
      for (int nt = 0; nt < kDp / 8; ++nt) {
        const int d = nt * 8 + 2 * tq;
        if (d >= D) continue;
        auto* at = reinterpret_cast<float2*>(merge_o + qi * (kDp + 4) + d);
        const float2 o2 = *at;
        const float2 y = make_float2((o[nt][2 * r] * f1 + o2.x * f2) * f,
                                     (o[nt][2 * r + 1] * f1 + o2.y * f2) * f);
        if (part != nullptr) {
          *reinterpret_cast<float2*>(part + d) = y;
        } else {
          *at = y;
        }
      }
    }
  }
  if (slices > 1) return;  // uniform over the CTA
  __syncthreads();
  // The tile's outputs (and their terms), 16 bytes a thread by the whole CTA.
  for (int idx = tid; idx < nq * (kDp / 4); idx += kTileThreads) {
    const int i = idx / (kDp / 4);
    const int d = idx % (kDp / 4) * 4;
    if (d >= D) continue;
    const std::size_t qh = static_cast<std::size_t>(r0 + i / G) * g.heads + kvh * G + i % G;
    StoreOut(g, qh * D + d, *reinterpret_cast<const float4*>(merge_o + i * (kDp + 4) + d));
  }
}

// Splits the f32 keys and values of a one-sequence pass that its tiles see, positions
// [VisibleFrom(lowest row position), highest row position], into g.planes: position p of kv head
// h at (p * kv_heads + h) * 4 * head_dim, as k hi, v hi, k lo, v lo of head_dim each. With
// g.rows_split, the positions of the rows are there already: when they are consecutive (as a
// prompt's are), only those before them are split. Grid (kSplitKeys-position chunks of
// [0, max_pos], kv heads).
__global__ void __launch_bounds__(kSplitKeysThreads) SplitKeysKernel(Geometry g) {
  __shared__ int s_range[3];  // lowest visible position, highest row position, lowest row position
  const int tid = threadIdx.x;
  if (tid == 0) {
    s_range[0] = s_range[2] = INT_MAX;
    s_range[1] = -1;
  }
  __syncthreads();
  int lo = INT_MAX;
  int hi = -1;
  int first_row = INT_MAX;
  for (int r = tid; r < g.rows; r += blockDim.x) {
    const int pos = g.row_pos[r];
    lo = min(lo, VisibleFrom(pos, g.window));
    hi = max(hi, pos);
    first_row = min(first_row, pos);
  }
  atomicMin(&s_range[0], lo);
  atomicMax(&s_range[1], hi);
  atomicMin(&s_range[2], first_row);
  __syncthreads();
  const bool rows_done = g.rows_split && s_range[1] - s_range[2] + 1 == g.rows;
  const int end = rows_done ? s_range[2] - 1 : s_range[1];
  const int first = max(s_range[0], static_cast<int>(blockIdx.x) * kSplitKeys);
  const int last = min(end, static_cast<int>(blockIdx.x + 1) * kSplitKeys - 1);
  const int kvh = blockIdx.y;
  const int D = g.head_dim;
  const std::int32_t* table = g.tables + g.seq_table[g.row_seq[0]];
  // A warp per position: its key's 8-float pieces, then its value's.
  const int lane = tid % 32;
  for (int p = first + tid / 32; p <= last; p += kSplitKeysThreads / 32) {
    if (table[BlockIndex(g, p)] < 0) continue;  // a position no tile reads
    const float* src = static_cast<const float*>(g.memory) + KeyOffset(g, table, p) +
                       static_cast<std::int64_t>(kvh) * D;
    Bf16* dst = g.planes + PlaneOffset(g, p, kvh);
    for (int c = lane * 8; c < 2 * D; c += 32 * 8) {
      const int half = c < D ? 0 : 1;  // 0: key, 1: value
      const int d = c - half * D;
      SplitRow8(src + half * (g.block_elements / 2) + d, dst + half * D + d,
                dst + (2 + half) * D + d);
    }
  }
}

template <Source kSource>
bool EnableTiles(int dc, int optin) {
  const auto enable = [optin](auto kernel, std::size_t bytes) {
    return static_cast<std::size_t>(optin) >= bytes + 1024 &&
           cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(bytes)) == cudaSuccess;
  };
  switch (dc) {
    case 2:
      return enable(TileKernel<2, kSource>, TileSmem<2, kSource>::kBytes);
    case 4:
      return enable(TileKernel<4, kSource>, TileSmem<4, kSource>::kBytes);
    case 8:
      return enable(TileKernel<8, kSource>, TileSmem<8, kSource>::kBytes);
    default:
      return false;
  }
}

template <Source kSource>
bool LaunchTiles(int dc, dim3 grid, Stream stream, const Geometry& g) {
  switch (dc) {
    case 2:
      TileKernel<2, kSource><<<grid, kTileThreads, TileSmem<2, kSource>::kBytes, stream>>>(g);
      return true;
    case 4:
      TileKernel<4, kSource><<<grid, kTileThreads, TileSmem<4, kSource>::kBytes, stream>>>(g);
      return true;
    case 8:
      TileKernel<8, kSource><<<grid, kTileThreads, TileSmem<8, kSource>::kBytes, stream>>>(g);
      return true;
    default:
      return false;
  }
}

}  // namespace

bool EnableTileKernel(int dc, int optin) {
  return EnableTiles<Source::kConvert>(dc, optin) && EnableTiles<Source::kPlanes>(dc, optin) &&
         EnableTiles<Source::kBF16>(dc, optin);
}

bool LaunchTileKernel(int dc, int tiles, int tile_splits, Stream stream, const Geometry& g) {
  if (dc != 2 && dc != 4 && dc != 8) return false;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(g.kv_heads),
                  static_cast<unsigned>(tile_splits));
  if (g.bf16) return LaunchTiles<Source::kBF16>(dc, grid, stream, g);
  if (g.planes == nullptr) return LaunchTiles<Source::kConvert>(dc, grid, stream, g);
  return LaunchTiles<Source::kPlanes>(dc, grid, stream, g);
}

void LaunchSplitKeys(int positions, Stream stream, const Geometry& g) {
  const dim3 grid(static_cast<unsigned>((positions + kSplitKeys - 1) / kSplitKeys),
                  static_cast<unsigned>(g.kv_heads));
  SplitKeysKernel<<<grid, kSplitKeysThreads, 0, stream>>>(g);
}

}  // namespace fgnet::cuda::attention_internal
