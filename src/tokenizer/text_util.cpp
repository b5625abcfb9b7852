#include "tokenizer/text_util.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdlib>

namespace fgnet {
namespace {

bool IsPythonSpace(std::uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Decodes the UTF-8 sequence of `len` bytes at `p`; returns 0xFFFFFFFF when invalid.
std::uint32_t DecodeUtf8(const unsigned char* p, std::size_t len) {
  if (len == 1) return p[0] < 0x80 ? p[0] : 0xFFFFFFFFu;
  const unsigned char lead = p[0];
  std::uint32_t cp = 0;
  if (len == 2 && (lead & 0xE0) == 0xC0) {
    cp = lead & 0x1F;
  } else if (len == 3 && (lead & 0xF0) == 0xE0) {
    cp = lead & 0x0F;
  } else if (len == 4 && (lead & 0xF8) == 0xF0) {
    cp = lead & 0x07;
  } else {
    return 0xFFFFFFFFu;
  }
  for (std::size_t i = 1; i < len; ++i) {
    if ((p[i] & 0xC0) != 0x80) return 0xFFFFFFFFu;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  return cp;
}

std::size_t Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 0;
}

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

std::string_view PythonStrip(std::string_view s) {
  const auto* data = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t begin = 0;
  std::size_t end = s.size();
  while (begin < end) {
    const std::size_t len = Utf8Length(data[begin]);
    if (len == 0 || begin + len > end || !IsPythonSpace(DecodeUtf8(data + begin, len))) break;
    begin += len;
  }
  while (end > begin) {
    std::size_t start = end - 1;
    while (start > begin && end - start < 4 && (data[start] & 0xC0) == 0x80) --start;
    const std::size_t len = end - start;
    if (Utf8Length(data[start]) != len || !IsPythonSpace(DecodeUtf8(data + start, len))) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

std::string AsciiUpper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::vector<const std::string*> DictSortedKeys(const Json& object) {
  std::vector<const std::string*> keys;
  if (!object.is_object()) return keys;
  keys.reserve(object.size());
  for (auto it = object.begin(); it != object.end(); ++it) keys.push_back(&it.key());
  std::stable_sort(keys.begin(), keys.end(), [](const std::string* a, const std::string* b) {
    const std::size_t n = std::min(a->size(), b->size());
    for (std::size_t i = 0; i < n; ++i) {
      const char ca = AsciiLower((*a)[i]);
      const char cb = AsciiLower((*b)[i]);
      if (ca != cb) {
        return static_cast<unsigned char>(ca) < static_cast<unsigned char>(cb);
      }
    }
    if (a->size() != b->size()) return a->size() < b->size();
    return *a < *b;
  });
  return keys;
}

std::string FormatPythonFloat(double x) {
  // Shortest round-trip digits in scientific form, e.g. "-1.2345e+02".
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<std::size_t>(res.ptr - buf));
  std::string out;
  if (sci.starts_with('-')) {
    out.push_back('-');
    sci.remove_prefix(1);
  }
  const std::size_t e_pos = sci.find('e');
  std::string digits;
  for (const char c : sci.substr(0, e_pos)) {
    if (c != '.') digits.push_back(c);
  }
  const int exponent = std::atoi(std::string(sci.substr(e_pos + 1)).c_str());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  if (exponent >= -4 && exponent < 16) {
    const int point = exponent + 1;  // digits before the decimal point
    if (point <= 0) {
      out += "0.";
      out.append(static_cast<std::size_t>(-point), '0');
      out += digits;
    } else if (static_cast<std::size_t>(point) >= digits.size()) {
      out += digits;
      out.append(static_cast<std::size_t>(point) - digits.size(), '0');
      out += ".0";
    } else {
      out += digits.substr(0, static_cast<std::size_t>(point));
      out += '.';
      out += digits.substr(static_cast<std::size_t>(point));
    }
  } else {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += exponent < 0 ? "e-" : "e+";
    const int mag = exponent < 0 ? -exponent : exponent;
    if (mag < 10) out += '0';
    out += std::to_string(mag);
  }
  return out;
}

bool IsTruthy(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return false;
    case Json::value_t::boolean:
      return value.get<bool>();
    case Json::value_t::number_integer:
      return value.get<std::int64_t>() != 0;
    case Json::value_t::number_unsigned:
      return value.get<std::uint64_t>() != 0;
    case Json::value_t::number_float:
      return value.get<double>() != 0.0;
    case Json::value_t::string:
    case Json::value_t::array:
    case Json::value_t::object:
      return !value.empty();
    default:
      return true;
  }
}

}  // namespace fgnet
