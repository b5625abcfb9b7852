// Tokenizer's private state, shared by tokenizer.cpp and stream_decoder.cpp.
// Thread-safety: immutable after construction.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_spec.h"

namespace fgnet {
namespace tokenizer_internal {

struct TokenizerState {
  TokenizerSpec spec;
  BpeModel bpe;
  AddedTokenMatcher added;
  std::unordered_map<std::string, std::int32_t> added_ids;     // content -> id
  std::unordered_map<std::int32_t, std::string> extra_tokens;  // added ids outside the model
  std::int32_t id_bound = 0;                                   // 1 + the largest id

  // Per id in [0, id_bound): the token after the decoder's replacements, its byte value when it
  // is a byte-fallback token (else -1), and flags.
  std::string decoded_arena;
  std::vector<std::uint32_t> decoded_offset;  // id_bound + 1 entries
  std::vector<std::int16_t> byte_value;
  std::vector<std::uint8_t> flags;
  static constexpr std::uint8_t kPresent = 1;
  static constexpr std::uint8_t kSpecial = 2;

  bool Present(std::int32_t id) const {
    return id >= 0 && id < id_bound && (flags[static_cast<std::size_t>(id)] & kPresent) != 0;
  }
  bool Special(std::int32_t id) const {
    return Present(id) && (flags[static_cast<std::size_t>(id)] & kSpecial) != 0;
  }
  std::string_view DecodedText(std::int32_t id) const {
    const auto i = static_cast<std::size_t>(id);
    return std::string_view(decoded_arena)
        .substr(decoded_offset[i], decoded_offset[i + 1] - decoded_offset[i]);
  }
};

}  // namespace tokenizer_internal

struct Tokenizer::Impl : tokenizer_internal::TokenizerState {};

}  // namespace fgnet
