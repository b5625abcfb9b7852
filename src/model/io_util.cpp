#include "model/io_util.h"

#include <sys/stat.h>

#include <cstdio>

#include "backend/cpu/quant.h"

namespace fgnet {

std::string QuoteName(std::string_view text) {
  constexpr std::size_t kLimit = 200;
  std::string out = "'";
  for (std::size_t i = 0; i < text.size() && i < kLimit; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kLimit) out += "...";
  out += "'";
  return out;
}

std::string OneLine(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return out;
}

namespace {

// Renders at most a few levels and about kLimit characters: the value may be arbitrarily deep or
// long, and must not cost recursion or memory in proportion.
constexpr std::size_t kDescribeLimit = 60;

void Render(const Json& value, int depth, std::string* out) {
  if (out->size() > kDescribeLimit) return;
  if (value.is_array() || value.is_object()) {
    const bool array = value.is_array();
    if (depth >= 4) {
      *out += array ? "[...]" : "{...}";
      return;
    }
    *out += array ? '[' : '{';
    bool first = true;
    for (auto it = value.begin(); it != value.end() && out->size() <= kDescribeLimit; ++it) {
      if (!first) *out += ',';
      first = false;
      if (!array) *out += Json(it.key()).dump(-1, ' ', false, Json::error_handler_t::replace) + ":";
      Render(*it, depth + 1, out);
    }
    *out += array ? ']' : '}';
  } else if (value.is_string() && value.get_ref<const std::string&>().size() > kDescribeLimit) {
    const Json cut = value.get_ref<const std::string&>().substr(0, kDescribeLimit);
    *out += cut.dump(-1, ' ', false, Json::error_handler_t::replace);
  } else {
    *out += value.dump(-1, ' ', false, Json::error_handler_t::replace);
  }
}

}  // namespace

std::string DescribeJson(const Json& value) {
  std::string text;
  Render(value, 0, &text);
  if (text.size() > kDescribeLimit) text = text.substr(0, kDescribeLimit - 3) + "...";
  return OneLine(text);
}

std::string JoinPath(const std::string& dir, std::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return dir + std::string(name);
  return dir + "/" + std::string(name);
}

bool IsRegularFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string FileStem(const std::string& path) {
  std::string base = path;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  const std::size_t slash = base.rfind('/');
  if (slash != std::string::npos) base = base.substr(slash + 1);
  const std::size_t dot = base.rfind('.');
  if (dot != std::string::npos && dot > 0) base = base.substr(0, dot);
  return base;
}

std::vector<float> TensorToF32(const TensorView& t) {
  std::vector<float> out(static_cast<std::size_t>(t.num_elements()));
  cpu::DequantizeRow(t.dtype, t.data, out.size(), out.data());
  return out;
}

}  // namespace fgnet
