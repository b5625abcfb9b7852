// Loading what a model command needs: the model in any format (a Hugging Face checkpoint
// directory, an RDRR package or a GGUF file; see model/model_files.h), the forward pass, the
// --adapter adapters (registered by content hash) and optionally the tokenizer and
// generation_config.json.
// Thread-safety: a LoadedModel is immutable after loading.
#pragma once

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "apps/fgnet/commands.h"
#include "engine/adapter_registry.h"
#include "engine/generation_config.h"
#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "tokenizer/tokenizer.h"
#include "util/status.h"

namespace fgnet::cli {

struct LoadedModel {
  // Held by pointer: the model keeps references into the checkpoint's config and weights.
  std::unique_ptr<Checkpoint> checkpoint;
  std::optional<Gemma3Model> model;  // on the CPU, for the commands that run only there
  // The forward pass on LoadOptions::device when that is not the CPU.
  std::unique_ptr<Model> device_model;
  std::optional<Tokenizer> tokenizer;
  GenerationConfig generation;
  std::unique_ptr<AdapterRegistry> registry;
  // The --adapter values, in order, as the adapter set of the command's sequences (the adapters
  // are owned by the registry).
  std::vector<AdapterUse> adapter_set;

  // What the engine runs: the device model, else the CPU one.
  const Model& engine_model() const {
    return device_model != nullptr ? *device_model : static_cast<const Model&>(*model);
  }
};

struct LoadOptions {
  bool tokenizer = false;  // require and load tokenizer.json (and generation_config.json)
  std::vector<AdapterArg> adapters;
  Device device = Device::Cpu();  // where engine_model() runs
};

// Warns (one line each) of activated adapters whose invocation the prompt lacks.
void WarnInactiveAdapters(const std::vector<const LoraAdapter*>& inactive, std::ostream& err);

Result<std::unique_ptr<LoadedModel>> LoadModel(const std::string& path, const LoadOptions& options);

// A routing adapter (--router-adapter PATH[:SCALE]) for the embedding router: loaded for
// `base`; activated adapters are refused (a routing adapter applies to every position).
struct RoutingAdapter {
  LoraAdapter adapter;
  float scale = 1.0f;
};
Result<RoutingAdapter> LoadRoutingAdapter(std::string_view text, const Checkpoint& base);

// The ids that end every engine request: generation_config.json's and config.json's eos ids,
// <eos> and <end_of_turn> (the model must have its tokenizer).
std::vector<std::int32_t> EngineStopIds(const LoadedModel& loaded);

}  // namespace fgnet::cli
