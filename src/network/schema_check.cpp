#include "network/schema_check.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <optional>
#include <regex>
#include <set>

namespace fgnet::network {
namespace {

constexpr int kMaxDepth = 64;                   // nested schemas / $ref chains followed at most
constexpr std::size_t kMaxPatternInput = 4096;  // longest string matched against a pattern

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Article(const std::string& type) {
  if (type == "null") return "null";
  if (type == "array" || type == "object" || type == "integer") return "an " + type;
  return "a " + type;
}

std::string TypeOf(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::object:
      return "object";
    case Json::value_t::array:
      return "array";
    case Json::value_t::string:
      return "string";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    default:
      return "binary";
  }
}

bool HasType(const Json& v, const std::string& type) {
  if (type == "null") return v.is_null();
  if (type == "boolean") return v.is_boolean();
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "number") return v.is_number();
  if (type == "integer") {
    if (v.is_number_integer()) return true;
    if (!v.is_number_float()) return false;
    double d = v.get<double>();
    return std::isfinite(d) && std::floor(d) == d;
  }
  return true;  // an unknown type name constrains nothing
}

std::size_t CodePoints(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

std::string Short(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// A non-negative integer keyword value (minLength, maxItems, ...).
std::optional<std::size_t> Limit(const Json& v) {
  if (v.is_number_unsigned()) return v.get<std::size_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
    return static_cast<std::size_t>(v.get<std::int64_t>());
  }
  return std::nullopt;
}

std::string FormatNumber(const Json& v) { return v.dump(); }

class Checker {
 public:
  explicit Checker(const Json& root) : root_(root) {}

  void Check(const Json& v, const Json& schema, const std::string& path, int depth,
             std::vector<SchemaViolation>* out) const {
    auto fail = [&](std::string message) { out->push_back({path, std::move(message)}); };
    if (depth > kMaxDepth) {
      fail("schema nesting deeper than " + std::to_string(kMaxDepth) + " (a $ref cycle?)");
      return;
    }
    if (schema.is_boolean()) {
      if (!schema.get<bool>()) fail("no value is allowed here");
      return;
    }
    if (!schema.is_object()) return;

    if (auto it = schema.find("$ref"); it != schema.end() && it->is_string()) {
      const Json* target = Resolve(it->get<std::string>());
      if (target == nullptr) {
        fail("schema $ref '" + it->get<std::string>() + "' does not resolve");
      } else {
        Check(v, *target, path, depth + 1, out);
      }
    }
    if (auto it = schema.find("type"); it != schema.end()) {
      std::vector<std::string> types;
      if (it->is_string()) types.push_back(Lower(it->get<std::string>()));
      if (it->is_array()) {
        for (const Json& t : *it) {
          if (t.is_string()) types.push_back(Lower(t.get<std::string>()));
        }
      }
      bool matched = types.empty();
      for (const std::string& t : types) matched = matched || HasType(v, t);
      if (!matched) {
        std::string expected;
        for (std::size_t i = 0; i < types.size(); ++i) {
          if (i > 0) expected += i + 1 == types.size() ? " or " : ", ";
          expected += Article(types[i]);
        }
        fail("expected " + expected + ", got " + Article(TypeOf(v)));
        return;  // the other keywords would only repeat the mismatch
      }
    }
    if (auto it = schema.find("enum"); it != schema.end() && it->is_array()) {
      if (std::find(it->begin(), it->end(), v) == it->end()) {
        fail(Short(v) + " is not one of " + Short(*it));
      }
    }
    if (auto it = schema.find("const"); it != schema.end() && *it != v) {
      fail("expected " + Short(*it) + ", got " + Short(v));
    }
    CheckCombinators(v, schema, path, depth, out);
    if (v.is_number()) CheckNumber(v, schema, path, out);
    if (v.is_string()) CheckString(v.get_ref<const std::string&>(), schema, path, out);
    if (v.is_array()) CheckArray(v, schema, path, depth, out);
    if (v.is_object()) CheckObject(v, schema, path, depth, out);
  }

 private:
  const Json* Resolve(const std::string& ref) const {
    if (ref == "#") return &root_;
    if (ref.rfind("#/", 0) != 0) return nullptr;
    const Json* node = &root_;
    std::size_t start = 2;
    while (start <= ref.size()) {
      std::size_t end = ref.find('/', start);
      if (end == std::string::npos) end = ref.size();
      std::string token = ref.substr(start, end - start);
      // JSON Pointer escapes: ~1 is '/', ~0 is '~'.
      for (std::size_t p = 0; (p = token.find('~', p)) != std::string::npos; ++p) {
        if (p + 1 < token.size() && token[p + 1] == '1') token.replace(p, 2, "/");
        if (p + 1 < token.size() && token[p + 1] == '0') token.replace(p, 2, "~");
      }
      if (node->is_object()) {
        auto it = node->find(token);
        if (it == node->end()) return nullptr;
        node = &*it;
      } else if (node->is_array()) {
        char* endp = nullptr;
        unsigned long index = std::strtoul(token.c_str(), &endp, 10);
        if (token.empty() || *endp != '\0' || index >= node->size()) return nullptr;
        node = &(*node)[index];
      } else {
        return nullptr;
      }
      start = end + 1;
    }
    return node;
  }

  bool Valid(const Json& v, const Json& schema, const std::string& path, int depth,
             std::vector<SchemaViolation>* first) const {
    std::vector<SchemaViolation> found;
    Check(v, schema, path, depth + 1, &found);
    if (first != nullptr && first->empty() && !found.empty()) first->push_back(found.front());
    return found.empty();
  }

  void CheckCombinators(const Json& v, const Json& schema, const std::string& path, int depth,
                        std::vector<SchemaViolation>* out) const {
    if (auto it = schema.find("allOf"); it != schema.end() && it->is_array()) {
      for (const Json& sub : *it) Check(v, sub, path, depth + 1, out);
    }
    if (auto it = schema.find("anyOf"); it != schema.end() && it->is_array() && !it->empty()) {
      std::vector<SchemaViolation> first;
      bool any = false;
      for (const Json& sub : *it) any = any || Valid(v, sub, path, depth, &first);
      if (!any) {
        std::string detail = first.empty() ? "" : " (first: " + first.front().ToString() + ")";
        out->push_back({path, "matches none of the " + std::to_string(it->size()) +
                                  " anyOf alternatives" + detail});
      }
    }
    if (auto it = schema.find("oneOf"); it != schema.end() && it->is_array() && !it->empty()) {
      std::vector<SchemaViolation> first;
      int matches = 0;
      for (const Json& sub : *it) matches += Valid(v, sub, path, depth, &first) ? 1 : 0;
      if (matches == 0) {
        std::string detail = first.empty() ? "" : " (first: " + first.front().ToString() + ")";
        out->push_back({path, "matches none of the " + std::to_string(it->size()) +
                                  " oneOf alternatives" + detail});
      } else if (matches > 1) {
        out->push_back({path, "matches " + std::to_string(matches) +
                                  " oneOf alternatives, expected exactly one"});
      }
    }
    if (auto it = schema.find("not"); it != schema.end()) {
      if (Valid(v, *it, path, depth, nullptr)) out->push_back({path, "matches a 'not' schema"});
    }
  }

  static void CheckNumber(const Json& v, const Json& schema, const std::string& path,
                          std::vector<SchemaViolation>* out) {
    double x = v.get<double>();
    auto num = [&](const char* key) -> const Json* {
      auto it = schema.find(key);
      return it != schema.end() && it->is_number() ? &*it : nullptr;
    };
    auto flag = [&](const char* key) {
      auto it = schema.find(key);
      return it != schema.end() && it->is_boolean() && it->get<bool>();
    };
    if (const Json* m = num("minimum")) {
      bool exclusive = flag("exclusiveMinimum");
      double limit = m->get<double>();
      if (exclusive ? !(x > limit) : !(x >= limit)) {
        out->push_back(
            {path, FormatNumber(v) +
                       (exclusive ? " is not greater than " : " is less than the minimum ") +
                       FormatNumber(*m)});
      }
    }
    if (const Json* m = num("maximum")) {
      bool exclusive = flag("exclusiveMaximum");
      double limit = m->get<double>();
      if (exclusive ? !(x < limit) : !(x <= limit)) {
        out->push_back(
            {path, FormatNumber(v) +
                       (exclusive ? " is not less than " : " is greater than the maximum ") +
                       FormatNumber(*m)});
      }
    }
    if (const Json* m = num("exclusiveMinimum"); m != nullptr && !(x > m->get<double>())) {
      out->push_back({path, FormatNumber(v) + " is not greater than " + FormatNumber(*m)});
    }
    if (const Json* m = num("exclusiveMaximum"); m != nullptr && !(x < m->get<double>())) {
      out->push_back({path, FormatNumber(v) + " is not less than " + FormatNumber(*m)});
    }
    if (const Json* m = num("multipleOf"); m != nullptr && m->get<double>() > 0) {
      double q = x / m->get<double>();
      if (std::fabs(q - std::round(q)) > 1e-9 * std::max(1.0, std::fabs(q))) {
        out->push_back({path, FormatNumber(v) + " is not a multiple of " + FormatNumber(*m)});
      }
    }
  }

  static void CheckString(const std::string& s, const Json& schema, const std::string& path,
                          std::vector<SchemaViolation>* out) {
    std::size_t length = CodePoints(s);
    if (auto it = schema.find("minLength");
        it != schema.end() && Limit(*it) && length < *Limit(*it)) {
      out->push_back({path, "string of length " + std::to_string(length) +
                                " is shorter than minLength " + it->dump()});
    }
    if (auto it = schema.find("maxLength");
        it != schema.end() && Limit(*it) && length > *Limit(*it)) {
      out->push_back({path, "string of length " + std::to_string(length) +
                                " is longer than maxLength " + it->dump()});
    }
    // std::regex recurses per character: very long strings are not matched against patterns.
    if (auto it = schema.find("pattern");
        it != schema.end() && it->is_string() && s.size() <= kMaxPatternInput) {
      const std::string& pattern = it->get_ref<const std::string&>();
      try {
        std::regex re(pattern, std::regex::ECMAScript);
        if (!std::regex_search(s, re)) {
          out->push_back({path, Short(Json(s)) + " does not match the pattern " + Short(*it)});
        }
      } catch (const std::regex_error& e) {
        out->push_back(
            {path, "the schema's pattern " + Short(*it) + " cannot be used: " + e.what()});
      }
    }
  }

  void CheckArray(const Json& v, const Json& schema, const std::string& path, int depth,
                  std::vector<SchemaViolation>* out) const {
    if (auto it = schema.find("minItems");
        it != schema.end() && Limit(*it) && v.size() < *Limit(*it)) {
      out->push_back({path, "array of " + std::to_string(v.size()) +
                                " items has fewer than minItems " + it->dump()});
    }
    if (auto it = schema.find("maxItems");
        it != schema.end() && Limit(*it) && v.size() > *Limit(*it)) {
      out->push_back({path, "array of " + std::to_string(v.size()) +
                                " items has more than maxItems " + it->dump()});
    }
    if (auto it = schema.find("uniqueItems");
        it != schema.end() && it->is_boolean() && it->get<bool>()) {
      for (std::size_t i = 0; i < v.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j) {
          if (v[i] == v[j]) {
            out->push_back({path, "items " + std::to_string(j) + " and " + std::to_string(i) +
                                      " are equal (uniqueItems)"});
            i = v.size();
            break;
          }
        }
      }
    }
    std::size_t tuple = 0;
    const Json* prefix = nullptr;
    if (auto it = schema.find("prefixItems"); it != schema.end() && it->is_array()) prefix = &*it;
    auto items = schema.find("items");
    if (prefix == nullptr && items != schema.end() && items->is_array()) prefix = &*items;
    if (prefix != nullptr) {
      tuple = std::min(prefix->size(), v.size());
      for (std::size_t i = 0; i < tuple; ++i) {
        Check(v[i], (*prefix)[i], path + "[" + std::to_string(i) + "]", depth + 1, out);
      }
    }
    const Json* rest = nullptr;
    if (items != schema.end() && !items->is_array()) {
      rest = &*items;
    } else if (auto it = schema.find("additionalItems");
               it != schema.end() && prefix != nullptr && prefix == &*items) {
      rest = &*it;
    }
    if (rest != nullptr) {
      for (std::size_t i = tuple; i < v.size(); ++i) {
        Check(v[i], *rest, path + "[" + std::to_string(i) + "]", depth + 1, out);
      }
    }
  }

  void CheckObject(const Json& v, const Json& schema, const std::string& path, int depth,
                   std::vector<SchemaViolation>* out) const {
    if (auto it = schema.find("required"); it != schema.end() && it->is_array()) {
      for (const Json& name : *it) {
        if (name.is_string() && !v.contains(name.get<std::string>())) {
          out->push_back({JsonPathKey(path, name.get<std::string>()), "required but missing"});
        }
      }
    }
    if (auto it = schema.find("minProperties");
        it != schema.end() && Limit(*it) && v.size() < *Limit(*it)) {
      out->push_back({path, "object has fewer than minProperties " + it->dump() + " properties"});
    }
    if (auto it = schema.find("maxProperties");
        it != schema.end() && Limit(*it) && v.size() > *Limit(*it)) {
      out->push_back({path, "object has more than maxProperties " + it->dump() + " properties"});
    }
    auto properties = schema.find("properties");
    auto patterns = schema.find("patternProperties");
    auto additional = schema.find("additionalProperties");
    for (auto member = v.begin(); member != v.end(); ++member) {
      const std::string& key = member.key();
      std::string child = JsonPathKey(path, key);
      bool known = false;
      if (properties != schema.end() && properties->is_object()) {
        if (auto p = properties->find(key); p != properties->end()) {
          known = true;
          Check(member.value(), *p, child, depth + 1, out);
        }
      }
      if (patterns != schema.end() && patterns->is_object()) {
        for (auto p = patterns->begin(); p != patterns->end(); ++p) {
          try {
            if (std::regex_search(key, std::regex(p.key(), std::regex::ECMAScript))) {
              known = true;
              Check(member.value(), p.value(), child, depth + 1, out);
            }
          } catch (const std::regex_error&) {
            // An unusable pattern matches nothing.
          }
        }
      }
      if (!known && additional != schema.end()) {
        if (additional->is_boolean() && !additional->get<bool>()) {
          out->push_back({child, "property is not allowed (additionalProperties is false)"});
        } else if (additional->is_object()) {
          Check(member.value(), *additional, child, depth + 1, out);
        }
      }
    }
  }

  const Json& root_;
};

bool IsIdentifier(std::string_view key) {
  if (key.empty() || std::isdigit(static_cast<unsigned char>(key[0]))) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$';
  });
}

}  // namespace

std::string JsonPathKey(std::string_view path, std::string_view key) {
  if (IsIdentifier(key)) return std::string(path) + "." + std::string(key);
  return std::string(path) + "[" +
         Json(std::string(key)).dump(-1, ' ', false, Json::error_handler_t::replace) + "]";
}

std::vector<SchemaViolation> CheckJsonSchema(const Json& instance, const Json& schema,
                                             std::string_view root_path) {
  std::vector<SchemaViolation> out;
  Checker(schema).Check(instance, schema, std::string(root_path), 0, &out);
  return out;
}

}  // namespace fgnet::network
