// The kernels that prepare a pass's keys and values (attention.h): RMS norm of q and k heads with
// RoPE (QKNormRope), the same fused with the write of each row's key and value into its KV block
// (QKNormRopeWriteKV, launched as a programmatic dependent on sm_90+), and the plain KV write
// (WriteKV). Keys and values are stored as the layer's element type (f32, or bf16 rounded to
// nearest even).

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/attention.h"
#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/device.h"
#include "backend/cuda/kernel_support.cuh"

namespace fgnet::cuda {
namespace {

using attention_internal::CheckPagedLayer;
using internal::AllowDependents;
using internal::DependentLaunchSupported;
using internal::kFullMask;
using internal::Launch;
using internal::WaitPrior;

// ---------------------------------------------------------------------------------------------
// QKNormRope: one CTA per (row, head), q heads then k heads, so that a row's heads are normalised
// and rotated side by side; the CTA of k head h also writes key h and value h to the KV block.

constexpr int kNormThreads = 128;

// Where QKNormRopeWriteKV stores the row's key and value (unused by QKNormRope).
struct KVDest {
  const float* v;
  const std::int32_t* row_seq;
  const std::int32_t* seq_table;
  const std::int32_t* tables;
  void* memory;  // elements of the kernel's KV type
  std::int64_t block_elements;
  std::int64_t block_size;
  std::int64_t slot;
  __nv_bfloat16* planes;  // also the split key and value there (PagedAttentionPlanes), or null
};

__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// x's two BF16 terms at plane[i] and plane[i + 2 * head_dim] (hi, lo: PagedAttentionPlanes).
__device__ __forceinline__ void StoreTerms(__nv_bfloat16* plane, int i, int head_dim, float x) {
  internal::SplitBF16(x, plane + i, plane + 2 * head_dim + i);
}

// The block's sum of one double a thread; every thread gets it.
__device__ double BlockSumDouble(double v) {
  __shared__ double partial[kNormThreads / 32];
  for (int o = 16; o > 0; o /= 2) v = __dadd_rn(v, __shfl_xor_sync(kFullMask, v, o));
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  double total = partial[0];
  for (int w = 1; w < kNormThreads / 32; ++w) total = __dadd_rn(total, partial[w]);
  return total;
}

// The rotation of pair i at `pos`: the f32 angle, its cos and sin computed in double and rounded
// once (as cpu::RopeTable).
__device__ __forceinline__ void Rotation(float pos, const float* inv_freq, int i, float* c,
                                         float* s) {
  const double angle = static_cast<double>(__fmul_rn(pos, inv_freq[i]));
  *c = static_cast<float>(cos(angle));
  *s = static_cast<float>(sin(angle));
}

// Pairs per thread whose rotation and norm factors a CTA has before the previous kernel's results
// arrive (all of them up to head_dim 2 * kEarlyPairs * kNormThreads); the rest come after. Values
// per thread that a k head's CTA requests as soon as they are written (all up to head_dim
// kEarlyValues * kNormThreads), so that their loads overlap the norm's.
constexpr int kEarlyPairs = 2;
constexpr int kEarlyValues = 2;

template <bool kWrite, typename T>
__global__ void __launch_bounds__(kNormThreads)
    QKNormRopeKernel(float* q, float* k, int heads, int kv_heads, int head_dim,
                     const float* q_scale, const float* k_scale, float eps, const float* inv_freq,
                     const std::int32_t* row_pos, KVDest kv) {
  const int r = blockIdx.x;
  const int h = blockIdx.y;
  const int half = head_dim / 2;
  const bool is_q = h < heads;
  // Before the previous kernel's results (q, k, v): the row's rotations and where its key goes,
  // from the pass's arrays (the host's, uploaded before the pass's first kernel).
  const float pos = static_cast<float>(row_pos[r]);
  const float* scale = is_q ? q_scale : k_scale;
  float early_c[kEarlyPairs];
  float early_s[kEarlyPairs];
  float early_f[kEarlyPairs][2];  // scale[i], scale[half + i]
#pragma unroll
  for (int e = 0; e < kEarlyPairs; ++e) {
    const int i = static_cast<int>(threadIdx.x) + e * kNormThreads;
    if (i >= half) continue;
    early_f[e][0] = scale[i];
    early_f[e][1] = scale[half + i];
    Rotation(pos, inv_freq, i, &early_c[e], &early_s[e]);
  }
  T* key = nullptr;
  std::int64_t values = 0;
  __nv_bfloat16* plane = nullptr;  // the key's hi plane; its value's is head_dim further
  if constexpr (kWrite) {
    if (!is_q) {
      const std::int64_t row = static_cast<std::int64_t>(kv_heads) * head_dim;
      const std::int64_t p = row_pos[r];
      const std::int64_t block = kv.tables[kv.seq_table[kv.row_seq[r]] + p / kv.block_size];
      key = static_cast<T*>(kv.memory) + block * kv.block_elements +
            (kv.slot * kv.block_size + p % kv.block_size) * row + (h - heads) * head_dim;
      values = kv.block_elements / 2;
      if (kv.planes != nullptr) {
        plane = kv.planes +
                attention_internal::PlaneOffset(static_cast<int>(p), h - heads, kv_heads, head_dim);
      }
    }
  }
  WaitPrior();
  AllowDependents();
  float* v = is_q ? q + (static_cast<std::size_t>(r) * heads + h) * head_dim
                  : k + (static_cast<std::size_t>(r) * kv_heads + (h - heads)) * head_dim;
  const float* value =
      key != nullptr ? kv.v + (static_cast<std::size_t>(r) * kv_heads + (h - heads)) * head_dim
                     : nullptr;
  float early_v[kEarlyValues];
#pragma unroll
  for (int e = 0; e < kEarlyValues; ++e) {
    const int i = static_cast<int>(threadIdx.x) + e * kNormThreads;
    if (value != nullptr && i < head_dim) early_v[e] = value[i];
  }
  double ss = 0.0;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    const double x = static_cast<double>(v[i]);
    ss = __fma_rn(x, x, ss);
  }
  const float mean =
      static_cast<float>(__ddiv_rn(BlockSumDouble(ss), static_cast<double>(head_dim)));
  const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
  // Each thread rotates the pairs (i, half + i) it alone reads: no other thread's data is touched.
  const auto rotate = [&](int i, float c, float s, float f1, float f2) {
    // Products and sums rounded separately (no FMA), as the CPU kernels do.
    const float x1 = __fmul_rn(__fmul_rn(v[i], inv), f1);
    const float x2 = __fmul_rn(__fmul_rn(v[half + i], inv), f2);
    const float y1 = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
    const float y2 = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
    v[i] = y1;
    v[half + i] = y2;
    if (key != nullptr) {
      Store(key + i, y1);
      Store(key + half + i, y2);
    }
    if (plane != nullptr) {
      StoreTerms(plane, i, head_dim, y1);
      StoreTerms(plane, half + i, head_dim, y2);
    }
  };
#pragma unroll
  for (int e = 0; e < kEarlyPairs; ++e) {
    const int i = static_cast<int>(threadIdx.x) + e * kNormThreads;
    if (i < half) rotate(i, early_c[e], early_s[e], early_f[e][0], early_f[e][1]);
  }
  for (int i = static_cast<int>(threadIdx.x) + kEarlyPairs * kNormThreads; i < half;
       i += kNormThreads) {
    float c = 0.0f;
    float s = 0.0f;
    Rotation(pos, inv_freq, i, &c, &s);
    rotate(i, c, s, scale[i], scale[half + i]);
  }
  if (value == nullptr) return;
  const auto store_value = [&](int i, float x) {
    Store(key + values + i, x);
    if (plane != nullptr) StoreTerms(plane + head_dim, i, head_dim, x);
  };
#pragma unroll
  for (int e = 0; e < kEarlyValues; ++e) {
    const int i = static_cast<int>(threadIdx.x) + e * kNormThreads;
    if (i < head_dim) store_value(i, early_v[e]);
  }
  for (int i = static_cast<int>(threadIdx.x) + kEarlyValues * kNormThreads; i < head_dim;
       i += kNormThreads) {
    store_value(i, value[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// WriteKV: one CTA per row.

constexpr int kWriteThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kWriteThreads)
    WriteKVKernel(const float* k, const float* v, const std::int32_t* row_seq,
                  const std::int32_t* row_pos, const std::int32_t* seq_table,
                  const std::int32_t* tables, T* memory, std::int64_t block_elements,
                  std::int64_t block_size, std::int64_t slot, std::int64_t row) {
  const int r = blockIdx.x;
  const std::int64_t pos = row_pos[r];
  const std::int64_t block = tables[seq_table[row_seq[r]] + pos / block_size];
  T* dst = memory + block * block_elements + (slot * block_size + pos % block_size) * row;
  const float* ks = k + r * row;
  const float* vs = v + r * row;
  const std::int64_t values = block_elements / 2;
  for (std::int64_t c = threadIdx.x; c < row; c += blockDim.x) {
    Store(dst + c, ks[c]);
    Store(dst + values + c, vs[c]);
  }
}

}  // namespace

Status QKNormRope(float* q, float* k, std::int32_t rows, std::int32_t heads, std::int32_t kv_heads,
                  std::int32_t head_dim, const float* q_scale, const float* k_scale, float eps,
                  const float* inv_freq, const std::int32_t* row_pos, Stream stream) {
  if (heads < 0 || kv_heads < 0 || head_dim <= 0 || head_dim % 2 != 0 || head_dim > 8192) {
    return MakeError("cuda::QKNormRope: heads ", heads, ", kv_heads ", kv_heads, ", head_dim ",
                     head_dim, " are not supported (head_dim even, at most 8192)");
  }
  if (rows <= 0 || heads + kv_heads == 0) return Ok();
  if (heads + kv_heads > 65535) {
    return MakeError("cuda::QKNormRope: ", heads + kv_heads, " heads exceed 65535");
  }
  QKNormRopeKernel<false, float>
      <<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(heads + kv_heads)), kNormThreads,
         0, stream>>>(q, k, heads, kv_heads, head_dim, q_scale, k_scale, eps, inv_freq, row_pos,
                      KVDest{});
  return CudaLastError("cuda::QKNormRope");
}

Status QKNormRopeWriteKV(float* q, float* k, const float* v, const PassRows& pass,
                         const PagedLayer& layer, std::int32_t heads, std::int32_t kv_heads,
                         std::int32_t head_dim, const float* q_scale, const float* k_scale,
                         float eps, const float* inv_freq, Stream stream, std::uint16_t* planes) {
  if (heads < 0 || kv_heads < 0 || head_dim <= 0 || head_dim % 2 != 0 || head_dim > 8192) {
    return MakeError("cuda::QKNormRopeWriteKV: heads ", heads, ", kv_heads ", kv_heads,
                     ", head_dim ", head_dim, " are not supported (head_dim even, at most 8192)");
  }
  FGNET_TRY(CheckPagedLayer("cuda::QKNormRopeWriteKV", layer));
  if (layer.row != std::int64_t{kv_heads} * head_dim) {
    return MakeError("cuda::QKNormRopeWriteKV: layer row ", layer.row, " is not kv_heads ",
                     kv_heads, " * head_dim ", head_dim);
  }
  if (planes != nullptr && layer.dtype != DType::kF32) {
    return MakeError("cuda::QKNormRopeWriteKV: split keys are for f32 blocks, not ",
                     DTypeName(layer.dtype));
  }
  if (pass.rows <= 0) return Ok();
  const KVDest kv{.v = v,
                  .row_seq = pass.row_seq,
                  .seq_table = pass.seq_table,
                  .tables = pass.tables,
                  .memory = layer.memory,
                  .block_elements = layer.block_elements,
                  .block_size = layer.block_size,
                  .slot = layer.slot,
                  .planes = reinterpret_cast<__nv_bfloat16*>(planes)};
  if (heads + kv_heads > 65535) {
    return MakeError("cuda::QKNormRopeWriteKV: ", heads + kv_heads, " heads exceed 65535");
  }
  const dim3 grid(static_cast<unsigned>(pass.rows), static_cast<unsigned>(heads + kv_heads));
  if (layer.dtype == DType::kBF16) {
    Launch(QKNormRopeKernel<true, __nv_bfloat16>, grid, kNormThreads, 0, stream,
           DependentLaunchSupported(), q, k, heads, kv_heads, head_dim, q_scale, k_scale, eps,
           inv_freq, pass.row_pos, kv);
  } else {
    Launch(QKNormRopeKernel<true, float>, grid, kNormThreads, 0, stream, DependentLaunchSupported(),
           q, k, heads, kv_heads, head_dim, q_scale, k_scale, eps, inv_freq, pass.row_pos, kv);
  }
  return CudaLastError("cuda::QKNormRopeWriteKV");
}

Status WriteKV(const float* k, const float* v, const PassRows& pass, const PagedLayer& layer,
               Stream stream) {
  FGNET_TRY(CheckPagedLayer("cuda::WriteKV", layer));
  if (pass.rows <= 0) return Ok();
  const auto write = [&](auto* memory) {
    WriteKVKernel<<<static_cast<unsigned>(pass.rows), kWriteThreads, 0, stream>>>(
        k, v, pass.row_seq, pass.row_pos, pass.seq_table, pass.tables, memory, layer.block_elements,
        layer.block_size, layer.slot, layer.row);
  };
  if (layer.dtype == DType::kBF16) {
    write(static_cast<__nv_bfloat16*>(layer.memory));
  } else {
    write(static_cast<float*>(layer.memory));
  }
  return CudaLastError("cuda::WriteKV");
}

}  // namespace fgnet::cuda
