// Automaton fragments for values written in one of two syntaxes:
//   kJson:           compact JSON.
//   kFunctionGemma:  function_call.h's argument syntax: strings as <escape>text<escape> (the
//                    <escape> special symbol), bare keys, no quotes.
// Numbers are the same in both: -?(0|[1-9][0-9]{0,17})(\.[0-9]+)?([eE][+-]?[0-9]{1,2})?, which
// keeps every number finite as a double (integers: the first part only, so they fit in int64).
//
// Thread-safety: single-threaded (it writes into one NfaBuilder).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>

#include "grammar/nfa.h"
#include "util/status.h"

namespace fgnet::grammar_detail {

using OrderedJson = nlohmann::ordered_json;

enum class ValueSyntax { kJson, kFunctionGemma };

// Largest minLength / maxLength / minItems / maxItems accepted.
inline constexpr std::int64_t kMaxRepeatCount = 10000;
// Nesting depth of arrays in a schema-less ("any") value.
inline constexpr int kAnyValueDepth = 3;

class ValueWriter {
 public:
  // `escape_symbol` is the <escape> symbol (used by kFunctionGemma only).
  ValueWriter(NfaBuilder& builder, ValueSyntax syntax, Symbol escape_symbol);

  ValueSyntax syntax() const { return syntax_; }
  NfaBuilder& builder() { return b_; }

  Fragment Null();
  Fragment Boolean();
  Fragment Integer();
  Fragment Number();
  // A string of min..max characters (code points; a JSON escape is one); max < 0: unbounded.
  Fragment String(std::int64_t min_chars, std::int64_t max_chars);
  // Any value: scalars, arrays of any values nested up to `depth` deep, and the empty object.
  Fragment AnyValue(int depth);

  // The serialisation of a constant value (enum/const member): compact JSON, or
  // FormatFunctionValue's text. Errors: values the syntax cannot write (invalid UTF-8, a
  // non-finite number, a string holding "<escape>", ...).
  Result<std::string> FormatValue(const OrderedJson& value) const;
  // Text as a literal; in kFunctionGemma syntax every "<escape>" in it is the escape symbol.
  Fragment LiteralText(std::string_view text);
  // An object member's key and colon: "\"name\":" or "name:". Error if the name cannot be
  // written (invalid UTF-8; for bare keys, see IsBareKeyWritable).
  Result<Fragment> Key(std::string_view name);

  // One member of an object: key and value, built as one fragment.
  struct Member {
    Fragment key_value;
    bool required = false;
  };
  // "{" members in the given order, each optional unless required, "," between the ones
  // written, "}". Linear in size: two lanes of states (nothing written yet / something
  // written) share every member's fragment.
  Fragment Object(std::span<const Member> members);
  // "[" min..max items (max < 0: unbounded) separated by "," "]". Uses copies of `item`.
  Fragment Array(const Piece& item, std::int64_t min_items, std::int64_t max_items);

 private:
  // min..max characters, as layers of `width` boundary states; add_char(from, to) adds one
  // character's edges from a layer's states to the next layer's.
  template <class AddChar>
  Fragment Layered(std::int64_t min, std::int64_t max, int width, AddChar&& add_char);
  void AddJsonChar(std::int32_t from, std::int32_t to);
  void AddEscapedTextChar(const std::int32_t* from, const std::int32_t* to);
  Fragment Digits(std::int64_t min, std::int64_t max);

  NfaBuilder& b_;
  ValueSyntax syntax_;
  Symbol escape_symbol_;
};

}  // namespace fgnet::grammar_detail
