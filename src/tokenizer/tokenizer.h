// Hugging Face tokenizer.json, BPE as Gemma 3 uses it: normalizer replaces ' ' with U+2581,
// pre-tokenizer splits on ' ' (merged with previous), BPE with byte fallback (<0xNN> tokens),
// added tokens (special or not) matched atomically in the raw text before normalisation.
// Encode and Decode are identical to the `tokenizers` library for this configuration; anything
// else in a tokenizer.json is rejected at load time with an error naming the field.
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

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text`; no BOS or EOS is added (the chat template writes <bos> itself).
  std::vector<std::int32_t> Encode(std::string_view text) const;

  // Text of `ids`, as tokenizers' decode(ids, skip_special_tokens=skip_special).
  std::string Decode(std::span<const std::int32_t> ids, bool skip_special = false) const;

  std::int32_t vocab_size() const;
  // The id of an exact token string (e.g. "<end_of_turn>"), if any.
  std::optional<std::int32_t> TokenId(std::string_view token) const;
  // The vocabulary string of an id (e.g. "▁hello", "<0x0A>"); empty for out-of-range ids.
  std::string_view IdToToken(std::int32_t id) const;
  bool IsSpecial(std::int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text pieces as soon as they are complete UTF-8 (byte-fallback
// tokens of one character arrive one byte at a time). Thread-safety: one per stream.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  // Returns the text that became printable with this token (possibly empty).
  std::string Push(std::int32_t id);
  // Returns whatever is still buffered (invalid bytes as U+FFFD, as tokenizers does).
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace fgnet
