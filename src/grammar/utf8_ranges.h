// Sets of Unicode code points and their UTF-8 encodings as automaton edges. Every character a
// grammar accepts outside plain ASCII goes through here, so generated text is always valid
// UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "grammar/nfa.h"

namespace fgnet::grammar_detail {

inline constexpr std::uint32_t kMaxCodepoint = 0x10FFFF;

struct CodepointRange {
  std::uint32_t lo;
  std::uint32_t hi;  // inclusive
};

// Sorted, merged, clipped to [0, U+10FFFF], surrogates (U+D800..U+DFFF) removed.
std::vector<CodepointRange> NormalizeCodepoints(const std::vector<CodepointRange>& ranges);
// Every scalar value not in `ranges` (which must be normalised).
std::vector<CodepointRange> ComplementCodepoints(std::span<const CodepointRange> ranges);

// Adds edges from `from` to `to` accepting exactly the UTF-8 encodings of the code points in
// `ranges` (normalised). Multi-byte sequences share their trailing continuation-byte states.
void AddUtf8Edges(NfaBuilder& builder, std::int32_t from, std::int32_t to,
                  std::span<const CodepointRange> ranges);

// Appends the UTF-8 encoding of `cp` (a scalar value) to `out`.
void AppendUtf8(std::uint32_t cp, std::string* out);

}  // namespace fgnet::grammar_detail
