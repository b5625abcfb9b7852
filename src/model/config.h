// Gemma 3 text-model configuration, read from a Hugging Face config.json.
// Accepted forms: transformers 4.x (rope_theta, rope_local_base_freq, sliding_window_pattern),
// transformers 5.x (rope_parameters, layer_types), and a multimodal Gemma 3 config whose text
// model sits under "text_config". Class defaults of transformers are NOT the 270M values: every
// value that matters must be in the file or derivable from it.
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
  std::int64_t sliding_window = 0;
  std::vector<LayerType> layer_types;  // one per layer

  double rope_theta_global = 1'000'000.0;  // full-attention layers
  double rope_theta_local = 10'000.0;      // sliding-window layers
  // Linear RoPE scaling factor per layer type (1 = none). Larger Gemma 3 models scale global layers.
  double rope_scaling_global = 1.0;
  double rope_scaling_local = 1.0;

  double query_pre_attn_scalar = 0.0;  // attention scale is query_pre_attn_scalar^-0.5
  double rms_norm_eps = 1e-6;
  std::optional<double> final_logit_softcapping;
  std::optional<double> attn_logit_softcapping;
  std::string hidden_activation = "gelu_pytorch_tanh";
  bool tie_word_embeddings = true;

  std::int64_t bos_token_id = 2;
  std::vector<std::int64_t> eos_token_ids = {1};
  std::int64_t pad_token_id = 0;

  std::int64_t q_dim() const { return num_attention_heads * head_dim; }
  std::int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  bool is_sliding(std::int64_t layer) const {
    return layer_types[static_cast<std::size_t>(layer)] == LayerType::kSliding;
  }
};

// Parses and validates a parsed config.json. `source` names the file in error messages; every
// error names the offending key.
Result<Gemma3Config> ParseGemma3Config(const Json& json, std::string_view source);

// Reads and parses `path` (a config.json).
Result<Gemma3Config> LoadGemma3Config(const std::string& path);

// Serialises a config in the transformers 5.x form (used by `fgnet synth` and converters).
Json Gemma3ConfigToJson(const Gemma3Config& config);

}  // namespace fgnet
