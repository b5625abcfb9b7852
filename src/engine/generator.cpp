#include "engine/generator.h"

#include <algorithm>
#include <string>

namespace fgnet {

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

Result<GenerationResult> Generate(LogitsSource& source, const GenerateRequest& request) {
  const Status valid = request.params.Validate();
  if (!valid.ok()) return valid.error().WithContext("sampling parameters");
  if (request.max_new_tokens < 0) {
    return MakeError("max_new_tokens ", request.max_new_tokens, " must be >= 0");
  }
  if (request.prompt.empty()) return MakeError("the prompt has no tokens");
  GenerationResult result;
  if (request.max_new_tokens == 0) return result;

  const std::int64_t vocab = source.vocab_size();
  std::vector<float> logits;
  const auto append = [&](std::span<const std::int32_t> tokens, std::int64_t step) -> Status {
    const Status st = source.Append(tokens, &logits);
    if (!st.ok()) {
      return st.error().WithContext(step < 0 ? std::string("prompt")
                                             : "generation step " + std::to_string(step));
    }
    if (static_cast<std::int64_t>(logits.size()) != vocab) {
      return MakeError("logits have ", logits.size(), " entries, expected the vocab size ", vocab);
    }
    return Ok();
  };

  Sampler sampler(request.params);
  sampler.AddHistory(request.prompt);
  FGNET_TRY(append(request.prompt, -1));
  for (std::int64_t step = 0; step < request.max_new_tokens; ++step) {
    const Result<std::int32_t> sampled = sampler.Sample(logits);
    if (!sampled.ok()) {
      return sampled.error().WithContext("generation step " + std::to_string(step));
    }
    const std::int32_t id = *sampled;
    if (std::find(request.stop_ids.begin(), request.stop_ids.end(), id) != request.stop_ids.end()) {
      result.finish_reason = FinishReason::kStop;
      result.stop_id = id;
      return result;
    }
    result.ids.push_back(id);
    if (request.on_token && !request.on_token(id)) {
      result.finish_reason = FinishReason::kCancelled;
      return result;
    }
    if (step + 1 == request.max_new_tokens) break;
    sampler.Accept(id);
    FGNET_TRY(append(std::span<const std::int32_t>(&id, 1), step));
  }
  result.finish_reason = FinishReason::kLength;
  return result;
}

}  // namespace fgnet
