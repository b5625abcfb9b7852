#include "tokenizer/tokenizer_spec.h"

#include <initializer_list>

#include "tokenizer/utf8.h"

namespace fgnet::tokenizer_internal {
namespace {

// Error-building helpers: every message is "<source>: <path>: <problem>".
class Checker {
 public:
  explicit Checker(std::string_view source) : source_(source) {}

  template <class... Parts>
  Error Fail(std::string_view path, const Parts&... parts) const {
    return MakeError(source_, ": ", path, ": ", parts...);
  }

  // Rejects members of `obj` not listed in `known`.
  Status OnlyKnownKeys(const Json& obj, std::string_view path,
                       std::initializer_list<std::string_view> known) const {
    for (const auto& [key, value] : obj.items()) {
      bool found = false;
      for (const std::string_view k : known) found = found || key == k;
      if (!found) return Fail(Join(path, key), "unknown field (not supported)");
    }
    return Ok();
  }

  // A string member; `required` false accepts a missing member (returns "").
  Result<std::string> String(const Json& obj, std::string_view path, const char* key,
                             bool required = true) const {
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (required) return Fail(Join(path, key), "missing");
      return std::string();
    }
    if (!it->is_string()) return Fail(Join(path, key), "expected a string");
    return it->get<std::string>();
  }

  // A boolean member, `fallback` when missing.
  Result<bool> Bool(const Json& obj, std::string_view path, const char* key, bool fallback) const {
    auto it = obj.find(key);
    if (it == obj.end()) return fallback;
    if (!it->is_boolean()) return Fail(Join(path, key), "expected true or false");
    return it->get<bool>();
  }

  // Requires a member to be missing or null.
  Status NullOrMissing(const Json& obj, std::string_view path, const char* key,
                       std::string_view why) const {
    auto it = obj.find(key);
    if (it != obj.end() && !it->is_null()) return Fail(Join(path, key), why);
    return Ok();
  }

  // A {"String": "..."} pattern (Regex patterns are not supported).
  Result<std::string> StringPattern(const Json& obj, std::string_view path) const {
    const std::string p = Join(path, "pattern");
    auto it = obj.find("pattern");
    if (it == obj.end()) return Fail(p, "missing");
    if (!it->is_object() || it->size() != 1 || !it->contains("String") ||
        !(*it)["String"].is_string()) {
      return Fail(p, "only {\"String\": ...} patterns are supported");
    }
    std::string s = (*it)["String"].get<std::string>();
    if (s.empty()) return Fail(p, "the pattern is empty");
    return s;
  }

  static std::string Join(std::string_view path, std::string_view key) {
    if (path.empty()) return std::string(key);
    return std::string(path) + "." + std::string(key);
  }

 private:
  std::string_view source_;
};

Status ParseNormalizer(const Json& root, const Checker& c, TokenizerSpec* spec) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return Ok();
  if (!it->is_object()) return c.Fail("normalizer", "expected an object or null");
  FGNET_ASSIGN_OR_RETURN(const std::string type, c.String(*it, "normalizer", "type"));
  if (type != "Replace") {
    return c.Fail("normalizer.type", "'", Printable(type),
                  "' is not supported (only Replace or null)");
  }
  FGNET_TRY(c.OnlyKnownKeys(*it, "normalizer", {"type", "pattern", "content"}));
  FGNET_ASSIGN_OR_RETURN(spec->normalizer_pattern, c.StringPattern(*it, "normalizer"));
  FGNET_ASSIGN_OR_RETURN(spec->normalizer_content, c.String(*it, "normalizer", "content"));
  spec->has_normalizer = true;
  return Ok();
}

Status ParsePreTokenizer(const Json& root, const Checker& c, TokenizerSpec* spec) {
  auto it = root.find("pre_tokenizer");
  if (it == root.end() || it->is_null()) return Ok();
  if (!it->is_object()) return c.Fail("pre_tokenizer", "expected an object or null");
  FGNET_ASSIGN_OR_RETURN(const std::string type, c.String(*it, "pre_tokenizer", "type"));
  if (type != "Split") {
    return c.Fail("pre_tokenizer.type", "'", Printable(type),
                  "' is not supported (only Split or null)");
  }
  FGNET_TRY(c.OnlyKnownKeys(*it, "pre_tokenizer", {"type", "pattern", "behavior", "invert"}));
  FGNET_ASSIGN_OR_RETURN(spec->split_pattern, c.StringPattern(*it, "pre_tokenizer"));
  FGNET_ASSIGN_OR_RETURN(const std::string behavior, c.String(*it, "pre_tokenizer", "behavior"));
  if (behavior != "MergedWithPrevious") {
    return c.Fail("pre_tokenizer.behavior", "'", Printable(behavior),
                  "' is not supported (only MergedWithPrevious)");
  }
  FGNET_ASSIGN_OR_RETURN(const bool invert, c.Bool(*it, "pre_tokenizer", "invert", false));
  if (invert) return c.Fail("pre_tokenizer.invert", "only false is supported");
  spec->has_split = true;
  return Ok();
}

Status ParseModel(const RawTokenizerJson& raw, const Checker& c, TokenizerSpec* spec) {
  auto it = raw.rest.find("model");
  if (it == raw.rest.end()) return c.Fail("model", "missing");
  if (!it->is_object()) return c.Fail("model", "expected an object");
  const Json& model = *it;
  FGNET_ASSIGN_OR_RETURN(const std::string type, c.String(model, "model", "type"));
  if (type != "BPE")
    return c.Fail("model.type", "'", Printable(type), "' is not supported (only BPE)");
  FGNET_TRY(c.OnlyKnownKeys(
      model, "model",
      {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
       "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges"}));
  FGNET_TRY(c.NullOrMissing(model, "model", "dropout", "BPE dropout is not supported"));
  FGNET_TRY(c.NullOrMissing(model, "model", "continuing_subword_prefix",
                            "a continuing subword prefix is not supported"));
  FGNET_TRY(c.NullOrMissing(model, "model", "end_of_word_suffix",
                            "an end-of-word suffix is not supported"));
  FGNET_ASSIGN_OR_RETURN(const bool ignore_merges, c.Bool(model, "model", "ignore_merges", false));
  if (ignore_merges) return c.Fail("model.ignore_merges", "only false is supported");
  FGNET_ASSIGN_OR_RETURN(spec->fuse_unk, c.Bool(model, "model", "fuse_unk", false));
  FGNET_ASSIGN_OR_RETURN(spec->byte_fallback, c.Bool(model, "model", "byte_fallback", false));
  auto unk = model.find("unk_token");
  if (unk != model.end() && !unk->is_null()) {
    if (!unk->is_string()) return c.Fail("model.unk_token", "expected a string or null");
    spec->unk_token = unk->get<std::string>();
  }
  if (model.contains("vocab")) {
    return c.Fail("model.vocab", raw.has_vocab ? "given twice" : "expected an object token -> id");
  }
  if (!raw.has_vocab) return c.Fail("model.vocab", "missing");
  if (model.contains("merges")) {
    return c.Fail("model.merges", raw.has_merges ? "given twice" : "expected an array");
  }
  return Ok();
}

Status ParseAddedTokens(const Json& root, const Checker& c, TokenizerSpec* spec) {
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return Ok();
  if (!it->is_array()) return c.Fail("added_tokens", "expected an array");
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& t = (*it)[i];
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object()) return c.Fail(path, "expected an object");
    FGNET_TRY(c.OnlyKnownKeys(
        t, path, {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"}));
    AddedTokenSpec token;
    FGNET_ASSIGN_OR_RETURN(token.content, c.String(t, path, "content"));
    if (token.content.empty()) return c.Fail(path + ".content", "empty");
    auto id = t.find("id");
    if (id == t.end() || !id->is_number_integer() || id->get<std::int64_t>() < 0) {
      return c.Fail(path + ".id", "expected a non-negative integer");
    }
    token.id = id->get<std::int64_t>();
    // Defaults as in `tokenizers`' AddedToken.
    struct Flag {
      const char* name;
      bool fallback;
    };
    for (const Flag f : {Flag{"single_word", false}, Flag{"lstrip", false}, Flag{"rstrip", false},
                         Flag{"normalized", true}}) {
      FGNET_ASSIGN_OR_RETURN(const bool value, c.Bool(t, path, f.name, f.fallback));
      if (value) {
        return c.Fail(path + "." + f.name, "true is not supported (token '",
                      Printable(token.content), "')");
      }
    }
    FGNET_ASSIGN_OR_RETURN(token.special, c.Bool(t, path, "special", false));
    spec->added_tokens.push_back(std::move(token));
  }
  return Ok();
}

// One decoder step; `state` tracks the order Replace* [ByteFallback] [Fuse].
Status ParseDecoderStep(const Json& d, const std::string& path, const Checker& c, int* state,
                        TokenizerSpec* spec) {
  if (!d.is_object()) return c.Fail(path, "expected an object");
  FGNET_ASSIGN_OR_RETURN(const std::string type, c.String(d, path, "type"));
  if (*state == 2) return c.Fail(path, "nothing may follow Fuse");
  if (type == "Replace") {
    if (*state != 0) return c.Fail(path, "Replace after ByteFallback is not supported");
    FGNET_TRY(c.OnlyKnownKeys(d, path, {"type", "pattern", "content"}));
    FGNET_ASSIGN_OR_RETURN(std::string pattern, c.StringPattern(d, path));
    FGNET_ASSIGN_OR_RETURN(std::string content, c.String(d, path, "content"));
    spec->decoder_replacements.emplace_back(std::move(pattern), std::move(content));
  } else if (type == "ByteFallback") {
    if (*state != 0) return c.Fail(path, "ByteFallback given twice");
    FGNET_TRY(c.OnlyKnownKeys(d, path, {"type"}));
    spec->decoder_byte_fallback = true;
    *state = 1;
  } else if (type == "Fuse") {
    FGNET_TRY(c.OnlyKnownKeys(d, path, {"type"}));
    *state = 2;
  } else {
    return c.Fail(path + ".type", "'", type,
                  "' is not supported (only Replace, ByteFallback, Fuse or a Sequence of them)");
  }
  return Ok();
}

Status ParseDecoder(const Json& root, const Checker& c, TokenizerSpec* spec) {
  auto it = root.find("decoder");
  if (it == root.end() || it->is_null()) {
    return c.Fail("decoder", "missing (a decoder is required)");
  }
  if (!it->is_object()) return c.Fail("decoder", "expected an object");
  int state = 0;
  auto type = it->find("type");
  const bool is_sequence = type != it->end() && type->is_string() && *type == "Sequence";
  if (!is_sequence) return ParseDecoderStep(*it, "decoder", c, &state, spec);
  FGNET_TRY(c.OnlyKnownKeys(*it, "decoder", {"type", "decoders"}));
  auto steps = it->find("decoders");
  if (steps == it->end() || !steps->is_array()) {
    return c.Fail("decoder.decoders", "expected an array");
  }
  for (std::size_t i = 0; i < steps->size(); ++i) {
    FGNET_TRY(ParseDecoderStep((*steps)[i], "decoder.decoders[" + std::to_string(i) + "]", c,
                               &state, spec));
  }
  return Ok();
}

}  // namespace

Result<TokenizerSpec> ValidateTokenizerJson(const RawTokenizerJson& raw, std::string_view source) {
  const Checker c(source);
  if (!raw.rest.is_object()) return MakeError(source, ": expected a JSON object at the top level");
  FGNET_TRY(c.OnlyKnownKeys(raw.rest, "",
                            {"version", "truncation", "padding", "added_tokens", "normalizer",
                             "pre_tokenizer", "post_processor", "decoder", "model"}));
  FGNET_TRY(c.NullOrMissing(raw.rest, "", "truncation", "truncation is not supported"));
  FGNET_TRY(c.NullOrMissing(raw.rest, "", "padding", "padding is not supported"));
  TokenizerSpec spec;
  FGNET_TRY(ParseModel(raw, c, &spec));
  FGNET_TRY(ParseNormalizer(raw.rest, c, &spec));
  FGNET_TRY(ParsePreTokenizer(raw.rest, c, &spec));
  FGNET_TRY(ParseAddedTokens(raw.rest, c, &spec));
  FGNET_TRY(ParseDecoder(raw.rest, c, &spec));
  return spec;
}

}  // namespace fgnet::tokenizer_internal
