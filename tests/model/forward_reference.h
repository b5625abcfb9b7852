// Test support for the forward pass: random Gemma 3 checkpoints held in memory, and a naive,
// obviously-correct forward pass in double precision to compare Gemma3Model against.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/weights.h"
#include "tensor/dtype.h"

namespace fgnet::testing {

// A Gemma3Weights whose tensors live in buffers owned by this object (move-only: views point
// into the buffers).
class RandomCheckpoint {
 public:
  RandomCheckpoint(const Gemma3Config& config, DType dtype, std::uint64_t seed);
  RandomCheckpoint(RandomCheckpoint&&) = default;
  RandomCheckpoint(const RandomCheckpoint&) = delete;
  RandomCheckpoint& operator=(const RandomCheckpoint&) = delete;

  const Gemma3Config& config() const { return config_; }
  const Gemma3Weights& weights() const { return weights_; }
  Gemma3Weights& mutable_weights() { return weights_; }
  // Element i of a tensor, widened to double.
  static double At(const TensorView& t, std::size_t i);

 private:
  TensorView Make(std::vector<std::int64_t> shape, double scale, double offset);

  Gemma3Config config_;
  DType dtype_;
  std::uint64_t seed_;
  std::uint64_t stream_ = 0;
  std::vector<std::vector<std::uint8_t>> storage_;
  Gemma3Weights weights_;
};

// n token ids drawn uniformly from [0, vocab) by a Philox stream seeded with `seed`.
std::vector<std::int32_t> RandomTokens(std::size_t n, std::int64_t vocab, std::uint64_t seed);

// Logits [tokens.size(), vocab] of every position, computed from scratch in double precision,
// following transformers' Gemma 3 (f32 RoPE tables, f32 embedding scale).
std::vector<double> ReferenceForward(const Gemma3Config& config, const Gemma3Weights& weights,
                                     std::span<const std::int32_t> tokens);

}  // namespace fgnet::testing
