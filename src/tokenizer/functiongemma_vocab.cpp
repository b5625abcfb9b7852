#include "tokenizer/functiongemma_vocab.h"

#include "tokenizer/tokenizer_json.h"

namespace fgnet {

Result<std::string> MakeFunctionGemmaTokenizerJson(std::string_view gemma3_tokenizer_json,
                                                   std::string_view source) {
  using tokenizer_internal::RawTokenizerJson;
  FGNET_ASSIGN_OR_RETURN(RawTokenizerJson raw,
                         tokenizer_internal::ParseTokenizerJson(gemma3_tokenizer_json, source));
  if (!raw.has_vocab) return MakeError(source, ": model.vocab: missing");
  auto added = raw.rest.find("added_tokens");
  if (!raw.rest.is_object() || added == raw.rest.end() || !added->is_array()) {
    return MakeError(source, ": added_tokens: missing");
  }
  for (const FunctionGemmaControlToken& t : kFunctionGemmaControlTokens) {
    // added_tokens: exactly one entry with this id, holding the Gemma 3 name.
    Json* entry = nullptr;
    for (Json& a : *added) {
      auto id = a.find("id");
      if (a.is_object() && id != a.end() && id->is_number_integer() && *id == t.id) entry = &a;
    }
    if (entry == nullptr) return MakeError(source, ": added_tokens: no entry with id ", t.id);
    auto content = entry->find("content");
    if (content == entry->end() || !content->is_string() || *content != t.gemma3_name) {
      return MakeError(
          source, ": added_tokens: id ", t.id, " is ",
          content == entry->end() ? std::string("missing its content") : content->dump(),
          ", expected \"", t.gemma3_name, "\"");
    }
    *content = std::string(t.name);
    // model.vocab: the Gemma 3 name maps to this id, and the new name is free.
    RawTokenizerJson::VocabEntry* vocab_entry = nullptr;
    for (auto& v : raw.vocab) {
      const std::string_view token = raw.Str(v.token);
      if (token == t.name) {
        return MakeError(source, ": model.vocab: '", t.name, "' is already present");
      }
      if (token == t.gemma3_name) vocab_entry = &v;
    }
    if (vocab_entry == nullptr || vocab_entry->id != t.id) {
      return MakeError(source, ": model.vocab: '", t.gemma3_name, "' is not id ", t.id);
    }
    vocab_entry->token = raw.AddString(t.name);
  }
  return tokenizer_internal::SerializeTokenizerJson(raw, source);
}

}  // namespace fgnet
