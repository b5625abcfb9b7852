// CUDA kernels of the attention block over paged KV (see attention.h).
//
// PagedAttention has two regimes, chosen per group of rows on the device (the host does not see
// the rows' sequences):
//   * tiles: a pass's rows are cut into tiles of kTileQ / group consecutive rows. A tile whose
//     rows all belong to one sequence (a prefill chunk) is done by one CTA per kv head, which
//     holds the tile's queries (all query heads of the kv head) in shared memory and walks the
//     union of their visible keys in steps of kTileK keys, each key and value tile loaded once
//     into shared memory and used by every query of the tile (a flash-attention loop whose
//     products run on tensor cores, f32 operands split into two bf16 terms: attention_tiles.cu;
//     the f32 keys of a one-sequence pass with several tiles are split once beforehand, into the
//     workspace); long key ranges are cut into slices done by separate CTAs, so that the GPU is
//     filled and the tiles late in a long prompt do not set the pace;
//   * splits: every other row (decode rows, tiles of mixed sequences) is done flash-decoding
//     style by CTAs of (row, kv head, slice of the visible keys), each computing all the query
//     heads of its kv head so that a key or value row is read once (up to 4; in passes of few
//     rows, fewer heads a CTA and more CTAs, which shortens each warp's chain of work); each warp
//     keeps an online softmax over its keys, and the CTA merges its warps.
// A row (or tile) whose keys took several slices leaves each slice's (max, sum, unnormalised
// output) in the workspace, and a combine kernel merges them; one slice writes the output. On
// sm_90, a pass without tiles whose rows' keys fit 16 slices without longer chains of loads (a row
// alone up to 512 keys, on CTAs of 8 warps; more keys with more rows) has each row's split CTAs
// launched as one thread-block cluster, which merges the slices through its shared memory instead
// (each CTA pushing its results to the CTAs that own their outputs, one cluster barrier).
// The number of slices comes from the rows, the longest visible range and the SM count, so that
// a pass of few rows still fills the GPU.
// The host side queries the device once (CurrentDevice) and makes no synchronising call, so that
// calls can be captured in CUDA graphs. On sm_90+ the split and combine kernels are launched as
// programmatic dependents (kernel_support.cuh). The combine kernels are in attention_combine.cu;
// QKNormRope, QKNormRopeWriteKV and WriteKV in kv_write.cu.

#include <cooperative_groups.h>
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
#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/device.h"
#include "backend/cuda/kernel_support.cuh"

namespace fgnet::cuda {
namespace {

using attention_internal::CheckPagedLayer;
using attention_internal::EnableTileKernel;
using attention_internal::Geometry;
using attention_internal::KeyOffset;
using attention_internal::kMinTileChunk;
using attention_internal::kTileK;
using attention_internal::kTileQ;
using attention_internal::kTileWaves;
using attention_internal::LaneDims;
using attention_internal::LaunchCombine;
using attention_internal::LaunchSplitKeys;
using attention_internal::LaunchTileKernel;
using attention_internal::LoadLane;
using attention_internal::Partial;
using attention_internal::RowInTile;
using attention_internal::Score;
using attention_internal::Slices;
using attention_internal::VisibleFrom;
using internal::AllowDependents;
using internal::ClusterArriveRelaxed;
using internal::ClusterWait;
using internal::DependentLaunchSupported;
using internal::kFullMask;
using internal::Launch;
using internal::LaunchInClusters;
using internal::WaitPrior;

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
// A pass of at most one tile of rows per sequence and fewer (rows x keys of the longest visible
// range) than this leaves every row to the split regime: a tile CTA's chain of dependent loads
// (rows, block table, queries, keys) costs about 25 us on an H200 whatever its work, so that such
// a pass (a prompt's 16-row remainder after a cached prefix, on a sliding layer: 16 x 527 keys)
// is done sooner by the splits (14 us).
constexpr std::int64_t kMinTileWork = 16 * 1024;
// Most workspace floats for the split keys of a one-sequence pass (beyond: each tile CTA splits
// its own): 256 MiB, 128k positions of one 256-dim kv head.
constexpr std::size_t kMaxPlaneFloats = std::size_t{64} << 20;

// Warps of a split CTA that merges in a cluster: 8 where a pass has few rows (a step of 32 keys, so
// that a 512-key window takes one step of 16 CTAs), else kSplitWarps.
constexpr int kWideClusterWarps = 8;

// Requests the key and value rows of positions a..b (head at head_offset) into L2, the CTA's
// threads taking their 128-byte lines in turn.
template <typename T>
__device__ __forceinline__ void PrefetchKeysToL2(const Geometry& g, const std::int32_t* table,
                                                 int a, int b, std::int64_t head_offset) {
  constexpr int kLine = 128 / static_cast<int>(sizeof(T));
  const int lines = (g.head_dim + kLine - 1) / kLine;  // of a key (or value) row
  const T* memory = static_cast<const T*>(g.memory);
  for (int i = static_cast<int>(threadIdx.x); i < (b - a + 1) * 2 * lines;
       i += static_cast<int>(blockDim.x)) {
    const int key = i / (2 * lines);
    const int rest = i - key * 2 * lines;
    const bool value = rest >= lines;
    const T* line = memory + KeyOffset(g, table, a + key) + head_offset +
                    (value ? g.block_elements / 2 : 0) + (value ? rest - lines : rest) * kLine;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(line));
  }
}

// Most slices a row's keys take when its CTAs merge them in a cluster (ClusterMergeOwned): the
// non-portable cluster size of sm_90 (8 or 4 where a device cannot hold it, MaxCluster).
constexpr int kMaxClusterSlices = 16;

// The merge of a row's slices by the CTAs that computed them, one cluster (sm_90+), by pushing
// rather than pulling: the cluster's CTAs own consecutive shares of the row's kG x head_dim
// outputs, each CTA stores its unnormalised outputs into their owners' shared memory and its heads'
// (max, sum) into every CTA's, and after one cluster barrier each owner merges its share from its
// own shared memory. No remote loads, one barrier, no workspace and no merge kernel.
template <int kG, int kDp>
struct ClusterSlots {
  float ml[kMaxClusterSlices][kG][2];  // slice r's max and sum of head h
  // Slice r's values of the owned outputs, at r * share; a share is at most ceil(kG D / n) and
  // a cluster of n CTAs has at most n slices.
  float acc[kG * kDp + kMaxClusterSlices];
};

// A split CTA's place in its row's cluster.
struct ClusterPlace {
  int rank;   // of the CTA in its cluster (its slice)
  int n;      // CTAs in the cluster
  int share;  // outputs each CTA owns
};

// Pushes this CTA's (at `place`) unnormalised output i of kG x D (head h, dimension d) into its
// owner's slot for the CTA's slice; the threads of a head's first n dimensions also push the head's
// (max, sum) to CTA d, so that every CTA gets them.
template <int kG, int kDp>
__device__ __forceinline__ void ClusterPush(ClusterSlots<kG, kDp>& slots, const ClusterPlace& place,
                                            int i, int h, int d, float o, float mx, float sum) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  const int owner = i / place.share;
  *cluster.map_shared_rank(&slots.acc[place.rank * place.share + i - owner * place.share], owner) =
      o;
  if (d < place.n) {
    float* ml = cluster.map_shared_rank(&slots.ml[place.rank][h][0], d);
    ml[0] = mx;
    ml[1] = sum;
  }
#endif
}

// After every CTA's pushes (one cluster barrier): the CTA's share of the row's outputs, merged over
// the first `slices` slices (the others saw no key) from its own shared memory.
template <int kG, int kDp>
__device__ void ClusterMergeOwned(const Geometry& g, int row, int head0, int slices,
                                  const ClusterPlace& place, const ClusterSlots<kG, kDp>& slots) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster().sync();  // every push has landed
  const int D = g.head_dim;
  const int begin = place.rank * place.share;
  const int end = min(kG * D, begin + place.share);
  for (int i = begin + static_cast<int>(threadIdx.x); i < end; i += static_cast<int>(blockDim.x)) {
    const int h = i / D;
    float mx = -INFINITY;
#pragma unroll
    for (int r = 0; r < kMaxClusterSlices; ++r) {
      if (r < slices) mx = fmaxf(mx, slots.ml[r][h][0]);
    }
    float sum = 0.0f;
    float o = 0.0f;
#pragma unroll
    for (int r = 0; r < kMaxClusterSlices; ++r) {
      if (r < slices) {
        const float w = expf(slots.ml[r][h][0] - mx);
        sum += w * slots.ml[r][h][1];
        o += w * slots.acc[r * place.share + i - begin];
      }
    }
    StoreOut(g, (static_cast<std::size_t>(row) * g.heads + head0 + h) * D + (i - h * D), o / sum);
  }
#endif
}

// The CTA's place in its cluster, whose CTAs share `outputs` outputs (one CTA, all of them,
// without clusters).
__device__ __forceinline__ ClusterPlace PlaceInCluster(int outputs) {
  ClusterPlace p{0, 1, outputs};
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
  p.rank = static_cast<int>(cluster.block_rank());
  p.n = static_cast<int>(cluster.num_blocks());
  p.share = (outputs + p.n - 1) / p.n;
#endif
  return p;
}

// kClusterWarps > 0: CTAs of that many warps, the row's slices one cluster of CTAs that merge them
// (ClusterMerge); 0: CTAs of kSplitWarps, a row of several slices leaving them in the workspace for
// the combine kernel.
template <int kDC, int kG, typename T, int kClusterWarps>
__global__ void __launch_bounds__(32 * (kClusterWarps > 0 ? kClusterWarps : kSplitWarps))
    SplitKernel(Geometry g) {
  using L = LaneDims<kDC>;
  constexpr int kDp = 32 * kDC;
  constexpr bool kCluster = kClusterWarps > 0;
  constexpr int kWarps = kCluster ? kClusterWarps : kSplitWarps;
  // Keys of a slice whose rows the CTA requests into L2 before it waits: every warp's first step.
  constexpr int kPrefetchKeys = kWarps * kSplitUnroll;
  __shared__ float s_ml[kWarps][kG][2];
  __shared__ float s_acc[kWarps][kG][kDp];

  // Before the previous kernel's results (q, and the keys and values of this pass's rows): the
  // pass's arrays (the host's, uploaded before the pass's first kernel), and the slice's first
  // keys and values requested into L2 (the point of coherence: a line written meanwhile is read
  // as written). Every CTA waits before it returns, so that the kernel never completes before the
  // previous one.
  const int row = blockIdx.x;
  const bool in_tile = RowInTile(g, row);
  const int subgroups = g.group / kG;
  const int kvh = blockIdx.y / subgroups;
  const int head0 = kvh * g.group + (blockIdx.y % subgroups) * kG;
  const int pos = g.row_pos[row];
  const int first = VisibleFrom(pos, g.window);
  const int a = first + static_cast<int>(blockIdx.z) * g.chunk;
  // False where the row's range has fewer slices (uniform over the CTA).
  const bool active = !in_tile && a <= pos;
  const bool one_slice = Slices(pos - first + 1, g.chunk) == 1;
  const int b = min(pos, a + g.chunk - 1);
  const std::int32_t* table = g.tables + g.seq_table[g.row_seq[row]];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int D = g.head_dim;
  const std::int64_t head_offset = static_cast<std::int64_t>(kvh) * D;
  const std::int64_t value_offset = g.block_elements / 2;
  const T* memory = static_cast<const T*>(g.memory);
  if (active) PrefetchKeysToL2<T>(g, table, a, min(b, a + kPrefetchKeys - 1), head_offset);
  // The first phase of the cluster's barrier: every CTA has started (before any push).
  if constexpr (kCluster) ClusterArriveRelaxed();
  WaitPrior();
  AllowDependents();
  // A CTA of a cluster without keys still takes its share of the merge.
  if (!active && (!kCluster || in_tile)) return;

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

  for (int k0 = a + warp * kSplitUnroll; k0 <= b; k0 += kWarps * kSplitUnroll) {
    float kr[kSplitUnroll][kDC];
    float vr[kSplitUnroll][kDC];
#pragma unroll
    for (int u = 0; u < kSplitUnroll; ++u) {
      if (k0 + u <= b) {
        const T* key = memory + KeyOffset(g, table, k0 + u) + head_offset;
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
  // The CTA's merged results: to its shared memory for the cluster's merge, to the output (one
  // slice), or to the workspace.
  __shared__ ClusterSlots<kCluster ? kG : 1, kCluster ? kDp : 1> s_slots;
  const ClusterPlace place = PlaceInCluster(kG * D);
  if constexpr (kCluster) ClusterWait();
  for (int idx = threadIdx.x; idx < kG * D && active; idx += blockDim.x) {
    const int h = idx / D;
    const int d = idx % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_ml[w][h][0]);
    float sum = 0.0f;
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = expf(s_ml[w][h][0] - mx);
      sum += f * s_ml[w][h][1];
      o += f * s_acc[w][h][d];
    }
    const std::size_t rh = static_cast<std::size_t>(row) * g.heads + head0 + h;
    if constexpr (kCluster) {
      ClusterPush(s_slots, place, idx, h, d, o, mx, sum);
    } else if (one_slice) {
      StoreOut(g, rh * D + d, o / sum);
    } else {
      float* part = Partial(g, rh, static_cast<int>(blockIdx.z));
      part[d] = o;
      if (d == 0) {
        part[D] = mx;
        part[D + 1] = sum;
      }
    }
  }
  if constexpr (kCluster) {
    ClusterMergeOwned<kG, kDp>(g, row, head0, Slices(pos - first + 1, g.chunk), place, s_slots);
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
  bool pdl = false;     // programmatic dependent launch (sm_90+)
  int max_cluster = 0;  // most CTAs of a cluster of split CTAs (0: no clusters; sm_90+)
  bool tiles[9] = {};   // TileKernel<kDC> has its shared memory (index kDC)
};

// Whether the split kernels that merge in clusters of CTAs of kWarps warps may take clusters of
// `size` CTAs on the current device: beyond the portable 8, once every instance allows it; and
// whether such clusters of the instance with the most registers and shared memory per warp (kDC
// 8, kG 4) fit the device at all (a GPC, or a MIG slice, holding too few SMs for them does not).
template <typename T, int kWarps, int kDC>
bool AllowLargeClusters() {
  const auto allow = [](auto kernel) {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) ==
           cudaSuccess;
  };
  return allow(SplitKernel<kDC, 1, T, kWarps>) && allow(SplitKernel<kDC, 2, T, kWarps>) &&
         allow(SplitKernel<kDC, 4, T, kWarps>);
}

template <typename T, int kWarps>
bool ClustersFit(int size) {
  if (size > 8 && !(AllowLargeClusters<T, kWarps, 1>() && AllowLargeClusters<T, kWarps, 2>() &&
                    AllowLargeClusters<T, kWarps, 4>() && AllowLargeClusters<T, kWarps, 8>())) {
    return false;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(1, 1, static_cast<unsigned>(size));
  config.blockDim = dim3(kWarps * 32);
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = 1;
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = static_cast<unsigned>(size);
  config.attrs = &attribute;
  config.numAttrs = 1;
  int clusters = 0;
  return cudaOccupancyMaxActiveClusters(&clusters, SplitKernel<8, 4, T, kWarps>, &config) ==
             cudaSuccess &&
         clusters > 0;
}

// The most slices a row may take in a cluster on the current device (0: no clusters).
int MaxCluster() {
  for (int size : {kMaxClusterSlices, 8, 4}) {
    if (ClustersFit<float, kSplitWarps>(size) && ClustersFit<float, kWideClusterWarps>(size) &&
        ClustersFit<__nv_bfloat16, kSplitWarps>(size) &&
        ClustersFit<__nv_bfloat16, kWideClusterWarps>(size)) {
      return size;
    }
  }
  return 0;
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
  if (info.pdl) info.max_cluster = MaxCluster();  // sm_90+
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) ==
      cudaSuccess) {
    for (int dc : {2, 4, 8}) info.tiles[dc] = EnableTileKernel(dc, optin);
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
  // > 0: the split CTAs (of this many warps) of a row are a cluster and merge its slices (no tiles)
  int cluster_warps = 0;
  // Floats of the workspace: the partial results [rows][heads][stride_splits][head_dim + 2] (none
  // for one slice per row), then from PlanesAt() the planes of a one-sequence pass with tiles
  // (split keys and values of positions 0 .. max_pos, for f32 keys; 0: none).
  std::size_t partials = 0;
  std::size_t planes = 0;
  std::size_t PlanesAt() const { return (partials + 3) / 4 * 4; }  // 16-byte aligned
};

std::int64_t CeilDiv(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Most (row, kv head) pairs of a pass whose split CTAs merging in clusters have kWideClusterWarps.
constexpr std::int64_t kWideClusterPairs = 8;
// Most key rows a pass's split CTAs read in all where a CTA takes fewer query heads than share a
// kv head (each subgroup reads the keys again). On an H200 (FunctionGemma-270M's 4 heads of one
// kv head, graph replay): a row of 256 / 512 keys 3.90 / 4.64 us with a head a CTA against
// 6.29 / 6.85 with 4; a row of a 4,096-key global context 9.40 against 11.04; but 4 rows of it
// 23.0 us with 2 heads a CTA against 17.5 with 4.
constexpr std::int64_t kMaxSubgroupKeys = 16 * 1024;

Plan MakePlan(const PassRows& pass, const AttentionShape& shape, const DeviceInfo& info) {
  const int sms = info.sms;
  Plan p;
  const int group = shape.heads / shape.kv_heads;
  const std::int64_t max_keys = shape.window > 0
                                    ? std::min<std::int64_t>(pass.max_pos + 1, shape.window)
                                    : std::int64_t{pass.max_pos} + 1;
  // Query heads per CTA: as many as share a kv head, up to 4 (a key row read once for them all),
  // except in passes of few rows, where fewer heads a CTA (more CTAs reading the same keys) cut
  // each warp's chain of dependent work: the smallest count that keeps the pass within
  // kWideClusterPairs (row, kv head, subgroup) triples and kMaxSubgroupKeys reads of key rows.
  p.kg = group % 4 == 0 ? 4 : group % 2 == 0 ? 2 : 1;
  for (int kg = 1; kg < p.kg; kg *= 2) {  // divisors of group, as p.kg is
    const std::int64_t triples = std::int64_t{pass.rows} * shape.kv_heads * (group / kg);
    if (triples <= kWideClusterPairs && triples * max_keys <= kMaxSubgroupKeys) {
      p.kg = kg;
      break;
    }
  }
  p.subgroups = group / p.kg;
  // Split regime: about kSplitWaves CTAs per SM, slices of at least kMinChunk keys.
  const std::int64_t ctas = std::int64_t{pass.rows} * shape.kv_heads * p.subgroups;
  std::int64_t splits = CeilDiv(kSplitWaves * std::int64_t{sms}, ctas);
  splits = std::max<std::int64_t>(
      std::min({splits, CeilDiv(max_keys, kMinChunk), std::int64_t{kMaxSplits}}), 1);
  p.chunk = static_cast<int>(CeilDiv(max_keys, splits));
  p.splits = static_cast<int>(CeilDiv(max_keys, p.chunk));
  // Tile regime: a tile of consecutive positions spans at most max_pos + 1 keys, or
  // window + tile_rows - 1 on a sliding layer; such ranges are cut into slices (multiples of
  // kTileK keys, at least kMinTileChunk) so that the CTAs fill kTileWaves per SM. Ranges that grow
  // with the position (causal) take slices up to a whole wave, which evens out the long and the
  // short ones; ranges the window bounds (about equal) take no more than fill a wave, as a slice
  // costs a CTA's fixed work and a merge. A tile with a longer range takes longer slices
  // (TileChunk). Small passes have no tiles (kMinTileWork).
  const bool small = pass.rows <= std::int64_t{kTileQ / group} * pass.num_seqs &&
                     std::int64_t{pass.rows} * max_keys < kMinTileWork;
  if (pass.rows > pass.num_seqs && group <= kTileQ && !small) {
    p.tile_rows = kTileQ / group;
    p.tiles = static_cast<int>(CeilDiv(pass.rows, p.tile_rows));
    std::int64_t range = std::int64_t{pass.max_pos} + 1;
    const bool windowed = shape.window > 0 && shape.window + p.tile_rows - 1 < range;
    if (windowed) range = shape.window + p.tile_rows - 1;
    const std::int64_t ctas = std::int64_t{p.tiles} * shape.kv_heads;
    std::int64_t ts = windowed ? kTileWaves * std::int64_t{sms} / ctas
                               : CeilDiv(kTileWaves * std::int64_t{sms}, ctas);
    ts = std::max<std::int64_t>(std::min(ts, CeilDiv(range, kMinTileChunk)), 1);
    p.tile_chunk = static_cast<int>(CeilDiv(CeilDiv(range, ts), kTileK) * kTileK);
    p.tile_splits = static_cast<int>(CeilDiv(range, p.tile_chunk));
  }
  // Without tiles, a row's slices merge in a cluster (no merge kernel, no partial results in
  // memory) where a warp takes no more steps than above: at most max_cluster slices, done by CTAs
  // of kWideClusterWarps in passes of few rows (so that a step takes more keys), else kSplitWarps.
  if (p.tile_rows == 0 && info.max_cluster > 1 && p.splits > 1) {
    const int warps = ctas <= kWideClusterPairs ? kWideClusterWarps : kSplitWarps;
    const std::int64_t step = std::int64_t{warps} * kSplitUnroll;
    const std::int64_t splits_c =
        std::min<std::int64_t>({info.max_cluster, CeilDiv(max_keys, step), std::int64_t{p.splits}});
    const std::int64_t chunk_c = CeilDiv(max_keys, splits_c);
    if (CeilDiv(chunk_c, step) <= CeilDiv(p.chunk, std::int64_t{kSplitWarps} * kSplitUnroll)) {
      p.chunk = static_cast<int>(chunk_c);
      p.splits = static_cast<int>(CeilDiv(max_keys, chunk_c));
      p.cluster_warps = warps;
    }
  }
  p.stride_splits = std::max(p.splits, p.tile_splits);
  if (p.stride_splits > 1 && p.cluster_warps == 0) {
    p.partials = static_cast<std::size_t>(pass.rows) * static_cast<std::size_t>(shape.heads) *
                 static_cast<std::size_t>(p.stride_splits) *
                 static_cast<std::size_t>(shape.head_dim + 2);
  }
  // The keys of one sequence with several tiles are split once for all of them rather than by
  // each tile's CTAs (a key is seen by up to window / tile_rows tiles): 4 bf16 per element, 2
  // floats. A 2048-token prefill (f32 keys) on an H200: 349k-352k tokens/s against 322k.
  const std::size_t planes = (static_cast<std::size_t>(pass.max_pos) + 1) *
                             static_cast<std::size_t>(shape.kv_heads) *
                             static_cast<std::size_t>(shape.head_dim) * 2;
  if (p.tiles > 1 && pass.num_seqs == 1 && planes <= kMaxPlaneFloats) p.planes = planes;
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

// The split kernel for kDC, kG and T; in clusters of the grid's slices, of CTAs of
// `cluster_warps`, where that is not 0.
template <int kDC, int kG, typename T>
void LaunchSplit(int cluster_warps, dim3 grid, Stream stream, bool pdl, const Geometry& g) {
  const dim3 cluster(1, 1, grid.z);
  switch (cluster_warps) {
    case kWideClusterWarps:
      LaunchInClusters(SplitKernel<kDC, kG, T, kWideClusterWarps>, grid, cluster,
                       kWideClusterWarps * 32, 0, stream, pdl, g);
      break;
    case kSplitWarps:
      LaunchInClusters(SplitKernel<kDC, kG, T, kSplitWarps>, grid, cluster, kSplitThreads, 0,
                       stream, pdl, g);
      break;
    default:
      Launch(SplitKernel<kDC, kG, T, 0>, grid, kSplitThreads, 0, stream, pdl, g);
      break;
  }
}

template <int kDC, typename T>
void LaunchSplit(int kg, int cluster, dim3 grid, Stream stream, bool pdl, const Geometry& g) {
  switch (kg) {
    case 4:
      LaunchSplit<kDC, 4, T>(cluster, grid, stream, pdl, g);
      break;
    case 2:
      LaunchSplit<kDC, 2, T>(cluster, grid, stream, pdl, g);
      break;
    default:
      LaunchSplit<kDC, 1, T>(cluster, grid, stream, pdl, g);
      break;
  }
}

template <typename T>
void LaunchSplit(int head_dim, int kg, int cluster, dim3 grid, Stream stream, bool pdl,
                 const Geometry& g) {
  switch ((head_dim + 31) / 32) {
    case 1:
      LaunchSplit<1, T>(kg, cluster, grid, stream, pdl, g);
      break;
    case 2:
      LaunchSplit<2, T>(kg, cluster, grid, stream, pdl, g);
      break;
    case 3:
    case 4:
      LaunchSplit<4, T>(kg, cluster, grid, stream, pdl, g);
      break;
    default:
      LaunchSplit<8, T>(kg, cluster, grid, stream, pdl, g);
      break;
  }
}

}  // namespace

// The tile kernel's kDC for a head_dim.
int TileDC(int head_dim) { return head_dim <= 64 ? 2 : head_dim <= 128 ? 4 : 8; }

// Where a pass planned as `plan` takes its f32 keys split (PagedAttentionPlanes), or null.
__nv_bfloat16* PlanesOf(const Plan& plan, const DeviceInfo& info, const PagedLayer& layer,
                        const AttentionShape& shape, float* workspace) {
  if (plan.planes == 0 || plan.tile_rows == 0 || layer.dtype != DType::kF32 ||
      workspace == nullptr || !info.tiles[TileDC(shape.head_dim)]) {
    return nullptr;
  }
  return reinterpret_cast<__nv_bfloat16*>(workspace + plan.PlanesAt());
}

std::size_t PagedAttentionWorkspace(const PassRows& pass, const AttentionShape& shape) {
  if (!CheckShape("", shape).ok() || pass.rows <= 0 || pass.max_pos < 0) return 0;
  const Plan p = MakePlan(pass, shape, CurrentDevice());
  return p.planes > 0 ? p.PlanesAt() + p.planes : p.partials;
}

std::uint16_t* PagedAttentionPlanes(const PassRows& pass, const PagedLayer& layer,
                                    const AttentionShape& shape, float* workspace) {
  if (!CheckShape("", shape).ok() || pass.rows <= 0 || pass.max_pos < 0) return nullptr;
  const DeviceInfo& info = CurrentDevice();
  return reinterpret_cast<std::uint16_t*>(
      PlanesOf(MakePlan(pass, shape, info), info, layer, shape, workspace));
}

Status PagedAttention(const float* q, const PassRows& pass, const PagedLayer& layer,
                      const AttentionShape& shape, float* out, float* workspace, Stream stream,
                      const AttentionExtras& extras) {
  FGNET_TRY(CheckShape("cuda::PagedAttention", shape));
  if (layer.row != std::int64_t{shape.kv_heads} * shape.head_dim) {
    return MakeError("cuda::PagedAttention: layer row ", layer.row, " is not kv_heads ",
                     shape.kv_heads, " * head_dim ", shape.head_dim);
  }
  FGNET_TRY(CheckPagedLayer("cuda::PagedAttention", layer));
  if (pass.rows <= 0) return Ok();
  if (pass.max_pos < 0) {
    return MakeError("cuda::PagedAttention: max_pos ", pass.max_pos, " is negative");
  }
  const DeviceInfo& info = CurrentDevice();
  const Plan plan = MakePlan(pass, shape, info);
  if (plan.partials > 0 && workspace == nullptr) {
    return MakeError("cuda::PagedAttention: a workspace of ", PagedAttentionWorkspace(pass, shape),
                     " floats is needed");
  }
  Geometry g{};
  g.q = q;
  g.out = out;
  g.out_terms = reinterpret_cast<__nv_bfloat16*>(extras.out_terms);
  g.workspace = workspace;
  g.row_seq = pass.row_seq;
  g.row_pos = pass.row_pos;
  g.seq_table = pass.seq_table;
  g.tables = pass.tables;
  g.memory = layer.memory;
  g.bf16 = layer.dtype == DType::kBF16;
  g.block_elements = layer.block_elements;
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
  g.planes = PlanesOf(plan, info, layer, shape, workspace);
  g.rows_split = extras.rows_split;

  if (plan.tile_rows > 0) {
    const int dc = TileDC(shape.head_dim);
    bool launched = false;
    if (info.tiles[dc]) {
      // Rows at every position 0 .. max_pos (a prompt from its first token) leave no key to split
      // when they are split already.
      const bool all_rows = extras.rows_split && pass.rows == pass.max_pos + 1;
      if (g.planes != nullptr && !all_rows) LaunchSplitKeys(pass.max_pos + 1, stream, g);
      launched = LaunchTileKernel(dc, plan.tiles, plan.tile_splits, stream, g);
    }
    if (!launched) g.tile_rows = 0;
    FGNET_TRY(CudaLastError("cuda::PagedAttention (tiles)"));
  }

  // The split kernel follows the tile kernel in stream order (a plain launch), or the stream's
  // previous kernel programmatically. A pass of one sequence with tiles has every row in a tile
  // (its tiles hold that sequence's rows only): no split kernel.
  if (g.tile_rows == 0 || pass.num_seqs > 1) {
    const bool split_pdl = info.pdl && g.tile_rows == 0;
    const dim3 grid(static_cast<unsigned>(pass.rows),
                    static_cast<unsigned>(shape.kv_heads * plan.subgroups),
                    static_cast<unsigned>(plan.splits));
    if (g.bf16) {
      LaunchSplit<__nv_bfloat16>(shape.head_dim, plan.kg, plan.cluster_warps, grid, stream,
                                 split_pdl, g);
    } else {
      LaunchSplit<float>(shape.head_dim, plan.kg, plan.cluster_warps, grid, stream, split_pdl, g);
    }
    FGNET_TRY(CudaLastError("cuda::PagedAttention (splits)"));
  }
  // Slices in the workspace (the clusters merge their own).
  if (plan.cluster_warps == 0 && plan.stride_splits > 1) {
    LaunchCombine(stream, info.pdl, g);
    FGNET_TRY(CudaLastError("cuda::PagedAttention (combine)"));
  }
  return Ok();
}

namespace attention_internal {

Status CheckPagedLayer(const char* what, const PagedLayer& layer) {
  if (layer.dtype != DType::kF32 && layer.dtype != DType::kBF16) {
    return MakeError(what, ": keys and values of type ", DTypeName(layer.dtype),
                     " are not supported (F32 or BF16)");
  }
  if (layer.block_size <= 0 || layer.block_size > (1 << 30) || layer.row <= 0 || layer.slot < 0 ||
      layer.block_elements < 2 * (layer.slot + 1) * layer.block_size * layer.row) {
    return MakeError(what, ": layer block_size ", layer.block_size, ", row ", layer.row, ", slot ",
                     layer.slot, " do not fit blocks of ", layer.block_elements, " elements");
  }
  return Ok();
}

}  // namespace attention_internal
}  // namespace fgnet::cuda
