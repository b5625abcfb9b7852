// The keys and values of one sequence, as the forward pass reads and writes them. Two stores
// implement it: KVCache (contiguous per-layer buffers with a ring on sliding layers, for one
// sequence run directly) and kv::PagedSequence (fixed-size blocks from a shared pool, for the
// serving engine). Keys are stored after q/k-norm and RoPE; one position of one layer is a row
// of kv_heads * head_dim floats.
//
// The forward pass of a chunk at positions length() .. length() + n - 1 asks, per layer, for the
// spans of the cached positions its queries may see, attends to them plus its own fresh keys,
// writes the fresh keys with Write(), and after the last layer calls Advance(n).
// Thread-safety: none; one forward pass at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/device.h"
#include "model/config.h"
#include "tensor/dtype.h"

namespace fgnet {

class SequenceKV {
 public:
  virtual ~SequenceKV() = default;

  // Positions written so far.
  virtual std::int64_t length() const = 0;
  // Positions that can be held now: a forward of n tokens needs n <= capacity() - length().
  virtual std::int64_t capacity() const = 0;
  // True if the store was made for this configuration (layers, their kinds, row size, window).
  virtual bool Fits(const Gemma3Config& config) const = 0;
  // The device whose memory holds the keys and values. AppendSpans and Write are for stores in
  // host memory; a GPU backend reads and writes its stores' blocks itself.
  virtual Device device() const { return Device::Cpu(); }
  // The element type of the stored keys and values: kF32, or kBF16 in paged stores made for a GPU
  // backend (AppendSpans and Write are for f32 stores).
  virtual DType element_type() const { return DType::kF32; }
  // Appends to `out`, in increasing position order, spans covering positions [begin, length())
  // of `layer`. Every such position must be held (sliding layers hold the last window).
  virtual void AppendSpans(std::int64_t layer, std::int64_t begin,
                           std::vector<cpu::KVSpan>* out) const = 0;
  // Stores keys and values ([count, row] each) of positions first_pos .. first_pos + count - 1
  // (first_pos == length()); positions a sliding layer will never show again may be skipped.
  virtual void Write(std::int64_t layer, std::int64_t first_pos, std::size_t count,
                     const float* keys, const float* values) = 0;
  // Marks n more positions as written (after every layer has been written).
  virtual void Advance(std::int64_t n) = 0;
};

// True if a layer-kind/shape description matches `config` (shared by the stores' Fits()).
bool KVShapeFits(const Gemma3Config& config, std::int64_t row_size, std::int64_t window,
                 const std::vector<bool>& sliding);

}  // namespace fgnet
