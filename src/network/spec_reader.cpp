#include "network/spec_reader.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace fgnet::network::internal {
namespace {

std::size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      const std::size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool IsIdentifier(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    const bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-';
    if (!word) return false;
  }
  return true;
}

}  // namespace

std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates) {
  const std::size_t limit = word.size() <= 3 ? 1 : (word.size() < 9 ? 2 : 3);
  std::size_t best = limit + 1;
  const std::string* choice = nullptr;
  for (const std::string& candidate : candidates) {
    const std::size_t d = EditDistance(word, candidate);
    if (d < best) {
      best = d;
      choice = &candidate;
    }
  }
  if (choice == nullptr || best == 0) return "";
  return " (did you mean '" + *choice + "'?)";
}

std::string Child(const std::string& path, std::string_view key) {
  if (IsIdentifier(key)) return path + "." + std::string(key);
  return path + "[" + Json(std::string(key)).dump(-1, ' ', false, Json::error_handler_t::replace) +
         "]";
}

std::string Index(const std::string& path, std::size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

std::string JsonTypeName(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return "a number";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::object:
      return "an object";
    default:
      return "an unsupported value";
  }
}

void SpecReader::Add(const std::string& path, const std::string& message) {
  problems_.push_back(source_ + ": " + path + ": " + message);
}

Error SpecReader::ToError() const {
  std::string text;
  for (const std::string& line : problems_) {
    if (!text.empty()) text += '\n';
    text += line;
  }
  return Error(text);
}

bool SpecReader::IsObject(const Json& value, const std::string& path) {
  if (value.is_object()) return true;
  Add(path, "expected an object, got " + JsonTypeName(value));
  return false;
}

void SpecReader::CheckKeys(const Json& object, const std::string& path,
                           std::initializer_list<std::string_view> allowed) {
  std::vector<std::string> names(allowed.begin(), allowed.end());
  for (const auto& item : object.items()) {
    if (std::find(names.begin(), names.end(), item.key()) != names.end()) continue;
    Add(Child(path, item.key()), "unknown key" + DidYouMean(item.key(), names));
  }
}

bool SpecReader::Require(const Json& object, std::string_view key, const std::string& path) {
  if (object.contains(key)) return true;
  Add(Child(path, key), "required");
  return false;
}

bool SpecReader::GetString(const Json& object, std::string_view key, const std::string& path,
                           std::string* out) {
  const auto it = object.find(key);
  if (it == object.end()) return false;
  if (!it->is_string()) {
    Add(Child(path, key), "expected a string, got " + JsonTypeName(*it));
    return false;
  }
  *out = it->get<std::string>();
  return true;
}

bool SpecReader::GetBool(const Json& object, std::string_view key, const std::string& path,
                         bool* out) {
  const auto it = object.find(key);
  if (it == object.end()) return false;
  if (!it->is_boolean()) {
    Add(Child(path, key), "expected a boolean, got " + JsonTypeName(*it));
    return false;
  }
  *out = it->get<bool>();
  return true;
}

bool SpecReader::GetNumber(const Json& object, std::string_view key, const std::string& path,
                           double* out) {
  const auto it = object.find(key);
  if (it == object.end()) return false;
  if (!it->is_number()) {
    Add(Child(path, key), "expected a number, got " + JsonTypeName(*it));
    return false;
  }
  const double value = it->get<double>();
  if (!std::isfinite(value)) {
    Add(Child(path, key), it->dump() + " is not a finite number");
    return false;
  }
  *out = value;
  return true;
}

bool SpecReader::GetInt(const Json& object, std::string_view key, const std::string& path,
                        std::int64_t* out) {
  const auto it = object.find(key);
  if (it == object.end()) return false;
  if (it->is_number_unsigned()) {
    const auto value = it->get<std::uint64_t>();
    if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      Add(Child(path, key), it->dump() + " is too large");
      return false;
    }
    *out = static_cast<std::int64_t>(value);
    return true;
  }
  if (it->is_number_integer()) {
    *out = it->get<std::int64_t>();
    return true;
  }
  if (it->is_number_float()) {
    const double value = it->get<double>();
    // Integral floats (2.0) are accepted; 2^63 is the first double past the int64 range.
    if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 9.2e18) {
      *out = static_cast<std::int64_t>(value);
      return true;
    }
    Add(Child(path, key), "expected an integer, got " + it->dump());
    return false;
  }
  Add(Child(path, key), "expected an integer, got " + JsonTypeName(*it));
  return false;
}

bool SpecReader::GetInt32(const Json& object, std::string_view key, const std::string& path,
                          std::int32_t* out) {
  std::int64_t value = 0;
  if (!GetInt(object, key, path, &value)) return false;
  if (value < std::numeric_limits<std::int32_t>::min() ||
      value > std::numeric_limits<std::int32_t>::max()) {
    Add(Child(path, key), std::to_string(value) + " does not fit in 32 bits");
    return false;
  }
  *out = static_cast<std::int32_t>(value);
  return true;
}

bool SpecReader::GetUint64(const Json& object, std::string_view key, const std::string& path,
                           std::uint64_t* out) {
  const auto it = object.find(key);
  if (it == object.end()) return false;
  if (it->is_number_unsigned()) {
    *out = it->get<std::uint64_t>();
    return true;
  }
  std::int64_t value = 0;
  if (!GetInt(object, key, path, &value)) return false;
  if (value < 0) {
    Add(Child(path, key), std::to_string(value) + " is not >= 0");
    return false;
  }
  *out = static_cast<std::uint64_t>(value);
  return true;
}

bool SpecReader::GetEnum(const Json& object, std::string_view key, const std::string& path,
                         const std::vector<std::string>& names, int* index) {
  std::string value;
  if (!GetString(object, key, path, &value)) return false;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (names[i] == value) {
      *index = static_cast<int>(i);
      return true;
    }
  }
  std::string list;
  for (const std::string& name : names) list += (list.empty() ? "" : ", ") + name;
  Add(Child(path, key), "'" + value + "' is not one of " + list + DidYouMean(value, names));
  return false;
}

void SpecReader::CheckRange(bool ok, const std::string& path, const Json& value,
                            std::string_view range) {
  if (!ok) {
    Add(path, value.dump(-1, ' ', false, Json::error_handler_t::replace) + " is not " +
                  std::string(range));
  }
}

void ReadSampling(SpecReader& reader, const Json& object, const std::string& path,
                  SamplingOverrides* out) {
  double number = 0;
  std::int64_t integer = 0;
  if (reader.GetNumber(object, "temperature", path, &number)) {
    reader.CheckRange(number >= 0, Child(path, "temperature"), object.at("temperature"), ">= 0");
    out->temperature = static_cast<float>(number);
  }
  if (reader.GetNumber(object, "top_p", path, &number)) {
    reader.CheckRange(number > 0 && number <= 1, Child(path, "top_p"), object.at("top_p"),
                      "in (0, 1]");
    out->top_p = static_cast<float>(number);
  }
  std::int32_t top_k = 0;
  if (reader.GetInt32(object, "top_k", path, &top_k)) {
    reader.CheckRange(top_k >= 0, Child(path, "top_k"), object.at("top_k"), ">= 0");
    out->top_k = top_k;
  }
  if (reader.GetNumber(object, "min_p", path, &number)) {
    reader.CheckRange(number >= 0 && number <= 1, Child(path, "min_p"), object.at("min_p"),
                      "in [0, 1]");
    out->min_p = static_cast<float>(number);
  }
  if (reader.GetNumber(object, "repetition_penalty", path, &number)) {
    reader.CheckRange(number > 0, Child(path, "repetition_penalty"),
                      object.at("repetition_penalty"), "> 0");
    out->repetition_penalty = static_cast<float>(number);
  }
  std::uint64_t seed = 0;
  if (reader.GetUint64(object, "seed", path, &seed)) out->seed = seed;
  if (reader.GetInt(object, "max_tokens", path, &integer)) {
    reader.CheckRange(integer >= 1, Child(path, "max_tokens"), object.at("max_tokens"), ">= 1");
    out->max_tokens = integer;
  }
}

void WriteSampling(const SamplingOverrides& sampling, Json* object) {
  Json& o = *object;
  if (sampling.temperature) o["temperature"] = FloatToJson(*sampling.temperature);
  if (sampling.top_p) o["top_p"] = FloatToJson(*sampling.top_p);
  if (sampling.top_k) o["top_k"] = *sampling.top_k;
  if (sampling.min_p) o["min_p"] = FloatToJson(*sampling.min_p);
  if (sampling.repetition_penalty) {
    o["repetition_penalty"] = FloatToJson(*sampling.repetition_penalty);
  }
  if (sampling.seed) o["seed"] = *sampling.seed;
  if (sampling.max_tokens) o["max_tokens"] = *sampling.max_tokens;
}

Json FloatToJson(float value) {
  if (!std::isfinite(value)) return Json(static_cast<double>(value));
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  double shortest = 0;
  std::from_chars(buffer, result.ptr, shortest);
  return Json(shortest);
}

}  // namespace fgnet::network::internal
