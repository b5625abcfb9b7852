#include "grammar/json_schema.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string_view>
#include <unordered_set>
#include <utility>

#include "grammar/grammar.h"
#include "grammar/nfa.h"
#include "tokenizer/text_util.h"

namespace fgnet::grammar_detail {
namespace {

// Keywords that only describe (ignored) and keywords that hold definitions (read through $ref).
constexpr std::string_view kIgnoredKeywords[] = {
    "title",    "description", "default",  "examples",  "$schema", "$id",
    "$comment", "deprecated",  "readOnly", "writeOnly", "$defs",   "definitions"};
constexpr std::string_view kSupportedKeywords[] = {
    "type",  "properties", "required",  "additionalProperties",
    "items", "minItems",   "maxItems",  "enum",
    "const", "anyOf",      "minLength", "maxLength",
    "$ref"};

bool Contains(std::span<const std::string_view> list, std::string_view key) {
  return std::find(list.begin(), list.end(), key) != list.end();
}

bool Has(const OrderedJson& schema, std::string_view key) {
  return schema.find(std::string(key)) != schema.end();
}

std::string TypeName(const OrderedJson& v) { return v.type_name(); }

// A non-negative count keyword, at most kMaxRepeatCount; `fallback` when absent.
Result<std::int64_t> ReadCount(const OrderedJson& schema, std::string_view key,
                               std::int64_t fallback, const std::string& path) {
  const auto it = schema.find(std::string(key));
  if (it == schema.end()) return fallback;
  std::int64_t n = -1;
  if (it->is_number_unsigned()) {
    const std::uint64_t u = it->get<std::uint64_t>();
    n = u > static_cast<std::uint64_t>(kMaxRepeatCount) ? kMaxRepeatCount + 1
                                                        : static_cast<std::int64_t>(u);
  } else if (it->is_number_integer()) {
    n = it->get<std::int64_t>();
  } else if (it->is_number_float()) {
    const double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && d >= 0) {
      n = d > static_cast<double>(kMaxRepeatCount) ? kMaxRepeatCount + 1
                                                   : static_cast<std::int64_t>(d);
    }
  }
  if (n < 0) {
    return MakeError(path, ".", key, ": expected a non-negative integer, got ", it->dump());
  }
  if (n > kMaxRepeatCount) {
    return MakeError(path, ".", key, ": ", it->dump(), " is larger than the supported maximum ",
                     kMaxRepeatCount);
  }
  return n;
}

bool MatchesType(const OrderedJson& v, unsigned types) {
  switch (v.type()) {
    case OrderedJson::value_t::null:
      return types & 1u;
    case OrderedJson::value_t::boolean:
      return types & 2u;
    case OrderedJson::value_t::number_integer:
    case OrderedJson::value_t::number_unsigned:
      return types & (4u | 8u);
    case OrderedJson::value_t::number_float: {
      const double d = v.get<double>();
      return (types & 8u) || ((types & 4u) && std::isfinite(d) && d == std::floor(d));
    }
    case OrderedJson::value_t::string:
      return types & 16u;
    case OrderedJson::value_t::array:
      return types & 32u;
    case OrderedJson::value_t::object:
      return types & 64u;
    default:
      return false;
  }
}

// "~1" -> "/", "~0" -> "~" (JSON Pointer).
std::string UnescapePointer(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '~' && i + 1 < s.size() && (s[i + 1] == '0' || s[i + 1] == '1')) {
      out.push_back(s[i + 1] == '0' ? '~' : '/');
      ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

Error OneLine(const Error& error) {
  std::string out;
  for (const char c : error.message()) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    } else {
      out.push_back(c);
    }
  }
  return Error(std::move(out));
}

SchemaCompiler::SchemaCompiler(ValueWriter& writer, const OrderedJson& root, std::string root_path)
    : w_(writer), root_(root), root_path_(std::move(root_path)) {}

Result<Fragment> SchemaCompiler::Compile(const OrderedJson& schema, const std::string& path) {
  if (depth_ >= kMaxSchemaDepth) {
    return MakeError(path, ": schema nested deeper than ", kMaxSchemaDepth, " levels");
  }
  ++depth_;
  Result<Fragment> out = CompileNode(schema, path);
  --depth_;
  if (out.ok() && w_.builder().overflowed()) {
    return MakeError(path, ": the grammar needs more than ", w_.builder().max_states(),
                     " automaton states (lower maxLength / maxItems or simplify the schema)");
  }
  return out;
}

Result<Piece> SchemaCompiler::CompilePiece(const OrderedJson& schema, const std::string& path) {
  const NfaMark begin = w_.builder().Mark();
  FGNET_ASSIGN_OR_RETURN(const Fragment f, Compile(schema, path));
  return Piece{f, begin, w_.builder().Mark()};
}

Result<unsigned> SchemaCompiler::Types(const OrderedJson& schema, const std::string& path) const {
  const auto it = schema.find("type");
  if (it == schema.end()) {
    // Inferred from the keywords present; 0 means "any value".
    unsigned t = 0;
    if (Has(schema, "properties") || Has(schema, "required") ||
        Has(schema, "additionalProperties")) {
      t |= kObject;
    }
    if (Has(schema, "items") || Has(schema, "minItems") || Has(schema, "maxItems")) t |= kArray;
    if (Has(schema, "minLength") || Has(schema, "maxLength")) t |= kString;
    return t;
  }
  std::vector<const OrderedJson*> names;
  if (it->is_string()) {
    names.push_back(&*it);
  } else if (it->is_array() && !it->empty()) {
    for (const auto& n : *it) names.push_back(&n);
  } else {
    return MakeError(path, ".type: expected a type name or a non-empty list of them, got ",
                     it->dump());
  }
  unsigned t = 0;
  for (const OrderedJson* n : names) {
    if (!n->is_string()) return MakeError(path, ".type: expected type names, got ", n->dump());
    std::string name = n->get<std::string>();
    // FunctionGemma declarations write type names upper-cased; accept any case there.
    if (w_.syntax() == ValueSyntax::kFunctionGemma) {
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    static constexpr std::pair<std::string_view, unsigned> kNames[] = {
        {"null", kNull},     {"boolean", kBoolean}, {"integer", kInteger}, {"number", kNumber},
        {"string", kString}, {"array", kArray},     {"object", kObject}};
    const auto found = std::find_if(std::begin(kNames), std::end(kNames),
                                    [&](const auto& p) { return p.first == name; });
    if (found == std::end(kNames)) {
      return MakeError(path, ".type: unknown type ", n->dump());
    }
    t |= found->second;
  }
  return t;
}

Result<Fragment> SchemaCompiler::CompileNode(const OrderedJson& schema, const std::string& path) {
  NfaBuilder& b = w_.builder();
  if (schema.is_boolean()) return schema.get<bool>() ? w_.AnyValue(kAnyValueDepth) : b.Nothing();
  if (!schema.is_object()) {
    return MakeError(path, ": expected a schema (an object or a boolean), got ", TypeName(schema));
  }
  std::vector<std::string> validation;  // the supported keywords present
  for (auto it = schema.begin(); it != schema.end(); ++it) {
    if (Contains(kIgnoredKeywords, it.key())) continue;
    if (!Contains(kSupportedKeywords, it.key())) {
      return MakeError(path, ": keyword '", it.key(), "' is not supported");
    }
    validation.push_back(it.key());
  }
  const auto only_with = [&](std::string_view main,
                             std::span<const std::string_view> allowed) -> Status {
    for (const std::string& k : validation) {
      if (k != main && !Contains(allowed, k)) {
        return MakeError(path, ": keyword '", k, "' alongside '", main, "' is not supported");
      }
    }
    return Ok();
  };
  if (Has(schema, "$ref")) {
    FGNET_TRY(only_with("$ref", {}));
    return CompileRef(schema, path);
  }
  if (Has(schema, "anyOf")) {
    FGNET_TRY(only_with("anyOf", {}));
    return CompileAnyOf(schema, path);
  }
  if (Has(schema, "enum") || Has(schema, "const")) {
    static constexpr std::string_view kWithConstants[] = {"type"};
    if (Has(schema, "enum") && Has(schema, "const")) {
      return MakeError(path, ": keywords 'enum' and 'const' together are not supported");
    }
    FGNET_TRY(only_with(Has(schema, "enum") ? "enum" : "const", kWithConstants));
    return CompileConstants(schema, path);
  }
  FGNET_ASSIGN_OR_RETURN(const unsigned types, Types(schema, path));
  if (types == 0) return w_.AnyValue(kAnyValueDepth);
  std::vector<Fragment> options;
  if (types & kNull) options.push_back(w_.Null());
  if (types & kBoolean) options.push_back(w_.Boolean());
  if (types & kNumber) {
    options.push_back(w_.Number());
  } else if (types & kInteger) {
    options.push_back(w_.Integer());
  }
  if (types & kString) {
    FGNET_ASSIGN_OR_RETURN(const Fragment f, CompileString(schema, path));
    options.push_back(f);
  }
  if (types & kArray) {
    FGNET_ASSIGN_OR_RETURN(const Fragment f, CompileArray(schema, path));
    options.push_back(f);
  }
  if (types & kObject) {
    FGNET_ASSIGN_OR_RETURN(const Fragment f, CompileObject(schema, path));
    options.push_back(f);
  }
  return b.Alternate(options);
}

Result<Fragment> SchemaCompiler::CompileObjectRoot(const OrderedJson& schema,
                                                   const std::string& path) {
  if (!schema.is_object()) {
    return MakeError(path, ": expected a JSON Schema object, got ", TypeName(schema));
  }
  if (Has(schema, "type")) {
    FGNET_ASSIGN_OR_RETURN(const unsigned types, Types(schema, path));
    if (types != kObject) return MakeError(path, ".type: must be \"object\"");
  }
  for (auto it = schema.begin(); it != schema.end(); ++it) {
    if (Contains(kIgnoredKeywords, it.key()) || it.key() == "type" || it.key() == "properties" ||
        it.key() == "required" || it.key() == "additionalProperties") {
      continue;
    }
    return MakeError(path, ": keyword '", it.key(), "' is not supported here");
  }
  return CompileObject(schema, path);
}

Result<Fragment> SchemaCompiler::CompileRef(const OrderedJson& schema, const std::string& path) {
  const OrderedJson& ref = schema["$ref"];
  if (!ref.is_string()) return MakeError(path, ".$ref: expected a string, got ", ref.dump());
  const std::string target = ref.get<std::string>();
  std::string container;
  for (const std::string_view prefix : {"#/$defs/", "#/definitions/"}) {
    if (target.starts_with(prefix)) container = std::string(prefix.substr(2, prefix.size() - 3));
  }
  const std::string_view raw_name = container.empty()
                                        ? std::string_view()
                                        : std::string_view(target).substr(container.size() + 3);
  if (container.empty() || raw_name.empty() || raw_name.find('/') != std::string_view::npos) {
    return MakeError(path,
                     ".$ref: only '#/$defs/NAME' and '#/definitions/NAME' are supported, got '",
                     target, "'");
  }
  if (std::find(ref_stack_.begin(), ref_stack_.end(), target) != ref_stack_.end()) {
    return MakeError(path, ".$ref: recursive reference '", target, "' is not supported");
  }
  const std::string name = UnescapePointer(raw_name);
  const auto defs = root_.find(container);
  if (defs == root_.end() || !defs->is_object() || defs->find(name) == defs->end()) {
    return MakeError(path, ".$ref: '", target, "' is not defined");
  }
  ref_stack_.push_back(target);
  Result<Fragment> out = Compile((*defs)[name], root_path_ + "." + container + "." + name);
  ref_stack_.pop_back();
  return out;
}

Result<Fragment> SchemaCompiler::CompileAnyOf(const OrderedJson& schema, const std::string& path) {
  const OrderedJson& any_of = schema["anyOf"];
  if (!any_of.is_array() || any_of.empty()) {
    return MakeError(path, ".anyOf: expected a non-empty list of schemas");
  }
  std::vector<Fragment> options;
  for (std::size_t i = 0; i < any_of.size(); ++i) {
    FGNET_ASSIGN_OR_RETURN(const Fragment f,
                           Compile(any_of[i], path + ".anyOf[" + std::to_string(i) + "]"));
    options.push_back(f);
  }
  return w_.builder().Alternate(options);
}

Result<Fragment> SchemaCompiler::CompileConstants(const OrderedJson& schema,
                                                  const std::string& path) {
  const bool is_enum = Has(schema, "enum");
  std::vector<const OrderedJson*> values;
  if (is_enum) {
    const OrderedJson& e = schema["enum"];
    if (!e.is_array() || e.empty()) return MakeError(path, ".enum: expected a non-empty list");
    for (const auto& v : e) values.push_back(&v);
  } else {
    values.push_back(&schema["const"]);
  }
  unsigned types = ~0u;
  if (Has(schema, "type")) {
    FGNET_ASSIGN_OR_RETURN(types, Types(schema, path));
  }
  std::vector<std::string> texts;
  std::unordered_set<std::string> seen;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!MatchesType(*values[i], types)) continue;
    const Result<std::string> text = w_.FormatValue(*values[i]);
    if (!text.ok()) {
      return text.error().WithContext(is_enum ? path + ".enum[" + std::to_string(i) + "]"
                                              : path + ".const");
    }
    if (seen.insert(*text).second) texts.push_back(*text);
  }
  if (texts.empty()) {
    return MakeError(path, ": no ", is_enum ? "enum value" : "const value", " has the type ",
                     schema["type"].dump());
  }
  std::vector<Fragment> options;
  options.reserve(texts.size());
  for (const std::string& t : texts) options.push_back(w_.LiteralText(t));
  return w_.builder().Alternate(options);
}

Result<Fragment> SchemaCompiler::CompileObject(const OrderedJson& schema, const std::string& path) {
  static const OrderedJson kNoProperties = OrderedJson::object();
  const OrderedJson* properties = &kNoProperties;
  if (const auto it = schema.find("properties"); it != schema.end()) {
    if (!it->is_object()) return MakeError(path, ".properties: expected an object");
    properties = &*it;
  }
  std::unordered_set<std::string> required;
  if (const auto it = schema.find("required"); it != schema.end()) {
    if (!it->is_array()) return MakeError(path, ".required: expected a list of property names");
    for (const auto& r : *it) {
      if (!r.is_string()) {
        return MakeError(path, ".required: expected property names, got ", r.dump());
      }
      const std::string name = r.get<std::string>();
      if (properties->find(name) == properties->end()) {
        return MakeError(path, ".required: property '", name,
                         "' is not declared in properties (only declared properties are "
                         "generated)");
      }
      required.insert(name);
    }
  }
  if (const auto it = schema.find("additionalProperties"); it != schema.end()) {
    if (!it->is_boolean() && !it->is_object()) {
      return MakeError(path, ".additionalProperties: expected a boolean or a schema");
    }
  }
  // Output order: the schema's (JSON), or dictsort (FunctionGemma, as its chat template writes
  // arguments).
  std::vector<std::string> order;
  if (w_.syntax() == ValueSyntax::kJson) {
    for (auto it = properties->begin(); it != properties->end(); ++it) order.push_back(it.key());
  } else {
    Json keys = Json::object();
    for (auto it = properties->begin(); it != properties->end(); ++it) keys[it.key()] = nullptr;
    for (const std::string* k : DictSortedKeys(keys)) order.push_back(*k);
  }
  NfaBuilder& b = w_.builder();
  std::vector<ValueWriter::Member> members;
  for (const std::string& name : order) {
    std::string prop_path = path;
    prop_path.append(".properties.").append(name);
    const Result<Fragment> key = w_.Key(name);
    if (!key.ok()) return key.error().WithContext(prop_path);
    FGNET_ASSIGN_OR_RETURN(const Fragment value, Compile((*properties)[name], prop_path));
    members.push_back({b.Concat(*key, value), required.count(name) > 0});
  }
  return w_.Object(members);
}

Result<Fragment> SchemaCompiler::CompileArray(const OrderedJson& schema, const std::string& path) {
  FGNET_ASSIGN_OR_RETURN(const std::int64_t min_items, ReadCount(schema, "minItems", 0, path));
  FGNET_ASSIGN_OR_RETURN(const std::int64_t max_items, ReadCount(schema, "maxItems", -1, path));
  if (max_items >= 0 && min_items > max_items) {
    return MakeError(path, ": minItems ", min_items, " is larger than maxItems ", max_items);
  }
  static const OrderedJson kAny = true;
  const OrderedJson* items = &kAny;
  if (const auto it = schema.find("items"); it != schema.end()) {
    if (it->is_array()) {
      return MakeError(path, ".items: a list of item schemas (tuple form) is not supported");
    }
    items = &*it;
  }
  FGNET_ASSIGN_OR_RETURN(const Piece item, CompilePiece(*items, path + ".items"));
  const Fragment out = w_.Array(item, min_items, max_items);
  if (w_.builder().overflowed()) {
    return MakeError(path, ": the grammar needs more than ", w_.builder().max_states(),
                     " automaton states (lower maxItems or simplify the item schema)");
  }
  return out;
}

Result<Fragment> SchemaCompiler::CompileString(const OrderedJson& schema, const std::string& path) {
  FGNET_ASSIGN_OR_RETURN(const std::int64_t min_length, ReadCount(schema, "minLength", 0, path));
  FGNET_ASSIGN_OR_RETURN(const std::int64_t max_length, ReadCount(schema, "maxLength", -1, path));
  if (max_length >= 0 && min_length > max_length) {
    return MakeError(path, ": minLength ", min_length, " is larger than maxLength ", max_length);
  }
  return w_.String(min_length, max_length);
}

}  // namespace fgnet::grammar_detail

namespace fgnet {

using grammar_detail::Fragment;
using grammar_detail::kFirstSpecialSymbol;
using grammar_detail::kMaxDocumentDepth;
using grammar_detail::NfaBuilder;
using grammar_detail::OrderedJson;

Result<std::shared_ptr<const Grammar>> Grammar::FromOrderedSchema(
    const OrderedJson& schema, std::shared_ptr<const TokenVocabulary> vocab,
    GrammarOptions options) {
  FGNET_CHECK(vocab != nullptr);
  FGNET_TRY(CheckOptions(options, "schema"));
  if (!grammar_detail::NestingAtMost(schema, kMaxDocumentDepth)) {
    return MakeError("schema: nested deeper than ", kMaxDocumentDepth, " levels");
  }
  NfaBuilder builder(kFirstSpecialSymbol + vocab->num_symbols(), options.max_nfa_states);
  grammar_detail::ValueWriter writer(builder, grammar_detail::ValueSyntax::kJson, 0);
  grammar_detail::SchemaCompiler compiler(writer, schema, "schema");
  Result<Fragment> root = Fragment{};
  try {
    root = compiler.Compile(schema, "schema");
  } catch (const nlohmann::json::exception& e) {
    return grammar_detail::OneLine(MakeError("schema: ", e.what()));
  }
  if (!root.ok()) return grammar_detail::OneLine(root.error());
  return Create(std::move(builder), *root, std::move(vocab), std::move(options), "schema");
}

Result<std::shared_ptr<const Grammar>> Grammar::FromJsonSchema(
    const Json& schema, std::shared_ptr<const TokenVocabulary> vocab, GrammarOptions options) {
  FGNET_CHECK(vocab != nullptr);
  // Deep documents would recurse deeply in the conversion below: refuse them first.
  if (!grammar_detail::NestingAtMost(schema, kMaxDocumentDepth)) {
    return MakeError("schema: nested deeper than ", kMaxDocumentDepth, " levels");
  }
  return FromOrderedSchema(OrderedJson(schema), std::move(vocab), std::move(options));
}

Result<std::shared_ptr<const Grammar>> Grammar::FromJsonSchemaText(
    std::string_view schema_json, std::shared_ptr<const TokenVocabulary> vocab,
    GrammarOptions options) {
  FGNET_CHECK(vocab != nullptr);
  const OrderedJson schema = OrderedJson::parse(schema_json, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded()) return MakeError("schema: not valid JSON text");
  return FromOrderedSchema(schema, std::move(vocab), std::move(options));
}

}  // namespace fgnet
