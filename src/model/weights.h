// The tensors of a Gemma 3 text model, as views into mmapped checkpoint files.
// Linear weights are [out_features, in_features], row-major, in F32, BF16, F16 or a quantized
// type (rows of blocks, see tensor/dtype.h). Norm weights are float tensors of shape [dim]: the
// stored `w` of RMSNorm's (1 + w) factor, or, where `norms_include_one` is set (GGUF files, which
// store the factor itself), 1 + w.
#pragma once

#include <vector>

#include "tensor/tensor.h"

namespace fgnet {

struct Gemma3LayerWeights {
  TensorView input_layernorm;             // [hidden]
  TensorView q_proj;                      // [heads * head_dim, hidden]
  TensorView k_proj;                      // [kv_heads * head_dim, hidden]
  TensorView v_proj;                      // [kv_heads * head_dim, hidden]
  TensorView o_proj;                      // [hidden, heads * head_dim]
  TensorView q_norm;                      // [head_dim]
  TensorView k_norm;                      // [head_dim]
  TensorView post_attention_layernorm;    // [hidden]
  TensorView pre_feedforward_layernorm;   // [hidden]
  TensorView gate_proj;                   // [intermediate, hidden]
  TensorView up_proj;                     // [intermediate, hidden]
  TensorView down_proj;                   // [hidden, intermediate]
  TensorView post_feedforward_layernorm;  // [hidden]
};

struct Gemma3Weights {
  TensorView embed_tokens;  // [vocab, hidden]
  TensorView norm;          // [hidden], the final norm
  TensorView lm_head;       // [vocab, hidden]; the same view as embed_tokens when tied
  std::vector<Gemma3LayerWeights> layers;
  bool norms_include_one = false;
};

}  // namespace fgnet
