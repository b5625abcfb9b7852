#include "engine/model_session.h"

namespace fgnet {

ModelSession::ModelSession(const Gemma3Model& model, ThreadPool& pool, std::int64_t max_tokens)
    : model_(&model), pool_(&pool), cache_(model.NewKVCache(max_tokens)) {}

Status ModelSession::Append(std::span<const std::int32_t> tokens, std::vector<float>* last_logits) {
  return model_->Forward(tokens, cache_, *pool_, LogitsMode::kLast, last_logits);
}

}  // namespace fgnet
