#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <system_error>
#include <unordered_set>
#include <utility>

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/tokenizer_json.h"
#include "tokenizer/utf8.h"
#include "util/mapped_file.h"

namespace fgnet {

using tokenizer_internal::BpeModel;
using tokenizer_internal::Printable;
using tokenizer_internal::RawTokenizerJson;
using tokenizer_internal::TokenizerSpec;
using tokenizer_internal::TokenizerState;

namespace {

// Appends `text` to `out` with every occurrence of `pattern` (non-empty) replaced by `content`,
// scanning left to right without overlaps.
void AppendReplaced(std::string_view text, std::string_view pattern, std::string_view content,
                    std::string* out) {
  std::size_t pos = 0;
  while (true) {
    const std::size_t hit = text.find(pattern, pos);
    if (hit == std::string_view::npos) break;
    out->append(text.substr(pos, hit - pos));
    out->append(content);
    pos = hit + pattern.size();
  }
  out->append(text.substr(pos));
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a byte-fallback token as the ByteFallback decoder reads it: six bytes "<0x??>"
// where ?? parses as a base-16 u8 (Rust's from_str_radix, which also accepts a leading '+').
int ByteTokenValue(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  const int lo = HexDigit(token[4]);
  if (lo < 0) return -1;
  if (token[3] == '+') return lo;
  const int hi = HexDigit(token[3]);
  return hi < 0 ? -1 : hi * 16 + lo;
}

// Checks the ids of added tokens against the ones `tokenizers` assigns when it loads the file
// (the model's id for a token in the vocabulary, otherwise the next id past the vocabulary), and
// fills the matcher, the id tables and the special flags' source.
Status AddAddedTokens(const TokenizerSpec& spec, std::string_view source, TokenizerState* impl,
                      std::unordered_set<std::int32_t>* special_ids) {
  const auto& vocab = impl->bpe.vocab();
  const auto model_size = static_cast<std::int64_t>(vocab.size());
  std::int64_t max_added = -1;
  for (std::size_t i = 0; i < spec.added_tokens.size(); ++i) {
    const auto& token = spec.added_tokens[i];
    if (impl->added_ids.count(token.content) != 0) {
      return MakeError(source, ": added_tokens[", i, "]: '", Printable(token.content),
                       "' is given twice");
    }
    const std::int32_t in_vocab = vocab.Find(token.content);
    std::int64_t expected = in_vocab;
    if (in_vocab < 0) {
      expected = (max_added < 0 || (max_added < model_size && model_size > 0)) ? model_size
                                                                               : max_added + 1;
      if (expected >= std::numeric_limits<std::int32_t>::max() ||
          vocab.Has(static_cast<std::int32_t>(expected))) {
        return MakeError(source, ": added_tokens[", i, "]: '", Printable(token.content),
                         "' would get id ", expected, ", which is not free");
      }
    }
    if (token.id != expected) {
      return MakeError(source, ": added_tokens[", i, "].id: '", Printable(token.content),
                       "' has id ", token.id, " but is loaded as id ", expected,
                       in_vocab >= 0 ? " (its id in model.vocab)" : " (the next free id)");
    }
    const auto id = static_cast<std::int32_t>(expected);
    impl->added_ids.emplace(token.content, id);
    if (in_vocab < 0) impl->extra_tokens.emplace(id, token.content);
    impl->added.Add(token.content, id);
    if (token.special) special_ids->insert(id);
    max_added = std::max(max_added, expected);
  }
  return Ok();
}

void BuildDecodeTables(const std::unordered_set<std::int32_t>& special_ids, TokenizerState* impl) {
  const auto& vocab = impl->bpe.vocab();
  std::int32_t bound = vocab.id_bound();
  for (const auto& [id, token] : impl->extra_tokens) bound = std::max(bound, id + 1);
  impl->id_bound = bound;
  const auto n = static_cast<std::size_t>(bound);
  impl->decoded_offset.assign(n + 1, 0);
  impl->byte_value.assign(n, -1);
  impl->flags.assign(n, 0);
  impl->decoded_arena.reserve(vocab.size() * 8);
  std::string replaced;
  std::string scratch;
  for (std::size_t i = 0; i < n; ++i) {
    const auto id = static_cast<std::int32_t>(i);
    impl->decoded_offset[i] = static_cast<std::uint32_t>(impl->decoded_arena.size());
    std::string_view token = vocab.Token(id);
    if (!vocab.Has(id)) {
      auto it = impl->extra_tokens.find(id);
      if (it == impl->extra_tokens.end()) continue;
      token = it->second;
    }
    impl->flags[i] = TokenizerState::kPresent;
    if (special_ids.count(id) != 0) impl->flags[i] |= TokenizerState::kSpecial;
    replaced.assign(token);
    for (const auto& [pattern, content] : impl->spec.decoder_replacements) {
      scratch.clear();
      AppendReplaced(replaced, pattern, content, &scratch);
      replaced.swap(scratch);
    }
    if (impl->spec.decoder_byte_fallback) {
      impl->byte_value[i] = static_cast<std::int16_t>(ByteTokenValue(replaced));
    }
    impl->decoded_arena.append(replaced);
  }
  impl->decoded_offset[n] = static_cast<std::uint32_t>(impl->decoded_arena.size());
}

// Appends the bytes of a finished run of byte-fallback tokens: the bytes themselves when they
// are valid UTF-8, else one U+FFFD per byte (tokenizers' ByteFallback decoder).
void FlushByteRun(std::string* bytes, std::string* out) {
  if (bytes->empty()) return;
  if (tokenizer_internal::IsValidUtf8(*bytes)) {
    out->append(*bytes);
  } else {
    tokenizer_internal::AppendReplacementChars(bytes->size(), out);
  }
  bytes->clear();
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<Tokenizer> Tokenizer::Load(const std::string& path) {
  std::string file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = path + "/tokenizer.json";
  FGNET_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(file));
  const std::string_view text(reinterpret_cast<const char*>(mapped.data()), mapped.size());
  return FromJson(text, file);
}

Result<Tokenizer> Tokenizer::FromJson(std::string_view json_text, std::string_view source) {
  FGNET_ASSIGN_OR_RETURN(RawTokenizerJson raw,
                         tokenizer_internal::ParseTokenizerJson(json_text, source));
  auto impl = std::make_unique<Impl>();
  FGNET_ASSIGN_OR_RETURN(impl->spec, tokenizer_internal::ValidateTokenizerJson(raw, source));
  FGNET_ASSIGN_OR_RETURN(impl->bpe, BpeModel::Build(raw, impl->spec, source));
  std::unordered_set<std::int32_t> special_ids;
  FGNET_TRY(AddAddedTokens(impl->spec, source, impl.get(), &special_ids));
  BuildDecodeTables(special_ids, impl.get());
  return Tokenizer(std::move(impl));
}

std::vector<std::int32_t> Tokenizer::Encode(std::string_view text) const {
  FGNET_CHECK_LT(text.size(), std::size_t{1} << 31);
  const Impl& m = *impl_;
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  BpeModel::Scratch scratch;
  std::string normalized;
  auto encode_piece = [&](std::string_view piece) { m.bpe.EncodeWord(piece, &ids, &scratch); };
  auto encode_text = [&](std::string_view segment) {
    std::string_view norm = segment;
    if (m.spec.has_normalizer) {
      normalized.clear();
      AppendReplaced(segment, m.spec.normalizer_pattern, m.spec.normalizer_content, &normalized);
      norm = normalized;
    }
    if (!m.spec.has_split) {
      encode_piece(norm);
      return;
    }
    // Split, MergedWithPrevious: the text is cut into runs of non-delimiter text and single
    // delimiters; a delimiter joins the piece before it when that piece is text, and stands
    // alone otherwise (at the start, or after another delimiter). A piece is encoded once the
    // next one begins, as only then is it final.
    const std::string_view delim = m.spec.split_pattern;
    std::size_t last_start = 0;
    std::size_t last_end = 0;
    bool have_last = false;
    auto push = [&](std::size_t start, std::size_t end) {
      if (have_last) encode_piece(norm.substr(last_start, last_end - last_start));
      last_start = start;
      last_end = end;
      have_last = true;
    };
    bool previous_was_delim = false;
    std::size_t pos = 0;
    for (std::size_t hit = norm.find(delim); hit != std::string_view::npos;
         hit = norm.find(delim, pos)) {
      if (hit > pos) {
        push(pos, hit);
        previous_was_delim = false;
      }
      if (have_last && !previous_was_delim) {
        last_end = hit + delim.size();
      } else {
        push(hit, hit + delim.size());
      }
      previous_was_delim = true;
      pos = hit + delim.size();
    }
    if (pos < norm.size()) push(pos, norm.size());
    if (have_last) encode_piece(norm.substr(last_start, last_end - last_start));
  };
  m.added.Split(text, encode_text, [&](std::int32_t id) { ids.push_back(id); });
  return ids;
}

std::string Tokenizer::Decode(std::span<const std::int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string out;
  out.reserve(ids.size() * 4);
  std::string bytes;
  for (const std::int32_t id : ids) {
    if (!m.Present(id) || (skip_special && m.Special(id))) continue;
    const std::int16_t b = m.byte_value[static_cast<std::size_t>(id)];
    if (b >= 0) {
      bytes.push_back(static_cast<char>(b));
      continue;
    }
    FlushByteRun(&bytes, &out);
    out.append(m.DecodedText(id));
  }
  FlushByteRun(&bytes, &out);
  return out;
}

std::int32_t Tokenizer::vocab_size() const { return impl_->id_bound; }

std::optional<std::int32_t> Tokenizer::TokenId(std::string_view token) const {
  auto it = impl_->added_ids.find(std::string(token));
  if (it != impl_->added_ids.end()) return it->second;
  const std::int32_t id = impl_->bpe.vocab().Find(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::string_view Tokenizer::IdToToken(std::int32_t id) const {
  if (impl_->bpe.vocab().Has(id)) return impl_->bpe.vocab().Token(id);
  auto it = impl_->extra_tokens.find(id);
  return it == impl_->extra_tokens.end() ? std::string_view() : std::string_view(it->second);
}

bool Tokenizer::IsSpecial(std::int32_t id) const { return impl_->Special(id); }

}  // namespace fgnet
