#include "tokenizer/tokenizer_json.h"

#include <cstdio>
#include <limits>
#include <utility>

#include "tokenizer/utf8.h"

namespace fgnet::tokenizer_internal {

RawTokenizerJson::Span RawTokenizerJson::AddString(std::string_view s) {
  Span span{static_cast<std::uint32_t>(strings.size()), static_cast<std::uint32_t>(s.size())};
  strings.append(s);
  return span;
}

namespace {

// SAX handler: builds a JSON tree for the document, except that model.vocab (when an object) and
// model.merges (when an array) are streamed into RawTokenizerJson's flat arrays.
class TokenizerSax {
 public:
  explicit TokenizerSax(RawTokenizerJson* out) : out_(out) {}

  const std::string& error() const { return error_; }

  bool null() { return Scalar(Json(nullptr)); }
  bool boolean(bool v) { return Scalar(Json(v)); }
  bool number_integer(Json::number_integer_t v) {
    if (mode_ == Mode::kVocab) return VocabId(v);
    return Scalar(Json(v));
  }
  bool number_unsigned(Json::number_unsigned_t v) {
    if (mode_ == Mode::kVocab) {
      return VocabId(v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                         ? std::numeric_limits<std::int64_t>::max()
                         : static_cast<std::int64_t>(v));
    }
    return Scalar(Json(v));
  }
  bool number_float(Json::number_float_t v, const std::string& /*text*/) {
    if (mode_ == Mode::kVocab) return VocabNotInteger();
    return Scalar(Json(v));
  }
  bool string(std::string& v) {
    switch (mode_) {
      case Mode::kVocab:
        return VocabNotInteger();
      case Mode::kMerges:
        return MergeString(v);
      case Mode::kDom:
        break;
    }
    return Scalar(Json(std::move(v)));
  }
  bool binary(Json::binary_t& /*v*/) { return Fail("binary values are not JSON"); }

  bool key(std::string& k) {
    if (mode_ == Mode::kVocab) {
      pending_token_ = out_->AddString(k);
      have_pending_token_ = true;
      return true;
    }
    keys_.back() = std::move(k);
    return true;
  }

  bool start_object(std::size_t /*size*/) {
    if (mode_ == Mode::kVocab) return VocabNotInteger();
    if (mode_ == Mode::kMerges) return MergeMalformed();
    if (AtModelMember("vocab") && !out_->has_vocab) {
      mode_ = Mode::kVocab;
      out_->has_vocab = true;
      return true;
    }
    return Open(Json::object());
  }
  bool end_object() {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kDom;
      return true;
    }
    return Close();
  }
  bool start_array(std::size_t /*size*/) {
    if (mode_ == Mode::kVocab) return VocabNotInteger();
    if (mode_ == Mode::kMerges) {
      if (in_merge_pair_) return MergeMalformed();
      in_merge_pair_ = true;
      pair_parts_ = 0;
      return true;
    }
    if (AtModelMember("merges") && !out_->has_merges) {
      mode_ = Mode::kMerges;
      out_->has_merges = true;
      return true;
    }
    return Open(Json::array());
  }
  bool end_array() {
    if (mode_ == Mode::kMerges) {
      if (!in_merge_pair_) {
        mode_ = Mode::kDom;
        return true;
      }
      if (pair_parts_ != 2) return MergeMalformed();
      in_merge_pair_ = false;
      out_->merges.push_back(current_merge_);
      return true;
    }
    return Close();
  }

  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& e) {
    if (error_.empty())
      error_ = "invalid JSON at byte " + std::to_string(position) + ": " + e.what();
    return false;
  }

 private:
  enum class Mode { kDom, kVocab, kMerges };

  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  // True when the next value is the member `name` of the top-level "model" object.
  bool AtModelMember(std::string_view name) const {
    return stack_.size() == 2 && model_open_ && stack_.back()->is_object() && keys_.back() == name;
  }

  // Inserts `value` into the innermost open container (or makes it the root); returns it.
  Json* Insert(Json value) {
    if (stack_.empty()) {
      out_->rest = std::move(value);
      return &out_->rest;
    }
    Json* top = stack_.back();
    if (top->is_object()) {
      Json& slot = (*top)[keys_.back()];
      slot = std::move(value);
      return &slot;
    }
    top->push_back(std::move(value));
    return &top->back();
  }

  bool Scalar(Json value) {
    if (mode_ == Mode::kMerges) return MergeMalformed();
    Insert(std::move(value));
    return true;
  }

  bool Open(Json container) {
    const bool is_model = stack_.size() == 1 && stack_.back()->is_object() &&
                          keys_.back() == "model" && container.is_object();
    Json* node = Insert(std::move(container));
    stack_.push_back(node);
    keys_.emplace_back();
    if (is_model) model_open_ = true;
    return true;
  }

  bool Close() {
    if (stack_.size() == 2 && model_open_) model_open_ = false;
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }

  bool VocabId(std::int64_t id) {
    if (!have_pending_token_) return VocabNotInteger();
    out_->vocab.push_back({pending_token_, id});
    have_pending_token_ = false;
    return true;
  }

  bool VocabNotInteger() {
    std::string token = have_pending_token_ ? Printable(out_->Str(pending_token_)) : "";
    return Fail("model.vocab: the id of token '" + token + "' is not an integer");
  }

  bool MergeString(std::string_view v) {
    if (in_merge_pair_) {
      if (pair_parts_ >= 2) return MergeMalformed();
      (pair_parts_ == 0 ? current_merge_.left : current_merge_.right) = out_->AddString(v);
      ++pair_parts_;
      return true;
    }
    // Older form: "left right", exactly one space.
    const std::size_t space = v.find(' ');
    if (space == std::string_view::npos || v.find(' ', space + 1) != std::string_view::npos) {
      return MergeMalformed();
    }
    out_->merges_as_strings = true;
    RawTokenizerJson::Merge merge;
    merge.left = out_->AddString(v.substr(0, space));
    merge.right = out_->AddString(v.substr(space + 1));
    out_->merges.push_back(merge);
    return true;
  }

  bool MergeMalformed() {
    return Fail("model.merges[" + std::to_string(out_->merges.size()) +
                "]: expected a pair of strings [\"left\", \"right\"] or \"left right\"");
  }

  RawTokenizerJson* out_;
  std::string error_;
  Mode mode_ = Mode::kDom;
  std::vector<Json*> stack_;
  std::vector<std::string> keys_;  // the current member name of each open object
  bool model_open_ = false;        // stack_[1] is the top-level "model" object
  RawTokenizerJson::Span pending_token_;
  bool have_pending_token_ = false;
  bool in_merge_pair_ = false;
  int pair_parts_ = 0;
  RawTokenizerJson::Merge current_merge_;
};

// Appends `s` as a JSON string literal (UTF-8 kept as is).
void AppendJsonString(std::string_view s, std::string* out) {
  out->push_back('"');
  for (const char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
          out->append(buf);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

Status AppendDump(const Json& value, std::string_view source, std::string* out) {
  try {
    out->append(value.dump(-1, ' ', false, Json::error_handler_t::strict));
  } catch (const Json::exception& e) {
    return MakeError(source, ": cannot write JSON: ", e.what());
  }
  return Ok();
}

}  // namespace

Result<RawTokenizerJson> ParseTokenizerJson(std::string_view text, std::string_view source) {
  // Offsets into the string arena are 32-bit; the arena never exceeds the text.
  if (text.size() >= std::numeric_limits<std::uint32_t>::max() / 2) {
    return MakeError(source, ": larger than 2 GiB");
  }
  RawTokenizerJson raw;
  TokenizerSax sax(&raw);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const Json::exception& e) {
    return MakeError(source, ": invalid JSON: ", e.what());
  }
  if (!ok) {
    return MakeError(source, ": ", sax.error().empty() ? "invalid JSON" : sax.error());
  }
  return raw;
}

Result<std::string> SerializeTokenizerJson(const RawTokenizerJson& raw, std::string_view source) {
  if (!raw.rest.is_object()) return MakeError(source, ": expected a JSON object at the top level");
  std::string out;
  out.reserve(raw.strings.size() + raw.vocab.size() * 16 + raw.merges.size() * 8 + (1 << 20));
  // Every string written by hand must be valid UTF-8, as JSON requires.
  for (const auto& entry : raw.vocab) {
    if (!IsValidUtf8(raw.Str(entry.token))) {
      return MakeError(source, ": model.vocab: a token is not valid UTF-8");
    }
  }
  out.push_back('{');
  bool first = true;
  for (const auto& [key, value] : raw.rest.items()) {
    if (!first) out.push_back(',');
    first = false;
    AppendJsonString(key, &out);
    out.push_back(':');
    if (key != "model" || !value.is_object()) {
      FGNET_TRY(AppendDump(value, source, &out));
      continue;
    }
    out.push_back('{');
    bool first_member = true;
    auto member = [&](std::string_view name) {
      if (!first_member) out.push_back(',');
      first_member = false;
      AppendJsonString(name, &out);
      out.push_back(':');
    };
    for (const auto& [mkey, mvalue] : value.items()) {
      member(mkey);
      FGNET_TRY(AppendDump(mvalue, source, &out));
    }
    if (raw.has_vocab) {
      member("vocab");
      out.push_back('{');
      for (std::size_t i = 0; i < raw.vocab.size(); ++i) {
        if (i > 0) out.push_back(',');
        AppendJsonString(raw.Str(raw.vocab[i].token), &out);
        out.push_back(':');
        out.append(std::to_string(raw.vocab[i].id));
      }
      out.push_back('}');
    }
    if (raw.has_merges) {
      member("merges");
      out.push_back('[');
      for (std::size_t i = 0; i < raw.merges.size(); ++i) {
        if (i > 0) out.push_back(',');
        const std::string_view left = raw.Str(raw.merges[i].left);
        const std::string_view right = raw.Str(raw.merges[i].right);
        if (!IsValidUtf8(left) || !IsValidUtf8(right)) {
          return MakeError(source, ": model.merges[", i, "]: not valid UTF-8");
        }
        if (raw.merges_as_strings) {
          AppendJsonString(std::string(left) + " " + std::string(right), &out);
        } else {
          out.push_back('[');
          AppendJsonString(left, &out);
          out.push_back(',');
          AppendJsonString(right, &out);
          out.push_back(']');
        }
      }
      out.push_back(']');
    }
    out.push_back('}');
  }
  out.push_back('}');
  return out;
}

}  // namespace fgnet::tokenizer_internal
