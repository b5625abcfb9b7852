#include <cuda_runtime.h>

#include "backend/cuda/device.h"
#include "backend/cuda/ops.h"

namespace fgnet::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float Bf16ToFloat(std::uint16_t bits) {
  return __uint_as_float(static_cast<unsigned>(bits) << 16);
}

// One block per output row; threads stride over the columns.
template <typename T>
__global__ void EmbedRowsKernel(const T* table, std::size_t cols, const std::int32_t* ids,
                                float scale, float* out) {
  const std::size_t t = blockIdx.x;
  const T* row = table + static_cast<std::size_t>(ids[t]) * cols;
  float* dst = out + t * cols;
  for (std::size_t c = threadIdx.x; c < cols; c += blockDim.x) {
    if constexpr (sizeof(T) == 2) {
      dst[c] = Bf16ToFloat(row[c]) * scale;
    } else {
      dst[c] = row[c] * scale;
    }
  }
}

// Sum over the block; every thread gets the result.
__device__ float BlockSum(float v) {
  __shared__ float partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  __syncthreads();  // partial may be reused by a later call in the same kernel
  return total;
}

__global__ void RMSNormAddToKernel(const float* x, std::size_t dim, const float* scale, float eps,
                                   float* residual) {
  const std::size_t r = blockIdx.x;
  const float* xr = x + r * dim;
  float* rr = residual + r * dim;
  float sum = 0;
  for (std::size_t c = threadIdx.x; c < dim; c += blockDim.x) sum += xr[c] * xr[c];
  const float total = BlockSum(sum);
  const float inv = rsqrtf(total / static_cast<float>(dim) + eps);
  for (std::size_t c = threadIdx.x; c < dim; c += blockDim.x) rr[c] += xr[c] * inv * scale[c];
}

__global__ void GeluTanhMulKernel(const float* gate, const float* up, std::size_t n, float* out) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
  out[i] = 0.5f * g * (1.0f + tanhf(inner)) * up[i];
}

}  // namespace

Status EmbedRows(DType table_dtype, const void* table, std::size_t table_cols,
                 const std::int32_t* ids, std::size_t n, float scale, float* out, Stream stream) {
  if (n == 0) return Ok();
  const auto grid = static_cast<unsigned>(n);
  switch (table_dtype) {
    case DType::kF32:
      EmbedRowsKernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(table), table_cols,
                                                     ids, scale, out);
      break;
    case DType::kBF16:
      EmbedRowsKernel<<<grid, kThreads, 0, stream>>>(static_cast<const std::uint16_t*>(table),
                                                     table_cols, ids, scale, out);
      break;
    default:
      return MakeError("cuda::EmbedRows: ", DTypeName(table_dtype),
                       " tables are not supported (F32, BF16)");
  }
  return CudaLastError("cuda::EmbedRows");
}

Status RMSNormAddTo(const float* x, std::size_t rows, std::size_t dim, const float* scale,
                    float eps, float* residual, Stream stream) {
  if (rows == 0) return Ok();
  RMSNormAddToKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, dim, scale, eps,
                                                                           residual);
  return CudaLastError("cuda::RMSNormAddTo");
}

Status GeluTanhMul(const float* gate, const float* up, std::size_t n, float* out, Stream stream) {
  if (n == 0) return Ok();
  const auto blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  GeluTanhMulKernel<<<blocks, kThreads, 0, stream>>>(gate, up, n, out);
  return CudaLastError("cuda::GeluTanhMul");
}

}  // namespace fgnet::cuda
