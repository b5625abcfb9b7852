#include "apps/fgnet/model_loading.h"

namespace fgnet::cli {

Result<std::unique_ptr<LoadedModel>> LoadModel(const std::string& dir, const LoadOptions& options) {
  auto loaded = std::make_unique<LoadedModel>();
  FGNET_ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(dir));
  loaded->checkpoint = std::make_unique<Checkpoint>(std::move(checkpoint));
  FGNET_ASSIGN_OR_RETURN(Gemma3Model model, Gemma3Model::Create(loaded->checkpoint->config(),
                                                                loaded->checkpoint->weights()));
  loaded->model.emplace(std::move(model));
  if (options.tokenizer) {
    const std::string path = loaded->checkpoint->tokenizer_path();
    if (path.empty()) {
      return MakeError(dir, ": no tokenizer.json in the checkpoint directory");
    }
    FGNET_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Load(path));
    loaded->tokenizer.emplace(std::move(tokenizer));
    FGNET_ASSIGN_OR_RETURN(loaded->generation, LoadGenerationConfig(dir));
  }
  return loaded;
}

}  // namespace fgnet::cli
