// Shared helpers of the grammar tests: the real Gemma 3 and FunctionGemma tokenizers and their
// vocabularies (built once per process; tests that need them fail, not skip, when the npm
// package is missing), a tiny vocabulary for fast automaton tests, seeded random walks under a
// grammar, and a validator for the JSON Schema subset.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "util/rng.h"

namespace fgnet::testing {

const Tokenizer* Gemma3Tokenizer();
const Tokenizer* FunctionGemmaTokenizer();
std::shared_ptr<const TokenVocabulary> Gemma3Vocab();
std::shared_ptr<const TokenVocabulary> FunctionGemmaVocab();
// Gemma 3's stop ids: <eos>, <end_of_turn>.
std::vector<std::int32_t> Gemma3StopIds();
// FunctionGemma's: <eos>, <end_of_turn>, <start_function_response>.
std::vector<std::int32_t> FunctionGemmaStopIds();

// 256 single-byte tokens (ids 0..255), then "ab", "abc", "{\"", "\":", "\"}", "true", "null",
// "12", "\u00e9" (2 bytes), "\u20ac" (3 bytes), then symbols <eos> (stop), <escape>,
// <start_function_call>, <end_function_call>, then one kNever token.
std::shared_ptr<const TokenVocabulary> TinyVocab();
std::int32_t TinyToken(std::string_view text);  // id of a kText or symbol token of TinyVocab

// One random walk: at each step MaskLogits(logits, remaining), then a token among the allowed
// ones (finite logits): usually uniformly, but with probability `progress_bias` one of the
// allowed single-symbol tokens (or a few random others) that gets closest to completion. Stops
// on a stop id or when the budget is spent. Records every failure (a step with nothing allowed,
// an Accept error, an incomplete end) with ADD_FAILURE.
struct Walk {
  std::vector<std::int32_t> tokens;  // accepted, stop id excluded
  bool stopped = false;
  bool complete = false;
  std::vector<std::int32_t> states;  // DFA state before each step
};
Walk RandomWalk(const std::shared_ptr<const Grammar>& grammar, std::uint64_t seed,
                std::int64_t budget, double progress_bias);

// Up to `n` distinct DFA states met on one seeded walk, the start state first.
std::vector<std::int32_t> StatesOfAWalk(const std::shared_ptr<const Grammar>& grammar,
                                        std::size_t n);

// Checks grammar.Mask(state) against brute force: every token of the vocabulary stepped through
// the automaton with Advance (stop ids: allowed exactly when the state accepts), and its
// max_end_distance against the largest distance of those end states.
void ExpectMaskEqualsBruteForce(const Grammar& grammar, std::int32_t state);

// The bytes a grammar saw for these tokens (text tokens' bytes, symbols' names).
std::string TokensText(const TokenVocabulary& vocab, const std::vector<std::int32_t>& tokens);

// "" if `value` satisfies `schema` (the subset Grammar::FromJsonSchema supports; $ref resolved
// against `root`), otherwise what is wrong and where.
std::string ValidateJson(const Json& value, const Json& schema, const Json& root,
                         const std::string& path = "$");

// A random schema of the subset, sometimes with mistakes (unsupported keywords, bad values,
// undeclared required names, impossible bounds) that must give errors.
Json RandomSchema(Philox& rng, int depth);

// True if `text` has whitespace outside JSON strings.
bool HasWhitespaceOutsideStrings(std::string_view text);

// True if `text` is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool IsValidUtf8(std::string_view text);

}  // namespace fgnet::testing
