// FunctionGemma's function-call syntax, as text: how values are written inside
//   <start_function_call>call:NAME{key:value,...}<end_function_call>
//   <start_function_response>response:NAME{key:value,...}<end_function_response>
// and the parser that turns generated text back into JSON.
//
// Value syntax (the chat template's `format_argument` macro):
//   string  -> <escape>text<escape>   text verbatim (any bytes except the sequence "<escape>")
//   integer -> 42, -7                 as Python prints it
//   float   -> 0.5, 2.0, 1e-05, 1e+16 as Python's repr prints it (shortest round trip)
//   boolean -> true, false;  null -> null
//   object  -> {key:value,...}        keys in Jinja `dictsort` order (ASCII case-insensitive,
//                                      ties by byte order); keys bare, or <escape>key<escape>
//                                      with `escape_keys` (the form used inside declarations)
//   array   -> [value,...]
// Nothing else is written: no quotes, no spaces.
//
// Thread-safety: every function here is pure.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/json.h"
#include "util/status.h"

namespace fgnet {

// Control tokens of FunctionGemma (ids 46..52 in its tokenizer.json) and of Gemma turns.
inline constexpr std::string_view kBosToken = "<bos>";
inline constexpr std::string_view kEosToken = "<eos>";
inline constexpr std::string_view kStartOfTurn = "<start_of_turn>";
inline constexpr std::string_view kEndOfTurn = "<end_of_turn>";
inline constexpr std::string_view kStartFunctionDeclaration = "<start_function_declaration>";
inline constexpr std::string_view kEndFunctionDeclaration = "<end_function_declaration>";
inline constexpr std::string_view kStartFunctionCall = "<start_function_call>";
inline constexpr std::string_view kEndFunctionCall = "<end_function_call>";
inline constexpr std::string_view kStartFunctionResponse = "<start_function_response>";
inline constexpr std::string_view kEndFunctionResponse = "<end_function_response>";
inline constexpr std::string_view kEscape = "<escape>";

// Objects and arrays nested deeper than this are rejected (by the writer and the parser) so
// that hostile input cannot exhaust the stack.
inline constexpr int kMaxFunctionValueDepth = 64;

// One call: `arguments` is a JSON object.
struct FunctionCall {
  std::string name;
  Json arguments = Json::object();
};

// Writes `value` in the syntax above. Errors: a string or key containing "<escape>", a
// non-finite number, a bare key that could not be read back (see IsBareKeyWritable), nesting
// deeper than kMaxFunctionValueDepth, binary values.
Result<std::string> FormatFunctionValue(const Json& value, bool escape_keys);

// True if `key` can be written without <escape> and parsed back: non-empty, no leading or
// trailing whitespace, none of the characters : , { } [ ] <.
bool IsBareKeyWritable(std::string_view key);

// "<start_function_call>call:NAME{k:v,...}<end_function_call>" with bare keys, as the chat
// template renders an assistant message's tool call. Errors: empty or unparseable name,
// arguments not an object, and FormatFunctionValue's errors.
Result<std::string> RenderFunctionCall(const FunctionCall& call);

// The text an application appends after the model stopped on <start_function_response>:
// "response:NAME{k:v,...}<end_function_response>". A non-object `response` is written as
// {value:...}, as the chat template does for a string tool result.
Result<std::string> RenderFunctionResponse(std::string_view name, const Json& response);

// Generated text split into its function calls and the remaining plain text.
struct ParsedModelOutput {
  std::vector<FunctionCall> calls;  // in order of appearance (parallel calls)
  std::string text;                 // everything outside the call blocks, concatenated
};

// Parses every <start_function_call>call:NAME{...}<end_function_call> block of `output`.
// Keys may be bare or <escape>-wrapped; ASCII whitespace between tokens is tolerated; the
// Python spellings True, False and None are accepted for true, false and null. Integers become
// JSON integers (unsigned or float when they do not fit int64), anything with a '.' or an
// exponent a float. Errors name the byte offset and the problem, e.g.
//   "offset 37: function call 'get_weather': expected ':' after key 'city'";
// a stray <end_function_call>, a truncated block, duplicate keys and excessive nesting are
// errors.
Result<ParsedModelOutput> ParseModelOutput(std::string_view output);

// Parses one "{k:v,...}" argument object (the whole of `text`, surrounding whitespace allowed).
Result<Json> ParseFunctionArguments(std::string_view text);

// [{"name": ..., "arguments": {...}}, ...]
Json FunctionCallsToJson(const std::vector<FunctionCall>& calls);

}  // namespace fgnet
