#include "engine/model_session.h"

#include <utility>

namespace fgnet {

std::vector<AdapterUse> ResolveAdapterSet(std::span<const AdapterUse> adapters,
                                          std::span<const std::int32_t> prompt,
                                          std::int64_t first_position,
                                          std::vector<const LoraAdapter*>* inactive) {
  std::vector<AdapterUse> active;
  for (AdapterUse use : adapters) {
    if (use.adapter != nullptr && use.adapter->is_activated()) {
      const auto start = AloraStart(prompt, use.adapter->config.alora_invocation_tokens);
      if (!start) {
        if (inactive != nullptr) inactive->push_back(use.adapter);
        continue;
      }
      use.start = first_position + *start;
    }
    active.push_back(use);
  }
  return active;
}

ModelSession::ModelSession(const Gemma3Model& model, ThreadPool& pool, std::int64_t max_tokens,
                           std::vector<AdapterUse> adapters)
    : model_(&model),
      pool_(&pool),
      cache_(model.NewKVCache(max_tokens)),
      adapters_(std::move(adapters)) {}

Status ModelSession::Append(std::span<const std::int32_t> tokens, std::vector<float>* last_logits) {
  if (!started_) {
    // Resolve where activated adapters start, from the prompt.
    adapters_ = ResolveAdapterSet(adapters_, tokens, cache_.length(), &inactive_);
    started_ = true;
  }
  return model_->Forward(tokens, cache_, *pool_, LogitsMode::kLast, last_logits, adapters_);
}

}  // namespace fgnet
