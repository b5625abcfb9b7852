// FunctionGemma's tokenizer is Gemma 3's with seven unused tokens renamed to its function-calling
// control tokens. This derives a FunctionGemma tokenizer.json from the Gemma 3 one (for tests and
// synthetic checkpoints). Thread-safety: pure functions and constants.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.h"

namespace fgnet {

struct FunctionGemmaControlToken {
  std::int32_t id;
  std::string_view gemma3_name;  // the token at this id in Gemma 3
  std::string_view name;         // the token at this id in FunctionGemma
};

inline constexpr std::array<FunctionGemmaControlToken, 7> kFunctionGemmaControlTokens = {{
    {46, "<unused40>", "<start_function_declaration>"},
    {47, "<unused41>", "<end_function_declaration>"},
    {48, "<unused42>", "<start_function_call>"},
    {49, "<unused43>", "<end_function_call>"},
    {50, "<unused44>", "<start_function_response>"},
    {51, "<unused45>", "<end_function_response>"},
    {52, "<unused46>", "<escape>"},
}};

// Returns `gemma3_tokenizer_json` with ids 46..52 renamed in both added_tokens and model.vocab
// (their flags, e.g. special, unchanged). Fails, naming `source` and the field, unless each id
// holds the expected <unusedNN> in both places and the new names are not taken. The output is
// re-serialised JSON: same content, members of small objects in sorted order.
Result<std::string> MakeFunctionGemmaTokenizerJson(std::string_view gemma3_tokenizer_json,
                                                   std::string_view source = "tokenizer.json");

}  // namespace fgnet
