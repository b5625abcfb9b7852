// The token generation loop, written against LogitsSource so that it does not depend on the
// model layer: a Gemma 3 model with its KV cache implements LogitsSource elsewhere.
//
//   prompt -> Append(prompt) -> logits -> sample -> stop id? -> on_token(id) -> Append({id}) ...
//
// Thread-safety: Generate() uses only its arguments; a LogitsSource is one sequence and must not
// be shared by concurrent Generate() calls.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "util/status.h"

namespace fgnet {

// A sequence that can be extended by tokens and yields the logits of its last token.
class LogitsSource {
 public:
  virtual ~LogitsSource() = default;
  // Appends `tokens` (at least one) to the sequence and writes the logits of the last of them
  // into `last_logits`, resized to vocab_size(). Errors (e.g. context full) stop generation.
  virtual Status Append(std::span<const std::int32_t> tokens, std::vector<float>* last_logits) = 0;
  virtual std::int64_t vocab_size() const = 0;
};

enum class FinishReason {
  kStop,       // a stop id was sampled
  kLength,     // max_new_tokens reached
  kCancelled,  // on_token returned false
};

std::string_view FinishReasonName(FinishReason reason);  // "stop", "length", "cancelled"

struct GenerationResult {
  // Generated ids, without the stop id. Every id here has been passed to on_token and
  // appended to the source except the last one (its logits were never needed).
  std::vector<std::int32_t> ids;
  FinishReason finish_reason = FinishReason::kLength;
  // The stop id that ended generation (finish_reason == kStop). It is NOT appended to the
  // source: to continue the sequence (e.g. after <start_function_response>), append it first.
  std::optional<std::int32_t> stop_id;
};

// Called with each generated id that is not a stop id; return false to cancel.
using TokenCallback = std::function<bool(std::int32_t id)>;

struct GenerateRequest {
  std::span<const std::int32_t> prompt;    // must not be empty
  SamplingParams params;                   // validated; seed makes runs reproducible
  std::span<const std::int32_t> stop_ids;  // e.g. <end_of_turn>, <eos>, <start_function_response>
  std::int64_t max_new_tokens = 0;         // >= 0; 0 returns at once (nothing is appended)
  TokenCallback on_token;                  // optional
};

// Runs the loop. Errors: invalid params or max_new_tokens, empty prompt, a logits vector whose
// size is not vocab_size(), no finite logit, and the source's own errors (with the step number).
Result<GenerationResult> Generate(LogitsSource& source, const GenerateRequest& request);

}  // namespace fgnet
