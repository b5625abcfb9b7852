// The grouped LoRA shrink / expand kernels (LoraApply, LoraShrink, LoraShrinkOfResidual,
// LoraExpand in backend/cuda/matmul.h): the adapters' updates of a pass's rows, each row under the
// adapters of its groups, by launches of their own (the GEMV kernels add them in their epilogue
// instead where a product allows, LoraEpilogue).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <type_traits>

#include "backend/cuda/device.h"
#include "backend/cuda/gemv_common.cuh"
#include "backend/cuda/kernel_support.cuh"
#include "backend/cuda/matmul.h"
#include "backend/cuda/matmul_kernels.h"
#include "backend/cuda/residual_norm.cuh"

namespace fgnet::cuda {
namespace {

using internal::AllowDependents;
using internal::DependentLaunchSupported;
using internal::kMaxDim;
using internal::Launch;
using internal::Log2;
using internal::ReduceScatter;
using internal::WaitPrior;

// The groups' ranges of row_index must not overlap (entry i belongs to one group: its t[i] slot
// in the workspace is that group's). Groups that are not well formed (null matrices, rank outside
// [1, max_rank], a range outside [0, total_rows)) are skipped on the device: callers check them.

constexpr int kLoraRows = 8;      // rows of one group per shrink block (or one: below)
constexpr int kMaxLoraSites = 4;  // sites one LoraShrink / LoraExpand launch takes
constexpr int kShrinkWarps = 8;   // rank rows per shrink block (one per warp)
constexpr int kExpandThreads = 256;
constexpr int kExpandOuts = 2;  // outputs an expand thread takes
constexpr int kExpandBlockOuts = kExpandThreads * kExpandOuts;
constexpr int kExpandRows = 4;    // rows of one group per expand block
constexpr int kExpandChunk = 16;  // ranks of B an expand thread holds at a time

__device__ __forceinline__ bool ValidGroup(const LoraGroup& g, int max_rank, int total_rows) {
  return g.a != nullptr && g.b != nullptr && g.rank > 0 && g.rank <= max_rank && g.first >= 0 &&
         g.count > 0 && g.count <= total_rows - g.first;
}

// Block (row chunk, rank chunk, group): warp q of the chunk computes t[i, q] = A[q, :] . x[row]
// for the chunk's (up to kRows) rows of the group, lanes striding over `in`, into the slot of t
// (total_rows * max_rank floats each) of the group's run of groups_per_slot groups.
// Columns a shrink block takes at a time: its rows' x staged in shared memory (kRows rows of
// min(in, kShrinkSpan) floats, dynamic), each lane holding its float4s of the warp's A row in
// registers, so that a product of up to kShrinkSpan columns (FunctionGemma's 640, 1024 and 2048)
// takes one round trip to memory past the previous kernel.
// The kernel comes in instances by the float4s of A a lane holds (4, 8 or 16: spans of 512, 1,024
// and 2,048 columns, the least that holds the input), the rows of a block (8, or 1 where every
// group has one row: a decode pass's distinct adapters) and whether x is a residual input, so
// that each holds the registers it needs: one instance for all took 174 a thread, one block an
// SM, and a decode pass of 64 adapters' q/k/v shrink ran in three waves of blocks (10.8 us one
// by one on an H200, 5.6 now).
constexpr int kShrinkSpan = 2048;

__host__ __device__ constexpr int ShrinkVecs(std::size_t in) {
  return in <= 512 ? 4 : in <= 1024 ? 8 : kShrinkSpan / 128;
}

// Lane l's columns 4 (l + 32 u) .. + 3 of A's span at k0 (zeros past len).
template <int kVecs>
__device__ __forceinline__ void LoadASpan(const float* a, int k0, int len, int lane, bool a_vec,
                                          float4 (&av)[kVecs]) {
#pragma unroll
  for (int u = 0; u < kVecs; ++u) {
    const int k = 4 * (lane + 32 * u);
    if (k + 3 < len && a_vec) {
      av[u] = __ldg(reinterpret_cast<const float4*>(a + k0 + k));
    } else {
      av[u].x = k < len ? a[k0 + k] : 0.0f;
      av[u].y = k + 1 < len ? a[k0 + k + 1] : 0.0f;
      av[u].z = k + 2 < len ? a[k0 + k + 2] : 0.0f;
      av[u].w = k + 3 < len ? a[k0 + k + 3] : 0.0f;
    }
  }
}

// The blocks an SM holds at once that a shrink instance asks of the compiler (the registers of
// its A span, its rows' partial sums and, with a residual input, the norm's rows).
__host__ __device__ constexpr int ShrinkBlocksPerSM(int vecs, int rows, bool residual) {
  return !residual && rows == 1 && vecs <= 8 ? 3 : vecs <= 8 ? 2 : 1;
}

// The floats of a shrink block's shared memory: its rows of a span (a residual input's rows
// whole).
__host__ __device__ constexpr std::size_t ShrinkSpan(std::size_t in, bool residual) {
  return residual || in < kShrinkSpan ? in : std::size_t{kShrinkSpan};
}

// With a residual input (kResidual: res set, x null), the shrink's x is RMSNormAddToNorm of it
// (ResidualNormRow, the same bits): each block computes its rows whole into shared memory (in <=
// kMaxShrinkOfResidualIn), and the blocks of one more z (grid.z = groups + 1) write the normalised
// rows of all pass_rows rows to `normed` and the new residual rows to res.updated, a warp a row.
template <int kVecs, int kRows, bool kResidual>
__global__ void __launch_bounds__(kShrinkWarps * 32, ShrinkBlocksPerSM(kVecs, kRows, kResidual))
    LoraShrinkKernel(const float* __restrict__ x, std::size_t ldx, int in,
                     const LoraGroup* __restrict__ groups, int max_rank,
                     const std::int32_t* __restrict__ row_index, int total_rows,
                     int groups_per_slot, float* __restrict__ t, const ResidualInput res,
                     float* __restrict__ normed, int pass_rows) {
  extern __shared__ float4 xs[];  // [kRows][span / 4]
  __shared__ std::int32_t rows_of[kRows];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  if (kResidual && blockIdx.z == gridDim.z - 1) {
    // The residual input's rows, normalised, for the products that follow.
    WaitPrior();
    AllowDependents();
    const int r = static_cast<int>(blockIdx.x) * kShrinkWarps + warp;
    if (blockIdx.y != 0 || r >= pass_rows) return;
    const std::size_t off = static_cast<std::size_t>(r) * in;
    auto* y4 = reinterpret_cast<float4*>(normed + off);
    internal::ResidualNormRow(res.delta + off, res.residual + off, res.updated + off, res.post,
                              res.pre, res.eps, in, lane, [y4](int i) -> float4& { return y4[i]; });
    return;
  }
  // The groups, the rows' indices (the pass's arrays, uploaded before its first kernel) and the
  // first span of A come before the previous kernel's results (x). Every CTA waits before it
  // exits, so that this kernel never completes before its predecessor.
  const LoraGroup g = groups[blockIdx.z];
  const int b0 = static_cast<int>(blockIdx.x) * kRows;
  const bool run = ValidGroup(g, max_rank, total_rows) && b0 < g.count;
  const int nb = run ? min(kRows, g.count - b0) : 0;
  if (static_cast<int>(threadIdx.x) < nb) {
    rows_of[threadIdx.x] = row_index[g.first + b0 + static_cast<int>(threadIdx.x)];
  }
  const int q = static_cast<int>(blockIdx.y) * kShrinkWarps + warp;
  const bool active = run && q < g.rank;  // every warp stages x; the active ones multiply
  const float* a = active ? g.a + static_cast<std::size_t>(q) * in : nullptr;
  const bool a_vec = in % 4 == 0 && internal::Aligned16(g.a);
  const int span = static_cast<int>(ShrinkSpan(in, kResidual));
  float4 av[kVecs];
  if (active) LoadASpan(a, 0, span, lane, a_vec, av);
  WaitPrior();
  AllowDependents();
  if (!run) return;
  __syncthreads();  // rows_of
  t += static_cast<std::size_t>(blockIdx.z / groups_per_slot) * total_rows * max_rank;
  float acc[kRows];
#pragma unroll
  for (int b = 0; b < kRows; ++b) acc[b] = 0.0f;
  const int span4 = (span + 3) / 4;  // a staged row's float4s
  if constexpr (kResidual) {
    if (warp < nb) {
      const std::size_t off = static_cast<std::size_t>(rows_of[warp]) * in;
      float4* row = xs + warp * span4;
      internal::ResidualNormRow(res.delta + off, res.residual + off, nullptr, res.post, res.pre,
                                res.eps, in, lane, [row](int i) -> float4& { return row[i]; });
    }
    __syncthreads();
  }
  const bool x_vec = !kResidual && in % 4 == 0 && ldx % 4 == 0 && internal::Aligned16(x);
  for (int k0 = 0; k0 < in; k0 += span) {
    const int len = min(span, in - k0);
    if (!kResidual) {
      if (k0 > 0) __syncthreads();  // the previous span is used up
      // Every load of the span at once: one round trip.
      if (x_vec) {
#pragma unroll 4
        for (int e = static_cast<int>(threadIdx.x); e < nb * span4; e += kShrinkWarps * 32) {
          const int b = e / span4;
          const int c = e - b * span4;
          xs[e] = 4 * c < len ? __ldg(reinterpret_cast<const float4*>(
                                    x + static_cast<std::size_t>(rows_of[b]) * ldx + k0 + 4 * c))
                              : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
      } else {
        float* xsf = reinterpret_cast<float*>(xs);
#pragma unroll 4
        for (int e = static_cast<int>(threadIdx.x); e < nb * 4 * span4; e += kShrinkWarps * 32) {
          const int b = e / (4 * span4);
          const int k = e - b * 4 * span4;
          xsf[e] = k < len ? x[static_cast<std::size_t>(rows_of[b]) * ldx + k0 + k] : 0.0f;
        }
      }
      __syncthreads();
    }
    if (!active) continue;
    // Lane l takes columns 4 (l + 32 u) .. + 3 of the span.
    if (k0 > 0) LoadASpan(a, k0, len, lane, a_vec, av);
#pragma unroll
    for (int u = 0; u < kVecs; ++u) {
      const int c = lane + 32 * u;
      if (4 * c >= len) break;
#pragma unroll
      for (int b = 0; b < kRows; ++b) {
        if (b < nb) {  // columns past len hold zeros on both sides
          const float4 xv = xs[b * span4 + c];
          acc[b] = fmaf(av[u].x, xv.x, acc[b]);
          acc[b] = fmaf(av[u].y, xv.y, acc[b]);
          acc[b] = fmaf(av[u].z, xv.z, acc[b]);
          acc[b] = fmaf(av[u].w, xv.w, acc[b]);
        }
      }
    }
  }
  if (!active) return;
  const float v = ReduceScatter<kRows>(acc, lane);
  constexpr int kShift = 5 - Log2(kRows);
  const int b = lane >> kShift;
  if ((lane & ((1 << kShift) - 1)) == 0 && b < nb) {
    t[static_cast<std::size_t>(g.first + b0 + b) * max_rank + q] = v;
  }
}

// The outputs of the expands of several sites in one launch (run s of groups_per_slot groups
// updates site s's y, reading slot s of t).
struct ExpandSites {
  float* y[kMaxLoraSites];
  std::size_t ldy[kMaxLoraSites];
  int out[kMaxLoraSites];
};

// v[i] for a run-time i, without indexing the kernel's parameter (which would copy it to local
// memory).
template <typename T>
__device__ __forceinline__ T Pick(const T (&v)[kMaxLoraSites], int i) {
  T r = v[0];
#pragma unroll
  for (int k = 1; k < kMaxLoraSites; ++k) r = i == k ? v[k] : r;
  return r;
}

// B[o, q0 .. q0 + 15] (zeros past the rank), as 16-byte loads where B's rows allow.
__device__ __forceinline__ void LoadBChunk(const float* brow, int q0, int rank, bool vec,
                                           float (&bq)[kExpandChunk]) {
  if (vec && q0 + kExpandChunk <= rank) {
#pragma unroll
    for (int u = 0; u < kExpandChunk / 4; ++u) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(brow + q0) + u);
      bq[4 * u] = v.x;
      bq[4 * u + 1] = v.y;
      bq[4 * u + 2] = v.z;
      bq[4 * u + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < kExpandChunk; ++k) bq[k] = q0 + k < rank ? __ldg(brow + q0 + k) : 0.0f;
  }
}

// Block (output chunk, row chunk, group): thread j of the block computes B[o, :] . t[i] for its
// kExpandOuts outputs o = chunk * kExpandBlockOuts + j + kExpandThreads u and the chunk's (up to
// kExpandRows) rows, its ranks in order as the GEMV epilogue does (the same bits), and adds
// row_scale[i] times it to y[row, o], atomically since a row may be in several groups (whose
// updates then add up in no fixed order: the last bits of such a row may differ between runs; a
// row in one group gets one add and is reproducible). The block requests its first kExpandChunk
// ranks of its rows of B, and its rows' indices and scales, before waiting for the previous kernel
// (the shrink that writes t); t is staged in shared memory after.
__global__ void __launch_bounds__(kExpandThreads)
    LoraExpandKernel(const ExpandSites sites, const LoraGroup* __restrict__ groups, int max_rank,
                     const std::int32_t* __restrict__ row_index,
                     const float* __restrict__ row_scale, int total_rows, int groups_per_slot,
                     const float* __restrict__ t) {
  extern __shared__ float ts[];  // [kExpandRows, max_rank]
  __shared__ std::int32_t rows_of[kExpandRows];
  __shared__ float scale_of[kExpandRows];
  const LoraGroup g = groups[blockIdx.z];
  const int site = static_cast<int>(blockIdx.z) / groups_per_slot;
  const int out = Pick(sites.out, site);
  const int first_out = static_cast<int>(blockIdx.x) * kExpandBlockOuts;
  const int o0 = first_out + static_cast<int>(threadIdx.x);
  const int b0 = static_cast<int>(blockIdx.y) * kExpandRows;
  // Every CTA waits before it exits, so that this kernel never completes before its predecessor.
  const bool run = ValidGroup(g, max_rank, total_rows) && first_out < out && b0 < g.count;
  const int nb = run ? min(kExpandRows, g.count - b0) : 0;
  const bool vec = run && g.rank % 4 == 0 && internal::Aligned16(g.b);
  const float* brow[kExpandOuts];
  float bq[kExpandOuts][kExpandChunk];
  if (run) {
#pragma unroll
    for (int u = 0; u < kExpandOuts; ++u) {
      brow[u] = g.b + static_cast<std::size_t>(min(o0 + u * kExpandThreads, out - 1)) * g.rank;
      LoadBChunk(brow[u], 0, g.rank, vec, bq[u]);
    }
  }
  if (static_cast<int>(threadIdx.x) < nb) {
    const int i = g.first + b0 + static_cast<int>(threadIdx.x);
    rows_of[threadIdx.x] = row_index[i];
    scale_of[threadIdx.x] = row_scale[i];
  }
  WaitPrior();
  AllowDependents();
  if (!run) return;
  t += static_cast<std::size_t>(site) * total_rows * max_rank;
  for (int e = static_cast<int>(threadIdx.x); e < nb * g.rank; e += kExpandThreads) {
    const int b = e / g.rank;
    const int q = e - b * g.rank;
    ts[b * max_rank + q] = t[static_cast<std::size_t>(g.first + b0 + b) * max_rank + q];
  }
  __syncthreads();
  if (o0 >= out) return;
  float acc[kExpandOuts][kExpandRows];
#pragma unroll
  for (int u = 0; u < kExpandOuts; ++u) {
#pragma unroll
    for (int b = 0; b < kExpandRows; ++b) acc[u][b] = 0.0f;
  }
  for (int q0 = 0; q0 < g.rank; q0 += kExpandChunk) {
    if (q0 > 0) {
#pragma unroll
      for (int u = 0; u < kExpandOuts; ++u) LoadBChunk(brow[u], q0, g.rank, vec, bq[u]);
    }
#pragma unroll
    for (int k = 0; k < kExpandChunk; ++k) {
      if (q0 + k >= g.rank) break;
#pragma unroll
      for (int b = 0; b < kExpandRows; ++b) {
        if (b < nb) {
          const float tq = ts[b * max_rank + q0 + k];
#pragma unroll
          for (int u = 0; u < kExpandOuts; ++u) acc[u][b] = fmaf(bq[u][k], tq, acc[u][b]);
        }
      }
    }
  }
  float* const y = Pick(sites.y, site);
  const std::size_t ldy = Pick(sites.ldy, site);
#pragma unroll
  for (int b = 0; b < kExpandRows; ++b) {
    if (b < nb) {
      float* const yrow = y + static_cast<std::size_t>(rows_of[b]) * ldy;
#pragma unroll
      for (int u = 0; u < kExpandOuts; ++u) {
        const int o = o0 + u * kExpandThreads;
        if (o < out) atomicAdd(yrow + o, scale_of[b] * acc[u][b]);
      }
    }
  }
}

// The rows a launch takes of each group: `group_rows` where it is set (and at most total_rows).
std::int32_t GroupRows(std::int32_t group_rows, std::int32_t total_rows) {
  return group_rows > 0 ? std::min(group_rows, total_rows) : total_rows;
}

Status CheckLoraSizes(const char* what, std::int32_t num_groups, std::int32_t max_rank,
                      std::int32_t total_rows) {
  if (max_rank <= 0 || max_rank > 1024) {
    return MakeError(what, ": max_rank ", max_rank, " is not in [1, 1024]");
  }
  if (num_groups > 65535) return MakeError(what, ": ", num_groups, " groups exceed 65535");
  if (total_rows > 65535 * kExpandRows) {
    // grid.y of the expand launch: 65535 chunks of kExpandRows rows.
    return MakeError(what, ": ", total_rows, " rows exceed ", 65535 * kExpandRows);
  }
  return Ok();
}

// The shrink; with a residual input (x null), of its `pass_rows` rows normalised, which it also
// writes to `normed` (and the new residual to residual->updated).
Status LaunchShrink(const float* x, std::size_t ldx, std::size_t in, const LoraGroup* groups,
                    std::int32_t num_groups, std::int32_t groups_per_slot, std::int32_t max_rank,
                    const std::int32_t* row_index, std::int32_t total_rows, float* workspace,
                    Stream stream, std::int32_t group_rows, const ResidualInput& residual = {},
                    float* normed = nullptr, std::int32_t pass_rows = 0) {
  const bool norm = residual.delta != nullptr;
  // Groups of a row each (a decode pass's distinct adapters) take the instances of one row.
  const std::int32_t rows = GroupRows(group_rows, total_rows);
  const int block_rows = rows == 1 ? 1 : kLoraRows;
  // The blocks of the last z write the normalised rows a warp a row.
  const std::int32_t chunks = std::max((rows + block_rows - 1) / block_rows,
                                       norm ? (pass_rows + kShrinkWarps - 1) / kShrinkWarps : 0);
  const dim3 grid(static_cast<unsigned>(chunks),
                  static_cast<unsigned>((max_rank + kShrinkWarps - 1) / kShrinkWarps),
                  static_cast<unsigned>(num_groups + (norm ? 1 : 0)));
  const std::size_t smem = block_rows * ((ShrinkSpan(in, norm) + 3) / 4) * sizeof(float4);
  const auto launch = [&](auto kernel) -> Status {
    FGNET_ASSIGN_OR_RETURN(const std::size_t limit,
                           internal::OptInSharedMemory(reinterpret_cast<const void*>(kernel)));
    if (smem > limit) {
      return MakeError("cuda::LoraApply: the shrink's ", smem,
                       " bytes of shared memory a block exceed the GPU's ", limit);
    }
    Launch(kernel, grid, kShrinkWarps * 32, smem, stream, DependentLaunchSupported(), x, ldx,
           static_cast<int>(in), groups, max_rank, row_index, total_rows, groups_per_slot,
           workspace, residual, normed, static_cast<int>(pass_rows));
    return CudaLastError("cuda::LoraApply (shrink kernel)");
  };
  const auto for_rows = [&](auto vecs) {
    constexpr int kVecs = decltype(vecs)::value;
    if constexpr (kVecs <= ShrinkVecs(kMaxShrinkOfResidualIn)) {
      if (norm) {
        return block_rows == 1 ? launch(LoraShrinkKernel<kVecs, 1, true>)
                               : launch(LoraShrinkKernel<kVecs, kLoraRows, true>);
      }
    }
    return block_rows == 1 ? launch(LoraShrinkKernel<kVecs, 1, false>)
                           : launch(LoraShrinkKernel<kVecs, kLoraRows, false>);
  };
  switch (ShrinkVecs(in)) {
    case 4:
      return for_rows(std::integral_constant<int, 4>{});
    case 8:
      return for_rows(std::integral_constant<int, 8>{});
    default:
      return for_rows(std::integral_constant<int, kShrinkSpan / 128>{});
  }
}

Status LaunchExpand(std::span<const LoraExpandSite> sites, const LoraGroup* groups,
                    std::int32_t num_groups, std::int32_t groups_per_slot, std::int32_t max_rank,
                    const std::int32_t* row_index, const float* row_scale, std::int32_t total_rows,
                    const float* workspace, Stream stream, std::int32_t group_rows) {
  ExpandSites e{};
  std::size_t most = 0;
  for (std::size_t i = 0; i < sites.size(); ++i) {
    e.y[i] = sites[i].y;
    e.ldy[i] = sites[i].ldy;
    e.out[i] = static_cast<int>(sites[i].out);
    most = std::max(most, sites[i].out);
  }
  const dim3 grid(
      static_cast<unsigned>((most + kExpandBlockOuts - 1) / kExpandBlockOuts),
      static_cast<unsigned>((GroupRows(group_rows, total_rows) + kExpandRows - 1) / kExpandRows),
      static_cast<unsigned>(num_groups));
  const std::size_t smem = static_cast<std::size_t>(kExpandRows) * max_rank * sizeof(float);
  Launch(LoraExpandKernel, grid, kExpandThreads, smem, stream, DependentLaunchSupported(), e,
         groups, max_rank, row_index, row_scale, total_rows, groups_per_slot, workspace);
  return CudaLastError("cuda::LoraApply (expand kernel)");
}

}  // namespace

Status LoraApply(const float* x, std::size_t ldx, std::size_t in, float* y, std::size_t ldy,
                 std::size_t out, const LoraGroup* groups, std::int32_t num_groups,
                 std::int32_t max_rank, const std::int32_t* row_index, const float* row_scale,
                 std::int32_t total_rows, float* workspace, Stream stream,
                 std::int32_t group_rows) {
  if (num_groups <= 0 || total_rows <= 0 || in == 0 || out == 0) return Ok();
  FGNET_TRY(CheckLoraSizes("cuda::LoraApply", num_groups, max_rank, total_rows));
  if (in > kMaxDim || out > kMaxDim) {
    return MakeError("cuda::LoraApply: sizes in ", in, ", out ", out, " are too large");
  }
  FGNET_TRY(LaunchShrink(x, ldx, in, groups, num_groups, num_groups, max_rank, row_index,
                         total_rows, workspace, stream, group_rows));
  const LoraExpandSite site{y, ldy, out};
  return LaunchExpand(std::span(&site, 1), groups, num_groups, num_groups, max_rank, row_index,
                      row_scale, total_rows, workspace, stream, group_rows);
}

Status LoraShrink(const float* x, std::size_t ldx, std::size_t in, const LoraGroup* groups,
                  std::int32_t num_groups, std::int32_t groups_per_slot, std::int32_t max_rank,
                  const std::int32_t* row_index, std::int32_t total_rows, float* workspace,
                  Stream stream, std::int32_t group_rows) {
  if (num_groups <= 0 || total_rows <= 0 || in == 0) return Ok();
  FGNET_TRY(CheckLoraSizes("cuda::LoraShrink", num_groups, max_rank, total_rows));
  if (groups_per_slot <= 0) {
    return MakeError("cuda::LoraShrink: ", groups_per_slot, " groups per slot");
  }
  if (in > kMaxDim) return MakeError("cuda::LoraShrink: the input size ", in, " is too large");
  return LaunchShrink(x, ldx, in, groups, num_groups, groups_per_slot, max_rank, row_index,
                      total_rows, workspace, stream, group_rows);
}

Status LoraShrinkOfResidual(const ResidualInput& residual, std::size_t rows, std::size_t in,
                            float* normed, const LoraGroup* groups, std::int32_t num_groups,
                            std::int32_t groups_per_slot, std::int32_t max_rank,
                            const std::int32_t* row_index, std::int32_t total_rows,
                            float* workspace, Stream stream, std::int32_t group_rows) {
  constexpr const char* kWhat = "cuda::LoraShrinkOfResidual";
  if (rows == 0) return Ok();
  if (residual.delta == nullptr || residual.residual == nullptr || residual.updated == nullptr ||
      residual.post == nullptr || residual.pre == nullptr || normed == nullptr) {
    return MakeError(kWhat, ": a residual input with every array, and `normed`, are needed");
  }
  if (residual.updated == residual.residual) {
    return MakeError(kWhat, ": the new residual rows must not overwrite the residual it reads");
  }
  using internal::Aligned16;
  if (in == 0 || in % 4 != 0 || in > kMaxShrinkOfResidualIn || !Aligned16(residual.delta) ||
      !Aligned16(residual.residual) || !Aligned16(residual.updated) || !Aligned16(residual.post) ||
      !Aligned16(residual.pre) || !Aligned16(normed)) {
    return MakeError(kWhat, ": rows of ", in, " values (a multiple of 4, at most ",
                     kMaxShrinkOfResidualIn, ", 16-byte aligned) are needed");
  }
  if (rows > static_cast<std::size_t>(65535) * kLoraRows) {
    return MakeError(kWhat, ": ", rows, " rows exceed ", 65535 * kLoraRows);
  }
  if (num_groups <= 0 || total_rows <= 0) {
    return MakeError(kWhat, ": no groups (use RMSNormAddToNorm)");
  }
  FGNET_TRY(CheckLoraSizes(kWhat, num_groups + 1, max_rank, total_rows));
  if (groups_per_slot <= 0) return MakeError(kWhat, ": ", groups_per_slot, " groups per slot");
  return LaunchShrink(nullptr, in, in, groups, num_groups, groups_per_slot, max_rank, row_index,
                      total_rows, workspace, stream, group_rows, residual, normed,
                      static_cast<std::int32_t>(rows));
}

Status LoraExpand(std::span<const LoraExpandSite> sites, const LoraGroup* groups,
                  std::int32_t groups_per_slot, std::int32_t max_rank,
                  const std::int32_t* row_index, const float* row_scale, std::int32_t total_rows,
                  const float* workspace, Stream stream, std::int32_t group_rows) {
  if (sites.empty() || total_rows <= 0 || groups_per_slot <= 0) return Ok();
  if (sites.size() > static_cast<std::size_t>(kMaxLoraSites)) {
    return MakeError("cuda::LoraExpand: ", sites.size(), " sites exceed ", kMaxLoraSites);
  }
  const auto num_groups = static_cast<std::int32_t>(sites.size()) * groups_per_slot;
  FGNET_TRY(CheckLoraSizes("cuda::LoraExpand", num_groups, max_rank, total_rows));
  for (const LoraExpandSite& site : sites) {
    if (site.out > kMaxDim) {
      return MakeError("cuda::LoraExpand: the output size ", site.out, " is too large");
    }
  }
  return LaunchExpand(sites, groups, num_groups, groups_per_slot, max_rank, row_index, row_scale,
                      total_rows, workspace, stream, group_rows);
}

}  // namespace fgnet::cuda
