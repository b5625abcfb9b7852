// The request and result lines of `fgnet batch` (JSON Lines).
//
// Request line (one JSON object; every field but the prompt is optional):
//   {"id": string | integer,                        echoed in the result line
//    "prompt": string                               text, encoded as is (write <bos> and turns)
//    | "messages": [{"role", "content"}, ...]       chat, rendered with the chat template
//    | "prompt_ids": [integer, ...],                token ids, used verbatim
//    "tools": [tool, ...],                          with "messages": FunctionGemma declarations
//    "adapters": [{"name": string, "scale": number} | "name", ...],
//    "max_tokens": integer >= 1,
//    "temperature": number >= 0, "top_p": number in (0, 1], "top_k": integer >= 0,
//    "min_p": number in [0, 1], "repetition_penalty": number > 0, "seed": integer >= 0,
//    "stop": string | [string, ...],
//    "json_schema": object | boolean, "regex": string, "constrain_tools": boolean,
//    "priority": integer}
// Exactly one of prompt, messages and prompt_ids; at most one of json_schema, regex and
// constrain_tools (true). Unknown fields are errors.
//
// Defaults (BatchDefaults): sampling from generation_config.json (a "temperature" > 0 samples
// with it, 0 is greedy); max_tokens from generation_config.json's max_new_tokens, else 256; an
// adapter's scale from the command line's --adapter NAME=PATH:SCALE, else 1; seed 0.
// <start_function_response> stops requests that declare tools or whose messages call tools.
//
// Result line, in input order:
//   {"id", "ids": [...], "text", "finish_reason", "usage": {"prompt_tokens",
//    "completion_tokens", "cached_tokens"}, "timings": {"queue_ms", "time_to_first_token_ms",
//    "total_ms", "time_per_output_token_ms"}}
//   plus "preemptions" when > 0, "prefix_approximate" when true, and with tools
//   "function_calls" (or "function_call_error" when the output does not parse);
// or an error line {"id", "error": "line N: ..."}. "id" is present when the request line had a
// readable one.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <istream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "engine/generation_config.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::cli {

inline constexpr std::int64_t kBatchDefaultMaxTokens = 256;

struct BatchDefaults {
  GenerationConfig generation;  // sampling and max_new_tokens
  // Scale of an adapter a request names without one (the --adapter NAME=PATH:SCALE values).
  std::map<std::string, float, std::less<>> adapter_scales;
  // Stop ids added to requests that use function calling (<start_function_response>).
  std::vector<std::int32_t> function_stop_ids;
  // When > 0, prompt_ids must be below it.
  std::int64_t vocab_size = 0;
};

// One non-blank input line.
struct BatchLine {
  std::int64_t line_number = 0;   // 1-based, blank lines counted
  std::optional<Json> id;         // when the line has a readable "id"
  std::optional<Error> error;     // the line is unusable: "line N: ..."
  Request request;                // when !error
  bool function_calling = false;  // tools given or tool calls in messages
};

// The field names a request line may have.
const std::vector<std::string>& BatchRequestFields();

// Parses one line (not blank) into an engine request; errors start with "line N: " and name
// the field.
BatchLine ParseBatchLine(std::string_view text, std::int64_t line_number,
                         const BatchDefaults& defaults);

// Every non-blank line of `in` (a line of only whitespace is skipped but counted).
std::vector<BatchLine> ParseBatchRequests(std::istream& in, const BatchDefaults& defaults);

// Result lines keep their keys in the order written ("id" first).
using OrderedJson = nlohmann::ordered_json;

// The result line of a finished request: its completion, or {"id", "error"} when the
// completion failed (the message prefixed with "line N: ").
OrderedJson BatchResultJson(const BatchLine& line, const Completion& completion);

// The error line of an unusable request line.
OrderedJson BatchErrorJson(const BatchLine& line);

}  // namespace fgnet::cli
