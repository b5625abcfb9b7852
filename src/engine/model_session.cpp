#include "engine/model_session.h"

#include <utility>

namespace fgnet {

ModelSession::ModelSession(const Gemma3Model& model, ThreadPool& pool, std::int64_t max_tokens,
                           std::vector<AdapterUse> adapters)
    : model_(&model),
      pool_(&pool),
      cache_(model.NewKVCache(max_tokens)),
      adapters_(std::move(adapters)) {}

Status ModelSession::Append(std::span<const std::int32_t> tokens, std::vector<float>* last_logits) {
  if (!started_) {
    // Resolve where activated adapters start, from the prompt.
    std::vector<AdapterUse> active;
    for (AdapterUse use : adapters_) {
      if (use.adapter != nullptr && use.adapter->is_activated()) {
        const auto start = AloraStart(tokens, use.adapter->config.alora_invocation_tokens);
        if (!start) {
          inactive_.push_back(use.adapter);
          continue;
        }
        use.start = cache_.length() + *start;
      }
      active.push_back(use);
    }
    adapters_ = std::move(active);
    started_ = true;
  }
  return model_->Forward(tokens, cache_, *pool_, LogitsMode::kLast, last_logits, adapters_);
}

}  // namespace fgnet
