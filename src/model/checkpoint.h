// A Gemma 3 model: its config, its weights bound to Gemma3Weights, and the storage they view.
// Formats: a Hugging Face checkpoint directory (config.json, model.safetensors or a sharded
// model.safetensors.index.json, and optionally tokenizer.json, tokenizer_config.json and
// generation_config.json), an RDRR package (model/rdrr.h) or a GGUF file (model/gguf_model.h).
// Opening maps the weights (zero-copy), binds them and checks them against the config: a config
// that disagrees with the tensors is an error naming the key, its value, the tensor and its
// shape. Every format's reader ends in FromTensors(), so binding and its checks are shared.
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
#include "model/tensor_index.h"
#include "model/weights.h"
#include "util/status.h"

namespace fgnet {

// Which reader produced a checkpoint.
enum class CheckpointFormat : std::uint8_t { kHuggingFace, kRdrr, kGguf, kInMemory };
std::string_view CheckpointFormatName(CheckpointFormat f);  // "huggingface", "rdrr", ...

class Checkpoint {
 public:
  // A Hugging Face checkpoint directory. Errors: a missing directory, config.json or weights
  // (naming the path), any config or safetensors error, and any disagreement between the config
  // and the tensors.
  static Result<Checkpoint> Open(const std::string& dir);

  // What a format reader hands over. Tensors are named as in a Hugging Face checkpoint (one of
  // the three prefixes above); `storage` owns whatever the views point into.
  struct Parts {
    CheckpointFormat format = CheckpointFormat::kHuggingFace;
    std::string path;         // the directory or file opened
    std::string config_path;  // where the config came from, for error messages
    Gemma3Config config;
    TensorIndex tensors;
    std::shared_ptr<const void> storage;
    std::string side_dir;  // where tokenizer.json etc. are looked for; empty: nowhere
    bool norms_include_one = false;
    // The content hash, where the format records it (see content_hash()); empty: computed.
    std::string content_hash;
    // "none", or the quantization the weights were converted with ("q8_0", "q4_k", ...).
    std::string quantization = "none";
  };
  // Binds and checks the tensors (see the comment at the top).
  static Result<Checkpoint> FromTensors(Parts parts);

  Checkpoint(Checkpoint&&) noexcept = default;
  Checkpoint& operator=(Checkpoint&&) noexcept = default;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  CheckpointFormat format() const { return format_; }
  // The directory or file the checkpoint was opened from.
  const std::string& dir() const { return dir_; }
  const std::string& config_path() const { return config_path_; }
  // Where the side files (tokenizer.json, ...) are looked for; empty: nowhere.
  const std::string& side_dir() const { return side_dir_; }
  const Gemma3Config& config() const { return config_; }
  const Gemma3Weights& weights() const { return weights_; }
  // Every stored tensor, for `fgnet inspect` and the writers.
  const TensorIndex& tensors() const { return tensors_; }
  // The prefix the text model was found under ("model.", "language_model.model." or
  // "model.language_model.").
  const std::string& tensor_prefix() const { return prefix_; }
  // Names of the tensors not bound to Gemma3Weights (a vision tower, an ignored tied lm_head).
  const std::vector<std::string>& unused_tensors() const { return unused_; }
  // Parameters of the text model as bound (a tied output matrix counted once).
  std::uint64_t num_model_parameters() const;
  // SHA-256 (hex) identifying the model: over its config and every bound weight (canonical name,
  // dtype, shape, bytes) in a fixed order, so the same weights hash the same in any format. A
  // quantized conversion keeps the hash of the model it was made from. Recorded by RDRR
  // packages; otherwise computed on the first call (which reads every weight once).
  const std::string& content_hash() const;
  const std::string& quantization() const { return quantization_; }
  // What the views point into (shared with checkpoints derived from this one).
  const std::shared_ptr<const void>& storage() const { return storage_; }

  // Paths of the optional side files; empty when the file is absent.
  std::string tokenizer_path() const;
  std::string tokenizer_config_path() const;
  std::string generation_config_path() const;

 private:
  Checkpoint() = default;
  std::string SideFile(const char* name) const;

  CheckpointFormat format_ = CheckpointFormat::kHuggingFace;
  std::string dir_;
  std::string side_dir_;
  std::string config_path_;
  std::string prefix_;
  Gemma3Config config_;
  TensorIndex tensors_;
  std::shared_ptr<const void> storage_;
  Gemma3Weights weights_;
  std::vector<std::string> unused_;
  std::string quantization_ = "none";
  struct HashCache;
  std::shared_ptr<HashCache> hash_;
};

}  // namespace fgnet
