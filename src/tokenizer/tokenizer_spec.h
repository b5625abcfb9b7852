// The validated configuration of a tokenizer.json, limited to what fgnet implements exactly like
// the `tokenizers` library:
//   normalizer     null | Replace with a {"String": ...} pattern
//   pre_tokenizer  null | Split with a {"String": ...} pattern, MergedWithPrevious, invert false
//   model          BPE without dropout, continuing_subword_prefix, end_of_word_suffix or
//                  ignore_merges; byte_fallback, fuse_unk and unk_token as given
//   added_tokens   single_word, lstrip, rstrip and normalized all false (matched in the raw text)
//   decoder        Replace(String)* [ByteFallback] [Fuse], alone or in a Sequence, in that order
//   truncation, padding  null; post_processor is not used (Encode adds no special tokens)
// Anything else is rejected with an error naming the JSON path. Internal to the tokenizer library.
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer_json.h"
#include "util/status.h"

namespace fgnet::tokenizer_internal {

struct AddedTokenSpec {
  std::string content;
  std::int64_t id = 0;
  bool special = false;
};

struct TokenizerSpec {
  // Normalizer: every occurrence of `normalizer_pattern` becomes `normalizer_content`.
  bool has_normalizer = false;
  std::string normalizer_pattern;
  std::string normalizer_content;

  // Pre-tokenizer: split after each occurrence of `split_pattern` (MergedWithPrevious).
  bool has_split = false;
  std::string split_pattern;

  // BPE options.
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool byte_fallback = false;

  std::vector<AddedTokenSpec> added_tokens;  // file order

  // Decoder: the replacements applied to each token in order, then optionally byte fallback.
  std::vector<std::pair<std::string, std::string>> decoder_replacements;
  bool decoder_byte_fallback = false;
};

// Checks everything in `raw` except the vocabulary and merges themselves (those are checked when
// the BPE tables are built). Errors are one line: "<source>: <json path>: <problem>".
Result<TokenizerSpec> ValidateTokenizerJson(const RawTokenizerJson& raw, std::string_view source);

}  // namespace fgnet::tokenizer_internal
