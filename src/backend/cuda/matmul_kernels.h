// The kernel launchers behind MatMulContext (backend/cuda/matmul.h), defined in matmul.cu and
// mma_gemv.cu; not part of the backend's interface.
// Thread-safety: reentrant; launches on one stream are ordered by the stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include "backend/cuda/matmul.h"
#include "backend/cuda/ops.h"
#include "util/status.h"

namespace fgnet::cuda::internal {

// Rows one BF16 GEMV launch handles (MatMulContext::kMaxGemvRows); the quantized GEMV
// (quant_matmul.h) takes up to kQuantGemvMaxRows (MatMulContext::kMaxQuantGemvRows).
inline constexpr std::size_t kGemvMaxRows = 16;
inline constexpr std::size_t kQuantGemvMaxRows = 8;

// Outputs one GEMV launch computes (MatMulContext::kMaxOutputs).
inline constexpr int kGemvMaxOutputs = 4;

// Largest size (input, output, their sum) the BF16 GEMV and LoRA kernels take: they index with int.
inline constexpr std::size_t kMaxDim =
    static_cast<std::size_t>(std::numeric_limits<int>::max() / 16);

// Checks what every GEMV launch requires: rows <= max_rows, `in` a positive multiple of 8 and not
// too large.
Status CheckGemvShape(const char* what, std::size_t rows, std::size_t in,
                      std::size_t max_rows = kGemvMaxRows);

// CheckGemvShape, then the rows whose f32 activations fit in shared memory together.
Result<std::size_t> GemvRowBatch(const char* what, std::size_t rows, std::size_t in,
                                 std::size_t max_rows = kGemvMaxRows);

// The shared memory a block of the current device may take (opting in past 48 KiB).
Result<std::size_t> MaxSharedMemoryPerBlock();

// Opts kernel `fn` in, once per device, for all the dynamic shared memory a block may take beside
// its static shared memory; returns that limit.
Result<std::size_t> OptInSharedMemory(const void* fn);

// The grid of a kernel `fn` of 256 threads a block with `smem` bytes of dynamic shared memory
// that wants `blocks` blocks: at most as many as are resident at once. A kernel with dynamic
// shared memory is opted in, once per device, for all that a block may take beside its static
// shared memory; a launch wanting more is an error.
Result<unsigned> ResidentGrid(const void* fn, std::size_t smem, std::size_t blocks,
                              int multiprocessors);

// ResidentGrid for a GEMV-style kernel over `tiles` warp tiles: one block per 8 tiles.
Result<unsigned> GemvGrid(const void* fn, std::size_t smem, std::size_t tiles, int multiprocessors);

// y [rows, out] = x [rows, in] W^T (or +=) for rows <= kGemvMaxRows; `in` a multiple of 8, W
// 16-byte aligned. Fewer than MatMulContext::kMinTensorCoreRows rows: a warp computes 1 or 4 W
// rows at a time in f32 FMAs; more: the tensor-core kernels (LaunchMmaGemvMany).
// `multiprocessors` sizes the grid. Rows whose activations do not fit in shared memory together are
// split over several launches.
Status LaunchGemv(const float* x, std::size_t rows, std::size_t in, const std::uint16_t* w_bf16,
                  std::size_t out, float* y, bool accumulate, int multiprocessors, Stream stream);

// y_i [rows, out_i] = x [rows, in] W_i^T (or +=) for up to kGemvMaxOutputs outputs in one launch
// per batch of rows (as LaunchGemv; outputs with out_i = 0 are skipped). Each y_i equals what
// LaunchGemv computes for W_i alone, bit for bit.
// With `lora`, output i gets the adapters' updates of lora->sites[i] (see LoraEpilogue).
Status LaunchGemvMany(const float* x, std::size_t rows, std::size_t in,
                      std::span<const MatMulContext::MatMulOutput> outputs, bool accumulate,
                      int multiprocessors, Stream stream, const LoraEpilogue* lora = nullptr,
                      const ResidualInput* residual = nullptr);

// out [rows, n] = gelu_tanh(x W_gate^T) * (x W_up^T) for rows <= kGemvMaxRows, one launch per batch
// of rows (as LaunchGemv); the two products equal LaunchGemv's bit for bit.
// With `lora`, the gate and up products get the updates of lora->sites[0] and [1].
// With `residual` (then x null), both kernels stage that residual input's rows as their input.
Status LaunchGemvGeGLU(const float* x, std::size_t rows, std::size_t in,
                       const std::uint16_t* w_gate, const std::uint16_t* w_up, std::size_t n,
                       float* out, int multiprocessors, Stream stream,
                       const LoraEpilogue* lora = nullptr, const ResidualInput* residual = nullptr);

// LaunchGemvMany and LaunchGemvGeGLU on tensor cores (mma_gemv.cu), for arguments those have
// checked: x as two BF16 terms, f32 accumulation, a row's results independent of the rows beside
// it. A residual input is staged in shared memory, in launches of as many rows as fit.
Status LaunchMmaGemvMany(const float* x, std::size_t rows, std::size_t in,
                         std::span<const MatMulContext::MatMulOutput> outputs, bool accumulate,
                         int multiprocessors, Stream stream, const LoraEpilogue* lora,
                         const ResidualInput* residual);
Status LaunchMmaGeGLU(const float* x, std::size_t rows, std::size_t in, const std::uint16_t* w_gate,
                      const std::uint16_t* w_up, std::size_t n, float* out, int multiprocessors,
                      Stream stream, const LoraEpilogue* lora, const ResidualInput* residual);

// hi[i] = bf16(x[i]) and lo[i] = bf16(x[i] - hi[i]) (round to nearest even) for i < n.
Status LaunchToBF16(const float* x, std::size_t n, std::uint16_t* hi, std::uint16_t* lo,
                    Stream stream);

}  // namespace fgnet::cuda::internal
