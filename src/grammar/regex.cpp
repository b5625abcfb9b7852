// Grammar::FromRegex: a recursive-descent parser of the ECMAScript-like subset that builds the
// automaton directly; quantified atoms are repeated by copying their fragment.
#include <cstdint>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar/nfa.h"
#include "grammar/utf8_ranges.h"

namespace fgnet {
namespace {

using grammar_detail::CodepointRange;
using grammar_detail::Fragment;
using grammar_detail::NfaBuilder;
using grammar_detail::NfaMark;
using grammar_detail::Piece;

constexpr std::int64_t kMaxRegexRepeat = 1000;
constexpr int kMaxRegexNesting = 128;

using CharSet = std::vector<CodepointRange>;

CharSet Digit() { return {{'0', '9'}}; }
CharSet Word() { return {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; }
CharSet Space() {
  return grammar_detail::NormalizeCodepoints({{'\t', '\r'},
                                              {' ', ' '},
                                              {0xA0, 0xA0},
                                              {0x1680, 0x1680},
                                              {0x2000, 0x200A},
                                              {0x2028, 0x2029},
                                              {0x202F, 0x202F},
                                              {0x205F, 0x205F},
                                              {0x3000, 0x3000},
                                              {0xFEFF, 0xFEFF}});
}

class RegexParser {
 public:
  RegexParser(NfaBuilder& b, std::string_view pattern) : b_(b), p_(pattern) {}

  Result<Fragment> Parse() {
    if (!p_.empty() && p_[0] == '^') pos_ = 1;
    FGNET_ASSIGN_OR_RETURN(const Fragment f, Alternation(0));
    if (pos_ < p_.size()) {
      return Fail(pos_, p_[pos_] == ')' ? "unbalanced ')'" : "unexpected character");
    }
    return f;
  }

 private:
  Error Fail(std::size_t at, std::string_view what) const {
    return MakeError("regex offset ", at, ": ", what);
  }
  bool AtEnd() const { return pos_ >= p_.size(); }
  char Peek() const { return AtEnd() ? '\0' : p_[pos_]; }

  Result<Fragment> Alternation(int depth) {
    if (depth > kMaxRegexNesting) {
      return Fail(pos_, "groups nested deeper than " + std::to_string(kMaxRegexNesting));
    }
    std::vector<Fragment> options;
    while (true) {
      FGNET_ASSIGN_OR_RETURN(const Fragment f, Sequence(depth));
      options.push_back(f);
      if (Peek() != '|') break;
      ++pos_;
    }
    return b_.Alternate(options);
  }

  Result<Fragment> Sequence(int depth) {
    std::vector<Fragment> parts;
    while (!AtEnd() && Peek() != '|' && Peek() != ')') {
      FGNET_ASSIGN_OR_RETURN(const Fragment f, Repeat(depth));
      parts.push_back(f);
      if (b_.overflowed()) return Fail(pos_, "the pattern needs too many automaton states");
    }
    return b_.Concat(parts);
  }

  // A non-negative decimal number (at most kMaxRegexRepeat + 1, saturating).
  std::int64_t Number() {
    std::int64_t n = 0;
    while (!AtEnd() && Peek() >= '0' && Peek() <= '9') {
      n = std::min<std::int64_t>(n * 10 + (Peek() - '0'), kMaxRegexRepeat + 1);
      ++pos_;
    }
    return n;
  }

  Result<Fragment> Repeat(int depth) {
    const NfaMark begin = b_.Mark();
    FGNET_ASSIGN_OR_RETURN(const Fragment atom, Atom(depth));
    const Piece piece{atom, begin, b_.Mark()};
    if (AtEnd()) return atom;
    const std::size_t q = pos_;
    std::int64_t min = 0, max = -1;
    switch (Peek()) {
      case '*':
        ++pos_;
        break;
      case '+':
        ++pos_;
        min = 1;
        break;
      case '?':
        ++pos_;
        max = 1;
        break;
      case '{': {
        ++pos_;
        if (!(Peek() >= '0' && Peek() <= '9')) {
          return Fail(q, "'{' does not start a quantifier {m}, {m,} or {m,n} (escape it as \\{)");
        }
        min = Number();
        max = min;
        if (Peek() == ',') {
          ++pos_;
          max = (Peek() >= '0' && Peek() <= '9') ? Number() : -1;
        }
        if (Peek() != '}') {
          return Fail(q, "'{' does not start a quantifier {m}, {m,} or {m,n} (escape it as \\{)");
        }
        ++pos_;
        if (min > kMaxRegexRepeat || max > kMaxRegexRepeat) {
          return Fail(q, "repetition count above the supported " + std::to_string(kMaxRegexRepeat));
        }
        if (max >= 0 && min > max) {
          return Fail(q, "quantifier {" + std::to_string(min) + "," + std::to_string(max) +
                             "} has its minimum above its maximum");
        }
        break;
      }
      default:
        return atom;
    }
    if (Peek() == '?') ++pos_;  // lazy: the same language when the whole text must match
    if (Peek() == '*' || Peek() == '+' || Peek() == '?' || Peek() == '{') {
      return Fail(pos_, "nothing to repeat (a quantifier follows a quantifier)");
    }
    return b_.Repeat(piece, min, max);
  }

  Fragment FromSet(const CharSet& set) {
    const std::int32_t s = b_.NewState();
    const std::int32_t e = b_.NewState();
    grammar_detail::AddUtf8Edges(b_, s, e, grammar_detail::NormalizeCodepoints(set));
    return {s, e};
  }

  // Decodes one UTF-8 character of the pattern at pos_.
  Result<std::uint32_t> PatternChar() {
    const auto c0 = static_cast<unsigned char>(p_[pos_]);
    int n = 0;
    std::uint32_t cp = 0;
    if (c0 < 0x80) {
      n = 1;
      cp = c0;
    } else if (c0 >= 0xC2 && c0 <= 0xDF) {
      n = 2;
      cp = c0 & 0x1F;
    } else if (c0 >= 0xE0 && c0 <= 0xEF) {
      n = 3;
      cp = c0 & 0x0F;
    } else if (c0 >= 0xF0 && c0 <= 0xF4) {
      n = 4;
      cp = c0 & 0x07;
    } else {
      return Fail(pos_, "the pattern is not valid UTF-8");
    }
    if (pos_ + n > p_.size()) return Fail(pos_, "the pattern is not valid UTF-8");
    for (int i = 1; i < n; ++i) {
      const auto c = static_cast<unsigned char>(p_[pos_ + i]);
      if ((c & 0xC0) != 0x80) return Fail(pos_, "the pattern is not valid UTF-8");
      cp = (cp << 6) | (c & 0x3F);
    }
    static constexpr std::uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[n] || cp > grammar_detail::kMaxCodepoint ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return Fail(pos_, "the pattern is not valid UTF-8");
    }
    pos_ += n;
    return cp;
  }

  Result<std::uint32_t> Hex(int digits, std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = Peek();
      int d = -1;
      if (c >= '0' && c <= '9') d = c - '0';
      if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      if (d < 0) return Fail(at, "malformed hexadecimal escape");
      v = v * 16 + static_cast<std::uint32_t>(d);
      ++pos_;
    }
    return v;
  }

  // An escape after '\' (pos_ at the character after it): a set of code points.
  Result<CharSet> Escape(bool in_class) {
    const std::size_t at = pos_ - 1;
    if (AtEnd()) return Fail(at, "the pattern ends with '\\'");
    const char c = p_[pos_++];
    const auto single = [](std::uint32_t cp) { return CharSet{{cp, cp}}; };
    switch (c) {
      case 'd':
        return Digit();
      case 'D':
        return grammar_detail::ComplementCodepoints(Digit());
      case 'w':
        return Word();
      case 'W':
        return grammar_detail::ComplementCodepoints(Word());
      case 's':
        return Space();
      case 'S':
        return grammar_detail::ComplementCodepoints(Space());
      case 't':
        return single('\t');
      case 'n':
        return single('\n');
      case 'r':
        return single('\r');
      case 'f':
        return single('\f');
      case 'v':
        return single('\v');
      case '0':
        if (Peek() >= '0' && Peek() <= '9') return Fail(at, "octal escapes are not supported");
        return single(0);
      case 'x': {
        FGNET_ASSIGN_OR_RETURN(const std::uint32_t v, Hex(2, at));
        return single(v);
      }
      case 'u': {
        if (Peek() == '{') return Fail(at, "\\u{...} escapes are not supported (use \\uHHHH)");
        FGNET_ASSIGN_OR_RETURN(const std::uint32_t v, Hex(4, at));
        if (v >= 0xD800 && v <= 0xDFFF) return Fail(at, "surrogate code points are not supported");
        return single(v);
      }
      case 'c': {
        const char l = Peek();
        if (!((l >= 'a' && l <= 'z') || (l >= 'A' && l <= 'Z'))) {
          return Fail(at, "\\c must be followed by a letter");
        }
        ++pos_;
        return single(static_cast<std::uint32_t>(l) % 32);
      }
      case 'b':
        if (in_class) return single('\b');
        return Fail(at, "word boundaries (\\b) are not supported");
      case 'B':
        return Fail(at, "word boundaries (\\B) are not supported");
      case 'k':
        return Fail(at, "named backreferences are not supported");
      default:
        break;
    }
    if (c >= '1' && c <= '9') return Fail(at, "backreferences are not supported");
    const auto uc = static_cast<unsigned char>(c);
    if (uc < 0x80 && !std::isalnum(uc)) return single(uc);  // escaped punctuation
    return Fail(at, std::string("unknown escape '\\") + c + "'");
  }

  Result<Fragment> Atom(int depth) {
    const std::size_t at = pos_;
    const char c = p_[pos_];
    switch (c) {
      case '(': {
        ++pos_;
        if (Peek() == '?') {
          const std::string_view rest = p_.substr(pos_);
          if (rest.starts_with("?:")) {
            pos_ += 2;
          } else if (rest.starts_with("?=") || rest.starts_with("?!") || rest.starts_with("?<=") ||
                     rest.starts_with("?<!")) {
            return Fail(at, "lookaround assertions are not supported");
          } else if (rest.starts_with("?<")) {
            const std::size_t close = rest.find('>');
            if (close == std::string_view::npos) return Fail(at, "unterminated group name");
            pos_ += close + 1;
          } else {
            return Fail(at, "unsupported group syntax '(?'");
          }
        }
        FGNET_ASSIGN_OR_RETURN(const Fragment inner, Alternation(depth + 1));
        if (Peek() != ')') return Fail(at, "unterminated group");
        ++pos_;
        return inner;
      }
      case ')':
        return Fail(at, "unbalanced ')'");
      case '*':
      case '+':
      case '?':
        return Fail(at, "nothing to repeat");
      case '{':
        return Fail(at, "nothing to repeat ('{' outside a quantifier; escape it as \\{)");
      case '[': {
        FGNET_ASSIGN_OR_RETURN(const CharSet set, Class());
        return FromSet(set);
      }
      case '.':
        ++pos_;
        return FromSet(grammar_detail::ComplementCodepoints(
            grammar_detail::NormalizeCodepoints({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}})));
      case '^':
        return Fail(at, "'^' is only supported at the start of the pattern");
      case '$':
        if (pos_ + 1 == p_.size() && depth == 0) {
          ++pos_;
          return b_.Empty();
        }
        return Fail(at, "'$' is only supported at the end of the pattern");
      case '\\': {
        ++pos_;
        FGNET_ASSIGN_OR_RETURN(const CharSet set, Escape(false));
        return FromSet(set);
      }
      default: {
        FGNET_ASSIGN_OR_RETURN(const std::uint32_t cp, PatternChar());
        return FromSet({{cp, cp}});
      }
    }
  }

  // A class [...] or [^...]; pos_ at '['.
  Result<CharSet> Class() {
    const std::size_t open = pos_;
    ++pos_;
    bool negate = false;
    if (Peek() == '^') {
      negate = true;
      ++pos_;
    }
    CharSet set;
    // One class member: a single code point (is_single) or a set from a class escape.
    struct Member {
      CharSet set;
      bool is_single;
    };
    const auto member = [&]() -> Result<Member> {
      if (Peek() == '\\') {
        ++pos_;
        const std::size_t esc_at = pos_;
        FGNET_ASSIGN_OR_RETURN(CharSet s, Escape(true));
        const char e = p_[esc_at];
        const bool is_class = e == 'd' || e == 'D' || e == 'w' || e == 'W' || e == 's' || e == 'S';
        return Member{std::move(s), !is_class};
      }
      FGNET_ASSIGN_OR_RETURN(const std::uint32_t cp, PatternChar());
      return Member{{{cp, cp}}, true};
    };
    while (true) {
      if (AtEnd()) return Fail(open, "unterminated character class");
      if (Peek() == ']') break;
      const std::size_t at = pos_;
      FGNET_ASSIGN_OR_RETURN(const Member lo, member());
      if (Peek() == '-' && pos_ + 1 < p_.size() && p_[pos_ + 1] != ']') {
        ++pos_;
        FGNET_ASSIGN_OR_RETURN(const Member hi, member());
        if (!lo.is_single || !hi.is_single) {
          return Fail(at, "a class escape (\\d, \\w, \\s) cannot bound a range");
        }
        if (lo.set[0].lo > hi.set[0].lo) return Fail(at, "range out of order in character class");
        set.push_back({lo.set[0].lo, hi.set[0].lo});
      } else {
        set.insert(set.end(), lo.set.begin(), lo.set.end());
      }
    }
    ++pos_;  // ']'
    set = grammar_detail::NormalizeCodepoints(set);
    if (negate) set = grammar_detail::ComplementCodepoints(set);
    return set;
  }

  NfaBuilder& b_;
  std::string_view p_;
  std::size_t pos_ = 0;
};

}  // namespace

Result<std::shared_ptr<const Grammar>> Grammar::FromRegex(
    std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
    GrammarOptions options) {
  FGNET_CHECK(vocab != nullptr);
  FGNET_TRY(CheckOptions(options, "regex"));
  NfaBuilder builder(grammar_detail::kFirstSpecialSymbol + vocab->num_symbols(),
                     options.max_nfa_states);
  RegexParser parser(builder, pattern);
  FGNET_ASSIGN_OR_RETURN(const Fragment root, parser.Parse());
  return Create(std::move(builder), root, std::move(vocab), std::move(options), "regex");
}

}  // namespace fgnet
