#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace fgnet {

using tokenizer_internal::AppendReplacementChars;
using tokenizer_internal::CheckUtf8;
using tokenizer_internal::Utf8State;

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::Push(std::int32_t id) {
  const Tokenizer::Impl& m = *tokenizer_->impl_;
  std::string out;
  if (!m.Present(id) || (skip_special_ && m.Special(id))) return out;  // Decode drops these too
  const std::int16_t b = m.byte_value[static_cast<std::size_t>(id)];
  if (b < 0) {
    // A text token ends the byte run; an unfinished character in it is invalid.
    AppendReplacementChars(pending_.size(), &out);
    pending_.clear();
    run_invalid_ = false;
    out.append(m.DecodedText(id));
    return out;
  }
  if (run_invalid_) {
    AppendReplacementChars(1, &out);
    return out;
  }
  pending_.push_back(static_cast<char>(b));
  switch (CheckUtf8(pending_)) {
    case Utf8State::kComplete:
      out.swap(pending_);
      break;
    case Utf8State::kIncomplete:
      break;
    case Utf8State::kInvalid:
      AppendReplacementChars(pending_.size(), &out);
      pending_.clear();
      run_invalid_ = true;
      break;
  }
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out;
  AppendReplacementChars(pending_.size(), &out);
  pending_.clear();
  run_invalid_ = false;
  return out;
}

}  // namespace fgnet
