#include "grammar/value_syntax.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "grammar/utf8_ranges.h"
#include "tokenizer/function_call.h"
#include "util/json.h"

namespace fgnet::grammar_detail {
namespace {

const std::vector<CodepointRange>& NonAsciiCodepoints() {
  static const std::vector<CodepointRange> kRanges = NormalizeCodepoints({{0x80, kMaxCodepoint}});
  return kRanges;
}

bool AllFinite(const OrderedJson& v, int depth) {
  if (depth > 512) return false;
  if (v.is_number_float()) return std::isfinite(v.get<double>());
  if (v.is_structured()) {
    for (const auto& child : v) {
      if (!AllFinite(child, depth + 1)) return false;
    }
  }
  return true;
}

}  // namespace

ValueWriter::ValueWriter(NfaBuilder& builder, ValueSyntax syntax, Symbol escape_symbol)
    : b_(builder), syntax_(syntax), escape_symbol_(escape_symbol) {}

template <class AddChar>
Fragment ValueWriter::Layered(std::int64_t min, std::int64_t max, int width, AddChar&& add_char) {
  const std::int64_t layers = (max >= 0 ? max : min) + 1;
  std::vector<std::int32_t> states(static_cast<std::size_t>(layers * width));
  for (std::int32_t& s : states) s = b_.NewState();
  const std::int32_t end = b_.NewState();
  if (b_.overflowed()) return {0, 0};
  for (std::int64_t i = 0; i + 1 < layers; ++i) {
    add_char(&states[i * width], &states[(i + 1) * width]);
  }
  if (max < 0) add_char(&states[min * width], &states[min * width]);
  for (std::int64_t i = min; i < layers; ++i) {
    for (int k = 0; k < width; ++k) b_.AddEpsilon(states[i * width + k], end);
  }
  return {states[0], end};
}

void ValueWriter::AddJsonChar(std::int32_t from, std::int32_t to) {
  const auto edge = [&](std::int32_t a, int lo, int hi, std::int32_t z) {
    b_.AddEdge(a, lo, hi, z);
  };
  const auto hex = [&](std::int32_t a, std::int32_t z) {
    edge(a, '0', '9', z);
    edge(a, 'A', 'F', z);
    edge(a, 'a', 'f', z);
  };
  // Unescaped ASCII: no control characters, no '"' or '\'.
  edge(from, 0x20, 0x21, to);
  edge(from, 0x23, 0x5B, to);
  edge(from, 0x5D, 0x7F, to);
  const std::int32_t esc = b_.NewState();
  edge(from, '\\', '\\', esc);
  for (const char c : std::string_view("\"\\/bfnrt")) edge(esc, c, c, to);
  // \uXXXX without surrogates (D800..DFFF), so that every escape is one code point.
  const std::int32_t u = b_.NewState(), first = b_.NewState(), first_d = b_.NewState();
  const std::int32_t second = b_.NewState(), third = b_.NewState();
  edge(esc, 'u', 'u', u);
  edge(u, '0', '9', first);
  edge(u, 'A', 'C', first);
  edge(u, 'a', 'c', first);
  edge(u, 'E', 'F', first);
  edge(u, 'e', 'f', first);
  edge(u, 'D', 'D', first_d);
  edge(u, 'd', 'd', first_d);
  hex(first, second);
  edge(first_d, '0', '7', second);
  hex(second, third);
  hex(third, to);
  AddUtf8Edges(b_, from, to, NonAsciiCodepoints());
}

void ValueWriter::AddEscapedTextChar(const std::int32_t* from, const std::int32_t* to) {
  // Boundary state k: the text so far ends with the first k bytes of "<escape>". A byte that
  // would complete it is left out; '<' restarts the match ('<' occurs once in the pattern).
  constexpr std::string_view kPattern = kEscape;
  static_assert(kPattern.size() == 8);
  for (int k = 0; k < 8; ++k) {
    std::array<std::int32_t, 128> target{};
    target.fill(to[0]);
    target['<'] = to[1];
    target[static_cast<unsigned char>(kPattern[k])] = k + 1 < 8 ? to[k + 1] : -1;
    int lo = 0;
    for (int c = 1; c <= 128; ++c) {
      if (c == 128 || target[c] != target[lo]) {
        if (target[lo] >= 0) b_.AddEdge(from[k], lo, c - 1, target[lo]);
        lo = c;
      }
    }
  }
  const std::int32_t hub = b_.NewState();
  for (int k = 0; k < 8; ++k) b_.AddEpsilon(from[k], hub);
  AddUtf8Edges(b_, hub, to[0], NonAsciiCodepoints());
}

Fragment ValueWriter::Null() { return b_.Literal("null"); }

Fragment ValueWriter::Boolean() {
  const Fragment options[] = {b_.Literal("true"), b_.Literal("false")};
  return b_.Alternate(options);
}

Fragment ValueWriter::Digits(std::int64_t min, std::int64_t max) {
  return Layered(min, max, 1, [&](const std::int32_t* from, const std::int32_t* to) {
    b_.AddEdge(*from, '0', '9', *to);
  });
}

Fragment ValueWriter::Integer() {
  const std::int32_t start = b_.NewState(), sign = b_.NewState(), lead = b_.NewState();
  const std::int32_t end = b_.NewState();
  b_.AddEpsilon(start, sign);
  b_.AddEdge(start, '-', '-', sign);
  b_.AddEdge(sign, '0', '0', end);
  b_.AddEdge(sign, '1', '9', lead);
  const Fragment rest = Digits(0, 17);
  b_.AddEpsilon(lead, rest.start);
  b_.AddEpsilon(rest.end, end);
  return {start, end};
}

Fragment ValueWriter::Number() {
  const Fragment integer = Integer();
  const Fragment fraction = b_.Concat(b_.Literal("."), Digits(1, -1));
  const std::int32_t e = b_.NewState(), sign = b_.NewState();
  b_.AddEdge(e, 'e', 'e', sign);
  b_.AddEdge(e, 'E', 'E', sign);
  const std::int32_t digits = b_.NewState();
  b_.AddEpsilon(sign, digits);
  b_.AddEdge(sign, '+', '+', digits);
  b_.AddEdge(sign, '-', '-', digits);
  const Fragment exp_digits = Digits(1, 2);
  b_.AddEpsilon(digits, exp_digits.start);
  const Fragment exponent{e, exp_digits.end};
  const Fragment parts[] = {integer, b_.Optional(fraction), b_.Optional(exponent)};
  return b_.Concat(parts);
}

Fragment ValueWriter::String(std::int64_t min_chars, std::int64_t max_chars) {
  if (syntax_ == ValueSyntax::kJson) {
    const Fragment body =
        Layered(min_chars, max_chars, 1,
                [&](const std::int32_t* from, const std::int32_t* to) { AddJsonChar(*from, *to); });
    const Fragment parts[] = {b_.Literal("\""), body, b_.Literal("\"")};
    return b_.Concat(parts);
  }
  const Fragment body = Layered(
      min_chars, max_chars, 8,
      [&](const std::int32_t* from, const std::int32_t* to) { AddEscapedTextChar(from, to); });
  const Fragment parts[] = {b_.SymbolRange(escape_symbol_, escape_symbol_), body,
                            b_.SymbolRange(escape_symbol_, escape_symbol_)};
  return b_.Concat(parts);
}

Fragment ValueWriter::AnyValue(int depth) {
  std::vector<Fragment> options = {Null(), Boolean(), Number(), String(0, -1), LiteralText("{}")};
  if (depth > 0) {
    const NfaMark begin = b_.Mark();
    const Fragment item = AnyValue(depth - 1);
    options.push_back(Array(Piece{item, begin, b_.Mark()}, 0, -1));
  }
  return b_.Alternate(options);
}

Result<std::string> ValueWriter::FormatValue(const OrderedJson& value) const {
  if (!AllFinite(value, 0)) return MakeError("value holds a number that is not finite");
  if (syntax_ == ValueSyntax::kJson) {
    try {
      return value.dump();
    } catch (const nlohmann::json::exception&) {
      return MakeError("value holds text that is not valid UTF-8");
    }
  }
  return FormatFunctionValue(Json(value), /*escape_keys=*/false);
}

Fragment ValueWriter::LiteralText(std::string_view text) {
  if (syntax_ == ValueSyntax::kJson) return b_.Literal(text);
  const std::int32_t start = b_.NewState();
  std::int32_t cur = start;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::int32_t next = b_.NewState();
    if (text.substr(pos).starts_with(kEscape)) {
      b_.AddEdge(cur, escape_symbol_, escape_symbol_, next);
      pos += kEscape.size();
    } else {
      const Symbol c = static_cast<unsigned char>(text[pos++]);
      b_.AddEdge(cur, c, c, next);
    }
    cur = next;
  }
  if (cur == start) return b_.Empty();
  return {start, cur};
}

Result<Fragment> ValueWriter::Key(std::string_view name) {
  if (syntax_ == ValueSyntax::kJson) {
    std::string text;
    try {
      text = OrderedJson(std::string(name)).dump();
    } catch (const nlohmann::json::exception&) {
      return MakeError("the property name is not valid UTF-8");
    }
    return b_.Literal(text + ":");
  }
  if (!IsBareKeyWritable(name)) {
    return MakeError("property name '", name,
                     "' cannot be written as a bare key (empty, surrounding whitespace, or one "
                     "of : , { } [ ] <)");
  }
  return b_.Literal(std::string(name) + ":");
}

Fragment ValueWriter::Object(std::span<const Member> members) {
  const std::int32_t start = b_.NewState();
  std::int32_t first = b_.NewState();  // nothing written yet
  std::int32_t rest = b_.NewState();   // at least one member written
  b_.AddEdge(start, '{', '{', first);
  for (const Member& m : members) {
    const std::int32_t next_first = b_.NewState();
    const std::int32_t next_rest = b_.NewState();
    b_.AddEpsilon(first, m.key_value.start);
    b_.AddEdge(rest, ',', ',', m.key_value.start);
    b_.AddEpsilon(m.key_value.end, next_rest);
    if (!m.required) {
      b_.AddEpsilon(first, next_first);
      b_.AddEpsilon(rest, next_rest);
    }
    first = next_first;
    rest = next_rest;
  }
  const std::int32_t end = b_.NewState();
  b_.AddEdge(first, '}', '}', end);
  b_.AddEdge(rest, '}', '}', end);
  return {start, end};
}

Fragment ValueWriter::Array(const Piece& item, std::int64_t min_items, std::int64_t max_items) {
  const Fragment open = b_.Literal("[");
  if (max_items == 0) return b_.Concat(open, b_.Literal("]"));
  const NfaMark begin = b_.Mark();
  const Fragment comma = b_.Literal(",");
  const Fragment copy = b_.Copy(item);
  const Piece separated{b_.Concat(comma, copy), begin, b_.Mark()};
  const Fragment more = b_.Repeat(separated, std::max<std::int64_t>(min_items - 1, 0),
                                  max_items < 0 ? -1 : max_items - 1);
  Fragment body = b_.Concat(item.fragment, more);
  if (min_items == 0) body = b_.Optional(body);
  const Fragment parts[] = {open, body, b_.Literal("]")};
  return b_.Concat(parts);
}

}  // namespace fgnet::grammar_detail
