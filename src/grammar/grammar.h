// Constrained decoding: a compiled grammar (JSON Schema, FunctionGemma calls, or a regular
// expression) turned into per-step token masks over the model's whole vocabulary, so that what a
// model generates under it always parses.
//
// A Grammar is a byte-level automaton (plus special-token symbols such as <start_function_call>)
// built from the source, determinised lazily; the set of vocabulary tokens allowed in each of its
// states is computed once per state by walking a trie of the tokens' bytes and cached, so a
// state's mask costs one trie walk the first time and a 32 KiB copy afterwards.
// A GrammarMatcher is one sequence's position in a Grammar.
//
// Completion guarantee: a matcher given the tokens it may still emit masks every token after
// which the rest could not be completed in time (the grammar knows, for each state, the fewest
// bytes to an accepting state, and every byte is one token at worst), so a sequence that stops on
// its budget still ends accepted, provided the budget was at least MinTokens() to begin with.
//
// Thread-safety: a Grammar is immutable apart from its mask cache, which is internally
// synchronised; share it (shared_ptr<const Grammar>) between sequences and threads. A
// GrammarMatcher is one sequence's state: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet {

// The bytes each token id stands for, as the grammar sees them: a normal token's text (U+2581
// as a space, <0xNN> byte-fallback tokens as their byte), control tokens (<start_function_call>,
// <escape>, <end_of_turn>, ...) as one symbol each. Built once per tokenizer.
class TokenVocabulary {
 public:
  static std::shared_ptr<const TokenVocabulary> FromTokenizer(const Tokenizer& tokenizer);
  // ... implementation-defined accessors.
  std::int32_t size() const;
};

struct GrammarOptions {
  // Ids that end generation (e.g. <end_of_turn>, <eos>, <start_function_response>): allowed
  // exactly when the output so far is complete.
  std::vector<std::int32_t> stop_ids;
};

class Grammar {
 public:
  // JSON Schema subset: type (object, array, string, number, integer, boolean, null, or a list of
  // them), properties, required, additionalProperties (false, or true/absent: only declared
  // properties are generated, which satisfies both), items, minItems, maxItems, enum, const,
  // anyOf, minLength, maxLength, $ref to $defs / definitions (non-recursive). Objects are written
  // compactly with properties in schema order. Anything else is an error naming the JSON path
  // of the keyword (e.g. "schema.properties.age: keyword 'pattern' is not supported").
  static Result<std::shared_ptr<const Grammar>> FromJsonSchema(
      const Json& schema, std::shared_ptr<const TokenVocabulary> vocab, GrammarOptions options);

  // FunctionGemma calls restricted to `tools` (OpenAI-style [{"type": "function", "function":
  // {"name", "description", "parameters"}}] or bare function objects):
  //   <start_function_call>call:NAME{key:value,...}<end_function_call>  (one or more)
  // with NAME one of the declared functions, keys its declared parameters (required ones
  // present), values written as function_call.h's syntax for the parameter's JSON Schema type.
  static Result<std::shared_ptr<const Grammar>> FromFunctionTools(
      const Json& tools, std::shared_ptr<const TokenVocabulary> vocab, GrammarOptions options);

  // A regular expression over the output text (ECMAScript-like subset: literals, escapes, ., [],
  // [^], \d \w \s, groups, |, ?, *, +, {m,n}); anchored at both ends.
  static Result<std::shared_ptr<const Grammar>> FromRegex(
      std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
      GrammarOptions options);

  // ... implementation-defined.
};

class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const Grammar> grammar);

  // Sets to -inf every logit whose token may not come next, given that at most `remaining`
  // tokens (>= 1, this one included) may still be generated. logits.size() == vocab size.
  void MaskLogits(std::span<float> logits, std::int64_t remaining);
  // Advances by one generated token. Error (and no change) when the token is not allowed.
  Status Accept(std::int32_t token);
  // The output so far is complete: a stop id is allowed.
  bool IsComplete() const;
  // Complete and nothing may follow: only a stop id is allowed.
  bool IsTerminal() const;
  // The fewest tokens that complete the output from here (an upper bound: bytes).
  std::int64_t MinTokens() const;
};

}  // namespace fgnet
