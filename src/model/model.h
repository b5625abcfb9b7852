// The forward pass of a Gemma 3 model on one device: the interface the serving engine, the
// benchmarks and the commands run models through, whatever backend computes them.
//
// Gemma3Model (model/gemma3_model.h) implements it on the CPU; the CUDA backend
// (device/cuda_model.h) on an NVIDIA GPU. CreateModel (device/create_model.h) picks one for a
// Device. Both read and write a sequence's keys and values through the SequenceKV it is given;
// the CUDA backend only accepts paged sequences (kv/paged_sequence.h) whose block pool lives in
// memory from its own AllocateKV.
//
// Thread-safety: ForwardBatch may be called from one thread at a time per model on a GPU (the
// device's stream and working memory are the model's); the CPU model allows concurrent calls with
// distinct scratches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "backend/device.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/lora.h"
#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet {

enum class LogitsMode : std::uint8_t {
  kNone,  // only fill the KV cache (e.g. a prefix)
  kLast,  // logits of the last token only: [vocab]
  kAll,   // logits of every token: [n_tokens, vocab]
  // Only the id of the last token's largest logit (the lowest id among equals; -1 when no logit
  // is a number above -inf), into *token: greedy decoding without the logits leaving the device.
  kArgmax,
  // The kTopLogits largest logits of the last token, for sampling with top-k <= step.top_k
  // without the whole row leaving the device: *top gets them ordered by logit, descending, then
  // by id (NaN counts as -inf). When the top_k-th largest value's ties might reach past them
  // (TopIsComplete is false), *top is emptied and the row's logits land in *logits instead.
  kTop,
};

// One entry of a kTop result.
struct TopLogit {
  std::int32_t id;
  float logit;
};
inline constexpr std::size_t kTopLogits = 64;

// True if `top` (a kTop result over a whole row) holds every alive logit (> -inf) whose value
// divided by `temperature` is at least the k-th largest such value, 1 <= k < kTopLogits: sampling
// with top-k k at that temperature needs no other logit.
bool TopIsComplete(std::span<const TopLogit> top, std::int32_t k, float temperature);
// The kTop result of a whole row of logits (the CPU's way, and the reference for the GPU's).
void SelectTopLogits(std::span<const float> logits, std::vector<TopLogit>* top);

// What happens to the last token's logits of a kArgmax or kTop step before the selection, so
// that greedy and top-k decoding under a grammar or a repetition penalty need not bring the row
// to the host: first every token `allowed` does not hold becomes -inf, then each id of `penalized`
// gets the repetition penalty (logit < 0 ? logit * penalty : logit / penalty, as the sampler's
// stage 1). The row a kTop step falls back to (*logits) is the filtered one.
struct LogitsFilter {
  // A bitset over the vocabulary (token t is allowed when bit t % 64 of word t / 64 is set):
  // exactly LogitsFilterWords(vocab) words, or empty for every token allowed.
  std::span<const std::uint64_t> allowed;
  // Distinct token ids; ids outside the vocabulary are ignored.
  std::span<const std::int32_t> penalized;
  float repetition_penalty = 1.0f;  // finite, > 0; 1 disables the penalty

  bool empty() const {
    return allowed.empty() && (penalized.empty() || repetition_penalty == 1.0f);
  }
};
inline constexpr std::size_t LogitsFilterWords(std::int64_t vocab) {
  return (static_cast<std::size_t>(vocab) + 63) / 64;
}
// A logit under the repetition penalty (transformers' rule).
inline float RepetitionPenalized(float logit, float penalty) {
  return logit < 0.0f ? logit * penalty : logit / penalty;
}
// Applies `filter` to one row of logits (the CPU's way, and the reference for the GPU's).
void ApplyLogitsFilter(std::span<float> logits, const LogitsFilter& filter);

// One adapter of a sequence's adapter set.
struct AdapterUse {
  const LoraAdapter* adapter = nullptr;  // must outlive the call
  float scale = 1.0f;                    // multiplies the adapter's own per-module scales
  // First position (counted from the start of the sequence) the adapter applies to: 0 for a
  // plain LoRA, the invocation's start for an activated LoRA (see AloraStart).
  std::int64_t start = 0;
};

// One sequence's share of a ForwardBatch: like the arguments of Forward.
struct SequenceStep {
  std::span<const std::int32_t> tokens;
  SequenceKV* kv = nullptr;
  LogitsMode mode = LogitsMode::kLast;
  std::vector<float>* logits = nullptr;
  std::span<const AdapterUse> adapters;
  std::int32_t* token = nullptr;         // kArgmax's result
  std::vector<TopLogit>* top = nullptr;  // kTop's result
  std::int32_t top_k = 0;                // kTop: the sampler's top-k, in [1, kTopLogits)
  float top_temperature = 1.0f;          // kTop: the sampler's temperature (> 0)
  LogitsFilter filter;                   // kArgmax and kTop only
};

// The sizes and constants of the forward pass a config implies, as every backend uses them.
struct ForwardDims {
  std::size_t hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0;
  std::size_t q_dim = 0, kv_dim = 0, vocab = 0;
  float eps = 0.0f;
  float embed_scale = 0.0f;    // the f32 sqrt(hidden_size)
  float final_softcap = 0.0f;  // 0: none

  static ForwardDims Of(const Gemma3Config& config);
};

class Model {
 public:
  virtual ~Model() = default;

  virtual const Gemma3Config& config() const = 0;
  virtual Device device() const = 0;
  // The device's name for logs and reports ("cpu", "cuda:0 (NVIDIA H100 80GB HBM3)").
  virtual std::string device_name() const = 0;

  // Bytes of device memory the model holds apart from KV blocks: weights, resident adapters and
  // working buffers on a GPU; 0 on the CPU (whose weights are the checkpoint's mapped file).
  virtual std::size_t device_bytes() const { return 0; }
  // Passes replayed from captured work graphs (CUDA graphs) so far; 0 where the backend has none.
  virtual std::uint64_t graph_launches() const { return 0; }

  // Whether the model's KV blocks may hold keys and values of `dtype` (kv::KVLayout::dtype): f32 on
  // every backend, bf16 on GPUs as well.
  virtual bool SupportsKVType(DType dtype) const { return dtype == DType::kF32; }

  // `bytes` of memory for KV blocks on the model's device. Errors: out of device memory.
  virtual Result<std::unique_ptr<Memory>> AllocateKV(std::size_t bytes) const = 0;

  // Several sequences in one forward; see Gemma3Model::ForwardBatch for the contract, which every
  // backend keeps: each step behaves as a forward of that sequence alone, logits land in host
  // vectors, and on error no cache is changed. `pool` and `scratch` are the CPU's working threads
  // and memory (a GPU backend only uses the scratch's bookkeeping).
  virtual Status ForwardBatch(std::span<const SequenceStep> steps, ThreadPool& pool,
                              ForwardScratch& scratch) const = 0;
};

// What every backend's ForwardBatch shares, so that they agree on errors and on how a batch is cut:
//
// ValidateSteps checks every step before any cache is touched (token ids, capacity, logits
// buffers, adapters, a cache in `device`'s memory made for `config`, no cache used twice); the
// messages name the sequence ("Forward: sequence 2: ...") when there are several.
Status ValidateSteps(const Gemma3Config& config, Device device,
                     std::span<const SequenceStep> steps);
// RunInPasses sizes each step's logits vector ([vocab] for kLast, [n, vocab] for kAll, cleared
// for kNone) and calls `run` for each pass of at most `max_rows` rows, filled with the steps'
// tokens in order (a step may span several passes), stopping at the first error. A kArgmax or
// kTop step's segment carries its `token` or `top` (and `top_k`); with `host_select` its logits go
// to a scratch row (kArgmax) or to *logits (kTop) and the filter and the selection are applied here
// after the passes, else the backend does both and fills *token or *top itself (and the segment's
// logits pointer is null).
Status RunInPasses(std::int64_t vocab, std::span<const SequenceStep> steps, std::size_t max_rows,
                   ForwardScratch& scratch, bool host_select,
                   const std::function<Status(std::span<const PassSegment>)>& run);

}  // namespace fgnet
