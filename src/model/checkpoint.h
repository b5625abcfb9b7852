// A Gemma 3 checkpoint directory as Hugging Face ships it: config.json, model.safetensors or a
// sharded model.safetensors.index.json, and optionally tokenizer.json, tokenizer_config.json and
// generation_config.json. Opening maps the weights (zero-copy), binds them to Gemma3Weights and
// checks them against the config: a config that disagrees with the tensors is an error naming
// the key, its value, the tensor and its shape.
//
// Tensor names: the text model's tensors are read under one of three prefixes, whichever holds
// embed_tokens.weight: "model." (Gemma3ForCausalLM), "language_model.model." (multimodal
// checkpoints as transformers writes them) or "model.language_model." (the in-memory names of
// recent transformers, which some tools save as they are). lm_head.weight
// ("language_model.lm_head.weight" under the first multimodal prefix) is required when
// tie_word_embeddings is false and ignored otherwise. Tensors outside the text model (a vision
// tower) are left unbound; a layer index at or past num_hidden_layers is an error. Thread-safety:
// immutable after Open(); move-only (the views stay valid across moves).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "util/status.h"

namespace fgnet {

class Checkpoint {
 public:
  // Errors: a missing directory, config.json or weights (naming the path), any config or
  // safetensors error, and any disagreement between the config and the tensors.
  static Result<Checkpoint> Open(const std::string& dir);

  Checkpoint(Checkpoint&&) noexcept = default;
  Checkpoint& operator=(Checkpoint&&) noexcept = default;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& config_path() const { return config_path_; }
  const Gemma3Config& config() const { return config_; }
  const Gemma3Weights& weights() const { return weights_; }
  // Every tensor of every shard, for `fgnet inspect`.
  const SafetensorsSet& tensors() const { return *tensors_; }
  // The prefix the text model was found under ("model.", "language_model.model." or
  // "model.language_model.").
  const std::string& tensor_prefix() const { return prefix_; }
  // Names of the tensors not bound to Gemma3Weights (a vision tower, an ignored tied lm_head).
  const std::vector<std::string>& unused_tensors() const { return unused_; }
  // Parameters of the text model as bound (a tied output matrix counted once).
  std::uint64_t num_model_parameters() const;

  // Paths of the optional side files; empty when the file is absent.
  std::string tokenizer_path() const;
  std::string tokenizer_config_path() const;
  std::string generation_config_path() const;

 private:
  Checkpoint() = default;
  std::string SideFile(const char* name) const;

  std::string dir_;
  std::string config_path_;
  std::string prefix_;
  Gemma3Config config_;
  std::unique_ptr<SafetensorsSet> tensors_;
  Gemma3Weights weights_;
  std::vector<std::string> unused_;
};

}  // namespace fgnet
