// Loading what a model command needs from a checkpoint directory: the checkpoint (mmapped), the
// forward pass, and optionally the tokenizer and generation_config.json.
// Thread-safety: a LoadedModel is immutable after loading.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "engine/generation_config.h"
#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "tokenizer/tokenizer.h"
#include "util/status.h"

namespace fgnet::cli {

struct LoadedModel {
  // Held by pointer: the model keeps references into the checkpoint's config and weights.
  std::unique_ptr<Checkpoint> checkpoint;
  std::optional<Gemma3Model> model;
  std::optional<Tokenizer> tokenizer;
  GenerationConfig generation;
};

struct LoadOptions {
  bool tokenizer = false;  // require and load tokenizer.json (and generation_config.json)
};

Result<std::unique_ptr<LoadedModel>> LoadModel(const std::string& dir, const LoadOptions& options);

}  // namespace fgnet::cli
