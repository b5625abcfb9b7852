// Hugging Face tokenizer.json, BPE as Gemma 3 uses it: normalizer replaces ' ' with U+2581,
// pre-tokenizer splits on ' ' (merged with previous), BPE with byte fallback (<0xNN> tokens),
// added tokens (special or not) matched atomically in the raw text before normalisation.
// Encode and Decode are identical to the `tokenizers` library for this configuration; anything
// else in a tokenizer.json is rejected at load time with an error naming the field
// (tokenizer_spec.h lists what is accepted).
//
// How Gemma 3's configuration segments text: added tokens are found first in the raw text
// (leftmost-longest; they include "\n", "\t", their runs, and runs of U+2581). Each stretch of text
// between them is normalised (' ' -> U+2581) and only then pre-tokenised; as no ' ' is left, the
// Split never cuts, so every stretch is one BPE word, spaces included.
//
// Thread-safety: immutable after Load(); Encode/Decode may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace fgnet {

class Tokenizer {
 public:
  // `path` is a tokenizer.json, or a directory containing one.
  static Result<Tokenizer> Load(const std::string& path);
  // Builds a tokenizer from the text of a tokenizer.json; errors start with `source`.
  static Result<Tokenizer> FromJson(std::string_view json_text, std::string_view source);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text`; no BOS or EOS is added (the chat template writes <bos> itself).
  // Bytes of `text` that are not valid UTF-8 are encoded like characters outside the vocabulary
  // (byte-fallback tokens), so no input is lost. `text` must be shorter than 2 GiB (checked).
  std::vector<std::int32_t> Encode(std::string_view text) const;

  // Text of `ids`, as tokenizers' decode(ids, skip_special_tokens=skip_special). Ids without a
  // token are dropped, as tokenizers does.
  std::string Decode(std::span<const std::int32_t> ids, bool skip_special = false) const;

  // 1 + the largest token id, counting added tokens beyond the model vocabulary (Gemma 3:
  // 262145, as the added <image_soft_token> is 262144), like tokenizers' get_vocab_size(true).
  std::int32_t vocab_size() const;
  // The id of an exact token string (e.g. "<end_of_turn>"), if any.
  std::optional<std::int32_t> TokenId(std::string_view token) const;
  // The vocabulary string of an id (e.g. "▁hello", "<0x0A>"); empty for out-of-range ids.
  std::string_view IdToToken(std::int32_t id) const;
  bool IsSpecial(std::int32_t id) const;

 private:
  friend class StreamDecoder;
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text pieces as soon as they are complete UTF-8 (byte-fallback
// tokens of one character arrive one byte at a time). The concatenation of everything Push and
// Flush return equals Tokenizer::Decode of the same ids, with one exception: Decode turns a whole
// run of consecutive byte tokens into U+FFFD per byte when any of it is invalid, while a stream
// has already returned the run's characters completed before the invalid byte arrived.
// Thread-safety: one per stream; the tokenizer must outlive it.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  // Returns the text that became printable with this token (possibly empty).
  std::string Push(std::int32_t id);
  // Returns whatever is still buffered (invalid bytes as U+FFFD, as tokenizers does) and resets.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;       // bytes of an incomplete character
  bool run_invalid_ = false;  // the current byte-token run already held invalid UTF-8
};

}  // namespace fgnet
