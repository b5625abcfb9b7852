#include "grammar/utf8_ranges.h"

#include <algorithm>
#include <array>
#include <string>

namespace fgnet::grammar_detail {
namespace {

constexpr std::uint32_t kSurrogateLo = 0xD800;
constexpr std::uint32_t kSurrogateHi = 0xDFFF;

int EncodedLength(std::uint32_t cp) {
  if (cp <= 0x7F) return 1;
  if (cp <= 0x7FF) return 2;
  if (cp <= 0xFFFF) return 3;
  return 4;
}

std::array<std::uint8_t, 4> Encode(std::uint32_t cp, int n) {
  std::array<std::uint8_t, 4> b{};
  switch (n) {
    case 1:
      b[0] = static_cast<std::uint8_t>(cp);
      break;
    case 2:
      b[0] = static_cast<std::uint8_t>(0xC0 | (cp >> 6));
      b[1] = static_cast<std::uint8_t>(0x80 | (cp & 0x3F));
      break;
    case 3:
      b[0] = static_cast<std::uint8_t>(0xE0 | (cp >> 12));
      b[1] = static_cast<std::uint8_t>(0x80 | ((cp >> 6) & 0x3F));
      b[2] = static_cast<std::uint8_t>(0x80 | (cp & 0x3F));
      break;
    default:
      b[0] = static_cast<std::uint8_t>(0xF0 | (cp >> 18));
      b[1] = static_cast<std::uint8_t>(0x80 | ((cp >> 12) & 0x3F));
      b[2] = static_cast<std::uint8_t>(0x80 | ((cp >> 6) & 0x3F));
      b[3] = static_cast<std::uint8_t>(0x80 | (cp & 0x3F));
      break;
  }
  return b;
}

// Adds byte-range sequences for code point ranges, sharing the states that only await full
// continuation bytes (0x80..0xBF) before `to`.
class Utf8EdgeWriter {
 public:
  Utf8EdgeWriter(NfaBuilder& b, std::int32_t from, std::int32_t to) : b_(b), from_(from), to_(to) {}

  void Add(std::uint32_t lo, std::uint32_t hi) {
    // Split where the encoded length changes.
    for (const std::uint32_t edge : {0x7Fu, 0x7FFu, 0xFFFFu}) {
      if (lo <= edge && edge < hi) {
        Add(lo, edge);
        Add(edge + 1, hi);
        return;
      }
    }
    const int n = EncodedLength(lo);
    // Split until every byte position spans a plain range.
    for (int i = 1; i < n; ++i) {
      const std::uint32_t m = (1u << (6 * i)) - 1;
      if ((lo & ~m) != (hi & ~m)) {
        if ((lo & m) != 0) {
          Add(lo, lo | m);
          Add((lo | m) + 1, hi);
          return;
        }
        if ((hi & m) != m) {
          Add(lo, (hi & ~m) - 1);
          Add(hi & ~m, hi);
          return;
        }
      }
    }
    const auto a = Encode(lo, n);
    const auto z = Encode(hi, n);
    // Trailing positions that span every continuation byte go to a shared state.
    int full = 0;
    while (full < n - 1 && a[n - 1 - full] == 0x80 && z[n - 1 - full] == 0xBF) ++full;
    std::int32_t cur = from_;
    for (int i = 0; i < n - full; ++i) {
      const bool last = i == n - full - 1;
      const std::int32_t next = last ? Continuation(full) : b_.NewState();
      b_.AddEdge(cur, a[i], z[i], next);
      cur = next;
    }
  }

 private:
  // The state that needs `k` more continuation bytes before `to`.
  std::int32_t Continuation(int k) {
    if (k == 0) return to_;
    if (cont_[k] < 0) {
      cont_[k] = b_.NewState();
      b_.AddEdge(cont_[k], 0x80, 0xBF, Continuation(k - 1));
    }
    return cont_[k];
  }

  NfaBuilder& b_;
  std::int32_t from_;
  std::int32_t to_;
  std::array<std::int32_t, 4> cont_ = {-1, -1, -1, -1};
};

}  // namespace

std::vector<CodepointRange> NormalizeCodepoints(const std::vector<CodepointRange>& ranges) {
  std::vector<CodepointRange> clipped;
  for (CodepointRange r : ranges) {
    if (r.lo > r.hi || r.lo > kMaxCodepoint) continue;
    r.hi = std::min(r.hi, kMaxCodepoint);
    if (r.lo < kSurrogateLo && r.hi >= kSurrogateLo) {
      clipped.push_back({r.lo, kSurrogateLo - 1});
      if (r.hi > kSurrogateHi) clipped.push_back({kSurrogateHi + 1, r.hi});
    } else if (r.lo >= kSurrogateLo && r.lo <= kSurrogateHi) {
      if (r.hi > kSurrogateHi) clipped.push_back({kSurrogateHi + 1, r.hi});
    } else {
      clipped.push_back(r);
    }
  }
  std::sort(clipped.begin(), clipped.end(),
            [](const CodepointRange& x, const CodepointRange& y) { return x.lo < y.lo; });
  std::vector<CodepointRange> out;
  for (const CodepointRange& r : clipped) {
    if (!out.empty() && r.lo <= out.back().hi + 1) {
      out.back().hi = std::max(out.back().hi, r.hi);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

std::vector<CodepointRange> ComplementCodepoints(std::span<const CodepointRange> ranges) {
  std::vector<CodepointRange> out;
  std::uint32_t next = 0;
  for (const CodepointRange& r : ranges) {
    if (r.lo > next) out.push_back({next, r.lo - 1});
    next = r.hi + 1;
  }
  if (next <= kMaxCodepoint) out.push_back({next, kMaxCodepoint});
  return NormalizeCodepoints(out);
}

void AddUtf8Edges(NfaBuilder& builder, std::int32_t from, std::int32_t to,
                  std::span<const CodepointRange> ranges) {
  Utf8EdgeWriter writer(builder, from, to);
  for (const CodepointRange& r : ranges) writer.Add(r.lo, r.hi);
}

void AppendUtf8(std::uint32_t cp, std::string* out) {
  const int n = EncodedLength(cp);
  const auto b = Encode(cp, n);
  for (int i = 0; i < n; ++i) out->push_back(static_cast<char>(b[i]));
}

}  // namespace fgnet::grammar_detail
