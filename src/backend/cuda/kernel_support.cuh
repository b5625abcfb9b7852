// Helpers shared by the CUDA kernels: the full warp mask, the split of f32 values into two BF16
// terms, programmatic dependent launch (sm_90+), by which a kernel may start while the previous
// kernel of its stream finishes, and launches in thread-block clusters and their barrier (sm_90+).
// Thread-safety: DependentLaunchSupported is reentrant (one cached query per device).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "backend/cuda/ops.h"

namespace fgnet::cuda::internal {

constexpr unsigned kFullMask = 0xffffffffu;

// The bits of a BF16 pair (its first value in the low half).
__device__ __forceinline__ std::uint32_t Bits(__nv_bfloat162 v) {
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// v as two BF16 terms, hi = bf16(v) and lo = bf16(v - hi) (the difference is exact in f32),
// rounded to nearest even: about 16 significant bits of v, the form in which the matrix products
// take f32 activations on tensor cores.
__device__ __forceinline__ void SplitBF16(float v, __nv_bfloat16* hi, __nv_bfloat16* lo) {
  const __nv_bfloat16 h = __float2bfloat16_rn(v);
  *hi = h;
  *lo = __float2bfloat16_rn(v - __bfloat162float(h));
}

// The pair (a, b) split the same way, as the bits of the BF16 pairs hi and lo (a in the low
// halves).
__device__ __forceinline__ void SplitBF16(float a, float b, std::uint32_t& hi, std::uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  const float2 hf = __bfloat1622float2(h);
  hi = Bits(h);
  lo = Bits(__floats2bfloat162_rn(a - hf.x, b - hf.y));
}

// Programmatic dependent launch (sm_90+): a kernel launched with the programmatic serialisation
// attribute may start while the previous kernel of the stream finishes; WaitPrior() (first thing
// in every CTA) waits for that kernel's completion and the visibility of its writes, and
// AllowDependents() lets the next such kernel start early. Both are no-ops before sm_90.
__device__ __forceinline__ void WaitPrior() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void AllowDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The halves of a thread-block cluster's barrier (sm_90+; no-ops before): every thread of the
// cluster arrives (relaxed: ordering no memory access), then waits for all to have arrived; a
// phase begun early is waited for where it is needed (every CTA of the cluster has started before
// any reaches into another's shared memory).
__device__ __forceinline__ void ClusterArriveRelaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
#endif
}

__device__ __forceinline__ void ClusterWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
#endif
}

// Whether p is 16-byte aligned (what a float4 or uint4 access needs).
__host__ __device__ inline bool Aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// True when the current device runs programmatic dependent launches (compute capability 9.0 or
// newer), queried once per device; a failed query counts as false and its error state is cleared.
inline bool DependentLaunchSupported() {
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<int>, kMaxDevices> known{};  // 0 unknown, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    cudaGetLastError();
    return false;
  }
  int v = known[static_cast<std::size_t>(device)].load(std::memory_order_relaxed);
  if (v == 0) {
    int major = 0;
    v = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                major >= 9
            ? 2
            : 1;
    cudaGetLastError();
    known[static_cast<std::size_t>(device)].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) in clusters of `cluster` CTAs (sm_90+;
// all ones: no clusters), with programmatic serialisation after the stream's previous kernel
// where `pdl` (the kernel starts with WaitPrior()).
template <typename... Params, typename... Args>
void LaunchInClusters(void (*kernel)(Params...), dim3 grid, dim3 cluster, int block,
                      std::size_t smem, Stream stream, bool pdl, Args&&... args) {
  const bool clusters = cluster.x * cluster.y * cluster.z > 1;
  if (!pdl && !clusters) {
    kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
    return;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(static_cast<unsigned>(block));
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  std::array<cudaLaunchAttribute, 2> attributes{};
  unsigned used = 0;
  if (pdl) {
    attributes[used].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[used].val.programmaticStreamSerializationAllowed = 1;
    ++used;
  }
  if (clusters) {
    attributes[used].id = cudaLaunchAttributeClusterDimension;
    attributes[used].val.clusterDim.x = cluster.x;
    attributes[used].val.clusterDim.y = cluster.y;
    attributes[used].val.clusterDim.z = cluster.z;
    ++used;
  }
  config.attrs = attributes.data();
  config.numAttrs = used;
  cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// LaunchInClusters without clusters.
template <typename... Params, typename... Args>
void Launch(void (*kernel)(Params...), dim3 grid, int block, std::size_t smem, Stream stream,
            bool pdl, Args&&... args) {
  LaunchInClusters(kernel, grid, dim3(1, 1, 1), block, smem, stream, pdl,
                   std::forward<Args>(args)...);
}

}  // namespace fgnet::cuda::internal
