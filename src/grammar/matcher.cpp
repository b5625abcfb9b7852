// GrammarMatcher: one sequence's position in a Grammar.
#include <algorithm>
#include <limits>
#include <string>

#include "grammar/grammar.h"

namespace fgnet {
namespace {

// A token's text for messages: printable ASCII kept, other bytes as \xNN, at most 40 bytes.
std::string Printable(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < 40; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F && c != '\'') {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  if (text.size() > 40) out += "...";
  return out;
}

}  // namespace

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> grammar)
    : grammar_(std::move(grammar)) {
  FGNET_CHECK(grammar_ != nullptr);
  state_ = grammar_->start_state();
}

void GrammarMatcher::Reset() {
  state_ = grammar_->start_state();
  stopped_ = false;
}

void GrammarMatcher::MaskLogits(std::span<float> logits, std::int64_t remaining) {
  if (stopped_) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    const std::vector<std::int32_t>& stops = grammar_->options().stop_ids;
    std::vector<float> kept;
    kept.reserve(stops.size());
    for (const std::int32_t t : stops) {
      kept.push_back(static_cast<std::size_t>(t) < logits.size() ? logits[t] : kNegInf);
    }
    std::fill(logits.begin(), logits.end(), kNegInf);
    for (std::size_t i = 0; i < stops.size(); ++i) {
      if (static_cast<std::size_t>(stops[i]) < logits.size()) logits[stops[i]] = kept[i];
    }
    return;
  }
  const std::shared_ptr<const TokenMask> mask = grammar_->Mask(state_);
  mask->Apply(logits);
  const std::int64_t budget = std::max<std::int64_t>(remaining, 1) - 1;
  if (mask->max_end_distance() > budget) grammar_->MaskOverBudget(state_, budget, logits);
}

std::shared_ptr<const TokenMask> GrammarMatcher::StepMask(std::int64_t remaining) const {
  if (stopped_) return nullptr;
  std::shared_ptr<const TokenMask> mask = grammar_->Mask(state_);
  const std::int64_t budget = std::max<std::int64_t>(remaining, 1) - 1;
  if (mask->max_end_distance() > budget) return nullptr;
  return mask;
}

Status GrammarMatcher::Accept(std::int32_t token) {
  const TokenVocabulary& vocab = grammar_->vocab();
  if (token < 0 || token >= vocab.size()) {
    return MakeError("token ", token, " is outside the vocabulary of ", vocab.size(), " tokens");
  }
  if (stopped_) return MakeError("token ", token, " after the output already stopped");
  if (grammar_->IsStopId(token)) {
    if (!grammar_->IsAccepting(state_)) {
      return MakeError("stop token ", token, " before the output is complete (at least ",
                       grammar_->Distance(state_), " more symbols needed)");
    }
    stopped_ = true;
    return Ok();
  }
  const std::int32_t next = grammar_->Advance(state_, token);
  if (next == Grammar::kNoState) {
    return MakeError("token ", token, " ('", Printable(vocab.text(token)),
                     "') is not allowed by the grammar here");
  }
  state_ = next;
  return Ok();
}

bool GrammarMatcher::IsComplete() const { return stopped_ || grammar_->IsAccepting(state_); }

bool GrammarMatcher::IsTerminal() const { return stopped_ || grammar_->IsTerminal(state_); }

std::int64_t GrammarMatcher::MinTokens() const { return stopped_ ? 0 : grammar_->Distance(state_); }

}  // namespace fgnet
