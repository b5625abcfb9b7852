#include "tokenizer/utf8.h"

#include <cstdio>

namespace fgnet::tokenizer_internal {
namespace {

// The accepted range of the second byte for a lead byte (Unicode Table 3-7); later continuation
// bytes are always 0x80..0xBF.
struct LeadInfo {
  int length;  // 0 for bytes that cannot start a character
  std::uint8_t second_lo;
  std::uint8_t second_hi;
};

LeadInfo Lead(std::uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Checks the character starting at text[pos]: returns its length, 0 when invalid, or -1 when the
// bytes are a valid but truncated prefix (text ends too early).
int CheckChar(std::string_view text, std::size_t pos, std::uint32_t* codepoint) {
  const auto* s = reinterpret_cast<const std::uint8_t*>(text.data());
  const std::size_t n = text.size();
  const LeadInfo lead = Lead(s[pos]);
  if (lead.length == 0) return 0;
  if (lead.length == 1) {
    if (codepoint != nullptr) *codepoint = s[pos];
    return 1;
  }
  std::uint32_t cp = s[pos] & (0x7F >> lead.length);
  for (int k = 1; k < lead.length; ++k) {
    if (pos + k >= n) return -1;
    const std::uint8_t c = s[pos + k];
    const std::uint8_t lo = k == 1 ? lead.second_lo : 0x80;
    const std::uint8_t hi = k == 1 ? lead.second_hi : 0xBF;
    if (c < lo || c > hi) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  if (codepoint != nullptr) *codepoint = cp;
  return lead.length;
}

}  // namespace

int ValidCharLength(std::string_view text, std::size_t pos, std::uint32_t* codepoint) {
  const int len = CheckChar(text, pos, codepoint);
  return len < 0 ? 0 : len;
}

Utf8State CheckUtf8(std::string_view bytes) {
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    const int len = CheckChar(bytes, pos, nullptr);
    if (len == 0) return Utf8State::kInvalid;
    if (len < 0) return Utf8State::kIncomplete;
    pos += static_cast<std::size_t>(len);
  }
  return Utf8State::kComplete;
}

void AppendReplacementChars(std::size_t count, std::string* out) {
  out->reserve(out->size() + count * kReplacementChar.size());
  for (std::size_t i = 0; i < count; ++i) out->append(kReplacementChar);
}

std::string Printable(std::string_view text) {
  std::string out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto c = static_cast<unsigned char>(text[pos]);
    const int len = ValidCharLength(text, pos);
    char buf[8];
    if (len == 0) {
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
      ++pos;
      continue;
    }
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7F) {
      std::snprintf(buf, sizeof(buf), "\\u%04X", c);
      out += buf;
    } else {
      out.append(text.substr(pos, static_cast<std::size_t>(len)));
    }
    pos += static_cast<std::size_t>(len);
  }
  return out;
}

}  // namespace fgnet::tokenizer_internal
