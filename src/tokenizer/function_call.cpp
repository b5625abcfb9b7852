#include "tokenizer/function_call.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <system_error>
#include <utility>

#include "tokenizer/text_util.h"

namespace fgnet {
namespace {

// ---------------------------------------------------------------------------------------------
// Writing

Status AppendValue(const Json& value, bool escape_keys, int depth, std::string* out);

Status AppendEscapedString(std::string_view s, std::string* out) {
  if (s.find(kEscape) != std::string_view::npos) {
    return MakeError("string contains the control text ", kEscape,
                     " and cannot be written as a value");
  }
  out->append(kEscape);
  out->append(s);
  out->append(kEscape);
  return Ok();
}

Status AppendKey(const std::string& key, bool escape_keys, std::string* out) {
  if (escape_keys) return AppendEscapedString(key, out);
  if (!IsBareKeyWritable(key)) {
    return MakeError(
        "key '", key,
        "' cannot be written bare (empty, surrounding whitespace, or one of : , { } [ <)");
  }
  out->append(key);
  return Ok();
}

Status AppendValue(const Json& value, bool escape_keys, int depth, std::string* out) {
  switch (value.type()) {
    case Json::value_t::string:
      return AppendEscapedString(value.get_ref<const std::string&>(), out);
    case Json::value_t::boolean:
      out->append(value.get<bool>() ? "true" : "false");
      return Ok();
    case Json::value_t::null:
      out->append("null");
      return Ok();
    case Json::value_t::number_integer:
      out->append(std::to_string(value.get<std::int64_t>()));
      return Ok();
    case Json::value_t::number_unsigned:
      out->append(std::to_string(value.get<std::uint64_t>()));
      return Ok();
    case Json::value_t::number_float: {
      const double d = value.get<double>();
      if (!std::isfinite(d)) return MakeError("number ", d, " is not finite");
      out->append(FormatPythonFloat(d));
      return Ok();
    }
    case Json::value_t::object: {
      if (depth >= kMaxFunctionValueDepth) {
        return MakeError("value nested deeper than ", kMaxFunctionValueDepth, " levels");
      }
      out->push_back('{');
      bool first = true;
      for (const std::string* key : DictSortedKeys(value)) {
        if (!first) out->push_back(',');
        first = false;
        FGNET_TRY(AppendKey(*key, escape_keys, out));
        out->push_back(':');
        const Status st = AppendValue(value.find(*key).value(), escape_keys, depth + 1, out);
        if (!st.ok()) return st.error().WithContext("key '" + *key + "'");
      }
      out->push_back('}');
      return Ok();
    }
    case Json::value_t::array: {
      if (depth >= kMaxFunctionValueDepth) {
        return MakeError("value nested deeper than ", kMaxFunctionValueDepth, " levels");
      }
      out->push_back('[');
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (i > 0) out->push_back(',');
        const Status st = AppendValue(value[i], escape_keys, depth + 1, out);
        if (!st.ok()) return st.error().WithContext("item " + std::to_string(i));
      }
      out->push_back(']');
      return Ok();
    }
    case Json::value_t::binary:
    case Json::value_t::discarded:
      break;
  }
  return MakeError("unsupported JSON value type '", value.type_name(), "'");
}

// Writes "{k:v,...}" with bare keys (the body of a call or a response).
Status AppendArgumentObject(const Json& args, std::string* out) {
  if (!args.is_object()) {
    return MakeError("arguments must be a JSON object, got ", args.type_name());
  }
  return AppendValue(args, /*escape_keys=*/false, 0, out);
}

bool IsNameWritable(std::string_view name) {
  if (name.empty()) return false;
  for (const char c : name) {
    if (IsAsciiSpace(c) || c == '{' || c == '}' || c == '<' || c == '>') return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Parsing

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  std::size_t pos() const { return pos_; }
  void set_pos(std::size_t pos) { pos_ = pos; }
  bool at_end() const { return pos_ >= text_.size(); }

  void SkipSpace() {
    while (pos_ < text_.size() && IsAsciiSpace(text_[pos_])) ++pos_;
  }
  bool Consume(std::string_view token) {
    if (text_.substr(pos_).starts_with(token)) {
      pos_ += token.size();
      return true;
    }
    return false;
  }
  bool LookingAt(std::string_view token) const { return text_.substr(pos_).starts_with(token); }
  char PeekChar() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  std::string_view Slice(std::size_t from, std::size_t to) const {
    return text_.substr(from, to - from);
  }

  // Error at the current position.
  Error Fail(std::string_view what) const { return FailAt(pos_, what); }
  Error FailAt(std::size_t at, std::string_view what) const {
    std::string msg = "offset " + std::to_string(at) + ": ";
    if (!context_.empty()) msg += context_ + ": ";
    msg += what;
    if (at >= text_.size()) {
      msg += " (the text ends there)";
    } else {
      msg += " (found '" + Snippet(at) + "')";
    }
    return Error(std::move(msg));
  }
  void set_context(std::string context) { context_ = std::move(context); }

  // value := string | number | literal | object | array
  Result<Json> ParseValue(int depth) {
    SkipSpace();
    if (at_end()) return Fail("expected a value");
    if (LookingAt(kEscape)) {
      FGNET_ASSIGN_OR_RETURN(std::string s, ParseEscapedString());
      return Json(std::move(s));
    }
    const char c = text_[pos_];
    if (c == '{') return ParseObject(depth + 1);
    if (c == '[') return ParseArray(depth + 1);
    if (c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9')) return ParseNumber();
    static constexpr std::pair<std::string_view, int> kLiterals[] = {
        {"true", 1}, {"false", 0}, {"null", -1}, {"True", 1}, {"False", 0}, {"None", -1}};
    for (const auto& [word, kind] : kLiterals) {
      if (LookingAt(word) && !IsWordChar(pos_ + word.size())) {
        pos_ += word.size();
        if (kind < 0) return Json(nullptr);
        return Json(kind == 1);
      }
    }
    return Fail(
        "expected a value (<escape>string<escape>, number, true, false, null, {...} or [...])");
  }

  // object := "{" [member ("," member)*] "}"; the opening brace is at pos().
  Result<Json> ParseObject(int depth) {
    if (depth > kMaxFunctionValueDepth) {
      return Fail("nesting deeper than " + std::to_string(kMaxFunctionValueDepth) + " levels");
    }
    const std::size_t open = pos_;
    ++pos_;  // '{'
    Json obj = Json::object();
    SkipSpace();
    if (Consume("}")) return obj;
    while (true) {
      SkipSpace();
      const std::size_t key_at = pos_;
      FGNET_ASSIGN_OR_RETURN(std::string key, ParseKey());
      SkipSpace();
      if (!Consume(":")) return Fail("expected ':' after key '" + key + "'");
      FGNET_ASSIGN_OR_RETURN(Json value, ParseValue(depth));
      if (obj.contains(key)) return FailAt(key_at, "duplicate key '" + key + "'");
      obj[key] = std::move(value);
      SkipSpace();
      if (Consume(",")) continue;
      if (Consume("}")) return obj;
      if (at_end()) {
        return FailAt(pos_, "unterminated object opened at offset " + std::to_string(open));
      }
      return Fail("expected ',' or '}' in object");
    }
  }

  // array := "[" [value ("," value)*] "]"; the opening bracket is at pos().
  Result<Json> ParseArray(int depth) {
    if (depth > kMaxFunctionValueDepth) {
      return Fail("nesting deeper than " + std::to_string(kMaxFunctionValueDepth) + " levels");
    }
    const std::size_t open = pos_;
    ++pos_;  // '['
    Json arr = Json::array();
    SkipSpace();
    if (Consume("]")) return arr;
    while (true) {
      FGNET_ASSIGN_OR_RETURN(Json value, ParseValue(depth));
      arr.push_back(std::move(value));
      SkipSpace();
      if (Consume(",")) continue;
      if (Consume("]")) return arr;
      if (at_end()) {
        return FailAt(pos_, "unterminated array opened at offset " + std::to_string(open));
      }
      return Fail("expected ',' or ']' in array");
    }
  }

  // key := "<escape>" chars "<escape>" | bare chars (no : , { } [ ] <), trimmed
  Result<std::string> ParseKey() {
    if (LookingAt(kEscape)) return ParseEscapedString();
    const std::size_t start = pos_;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == ':' || c == ',' || c == '{' || c == '}' || c == '[' || c == ']' || c == '<') break;
      ++pos_;
    }
    std::string_view key = text_.substr(start, pos_ - start);
    while (!key.empty() && IsAsciiSpace(key.back())) key.remove_suffix(1);
    if (key.empty()) return FailAt(start, "expected a key");
    return std::string(key);
  }

  Result<std::string> ParseEscapedString() {
    const std::size_t open = pos_;
    pos_ += kEscape.size();
    const std::size_t close = text_.find(kEscape, pos_);
    if (close == std::string_view::npos) {
      return FailAt(text_.size(),
                    "unterminated string opened by <escape> at offset " + std::to_string(open));
    }
    std::string s(text_.substr(pos_, close - pos_));
    pos_ = close + kEscape.size();
    return s;
  }

  Result<Json> ParseNumber() {
    const std::size_t start = pos_;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
        ++pos_;
      } else {
        break;
      }
    }
    if (IsWordChar(pos_)) return FailAt(start, "malformed number");
    std::string_view token = text_.substr(start, pos_ - start);
    const std::string_view full = token;
    if (token.starts_with('+')) token.remove_prefix(1);
    const bool is_float = token.find_first_of(".eE") != std::string_view::npos;
    const char* first = token.data();
    const char* last = token.data() + token.size();
    const bool has_digit = token.find_first_of("0123456789") != std::string_view::npos;
    if (!has_digit || token.empty() || token.front() == '+') {
      return FailAt(start, "malformed number '" + std::string(full) + "'");
    }
    if (!is_float) {
      std::int64_t i = 0;
      auto [p, ec] = std::from_chars(first, last, i);
      if (ec == std::errc() && p == last) return Json(i);
      if (ec == std::errc::result_out_of_range && token.front() != '-') {
        std::uint64_t u = 0;
        auto [pu, ecu] = std::from_chars(first, last, u);
        if (ecu == std::errc() && pu == last) return Json(u);
      }
      if (ec != std::errc::result_out_of_range) {
        return FailAt(start, "malformed number '" + std::string(full) + "'");
      }
      // Too large for 64 bits: fall through and read it as a float, as JSON parsers do.
    }
    double d = 0;
    auto [p, ec] = std::from_chars(first, last, d);
    if (ec == std::errc::result_out_of_range) {
      return FailAt(start, "number '" + std::string(full) + "' is out of range");
    }
    if (ec != std::errc() || p != last || !std::isfinite(d)) {
      return FailAt(start, "malformed number '" + std::string(full) + "'");
    }
    return Json(d);
  }

 private:
  bool IsWordChar(std::size_t at) const {
    if (at >= text_.size()) return false;
    const char c = text_[at];
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  }

  std::string Snippet(std::size_t at) const {
    std::string s(text_.substr(at, 24));
    for (char& c : s) {
      if (c == '\n') c = ' ';
    }
    return s;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  std::string context_;
};

// Parses one call block; parser.pos() is at <start_function_call>.
Result<FunctionCall> ParseCallBlock(Parser& p) {
  const std::size_t block_start = p.pos();
  p.set_context("function call at offset " + std::to_string(block_start));
  p.Consume(kStartFunctionCall);
  p.SkipSpace();
  if (!p.Consume("call:")) return p.Fail("expected 'call:' after <start_function_call>");
  FunctionCall call;
  const std::size_t name_start = p.pos();
  while (!p.at_end() && !p.LookingAt("{")) {
    const char c = p.PeekChar();
    if (IsAsciiSpace(c) || c == '<' || c == '}' || c == '>') break;
    p.set_pos(p.pos() + 1);
  }
  if (p.pos() == name_start) return p.Fail("expected a function name after 'call:'");
  call.name = std::string(p.Slice(name_start, p.pos()));
  p.set_context("function call '" + call.name + "' at offset " + std::to_string(block_start));
  if (!p.LookingAt("{")) return p.Fail("expected '{' after the function name");
  FGNET_ASSIGN_OR_RETURN(call.arguments, p.ParseObject(1));
  p.SkipSpace();
  if (!p.Consume(kEndFunctionCall)) {
    return p.Fail("expected <end_function_call> after the arguments");
  }
  return call;
}

}  // namespace

bool IsBareKeyWritable(std::string_view key) {
  if (key.empty() || IsAsciiSpace(key.front()) || IsAsciiSpace(key.back())) return false;
  return key.find_first_of(":,{}[]<") == std::string_view::npos;
}

Result<std::string> FormatFunctionValue(const Json& value, bool escape_keys) {
  std::string out;
  FGNET_TRY(AppendValue(value, escape_keys, 0, &out));
  return out;
}

Result<std::string> RenderFunctionCall(const FunctionCall& call) {
  if (!IsNameWritable(call.name)) {
    return MakeError("function call name '", call.name,
                     "' is empty or contains whitespace, braces or angle brackets");
  }
  std::string out(kStartFunctionCall);
  out += "call:";
  out += call.name;
  const Status st = AppendArgumentObject(call.arguments, &out);
  if (!st.ok()) return st.error().WithContext("function call '" + call.name + "'");
  out += kEndFunctionCall;
  return out;
}

Result<std::string> RenderFunctionResponse(std::string_view name, const Json& response) {
  if (!IsNameWritable(name)) {
    return MakeError("function response name '", name,
                     "' is empty or contains whitespace, braces or angle brackets");
  }
  std::string out = "response:";
  out += name;
  Status st;
  if (response.is_object()) {
    st = AppendArgumentObject(response, &out);
  } else {
    st = AppendArgumentObject(Json{{"value", response}}, &out);
  }
  if (!st.ok()) return st.error().WithContext("function response '" + std::string(name) + "'");
  out += kEndFunctionResponse;
  return out;
}

Result<ParsedModelOutput> ParseModelOutput(std::string_view output) {
  ParsedModelOutput result;
  Parser p(output);
  std::size_t text_start = 0;
  while (true) {
    const std::size_t start = output.find(kStartFunctionCall, text_start);
    const std::size_t stray = output.find(kEndFunctionCall, text_start);
    if (stray != std::string_view::npos && stray < start) {
      return MakeError("offset ", stray, ": ", kEndFunctionCall, " without a matching ",
                       kStartFunctionCall);
    }
    if (start == std::string_view::npos) break;
    result.text.append(output.substr(text_start, start - text_start));
    p.set_pos(start);
    FGNET_ASSIGN_OR_RETURN(FunctionCall call, ParseCallBlock(p));
    result.calls.push_back(std::move(call));
    text_start = p.pos();
  }
  result.text.append(output.substr(text_start));
  return result;
}

Result<Json> ParseFunctionArguments(std::string_view text) {
  Parser p(text);
  p.SkipSpace();
  if (!p.LookingAt("{")) return p.Fail("expected '{'");
  FGNET_ASSIGN_OR_RETURN(Json args, p.ParseObject(1));
  p.SkipSpace();
  if (!p.at_end()) return p.Fail("unexpected text after the arguments");
  return args;
}

Json FunctionCallsToJson(const std::vector<FunctionCall>& calls) {
  Json out = Json::array();
  for (const FunctionCall& c : calls) {
    out.push_back(Json{{"name", c.name}, {"arguments", c.arguments}});
  }
  return out;
}

}  // namespace fgnet
