// Constrained decoding: a compiled grammar (JSON Schema, FunctionGemma calls, or a regular
// expression) turned into per-step token masks over the model's whole vocabulary, so that what a
// model generates under it always parses.
//
// Design (one concern per file):
//  - token_vocabulary.h: per token id its bytes (U+2581 as a space, <0xNN> as that byte), or one
//    special symbol (<start_function_call>, <escape>, <end_of_turn>, <eos>, ...), or never
//    allowed (<unusedN>, <mask>, ...); the text tokens in a byte trie stored in preorder. Built
//    once per tokenizer, shared by every grammar.
//  - nfa.h: the alphabet is the 256 bytes plus the vocabulary's symbols. Each source compiles to
//    an NFA built from fragments (json_schema.cpp + value_syntax.cpp, function_tools.cpp,
//    regex.cpp; UTF-8 character sets in utf8_ranges.cpp), or edge by edge where that keeps it
//    linear: an object's optional members use two "lanes" (before and after the first member
//    written), so each member's value exists once and commas come out right. Bounded
//    repetition copies fragments. States that cannot reach acceptance are dropped, and every
//    state knows the fewest symbols to acceptance (reverse 0-1 BFS).
//  - lazy_dfa.h: the NFA determinised lazily: a DFA state (a set of NFA states) is created the
//    first time a transition reaches it; transitions, one per symbol class, are computed on
//    first use and then read lock-free. A DFA state's distance is the minimum over its NFA
//    states.
//  - grammar.cpp: a state's mask is one walk of the trie, stepping the DFA per byte (through
//    walk-local dense rows) and skipping a subtree as soon as the DFA dies; symbol tokens are
//    one step each. The TokenMask (token_mask.h: bitset, or id list when few tokens fit) also
//    records the largest distance of a state an allowed token leads to. Masks are cached per
//    DFA state (at most max_cached_masks, oldest dropped first), so a state costs one walk the
//    first time and afterwards only applying the cached mask to the logits. GrammarStats counts
//    hits, misses and the microseconds spent walking.
//  - matcher.cpp: GrammarMatcher, one sequence's DFA state.
//  - Stop ids (GrammarOptions::stop_ids) are outside the automaton: allowed exactly when the
//    output is complete (the DFA state accepts). A stop id is always read as a stop, even where
//    its token would also be grammatical text.
//
// Completion guarantee: a matcher given the tokens it may still emit masks every token after
// which the rest could not be completed in time. Each symbol is one token at worst (every byte
// has a byte-fallback token, every special symbol its token), so the distance in symbols bounds
// the tokens needed. Only when `remaining` - 1 is below the cached mask's largest end distance
// does MaskLogits walk the trie again, masking tokens whose end state is too far from
// acceptance. A sequence that stops on its budget therefore still ends accepted, provided the
// budget was at least MinTokens() to begin with.
//
// What each source generates:
//  - JSON: compact (no whitespace outside strings); object members in schema order (the order
//    the Json object iterates: nlohmann::json sorts keys, so use FromJsonSchemaText to keep the
//    document's order), required ones always, optional ones optionally, commas between; only
//    declared properties; strings with the JSON escapes (\" \\ \/ \b \f \n \r \t \uXXXX,
//    no surrogate escapes, so each escape is one code point), no raw control characters, valid
//    UTF-8; numbers -?(0|[1-9][0-9]{0,17})(.[0-9]+)?([eE][+-]?[0-9]{1,2})? (integers: the first
//    part only, so they fit in int64), so every number is finite in a double; enum and const
//    values as their compact JSON serialisation. A schema without constraints ({} or true)
//    allows any scalar, arrays of such values nested up to 3 deep, and {}. An object schema
//    without properties gives {}; an array schema without items takes such values as items.
//  - FunctionGemma: one or more <start_function_call>call:NAME{k:v,...}<end_function_call>,
//    parameters in dictsort order, values in function_call.h's syntax (numbers as above,
//    strings <escape>text<escape>); string text is any valid UTF-8 not containing the text
//    "<escape>" (which the parser would read as the end).
//  - Regex: the text matches the pattern (anchored), valid UTF-8.
//
// Limits (errors, not silent changes): lengths and item counts up to 10000, regex counted
// repetition up to 1000, schemas nested up to 64 deep, at most GrammarOptions::max_nfa_states
// NFA states.
//
// Thread-safety: a Grammar is immutable apart from its DFA and mask cache, which are internally
// synchronised; share it (shared_ptr<const Grammar>) between sequences and threads. A
// GrammarMatcher is one sequence's state: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "grammar/token_mask.h"
#include "grammar/token_vocabulary.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet {

struct GrammarOptions {
  // Ids that end generation (e.g. <end_of_turn>, <eos>, <start_function_response>): allowed
  // exactly when the output so far is complete.
  std::vector<std::int32_t> stop_ids;
  // Implementation limits: NFA size (compile error past it), DFA states (past it, tokens that
  // would need a new state are masked and Accept fails on them; GrammarStats::dfa_full tells),
  // and masks kept in the cache. The state limits must be between 1 and 2^24.
  std::int32_t max_nfa_states = 1 << 20;
  std::int32_t max_dfa_states = 1 << 18;
  std::size_t max_cached_masks = 1024;
};

// Counters of a grammar's mask work, for benchmarks and logs.
struct GrammarStats {
  std::int64_t mask_hits = 0;        // Mask() served from the cache
  std::int64_t mask_misses = 0;      // masks computed by a trie walk
  std::int64_t mask_compute_us = 0;  // microseconds spent in those walks
  std::int64_t budget_walks = 0;     // extra walks because the token budget was tight
  std::int64_t budget_walk_us = 0;   // microseconds spent in them
  std::int64_t nfa_states = 0;
  std::int64_t dfa_states = 0;
  std::int64_t cached_masks = 0;
  std::int64_t cached_mask_bytes = 0;
  bool dfa_full = false;
};

namespace grammar_detail {
class NfaBuilder;
struct Fragment;
}  // namespace grammar_detail

class Grammar {
 public:
  // JSON Schema subset: type (object, array, string, number, integer, boolean, null, or a list of
  // them), properties, required, additionalProperties (false, true, absent or a schema: only
  // declared properties are generated, which satisfies all of them), items, minItems, maxItems,
  // enum, const, anyOf, minLength, maxLength (in code points), $ref to #/$defs/NAME or
  // #/definitions/NAME (non-recursive). title, description, default, examples, $schema, $id,
  // $comment, deprecated, readOnly, writeOnly, $defs and definitions are ignored. Anything else
  // is an error naming the JSON path of the keyword (e.g.
  // "schema.properties.age: keyword 'minimum' is not supported"). Without "type", the type
  // follows from the keywords present (properties: object, items: array, ...).
  static Result<std::shared_ptr<const Grammar>> FromJsonSchema(
      const Json& schema, std::shared_ptr<const TokenVocabulary> vocab, GrammarOptions options);
  // The same from the schema's JSON text, keeping the document's property order.
  static Result<std::shared_ptr<const Grammar>> FromJsonSchemaText(
      std::string_view schema_json, std::shared_ptr<const TokenVocabulary> vocab,
      GrammarOptions options);

  // FunctionGemma calls restricted to `tools` (OpenAI-style [{"type": "function", "function":
  // {"name", "description", "parameters"}}] or bare function objects):
  //   <start_function_call>call:NAME{key:value,...}<end_function_call>  (one or more)
  // with NAME one of the declared functions, keys its declared parameters (required ones
  // present) in dictsort order, values written as function_call.h's syntax for the parameter's
  // JSON Schema (the subset above; type names in any case). The vocabulary must have the
  // <start_function_call>, <end_function_call> and <escape> tokens.
  static Result<std::shared_ptr<const Grammar>> FromFunctionTools(
      const Json& tools, std::shared_ptr<const TokenVocabulary> vocab, GrammarOptions options);

  // A regular expression over the output text (ECMAScript-like subset: literals, escapes
  // (\t \n \r \f \v \0 \xHH \uHHHH, escaped punctuation), ., [], [^], \d \w \s \D \W \S, groups
  // (...), (?:...), (?<name>...), |, ?, *, +, {m}, {m,}, {m,n} (lazy forms accepted: the matched
  // language is the same)); anchored at both ends (a leading ^ and a trailing $ are allowed).
  // Errors name the pattern offset, e.g. "regex offset 4: lookahead is not supported".
  static Result<std::shared_ptr<const Grammar>> FromRegex(
      std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
      GrammarOptions options);

  Grammar(const Grammar&) = delete;
  Grammar& operator=(const Grammar&) = delete;
  ~Grammar();

  const TokenVocabulary& vocab() const;
  const GrammarOptions& options() const;
  GrammarStats stats() const;
  bool IsStopId(std::int32_t token) const;

  // The automaton, for matchers, diagnostics and tests. States are small integers.
  static constexpr std::int32_t kNoState = -1;
  std::int32_t start_state() const;
  // The state after `token` (a text or symbol token), or kNoState when the grammar does not
  // allow it there. Stop ids give kNoState: they end the output instead.
  std::int32_t Advance(std::int32_t state, std::int32_t token) const;
  bool IsAccepting(std::int32_t state) const;
  bool IsTerminal(std::int32_t state) const;
  // The fewest symbols (each at most one token) from `state` to a complete output.
  std::int64_t Distance(std::int32_t state) const;
  // The tokens allowed in `state`, budget ignored (computed once, then cached).
  std::shared_ptr<const TokenMask> Mask(std::int32_t state) const;
  // Sets to -inf the logits of tokens allowed in `state` that lead to a state more than
  // `budget` symbols from acceptance (one more trie walk); if that would leave no token at all
  // (nor a stop id), keeps those of the smallest such distance instead.
  void MaskOverBudget(std::int32_t state, std::int64_t budget, std::span<float> logits) const;

 private:
  struct Impl;
  explicit Grammar(std::unique_ptr<Impl> impl);
  // Finishes an automaton built in `builder` (accepting at root.end); errors start with
  // `context` (e.g. "schema").
  static Result<std::shared_ptr<const Grammar>> Create(grammar_detail::NfaBuilder&& builder,
                                                       grammar_detail::Fragment root,
                                                       std::shared_ptr<const TokenVocabulary> vocab,
                                                       GrammarOptions options,
                                                       std::string_view context);
  // Error unless the limits in `options` are usable.
  static Status CheckOptions(const GrammarOptions& options, std::string_view context);
  static Result<std::shared_ptr<const Grammar>> FromOrderedSchema(
      const nlohmann::ordered_json& schema, std::shared_ptr<const TokenVocabulary> vocab,
      GrammarOptions options);
  std::unique_ptr<Impl> impl_;
};

class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const Grammar> grammar);

  // Sets to -inf every logit whose token may not come next, given that at most `remaining`
  // tokens (>= 1, this one included; smaller values count as 1) may still be generated.
  // logits.size() is normally the vocabulary size; a shorter span (a model whose output omits
  // trailing added tokens) is fine, and logits past the vocabulary are set to -inf. After a stop
  // token only stop ids stay allowed. In a terminal state only stop ids are allowed: with none
  // configured, everything is masked (check IsTerminal() first).
  void MaskLogits(std::span<float> logits, std::int64_t remaining);
  // The mask MaskLogits(logits, remaining) would apply, when that mask is all it would do (so that
  // a model can apply it to logits it keeps on the device); nullptr when the output has stopped or
  // the token budget is tight enough to need MaskLogits' walk over the logits themselves.
  std::shared_ptr<const TokenMask> StepMask(std::int64_t remaining) const;
  // Advances by one generated token. Error (and no change) when the token is not allowed.
  Status Accept(std::int32_t token);
  // The output so far is complete: a stop id is allowed.
  bool IsComplete() const;
  // Complete and nothing may follow: only a stop id is allowed.
  bool IsTerminal() const;
  // The fewest tokens that complete the output from here (an upper bound: symbols).
  std::int64_t MinTokens() const;

  // Back to the start of the output.
  void Reset();
  // A stop id has been accepted.
  bool stopped() const { return stopped_; }
  std::int32_t state() const { return state_; }
  const Grammar& grammar() const { return *grammar_; }

 private:
  std::shared_ptr<const Grammar> grammar_;
  std::int32_t state_;
  bool stopped_ = false;
};

}  // namespace fgnet
