#include "engine/generation_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <system_error>

namespace fgnet {
namespace {

std::string NumberWhat(std::string_view range) {
  std::string what = "a number ";
  what.append(range);
  return what;
}

class Reader {
 public:
  Reader(const Json& json, std::string_view source) : json_(json), source_(source) {}

  // The value of `key`, or nullptr when absent or null.
  const Json* Find(std::string_view key) const {
    const auto it = json_.find(key);
    if (it == json_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  Error Bad(std::string_view key, std::string_view expected, const Json& got) const {
    std::string shown;
    if (got.is_string()) {
      shown.push_back('"');
      shown.append(got.get_ref<const std::string&>());
      shown.push_back('"');
    } else {
      shown = got.dump(-1, ' ', false, Json::error_handler_t::replace);
    }
    if (shown.size() > 40) shown = shown.substr(0, 40) + "...";
    return MakeError(source_, ": key '", key, "': expected ", expected, ", got ", shown);
  }

  Status Bool(std::string_view key, bool* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    if (!v->is_boolean()) return Bad(key, "true or false", *v);
    *out = v->get<bool>();
    return Ok();
  }

  // A finite number within [lo, hi] (lo excluded when lo_open).
  Status Number(std::string_view key, double lo, bool lo_open, double hi, std::string_view range,
                float* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    if (!v->is_number()) return Bad(key, std::string("a number ") + std::string(range), *v);
    const double d = v->get<double>();
    if (!std::isfinite(d) || d < lo || (lo_open && d == lo) || d > hi) {
      return Bad(key, NumberWhat(range), *v);
    }
    *out = static_cast<float>(d);
    return Ok();
  }

  Result<std::int64_t> Integer(std::string_view key, const Json& v, std::int64_t lo,
                               std::int64_t hi, std::string_view what) const {
    if (v.is_number_unsigned()) {
      const std::uint64_t u = v.get<std::uint64_t>();
      if (u <= static_cast<std::uint64_t>(hi) && static_cast<std::int64_t>(u) >= lo) {
        return static_cast<std::int64_t>(u);
      }
    } else if (v.is_number_integer()) {
      const std::int64_t i = v.get<std::int64_t>();
      if (i >= lo && i <= hi) return i;
    }
    return Bad(key, what, v);
  }

  Status OptionalInteger(std::string_view key, std::int64_t lo, std::int64_t hi,
                         std::string_view what, std::optional<std::int64_t>* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    FGNET_ASSIGN_OR_RETURN(*out, Integer(key, *v, lo, hi, what));
    return Ok();
  }

 private:
  const Json& json_;
  std::string_view source_;
};

constexpr std::int64_t kMaxTokenId = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t kMaxCount = std::numeric_limits<std::int64_t>::max();

}  // namespace

SamplingParams GenerationConfig::ToSamplingParams(std::uint64_t seed) const {
  SamplingParams p;
  p.do_sample = do_sample;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.repetition_penalty = repetition_penalty;
  p.seed = seed;
  return p;
}

std::int64_t GenerationConfig::MaxNewTokens(std::int64_t prompt_length) const {
  if (max_new_tokens.has_value()) return *max_new_tokens;
  return std::max<std::int64_t>(0, max_length - prompt_length);
}

Result<GenerationConfig> ParseGenerationConfig(const Json& json, std::string_view source) {
  if (!json.is_object()) return MakeError(source, ": expected a JSON object");
  const Reader r(json, source);
  GenerationConfig c;
  FGNET_TRY(r.Bool("do_sample", &c.do_sample));
  const double inf = std::numeric_limits<double>::infinity();
  FGNET_TRY(r.Number("temperature", 0.0, false, inf, ">= 0", &c.temperature));
  FGNET_TRY(r.Number("top_p", 0.0, true, 1.0, "in (0, 1]", &c.top_p));
  FGNET_TRY(r.Number("min_p", 0.0, false, 1.0, "in [0, 1]", &c.min_p));
  FGNET_TRY(r.Number("repetition_penalty", 0.0, true, inf, "> 0", &c.repetition_penalty));
  std::optional<std::int64_t> v;
  FGNET_TRY(r.OptionalInteger("top_k", 0, kMaxTokenId, "an integer >= 0", &v));
  if (v) c.top_k = static_cast<std::int32_t>(*v);
  FGNET_TRY(
      r.OptionalInteger("max_new_tokens", 0, kMaxCount, "an integer >= 0", &c.max_new_tokens));
  v.reset();
  FGNET_TRY(r.OptionalInteger("max_length", 0, kMaxCount, "an integer >= 0", &v));
  if (v) c.max_length = *v;
  for (const char* key : {"bos_token_id", "pad_token_id"}) {
    v.reset();
    FGNET_TRY(r.OptionalInteger(key, 0, kMaxTokenId, "a token id (integer >= 0)", &v));
    if (v) {
      (std::string_view(key) == "bos_token_id" ? c.bos_token_id : c.pad_token_id) =
          static_cast<std::int32_t>(*v);
    }
  }
  if (const Json* eos = r.Find("eos_token_id")) {
    constexpr std::string_view kWhat = "a token id or a list of token ids";
    if (eos->is_array()) {
      for (const Json& item : *eos) {
        FGNET_ASSIGN_OR_RETURN(std::int64_t id,
                               r.Integer("eos_token_id", item, 0, kMaxTokenId, kWhat));
        c.eos_token_ids.push_back(static_cast<std::int32_t>(id));
      }
    } else {
      FGNET_ASSIGN_OR_RETURN(std::int64_t id,
                             r.Integer("eos_token_id", *eos, 0, kMaxTokenId, kWhat));
      c.eos_token_ids.push_back(static_cast<std::int32_t>(id));
    }
  }
  c.from_file = true;
  return c;
}

Result<GenerationConfig> LoadGenerationConfig(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path file(path);
  if (fs::is_directory(file, ec)) file /= "generation_config.json";
  if (!fs::exists(file, ec)) {
    if (ec) return MakeError(file.string(), ": cannot check the file: ", ec.message());
    return GenerationConfig{};
  }
  FGNET_ASSIGN_OR_RETURN(Json json, ReadJsonFile(file.string()));
  return ParseGenerationConfig(json, file.string());
}

}  // namespace fgnet
