// A small random Gemma 3 model for the kv tests: 6 layers (4 sliding with a window of 5, 2
// global), so layer groups of 2, several blocks per sequence, and sliding trimming all occur.
#pragma once

#include <cstdint>
#include <vector>

#include "forward_reference.h"
#include "model/gemma3_model.h"
#include "util/rng.h"

namespace fgnet::testing {

inline Gemma3Config KvTestConfig() {
  Gemma3Config c;
  c.vocab_size = 53;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_hidden_layers = 6;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.max_position_embeddings = 4096;
  c.sliding_window = 5;
  c.layer_types = {LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal,
                   LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal};
  c.query_pre_attn_scalar = 8.0;
  c.rms_norm_eps = 1e-6;
  return c;
}

inline std::vector<std::int32_t> RandomIds(std::size_t n, std::int64_t vocab, std::uint64_t seed) {
  return RandomTokens(n, vocab, seed);
}

}  // namespace fgnet::testing
