#include "engine/model_session.h"

#include <algorithm>
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

namespace {

// Positions per KV block of a session: long spans for the CPU's attention, while a sliding layer
// still drops what leaves its window a block at a time.
constexpr std::int64_t kSessionBlockSize = 64;

}  // namespace

ModelSession::ModelSession(const Model& model, ThreadPool& pool, std::int64_t max_tokens,
                           std::vector<AdapterUse> adapters, DType kv_dtype)
    : model_(&model),
      pool_(&pool),
      max_tokens_(std::max<std::int64_t>(max_tokens, 1)),
      kv_dtype_(kv_dtype),
      adapters_(std::move(adapters)) {}

ModelSession::~ModelSession() {
  seq_.reset();  // returns its blocks before the pool goes
}

Status ModelSession::Append(std::span<const std::int32_t> tokens, std::vector<float>* last_logits) {
  return Run(tokens, LogitsMode::kLast, last_logits);
}

Status ModelSession::AppendAll(std::span<const std::int32_t> tokens, std::vector<float>* logits) {
  return Run(tokens, LogitsMode::kAll, logits);
}

Status ModelSession::Run(std::span<const std::int32_t> tokens, LogitsMode mode,
                         std::vector<float>* logits) {
  if (!started_) {
    // The KV: every block of a global group, and of a sliding group what its window needs.
    if (!model_->SupportsKVType(kv_dtype_)) {
      return MakeError("KV cache: ", DTypeName(kv_dtype_), " keys and values are not supported on ",
                       model_->device_name(), " (F32 only)");
    }
    const kv::KVLayout layout =
        kv::KVLayout::ForConfig(model_->config(), kSessionBlockSize, kv_dtype_);
    const std::int64_t b = layout.block_size;
    const std::int64_t all = (max_tokens_ + b - 1) / b;
    std::int64_t blocks = 0;
    for (bool sliding : layout.group_sliding)
      blocks += sliding ? std::min(all, (layout.window - 1) / b + 2) : all;
    FGNET_ASSIGN_OR_RETURN(
        std::unique_ptr<Memory> memory,
        model_->AllocateKV(layout.block_bytes() * static_cast<std::size_t>(blocks)));
    blocks_ = std::make_unique<kv::BlockPool>(layout, blocks, std::move(memory));
    seq_.emplace(*blocks_);
    // Resolve where activated adapters start, from the prompt.
    adapters_ = ResolveAdapterSet(adapters_, tokens, 0, &inactive_);
    started_ = true;
  }
  const auto n = static_cast<std::int64_t>(tokens.size());
  if (seq_->length() + n > max_tokens_) {
    return MakeError("Forward: KV cache full: ", seq_->length(), " cached positions + ", n,
                     " tokens exceed its capacity of ", max_tokens_);
  }
  if (!seq_->Reserve(n)) return MakeError("Forward: the session's KV blocks ran out");
  const SequenceStep step{tokens, &*seq_, mode, logits, adapters_};
  const Status status =
      model_->ForwardBatch(std::span<const SequenceStep>(&step, 1), *pool_, scratch_);
  seq_->Trim();
  return status;
}

}  // namespace fgnet
