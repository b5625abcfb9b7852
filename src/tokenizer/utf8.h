// Strict UTF-8 helpers (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), the
// same validity rule as Rust's String::from_utf8, which the `tokenizers` decoders use.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fgnet::tokenizer_internal {

// Length in bytes (1..4) of the valid UTF-8 character that starts at text[pos], or 0 when the bytes
// there do not form one (a stray continuation byte, an invalid lead byte, a truncated or overlong
// sequence, a surrogate). When `codepoint` is not null it receives the decoded code point.
int ValidCharLength(std::string_view text, std::size_t pos, std::uint32_t* codepoint = nullptr);

enum class Utf8State {
  kComplete,    // the bytes are valid UTF-8 and end on a character boundary
  kIncomplete,  // valid so far, but the last character is missing continuation bytes
  kInvalid,     // no continuation can make the bytes valid
};

// Classifies `bytes` as a whole.
Utf8State CheckUtf8(std::string_view bytes);

inline bool IsValidUtf8(std::string_view bytes) { return CheckUtf8(bytes) == Utf8State::kComplete; }

// U+FFFD REPLACEMENT CHARACTER in UTF-8.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Appends `count` replacement characters to `out`.
void AppendReplacementChars(std::size_t count, std::string* out);

// `text` for an error message: control characters and backslashes escaped as in JSON, bytes that
// are not UTF-8 as \xNN, so that the message stays on one line.
std::string Printable(std::string_view text);

}  // namespace fgnet::tokenizer_internal
