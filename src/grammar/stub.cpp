// Placeholder until the grammar library lands: every grammar is refused with a clear error.
#include "grammar/grammar.h"

namespace fgnet {
namespace {
Error Unavailable() { return Error("constrained decoding is not available in this build"); }
}  // namespace

std::shared_ptr<const TokenVocabulary> TokenVocabulary::FromTokenizer(const Tokenizer&) {
  return nullptr;
}
Result<std::shared_ptr<const Grammar>> Grammar::FromJsonSchema(
    const Json&, std::shared_ptr<const TokenVocabulary>, GrammarOptions) {
  return Unavailable();
}
Result<std::shared_ptr<const Grammar>> Grammar::FromFunctionTools(
    const Json&, std::shared_ptr<const TokenVocabulary>, GrammarOptions) {
  return Unavailable();
}
Result<std::shared_ptr<const Grammar>> Grammar::FromRegex(std::string_view,
                                                          std::shared_ptr<const TokenVocabulary>,
                                                          GrammarOptions) {
  return Unavailable();
}
GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar>) {}
void GrammarMatcher::MaskLogits(std::span<float>, std::int64_t) {}
Status GrammarMatcher::Accept(std::int32_t) { return Unavailable(); }
bool GrammarMatcher::IsComplete() const { return false; }
bool GrammarMatcher::IsTerminal() const { return false; }
}  // namespace fgnet
