#include "apps/fgnet/model_loading.h"

#include <algorithm>

#include "device/create_model.h"
#include "model/model_files.h"
#include "tokenizer/function_call.h"

namespace fgnet::cli {

void WarnInactiveAdapters(const std::vector<const LoraAdapter*>& inactive, std::ostream& err) {
  for (const LoraAdapter* a : inactive) {
    err << "note: adapter '" << a->name
        << "' is an activated LoRA whose invocation sequence is not in the prompt; it is not "
           "applied\n";
  }
}

Result<std::unique_ptr<LoadedModel>> LoadModel(const std::string& path,
                                               const LoadOptions& options) {
  auto loaded = std::make_unique<LoadedModel>();
  FGNET_ASSIGN_OR_RETURN(Checkpoint checkpoint, OpenModel(path));
  loaded->checkpoint = std::make_unique<Checkpoint>(std::move(checkpoint));
  const Checkpoint& ck = *loaded->checkpoint;
  FGNET_ASSIGN_OR_RETURN(Gemma3Model model, Gemma3Model::Create(ck.config(), ck.weights()));
  loaded->model.emplace(std::move(model));
  if (!options.device.is_cpu()) {
    FGNET_ASSIGN_OR_RETURN(loaded->device_model,
                           CreateModel(ck.config(), ck.weights(), options.device));
  }
  loaded->registry = std::make_unique<AdapterRegistry>(ck.config());
  for (const AdapterArg& arg : options.adapters) {
    FGNET_ASSIGN_OR_RETURN(LoraAdapter adapter, LoadAdapter(arg.path, ck));
    FGNET_ASSIGN_OR_RETURN(auto shared, loaded->registry->Add(std::move(adapter), arg.name));
    loaded->adapter_set.push_back({shared.get(), arg.scale, 0});
  }
  if (options.tokenizer) {
    const std::string tokenizer_path = ck.tokenizer_path();
    if (tokenizer_path.empty()) {
      return MakeError(path, ": no tokenizer.json ",
                       ck.side_dir().empty() ? std::string("(the model format carries none)")
                                             : "in " + ck.side_dir());
    }
    FGNET_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Load(tokenizer_path));
    loaded->tokenizer.emplace(std::move(tokenizer));
    if (!ck.side_dir().empty()) {
      FGNET_ASSIGN_OR_RETURN(loaded->generation, LoadGenerationConfig(ck.side_dir()));
    }
  }
  return loaded;
}

std::vector<std::int32_t> EngineStopIds(const LoadedModel& loaded) {
  std::vector<std::int32_t> stops = loaded.generation.eos_token_ids;
  for (std::int64_t id : loaded.checkpoint->config().eos_token_ids) {
    stops.push_back(static_cast<std::int32_t>(id));
  }
  for (std::string_view token : {kEosToken, kEndOfTurn}) {
    if (auto id = loaded.tokenizer->TokenId(token)) stops.push_back(*id);
  }
  std::sort(stops.begin(), stops.end());
  stops.erase(std::unique(stops.begin(), stops.end()), stops.end());
  return stops;
}

Result<RoutingAdapter> LoadRoutingAdapter(std::string_view text, const Checkpoint& base) {
  FGNET_ASSIGN_OR_RETURN(const AdapterArg arg, ParseAdapterArg(text));
  FGNET_ASSIGN_OR_RETURN(LoraAdapter adapter, LoadAdapter(arg.path, base));
  if (adapter.is_activated()) {
    return MakeError("--router-adapter ", arg.path,
                     ": an activated LoRA cannot be a routing adapter (it applies to every "
                     "position)");
  }
  return RoutingAdapter{std::move(adapter), arg.scale};
}

}  // namespace fgnet::cli
