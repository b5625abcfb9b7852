// The Gemma 3 forward pass on an NVIDIA GPU: the Model interface (model/model.h) over the CUDA
// kernels of backend/cuda.
//
// Weights are uploaded once: float ones as BF16 (F32 and F16 checkpoints are rounded to BF16 on
// upload), block-quantized ones (Q8_0, Q4_0, Q4_K, Q6_K) repacked losslessly into the layouts of
// backend/cuda/quant_matmul.h, with the f32 norm factors and RoPE frequencies. Keys and values live
// in paged blocks in GPU memory (AllocateKV), in the block layout of kv/block_pool.h (f32 or
// bf16 elements); each pass
// writes its fresh keys into their blocks and attends over the blocks, so prefix sharing and
// copy-on-write work as on the CPU. Activations are f32. LoRA adapters are uploaded on first use
// (f32, the module scale folded into B) and stay resident; a pass applies every adapter's rows at
// every site with the grouped shrink/expand kernels, or, in passes of up to 16 rows on BF16
// weights, with one shrink per input and the expand in the products' epilogue. Logits of the rows
// that want them are copied to the host; greedy rows (LogitsMode::kArgmax) send only their ids,
// top-k rows (kTop) their 64 largest logits, both after the step's LogitsFilter.
//
// Decode passes (one token per sequence, up to 256 sequences) and passes of at most 64 rows (a
// prompt's remainder after a cached prefix) run as CUDA graphs: the pass's description (ids,
// positions, block tables, adapter rows, filters) is uploaded to fixed addresses, and the whole
// forward, from the embedding gather to the argmax and its copy to the host, replays as one graph
// launch. A graph is captured the second time a pass shape (rows, sequences, positions rounded up
// to 256, logit modes, adapter groups per site) is seen, and recaptured when a buffer it uses has
// moved. FGNET_CUDA_GRAPHS=0 turns graphs off.
//
// Against the CPU backend the results differ by floating-point order and by the two-term BF16
// split of activations on the cuBLAS path (backend/cuda/matmul.h): within 1e-3 of the logit scale
// in the parity tests (2.4e-5 measured against transformers' float32 logits).
// Thread-safety: as model/model.h; calls are serialised by the model.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "model/model.h"
#include "model/weights.h"
#include "util/status.h"

namespace fgnet {

class CudaModel final : public Model {
 public:
  // Uploads `weights` to GPU `device_index`. Errors: no such GPU, out of memory, a weight dtype
  // the GPU path does not read, and every error of Gemma3Model::Create (the same checks run).
  static Result<std::unique_ptr<CudaModel>> Create(const Gemma3Config& config,
                                                   const Gemma3Weights& weights, int device_index);
  ~CudaModel() override;
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const Gemma3Config& config() const override;
  Device device() const override;
  std::string device_name() const override;
  // f32 and bf16 keys and values.
  bool SupportsKVType(DType dtype) const override;
  Result<std::unique_ptr<Memory>> AllocateKV(std::size_t bytes) const override;
  // Every step's KV must be a kv::PagedSequence whose pool memory came from AllocateKV.
  Status ForwardBatch(std::span<const SequenceStep> steps, ThreadPool& pool,
                      ForwardScratch& scratch) const override;

  // Bytes of GPU memory held for weights, resident adapters and working buffers (cuBLAS's workspace
  // included; not KV).
  std::size_t device_bytes() const override;
  std::uint64_t graph_launches() const override;

 private:
  struct Impl;
  explicit CudaModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fgnet
