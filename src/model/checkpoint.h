// A Gemma 3 checkpoint directory as Hugging Face ships it: config.json, model.safetensors or a
// sharded model.safetensors.index.json, and optionally tokenizer.json, tokenizer_config.json and
// generation_config.json. Opening maps the weights (zero-copy), binds them to Gemma3Weights and
// checks them against the config: a config that disagrees with the tensors is an error naming
// both the key and the tensor.
// Thread-safety: immutable after Open(); move-only (the views stay valid across moves).
#pragma once

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
  static Result<Checkpoint> Open(const std::string& dir);

  Checkpoint(Checkpoint&&) noexcept = default;
  Checkpoint& operator=(Checkpoint&&) noexcept = default;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::string& dir() const { return dir_; }
  const Gemma3Config& config() const { return config_; }
  const Gemma3Weights& weights() const { return weights_; }
  // Every tensor of every shard, for `fgnet inspect`.
  const SafetensorsSet& tensors() const { return *tensors_; }

  // Paths of the optional side files; empty when the file is absent.
  std::string tokenizer_path() const;
  std::string tokenizer_config_path() const;
  std::string generation_config_path() const;

 private:
  Checkpoint() = default;

  std::string dir_;
  Gemma3Config config_;
  std::unique_ptr<SafetensorsSet> tensors_;
  Gemma3Weights weights_;
};

}  // namespace fgnet
