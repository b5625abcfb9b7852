// Gemma 3 text-model configuration, read from a Hugging Face config.json.
// Accepted forms: transformers 4.x (rope_theta, rope_local_base_freq, sliding_window_pattern,
// rope_scaling), transformers 5.x (rope_parameters keyed by layer type, layer_types), and a
// multimodal Gemma 3 config (model_type "gemma3") whose text model sits under "text_config".
//
// Absent keys take the defaults of transformers' Gemma3TextConfig, which are NOT the 270M values
// (vocab 262208, hidden 2304, intermediate 9216, 26 layers, 8 heads, 4 kv heads, head_dim 256,
// max_position_embeddings 131072, sliding_window 4096, query_pre_attn_scalar 256, rope_theta 1e6
// global / 1e4 local, eps 1e-6, ids bos 2 / eos 1 / pad 0, tied embeddings). Resolution follows
// transformers 5.x (checked against it by tests/fixtures/model_io/config_cases.json):
//  - layer_types absent: layer i is full attention iff (i + 1) % sliding_window_pattern == 0
//    (pattern default 6; the "_sliding_window_pattern" key that transformers writes is ignored).
//  - RoPE per layer type: rope_parameters[type] (or {"rope_type": "default"}), with a legacy
//    rope_scaling merged over the full-attention entry; theta falls back to rope_theta (global)
//    or rope_local_base_freq (local), then to the defaults. rope_type comes from "rope_type", else
//    "type". Only "default" and "linear" (with "factor") are supported.
//  - head_dim is its own key (never hidden_size / heads); the attention scale is
//    query_pre_attn_scalar^-0.5.
//  - hidden_activation governs the MLP; hidden_act is ignored, as in transformers.
//  - Multimodal: text keys come from text_config only; tie_word_embeddings from the top level
//    (transformers ties Gemma3ForConditionalGeneration by the top-level key alone); token ids from
//    the top level when present there, else from text_config.
// Rejected, with an error naming the key: other model types or architectures, non-positive or
// non-integer sizes, heads not a multiple of kv heads, layer_types of the wrong length or with
// unknown values, rope types other than default/linear, a legacy "type" that transformers 4.x and
// 5.x would read differently, use_bidirectional_attention, attention_bias, activations other than
// gelu_pytorch_tanh, non-positive softcapping values, a null sliding_window with sliding layers.
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/json.h"
#include "util/status.h"

namespace fgnet {

enum class LayerType : std::uint8_t { kSliding, kGlobal };

struct Gemma3Config {
  std::string model_type = "gemma3_text";
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t max_position_embeddings = 0;
  std::int64_t sliding_window = 0;     // 0 only when no layer slides and the key was null
  std::vector<LayerType> layer_types;  // one per layer

  double rope_theta_global = 1'000'000.0;  // full-attention layers
  double rope_theta_local = 10'000.0;      // sliding-window layers
  // Linear RoPE scaling factor per layer type (1 = none). Larger Gemma 3 models scale global
  // layers.
  double rope_scaling_global = 1.0;
  double rope_scaling_local = 1.0;

  double query_pre_attn_scalar = 0.0;  // attention scale is query_pre_attn_scalar^-0.5
  double rms_norm_eps = 1e-6;
  std::optional<double> final_logit_softcapping;
  std::optional<double> attn_logit_softcapping;
  std::string hidden_activation = "gelu_pytorch_tanh";
  bool tie_word_embeddings = true;

  std::int64_t bos_token_id = 2;                  // -1 when null in the file
  std::vector<std::int64_t> eos_token_ids = {1};  // empty when null in the file
  std::int64_t pad_token_id = 0;                  // -1 when null in the file

  // Informational: "architectures" of the file, "dtype" (5.x) or "torch_dtype" (4.x) ("" when
  // absent), and whether the text model was nested under text_config.
  std::vector<std::string> architectures;
  std::string torch_dtype;
  bool multimodal = false;

  std::int64_t q_dim() const { return num_attention_heads * head_dim; }
  std::int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  bool is_sliding(std::int64_t layer) const {
    return layer_types[static_cast<std::size_t>(layer)] == LayerType::kSliding;
  }

  bool operator==(const Gemma3Config&) const = default;
};

// Parses and validates a parsed config.json. `source` names the file in error messages; every
// error names the offending key (with its JSON path, e.g. "text_config.hidden_size").
Result<Gemma3Config> ParseGemma3Config(const Json& json, std::string_view source);

// Reads and parses `path` (a config.json).
Result<Gemma3Config> LoadGemma3Config(const std::string& path);

// Serialises a config in the transformers 5.x form of a text-only model (model_type gemma3_text,
// architectures [Gemma3ForCausalLM], rope_parameters, layer_types), used by `fgnet synth` and
// converters. ParseGemma3Config reads it back to an equal config, except `architectures` (read
// back as [Gemma3ForCausalLM]) and `multimodal` (false).
Json Gemma3ConfigToJson(const Gemma3Config& config);

}  // namespace fgnet
