// The Gemma 3 forward pass on CPU. See docs/architecture.md and shared/reference/gemma3.md.
// Activations are f32; weights are read in their stored dtype (F32, BF16, F16, or a quantized
// type: Q8_0, Q4_0, Q4_K, Q6_K) and widened exactly inside the kernels (quantized blocks
// decoded in registers, never a whole matrix). Norm weights are prepared once as f32 (1 + w).
// Forward processes a chunk of any size in passes of at most 512 tokens; each pass attends to the
// cached positions plus its own fresh keys, so chunked prefill is exact. Working memory lives in
// the KVCache (KVCache::scratch()) and is reused, so steady-state decoding allocates nothing.
//
// Adapters: each sequence of a forward carries its own adapter set (AdapterUse: none, one, or a
// weighted mix of LoRA adapters), applied unmerged as y = W x + sum_i s_i * B_i (A_i x) at every
// adapted projection; ForwardBatch runs several sequences, with different adapter sets, in one
// pass whose matmuls they share (see model/lora_apply.h for how rows are grouped by adapter).
// Thread-safety: a Gemma3Model is immutable after construction and may be shared by threads,
// each with its own KVCache (and ThreadPool).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/weights.h"
#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet {

class Gemma3Model final : public Model {
 public:
  // `config` and `weights` must outlive the model (they view a Checkpoint).
  static Result<Gemma3Model> Create(const Gemma3Config& config, const Gemma3Weights& weights);

  Gemma3Model(Gemma3Model&&) noexcept;
  Gemma3Model& operator=(Gemma3Model&&) noexcept;
  ~Gemma3Model() override;

  // Model:
  const Gemma3Config& config() const override;
  Device device() const override { return Device::Cpu(); }
  std::string device_name() const override { return "cpu"; }
  Result<std::unique_ptr<Memory>> AllocateKV(std::size_t bytes) const override;

  // A cache able to hold `max_tokens` positions (sliding layers keep only their window).
  KVCache NewKVCache(std::int64_t max_tokens) const;

  // Runs `tokens` at positions kv.length() .. kv.length() + n - 1, appends their keys and values
  // to `kv`, and writes logits as `mode` asks into `logits` (resized: [vocab] for kLast,
  // [n, vocab] for kAll; cleared for kNone, where it may be null). Errors, which leave `kv`
  // unchanged: token id out of range, cache full, a cache made for another configuration,
  // kLast with no tokens, a cache in another device's memory. `adapters`: the sequence's adapter
  // set (errors: a null adapter, one made for another layer count, a non-finite scale, a negative
  // start).
  Status Forward(std::span<const std::int32_t> tokens, KVCache& kv, ThreadPool& pool,
                 LogitsMode mode, std::vector<float>* logits,
                 std::span<const AdapterUse> adapters = {}) const;

  // Several sequences in one forward: every step behaves exactly as Forward on its own, but the
  // rows of all steps share each matmul (passes of at most 512 rows). Each step needs its own
  // KV store (a KVCache or a paged sequence). `scratch` holds the working memory (e.g. one kept by
  // the caller across steps). On error no cache is changed.
  Status ForwardBatch(std::span<const SequenceStep> steps, ThreadPool& pool,
                      ForwardScratch& scratch) const override;

  // The hidden state of every token of `tokens` (run from position 0 in a fresh cache) at
  // `index`, numbered as transformers' output_hidden_states: 0 the scaled embeddings, i in
  // 1 .. L-1 the output of decoder layer i-1, L (= num_hidden_layers) the final-normed output
  // that the output matrix sees; a negative index counts from the end (-1 = L). Layers after
  // the one needed are not run. `out` is resized to [n, hidden_size]. Errors: no tokens, an
  // index outside [-(L+1), L], and those of Forward (token ids, adapters).
  Status HiddenStates(std::span<const std::int32_t> tokens, std::int64_t index, ThreadPool& pool,
                      std::vector<float>* out, std::span<const AdapterUse> adapters = {}) const;

 private:
  struct Impl;
  explicit Gemma3Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The f32 factor (1 + w) of a Gemma RMSNorm weight `t` ([dim], F32, BF16 or F16), computed as
// transformers does (1.0 + w.float()), or read as it is when the file stores the factor
// (`includes_one`). Errors name the tensor `name`.
Result<std::vector<float>> GemmaNormFactor(const TensorView& t, const std::string& name,
                                           std::int64_t dim, bool includes_one);

}  // namespace fgnet
