// The KV cache of one sequence for the CPU forward pass. Global layers hold every position up to
// the capacity; sliding-window layers hold only the most recent positions in a ring of
// min(capacity, sliding_window + sliding_slack) slots. Keys are stored after q/k-norm and RoPE.
// Layout per layer: [slots, kv_heads, head_dim], f32.
//
// A chunk of tokens attends to the cached positions and to its own fresh keys/values before
// those are written here, so a ring of `sliding_window` slots is exact for chunks of any size.
//
// The cache also owns the working memory of the forward pass for its sequence (scratch()),
// which is why one cache must not be used by two Forward calls at once.
// Thread-safety: none; one cache per sequence. Copying is explicit (Clone()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cpu/aligned.h"
#include "backend/cpu/workspace.h"
#include "model/config.h"
#include "model/lora_apply.h"
#include "model/sequence_kv.h"

namespace fgnet {

struct SequenceStep;

// One sequence's rows in a pass of Gemma3Model::ForwardBatch.
struct PassSegment {
  const SequenceStep* step;
  std::size_t offset;      // of the segment's first token in step->tokens
  std::size_t count;       // tokens
  std::size_t row;         // first row in the pass
  std::int64_t first_pos;  // position of the first token
  // Rows [logits_begin, count) of the segment get logits, written from `logits` on.
  std::size_t logits_begin;
  float* logits;
  std::int32_t* token = nullptr;         // a kArgmax step's result (see RunInPasses)
  const SequenceStep* select = nullptr;  // a kTop step, whose top the backend fills
};

// Activation buffers and kernel workspace of Gemma3Model::Forward. Not part of a cache's state:
// contents never outlive one Forward call and Clone() does not copy them. Buffers only grow.
struct ForwardScratch {
  cpu::AlignedVector<float> activations;
  cpu::Workspace workspace;
  std::vector<std::int32_t> ids;  // the token ids of a pass
  LoraPlan lora;
  std::vector<float> logits;  // logits of a pass when they go to several destinations
  std::vector<PassSegment> segments;
  std::vector<std::size_t> logits_from;
  std::vector<cpu::KVSpan> spans;                 // of one segment's attention
  std::vector<std::vector<float>> argmax_logits;  // per step, for kArgmax on the host
};

class KVCache final : public SequenceKV {
 public:
  // `capacity` >= 1 positions. `sliding_slack` extra ring slots on sliding layers allow
  // Truncate() to go back further (see there).
  KVCache(const Gemma3Config& config, std::int64_t capacity, std::int64_t sliding_slack = 0);
  KVCache(KVCache&&) noexcept = default;
  KVCache& operator=(KVCache&&) noexcept = default;
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;

  // A copy of the cached positions (not of the scratch memory).
  KVCache Clone() const;

  std::int64_t length() const override { return length_; }      // positions written so far
  std::int64_t capacity() const override { return capacity_; }  // most positions it can hold
  bool Fits(const Gemma3Config& config) const override;
  void AppendSpans(std::int64_t layer, std::int64_t begin,
                   std::vector<cpu::KVSpan>* out) const override;
  void Write(std::int64_t layer, std::int64_t first_pos, std::size_t count, const float* keys,
             const float* values) override;
  void Clear() { length_ = 0; }
  // Drops positions >= new_length (new_length <= length()). Only exact while every sliding ring
  // still holds the keys a query at new_length sees, i.e. while
  // max(0, length() - slots) <= max(0, new_length - sliding_window + 1) for each sliding layer
  // (always true before a ring wraps; with sliding_slack s, true for going back up to s + 1
  // positions). Returns false and changes nothing otherwise.
  bool Truncate(std::int64_t new_length);

  std::int64_t num_layers() const { return static_cast<std::int64_t>(slots_.size()); }
  std::int64_t row_size() const { return row_; }  // kv_heads * head_dim
  std::int64_t sliding_window() const { return window_; }
  bool is_sliding(std::int64_t layer) const { return sliding_[static_cast<std::size_t>(layer)]; }
  // Slot count of a layer (capacity for global layers, the ring size for sliding ones).
  std::int64_t slots(std::int64_t layer) const { return slots_[static_cast<std::size_t>(layer)]; }
  // The slot that position `pos` occupies in `layer`.
  std::int64_t SlotOf(std::int64_t layer, std::int64_t pos) const { return pos % slots(layer); }
  // [slots(layer), row_size()] each.
  float* keys(std::int64_t layer) { return keys_[static_cast<std::size_t>(layer)].data(); }
  float* values(std::int64_t layer) { return values_[static_cast<std::size_t>(layer)].data(); }
  const float* keys(std::int64_t layer) const {
    return keys_[static_cast<std::size_t>(layer)].data();
  }
  const float* values(std::int64_t layer) const {
    return values_[static_cast<std::size_t>(layer)].data();
  }
  void Advance(std::int64_t n) override { length_ += n; }
  // Bytes of keys and values (not counting the scratch).
  std::size_t memory_bytes() const;

  ForwardScratch& scratch();

 private:
  KVCache() = default;

  std::int64_t capacity_ = 0;
  std::int64_t length_ = 0;
  std::int64_t row_ = 0;  // kv_heads * head_dim
  std::int64_t window_ = 0;
  std::vector<std::int64_t> slots_;
  std::vector<bool> sliding_;
  std::vector<cpu::AlignedVector<float>> keys_;
  std::vector<cpu::AlignedVector<float>> values_;
  std::unique_ptr<ForwardScratch> scratch_;
};

}  // namespace fgnet
