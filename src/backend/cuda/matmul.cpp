#include "backend/cuda/matmul.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "backend/cuda/device.h"
#include "backend/cuda/matmul_kernels.h"

namespace fgnet::cuda {
namespace {

static_assert(MatMulContext::kMaxQuantGemvRows == internal::kQuantGemvMaxRows);
static_assert(MatMulContext::kMaxGemvRows == internal::kGemvMaxRows);
static_assert(MatMulContext::kMaxOutputs == internal::kGemvMaxOutputs);
static_assert(std::size(LoraEpilogue{}.sites) == MatMulContext::kMaxOutputs);

constexpr std::size_t kCublasWorkspaceBytes = std::size_t{8} << 20;
// Floats of quantized weights dequantized at once on the many-row path.
constexpr std::size_t kDequantFloats = std::size_t{8} << 20;

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
  DeviceMemory up;       // the up products of MatMulGeGLU's cuBLAS path
  DeviceMemory dequant;  // slices of quantized weights as f32
  std::uint64_t generation = 0;
  // Calls so far, and the input whose terms a producer left in x_bf16 for call `terms.call`.
  std::uint64_t calls = 0;
  struct Terms {
    const float* x = nullptr;
    std::size_t rows = 0, in = 0;
    std::uint64_t call = 0;
  } terms;

  ~Impl() {
    if (handle != nullptr) cublasDestroy(handle);
  }

  // Grows `memory` to at least `bytes`; the old memory may still be read by queued work, so the
  // stream is drained before it is freed.
  Status Reserve(DeviceMemory& memory, std::size_t bytes) {
    if (memory.bytes() >= bytes) return Ok();
    FGNET_TRY(CudaCheck(cudaStreamSynchronize(stream), "cudaStreamSynchronize"));
    memory = DeviceMemory();
    FGNET_ASSIGN_OR_RETURN(memory, DeviceMemory::Allocate(bytes));
    ++generation;
    return Ok();
  }

  // x [rows, in] split into two BF16 terms in x_bf16: hi = bf16(x), then lo = bf16(x - hi) at
  // hi + rows * in. hi + lo is x to about 2^-17 relative.
  // (Terms a producer wrote for this call are taken as they are.)
  Result<const std::uint16_t*> ToBF16(const float* x, std::size_t rows, std::size_t in) {
    if (terms.x == x && terms.rows == rows && terms.in == in && terms.call == calls) {
      terms = Terms{};
      return static_cast<const std::uint16_t*>(x_bf16.data());
    }
    FGNET_TRY(Reserve(x_bf16, 2 * rows * in * sizeof(std::uint16_t)));
    auto* hi = static_cast<std::uint16_t*>(x_bf16.data());
    FGNET_TRY(internal::LaunchToBF16(x, rows * in, hi, hi + rows * in, stream));
    return static_cast<const std::uint16_t*>(hi);
  }

  // y [rows, out] = x W^T (+ y if accumulating) for x given as ToBF16's two terms: one product per
  // term, the second added to the first. Sizes checked by the caller.
  Status Gemm(const std::uint16_t* xb, std::size_t rows, std::size_t in, const std::uint16_t* w,
              std::size_t out, float* y, bool accumulate) {
    // Column-major view: y^T [out, rows] = W [in, out]^T x^T [in, rows].
    const float alpha = 1.0f;
    for (int term = 0; term < 2; ++term) {
      const float beta = accumulate || term == 1 ? 1.0f : 0.0f;
      FGNET_TRY(
          CublasCheck(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out),
                                   static_cast<int>(rows), static_cast<int>(in), &alpha, w,
                                   CUDA_R_16BF, static_cast<int>(in), xb + term * rows * in,
                                   CUDA_R_16BF, static_cast<int>(in), &beta, y, CUDA_R_32F,
                                   static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx"));
    }
    return Ok();
  }

  // Gemm of two products of one x whose weights (w1 = w0 + stride_w) and outputs (y1 = y0 +
  // stride_y) lie at strides that keep them apart, as one strided batched product per term (k
  // and v; gate and up); false when they do not, for Gemm one by one.
  Result<bool> GemmPair(const std::uint16_t* xb, std::size_t rows, std::size_t in,
                        const std::uint16_t* w0, const std::uint16_t* w1, std::size_t out,
                        float* y0, float* y1) {
    const auto apart = [](const void* a, const void* b, std::size_t size, std::size_t n,
                          long long* stride) {
      const auto from = reinterpret_cast<std::uintptr_t>(a);
      const auto to = reinterpret_cast<std::uintptr_t>(b);
      if (to <= from || (to - from) % size != 0 || (to - from) / size < n) return false;
      *stride = static_cast<long long>((to - from) / size);
      return true;
    };
    long long stride_w = 0;
    long long stride_y = 0;
    if (!apart(w0, w1, sizeof(std::uint16_t), out * in, &stride_w) ||
        !apart(y0, y1, sizeof(float), rows * out, &stride_y)) {
      return false;
    }
    const float alpha = 1.0f;
    for (int term = 0; term < 2; ++term) {
      const float beta = term == 1 ? 1.0f : 0.0f;
      FGNET_TRY(CublasCheck(
          cublasGemmStridedBatchedEx(
              handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(rows),
              static_cast<int>(in), &alpha, w0, CUDA_R_16BF, static_cast<int>(in), stride_w,
              xb + term * rows * in, CUDA_R_16BF, static_cast<int>(in), 0, &beta, y0, CUDA_R_32F,
              static_cast<int>(out), stride_y, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmStridedBatchedEx"));
    }
    return true;
  }
};

namespace {

Status CheckGemmSizes(const char* what, std::size_t rows, std::size_t in, std::size_t out) {
  constexpr auto kIntMax = static_cast<std::size_t>(std::numeric_limits<int>::max());
  if (rows > kIntMax || in > kIntMax || out > kIntMax) {
    return MakeError(what, ": sizes rows ", rows, ", in ", in, ", out ", out,
                     " exceed cuBLAS's int dimensions");
  }
  return Ok();
}

}  // namespace

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

std::size_t MatMulContext::device_bytes() const {
  return impl_->cublas_workspace.bytes() + impl_->x_bf16.bytes() + impl_->up.bytes() +
         impl_->dequant.bytes();
}

Status MatMulContext::MatMul(const float* x, std::size_t rows, std::size_t in,
                             const std::uint16_t* w_bf16, std::size_t out, float* y,
                             bool accumulate) {
  ++impl_->calls;
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
  if (TakesGemv(rows)) {
    return internal::LaunchGemv(x, rows, in, w_bf16, out, y, accumulate, impl_->multiprocessors,
                                impl_->stream);
  }
  FGNET_TRY(CheckGemmSizes("cuda::MatMul", rows, in, out));
  FGNET_ASSIGN_OR_RETURN(const std::uint16_t* xb, impl_->ToBF16(x, rows, in));
  return impl_->Gemm(xb, rows, in, w_bf16, out, y, accumulate);
}

Status MatMulContext::MatMul(const float* x, std::size_t rows, const QuantMatrix& w, float* y,
                             bool accumulate) {
  const QuantProduct product{&w, y};
  return MatMulMany(x, rows, std::span(&product, 1), accumulate);
}

Status MatMulContext::MatMulMany(const float* x, std::size_t rows,
                                 std::span<const QuantProduct> products, bool accumulate) {
  ++impl_->calls;
  if (rows == 0) return Ok();
  if (rows <= kMaxQuantGemvRows) {
    return internal::LaunchQuantGemv(x, rows, products, accumulate, impl_->multiprocessors,
                                     impl_->stream);
  }
  for (const QuantProduct& p : products) {
    const QuantMatrix& w = *p.w;
    if (w.rows == 0) continue;
    FGNET_TRY(CheckGemmSizes("cuda::MatMul (quantized)", rows, w.cols, w.rows));
    const std::size_t slice = std::min(w.rows, std::max<std::size_t>(1, kDequantFloats / w.cols));
    FGNET_TRY(impl_->Reserve(impl_->dequant, slice * w.cols * sizeof(float)));
    auto* wf = static_cast<float*>(impl_->dequant.data());
    const float alpha = 1.0f;
    const float beta = accumulate ? 1.0f : 0.0f;
    for (std::size_t o0 = 0; o0 < w.rows; o0 += slice) {
      const std::size_t n = std::min(slice, w.rows - o0);
      FGNET_TRY(DequantizeRows(w, o0, n, wf, impl_->stream));
      // Column-major view: y^T [n, rows] (rows of y w.rows apart) = W_slice [cols, n]^T x^T.
      FGNET_TRY(CublasCheck(
          cublasGemmEx(impl_->handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                       static_cast<int>(rows), static_cast<int>(w.cols), &alpha, wf, CUDA_R_32F,
                       static_cast<int>(w.cols), x, CUDA_R_32F, static_cast<int>(w.cols), &beta,
                       p.y + o0, CUDA_R_32F, static_cast<int>(w.rows), CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx (f32)"));
    }
  }
  return Ok();
}

Status MatMulContext::MatMulMany(const float* x, std::size_t rows, std::size_t in,
                                 std::span<const MatMulOutput> outputs, const LoraEpilogue* lora,
                                 const ResidualInput* residual) {
  ++impl_->calls;
  if (outputs.size() > kMaxOutputs) {
    return MakeError("cuda::MatMulMany: ", outputs.size(), " outputs exceed ", kMaxOutputs);
  }
  if (in % 8 != 0) {
    return MakeError("cuda::MatMulMany: the input size ", in, " is not a multiple of 8");
  }
  if (rows == 0) return Ok();
  if (in == 0) {
    for (const MatMulOutput& o : outputs) {
      if (o.out == 0) continue;
      FGNET_TRY(CudaCheck(cudaMemsetAsync(o.y, 0, rows * o.out * sizeof(float), impl_->stream),
                          "cudaMemsetAsync"));
    }
    return Ok();
  }
  // Each output on the path MatMul would take for it: the GEMV ones in one launch.
  MatMulOutput gemv[kMaxOutputs], gemm[kMaxOutputs];
  LoraEpilogue gemv_lora;
  std::size_t n_gemv = 0, n_gemm = 0;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const MatMulOutput& o = outputs[i];
    if (o.out == 0) continue;
    if (TakesGemv(rows)) {
      if (lora != nullptr) gemv_lora.sites[n_gemv] = lora->sites[i];
      gemv[n_gemv++] = o;
    } else {
      if (lora != nullptr || residual != nullptr) {
        return MakeError(
            "cuda::MatMulMany: ", lora != nullptr ? "the adapters' epilogue" : "a residual input",
            " needs the GEMV path, not ", rows, " rows of a ", o.out, " x ", in, " matrix");
      }
      FGNET_TRY(CheckGemmSizes("cuda::MatMulMany", rows, in, o.out));
      gemm[n_gemm++] = o;
    }
  }
  if (residual != nullptr && n_gemv == 0) {
    return MakeError("cuda::MatMulMany: a residual input needs a product to stage it");
  }
  if (n_gemv > 0) {
    if (lora != nullptr) gemv_lora.rows = lora->rows;
    FGNET_TRY(internal::LaunchGemvMany(x, rows, in, std::span(gemv, n_gemv), /*accumulate=*/false,
                                       impl_->multiprocessors, impl_->stream,
                                       lora != nullptr ? &gemv_lora : nullptr, residual));
  }
  if (n_gemm == 0) return Ok();
  FGNET_ASSIGN_OR_RETURN(const std::uint16_t* xb, impl_->ToBF16(x, rows, in));
  for (std::size_t i = 0; i < n_gemm; ++i) {
    if (i + 1 < n_gemm && gemm[i + 1].out == gemm[i].out) {
      FGNET_ASSIGN_OR_RETURN(const bool paired,
                             impl_->GemmPair(xb, rows, in, gemm[i].w, gemm[i + 1].w, gemm[i].out,
                                             gemm[i].y, gemm[i + 1].y));
      if (paired) {
        ++i;
        continue;
      }
    }
    FGNET_TRY(impl_->Gemm(xb, rows, in, gemm[i].w, gemm[i].out, gemm[i].y, /*accumulate=*/false));
  }
  return Ok();
}

Status MatMulContext::MatMulGeGLU(const float* x, std::size_t rows, std::size_t in,
                                  const std::uint16_t* w_gate, const std::uint16_t* w_up,
                                  std::size_t n, float* out, float* up_scratch,
                                  const LoraEpilogue* lora, const ResidualInput* residual,
                                  bool terms_only) {
  ++impl_->calls;
  if (in % 8 != 0) {
    return MakeError("cuda::MatMulGeGLU: the input size ", in, " is not a multiple of 8");
  }
  if (rows == 0 || n == 0) return Ok();
  if (in == 0) {
    // gelu_tanh(0) * 0 = 0.
    return CudaCheck(cudaMemsetAsync(out, 0, rows * n * sizeof(float), impl_->stream),
                     "cudaMemsetAsync");
  }
  if (TakesGemv(rows)) {
    return internal::LaunchGemvGeGLU(x, rows, in, w_gate, w_up, n, out, impl_->multiprocessors,
                                     impl_->stream, lora, residual);
  }
  if (lora != nullptr || residual != nullptr) {
    return MakeError(
        "cuda::MatMulGeGLU: ", lora != nullptr ? "the adapters' epilogue" : "a residual input",
        " needs the GEMV path, not ", rows, " rows of ", n, " x ", in, " matrices");
  }
  FGNET_TRY(CheckGemmSizes("cuda::MatMulGeGLU", rows, in, n));
  float* up = up_scratch;
  if (up == nullptr) {
    FGNET_TRY(impl_->Reserve(impl_->up, rows * n * sizeof(float)));
    up = static_cast<float*>(impl_->up.data());
  }
  FGNET_ASSIGN_OR_RETURN(const std::uint16_t* xb, impl_->ToBF16(x, rows, in));
  FGNET_ASSIGN_OR_RETURN(const bool paired,
                         impl_->GemmPair(xb, rows, in, w_gate, w_up, n, out, up));
  if (!paired) {
    FGNET_TRY(impl_->Gemm(xb, rows, in, w_gate, n, out, /*accumulate=*/false));
    FGNET_TRY(impl_->Gemm(xb, rows, in, w_up, n, up, /*accumulate=*/false));
  }
  // In place: each element's gate is read before its result is written. The products above have
  // read x's terms (stream order), so out's take their place, for the next call.
  std::uint16_t* terms = nullptr;
  FGNET_ASSIGN_OR_RETURN(terms, InputTerms(out, rows, n));
  return GeluTanhMulSplit(out, up, rows * n, terms_only ? nullptr : out, terms, impl_->stream);
}

Result<std::uint16_t*> MatMulContext::InputTerms(const float* x, std::size_t rows, std::size_t in) {
  FGNET_TRY(impl_->Reserve(impl_->x_bf16, 2 * rows * in * sizeof(std::uint16_t)));
  impl_->terms = Impl::Terms{x, rows, in, impl_->calls + 1};
  return static_cast<std::uint16_t*>(impl_->x_bf16.data());
}

}  // namespace fgnet::cuda
