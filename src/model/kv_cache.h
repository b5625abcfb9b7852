// The KV cache of one sequence for the CPU forward pass. Global layers hold every position up to
// the capacity; sliding-window layers hold only the last `sliding_window` positions in a ring.
// Keys are stored after q/k-norm and RoPE. Layout per layer: [slots, kv_heads, head_dim], f32.
// Thread-safety: none; one cache per sequence. Copying is explicit (Clone()).
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace fgnet {

class KVCache {
 public:
  KVCache(const Gemma3Config& config, std::int64_t capacity);
  KVCache(KVCache&&) noexcept = default;
  KVCache& operator=(KVCache&&) noexcept = default;
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;

  KVCache Clone() const;

  std::int64_t length() const { return length_; }      // positions written so far
  std::int64_t capacity() const { return capacity_; }  // most positions it can hold
  void Clear() { length_ = 0; }
  // Drops positions >= new_length (new_length <= length()). Only exact when no sliding layer
  // has overwritten a slot still needed: allowed while length() - new_length fits the window
  // slack; returns false (and changes nothing) otherwise.
  bool Truncate(std::int64_t new_length);

  // Slot count of a layer (capacity for global layers, min(window, capacity) for sliding ones).
  std::int64_t slots(std::int64_t layer) const { return slots_[static_cast<std::size_t>(layer)]; }
  // The slot that position `pos` occupies in `layer`.
  std::int64_t SlotOf(std::int64_t layer, std::int64_t pos) const {
    return pos % slots(layer);
  }
  float* keys(std::int64_t layer) { return keys_[static_cast<std::size_t>(layer)].data(); }
  float* values(std::int64_t layer) { return values_[static_cast<std::size_t>(layer)].data(); }
  const float* keys(std::int64_t layer) const { return keys_[static_cast<std::size_t>(layer)].data(); }
  const float* values(std::int64_t layer) const {
    return values_[static_cast<std::size_t>(layer)].data();
  }
  void Advance(std::int64_t n) { length_ += n; }
  std::size_t memory_bytes() const;

 private:
  KVCache() = default;

  std::int64_t capacity_ = 0;
  std::int64_t length_ = 0;
  std::int64_t row_ = 0;  // kv_heads * head_dim
  std::vector<std::int64_t> slots_;
  std::vector<std::vector<float>> keys_;
  std::vector<std::vector<float>> values_;
};

}  // namespace fgnet
