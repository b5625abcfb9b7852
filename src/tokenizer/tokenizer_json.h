// Reading and writing the text of a Hugging Face tokenizer.json. The two large members,
// model.vocab (token -> id) and model.merges (pairs of tokens), are streamed into flat arrays
// instead of a JSON tree, which keeps loading a 33 MB file fast; everything else is kept as JSON
// for validation (tokenizer_spec.h). Internal to the tokenizer library.
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/json.h"
#include "util/status.h"

namespace fgnet::tokenizer_internal {

struct RawTokenizerJson {
  // A substring of `strings`.
  struct Span {
    std::uint32_t offset = 0;
    std::uint32_t size = 0;
  };
  struct VocabEntry {
    Span token;
    std::int64_t id = 0;
  };
  struct Merge {
    Span left;
    Span right;
  };

  // The whole document except model.vocab and model.merges when those were streamed (an object
  // and an array respectively); otherwise they stay here, and validation reports them.
  Json rest;
  bool has_vocab = false;          // model.vocab was an object, streamed into `vocab` (file order)
  bool has_merges = false;         // model.merges was an array, streamed into `merges` (file order)
  bool merges_as_strings = false;  // merges were written in the older "a b" form
  std::vector<VocabEntry> vocab;
  std::vector<Merge> merges;
  std::string strings;  // arena holding the vocab and merge strings

  std::string_view Str(Span s) const { return std::string_view(strings).substr(s.offset, s.size); }
  // Appends `s` to the arena and returns its span.
  Span AddString(std::string_view s);
};

// Parses the text of a tokenizer.json. Errors are one line and start with `source`.
Result<RawTokenizerJson> ParseTokenizerJson(std::string_view text, std::string_view source);

// Writes `raw` back as tokenizer.json text (keys of `rest` in sorted order, vocab and merges in
// their original order and form). Errors name `source` (e.g. a string that is not UTF-8).
Result<std::string> SerializeTokenizerJson(const RawTokenizerJson& raw, std::string_view source);

}  // namespace fgnet::tokenizer_internal
