// What the BF16 GEMV kernels (matmul.cu, mma_gemv.cu) share past their products: the outputs of
// one launch and the tile a warp or block computes, the adapters' epilogue, the GeGLU's
// activation, and a launch's share of a product's rows.
#pragma once

#include <cstddef>
#include <span>

#include "backend/cuda/gemv_common.cuh"
#include "backend/cuda/matmul.h"
#include "backend/cuda/matmul_kernels.h"
#include "backend/cuda/ops.h"

namespace fgnet::cuda::internal {

// The adapters' update of output o of row r (LoraRows, offset to the launch's first row) at a
// site: sum over the row's entries of scale * (B[o, :] . t[entry, :]), each dot product in rank
// order, as LoraApply's expand computes it.
__device__ __forceinline__ float LoraDelta(const LoraRows& rows, const LoraSite& site, int r,
                                           int o) {
  float delta = 0.0f;
  for (int k = 0; k < rows.per_row; ++k) {
    const int i = rows.row_entries[r * rows.per_row + k];
    if (i < 0) break;
    const LoraGroup& g = site.groups[rows.entry_adapter[i]];
    if (g.rank <= 0) continue;
    const float* b = g.b + static_cast<std::size_t>(o) * g.rank;
    const float* t = site.t + static_cast<std::size_t>(i) * rows.max_rank;
    float dot = 0.0f;
    int q = 0;
    if ((g.rank & 3) == 0 && (rows.max_rank & 3) == 0) {
      // 16-byte loads, four of each in flight: B's rows and t's are 16-byte aligned then.
      const auto* b4 = reinterpret_cast<const float4*>(b);
      const auto* t4 = reinterpret_cast<const float4*>(t);
      for (; q + 16 <= g.rank; q += 16) {
        float4 bv[4], tv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          bv[u] = __ldg(b4 + q / 4 + u);
          tv[u] = t4[q / 4 + u];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          dot = fmaf(bv[u].x, tv[u].x, dot);
          dot = fmaf(bv[u].y, tv[u].y, dot);
          dot = fmaf(bv[u].z, tv[u].z, dot);
          dot = fmaf(bv[u].w, tv[u].w, dot);
        }
      }
    }
    for (; q < g.rank; ++q) dot = fmaf(b[q], t[q], dot);
    delta = fmaf(rows.entry_scale[i], dot, delta);
  }
  return delta;
}

// The outputs of one GEMV launch: their tiles of NW W rows are numbered consecutively, output i's
// ending before tile_end (its rows past `out` are clamped, their results not written). `lora`:
// the output's adapters (groups null: none).
struct GemvTarget {
  const uint4* w;
  float* y;
  int out;
  int tile_end;
  LoraSite lora;
};

struct GemvTargets {
  GemvTarget t[kGemvMaxOutputs];
  int count;
};

struct TileRef {
  const uint4* w;
  float* y;
  int out;
  int o0;  // first W row of the tile in its output
  int target;
};

template <int NW>
__device__ __forceinline__ TileRef LocateTile(const GemvTargets& g, int tile) {
  TileRef t{g.t[0].w, g.t[0].y, g.t[0].out, tile * NW, 0};
#pragma unroll
  for (int i = 1; i < kGemvMaxOutputs; ++i) {
    if (i < g.count && tile >= g.t[i - 1].tile_end) {
      t = TileRef{g.t[i].w, g.t[i].y, g.t[i].out, (tile - g.t[i - 1].tile_end) * NW, i};
    }
  }
  return t;
}

// The targets of one launch over rows r0 .. of `outputs` (those with out = 0 skipped) in tiles of
// NW W rows, with their adapters' sites where `lora` is set; *tiles: how many tiles in all.
inline GemvTargets TargetsOf(std::span<const MatMulContext::MatMulOutput> outputs, std::size_t r0,
                             int nw, const LoraEpilogue* lora, int* tiles) {
  GemvTargets targets{};
  *tiles = 0;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const MatMulContext::MatMulOutput& o = outputs[i];
    if (o.out == 0) continue;
    const int out = static_cast<int>(o.out);
    *tiles += (out + nw - 1) / nw;
    targets.t[targets.count++] =
        GemvTarget{reinterpret_cast<const uint4*>(o.w), o.y + r0 * o.out, out, *tiles,
                   lora != nullptr ? lora->sites[i] : LoraSite{}};
  }
  return targets;
}

// Whether a launch adds adapters' updates in its epilogue: it then takes the kernels' kLora
// instances, which alone carry that code.
inline bool HasLoraEpilogue(const LoraEpilogue* lora) {
  return lora != nullptr && lora->rows.row_entries != nullptr;
}

// The adapters' rows of a launch over rows r0 .. of a product (none without `lora`).
inline LoraRows RowsFrom(const LoraEpilogue* lora, std::size_t r0) {
  if (lora == nullptr) return LoraRows{};
  LoraRows rows = lora->rows;
  if (rows.row_entries != nullptr) rows.row_entries += r0 * static_cast<std::size_t>(rows.per_row);
  return rows;
}

// The rows r0 .. of a residual input (null: none) of rows of `in` values.
inline ResidualInput ResidualFrom(const ResidualInput* res, std::size_t r0, std::size_t in) {
  if (res == nullptr || res->delta == nullptr) return ResidualInput{};
  ResidualInput rows = *res;
  rows.delta += r0 * in;
  rows.residual += r0 * in;
  rows.updated += r0 * in;
  return rows;
}

// gelu_tanh(g) * u in f32, the expression of GeluTanhMul (backend/cuda/ops.cu).
__device__ __forceinline__ float GeluTanhTimes(float g, float u) {
  const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
  return 0.5f * g * (1.0f + tanhf(inner)) * u;
}

}  // namespace fgnet::cuda::internal
