#include "backend/cuda/matmul.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <limits>
#include <utility>

#include "backend/cuda/device.h"
#include "backend/cuda/matmul_kernels.h"

namespace fgnet::cuda {
namespace {

static_assert(MatMulContext::kMaxGemvRows == internal::kGemvMaxRows);

constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;

Status CublasCheck(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return Ok();
  return MakeError(what, ": cuBLAS status ", static_cast<int>(status), " (",
                   cublasGetStatusName(status), "): ", cublasGetStatusString(status));
}

}  // namespace

struct MatMulContext::Impl {
  cublasHandle_t handle = nullptr;
  Stream stream = nullptr;
  int multiprocessors = 1;
  DeviceMemory x_bf16;  // the BF16 activations of the cuBLAS path
  DeviceMemory cublas_workspace;
  std::uint64_t generation = 0;

  ~Impl() {
    if (handle != nullptr) cublasDestroy(handle);
  }
};

MatMulContext::MatMulContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MatMulContext::MatMulContext(MatMulContext&&) noexcept = default;
MatMulContext& MatMulContext::operator=(MatMulContext&&) noexcept = default;
MatMulContext::~MatMulContext() = default;

Result<MatMulContext> MatMulContext::Create(Stream stream) {
  auto impl = std::make_unique<Impl>();
  impl->stream = stream;
  int device = 0;
  FGNET_TRY(CudaCheck(cudaGetDevice(&device), "cudaGetDevice"));
  FGNET_TRY(CudaCheck(
      cudaDeviceGetAttribute(&impl->multiprocessors, cudaDevAttrMultiProcessorCount, device),
      "cudaDeviceGetAttribute"));
  FGNET_TRY(CublasCheck(cublasCreate(&impl->handle), "cublasCreate"));
  FGNET_TRY(CublasCheck(cublasSetStream(impl->handle, stream), "cublasSetStream"));
  // A workspace of cuBLAS's own that never moves, so that captured CUDA graphs stay valid.
  FGNET_ASSIGN_OR_RETURN(impl->cublas_workspace, DeviceMemory::Allocate(kCublasWorkspaceBytes));
  FGNET_TRY(CublasCheck(cublasSetWorkspace(impl->handle, impl->cublas_workspace.data(),
                                           impl->cublas_workspace.bytes()),
                        "cublasSetWorkspace"));
  return MatMulContext(std::move(impl));
}

Stream MatMulContext::stream() const { return impl_->stream; }

std::uint64_t MatMulContext::generation() const { return impl_->generation; }

Status MatMulContext::MatMul(const float* x, std::size_t rows, std::size_t in,
                             const std::uint16_t* w_bf16, std::size_t out, float* y,
                             bool accumulate) {
  if (in % 8 != 0) {
    return MakeError("cuda::MatMul: the input size ", in, " is not a multiple of 8");
  }
  if (rows == 0 || out == 0) return Ok();
  if (in == 0) {
    // An empty sum: y = 0, or y unchanged.
    if (accumulate) return Ok();
    return CudaCheck(cudaMemsetAsync(y, 0, rows * out * sizeof(float), impl_->stream),
                     "cudaMemsetAsync");
  }
  if (rows <= kMaxGemvRows) {
    return internal::LaunchGemv(x, rows, in, w_bf16, out, y, accumulate, impl_->multiprocessors,
                                impl_->stream);
  }
  constexpr auto kIntMax = static_cast<std::size_t>(std::numeric_limits<int>::max());
  if (rows > kIntMax || in > kIntMax || out > kIntMax) {
    return MakeError("cuda::MatMul: sizes rows ", rows, ", in ", in, ", out ", out,
                     " exceed cuBLAS's int dimensions");
  }
  const std::size_t bytes = rows * in * sizeof(std::uint16_t);
  if (impl_->x_bf16.bytes() < bytes) {
    // The old workspace may still be read by queued work: let it finish before freeing it.
    FGNET_TRY(CudaCheck(cudaStreamSynchronize(impl_->stream), "cudaStreamSynchronize"));
    impl_->x_bf16 = DeviceMemory();
    FGNET_ASSIGN_OR_RETURN(impl_->x_bf16, DeviceMemory::Allocate(bytes));
    ++impl_->generation;
  }
  auto* xb = static_cast<std::uint16_t*>(impl_->x_bf16.data());
  FGNET_TRY(internal::LaunchToBF16(x, rows * in, xb, impl_->stream));
  // Column-major view: y^T [out, rows] = W [in, out]^T x^T [in, rows].
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  return CublasCheck(
      cublasGemmEx(impl_->handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out),
                   static_cast<int>(rows), static_cast<int>(in), &alpha, w_bf16, CUDA_R_16BF,
                   static_cast<int>(in), xb, CUDA_R_16BF, static_cast<int>(in), &beta, y,
                   CUDA_R_32F, static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx");
}

}  // namespace fgnet::cuda
