#include "model/peft.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include "model/io_util.h"
#include "model/safetensors.h"
#include "tensor/dtype.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace fgnet {
namespace {

constexpr std::string_view kRoot = "base_model.model.";
constexpr std::array<std::string_view, 3> kTextPrefixes = {"model.", "model.language_model.",
                                                           "language_model.model."};
constexpr std::array<std::string_view, 4> kSkippedPrefixes = {
    "model.vision_tower.", "vision_tower.", "model.multi_modal_projector.",
    "multi_modal_projector."};
constexpr std::string_view kSuffixA = ".lora_A.weight";
constexpr std::string_view kSuffixB = ".lora_B.weight";
constexpr const char* kSupported =
    "fgnet adapts only the q/k/v/o/gate/up/down projections of the text model's layers";

// ------------------------------------------------------------------------------------------
// Regexes (peft's keys are Python regexes; the subset fgnet supports is ECMAScript's).

Result<std::regex> CompileRegex(const std::string& text, const std::string& what) {
  try {
    return std::regex(text, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return MakeError(what, ": ", QuoteName(text), " is not a regex fgnet can evaluate (", e.what(),
                     ")");
  }
}

// Whole-string match (Python's re.fullmatch).
Result<bool> FullMatch(const std::regex& re, const std::string& text, const std::string& what) {
  try {
    return std::regex_match(text, re);
  } catch (const std::regex_error& e) {
    return MakeError(what, ": matching ", QuoteName(text), " failed (", e.what(), ")");
  }
}

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// ------------------------------------------------------------------------------------------
// adapter_config.json

struct Pattern {
  std::string key;
  std::regex regex;  // "(.*\.)?(key)"
  double value = 0;
};

struct PeftConfig {
  std::string path;  // of adapter_config.json
  std::int64_t r = 8;
  double alpha = 8.0;
  bool rslora = false;
  enum class Targets : std::uint8_t { kUnstated, kAllLinear, kRegex, kList };
  Targets targets = Targets::kUnstated;
  std::regex target_regex;
  std::vector<std::string> target_names;
  std::vector<std::string> stated_targets;
  bool use_layers = false;
  std::vector<std::int64_t> layers;
  std::vector<std::regex> layer_patterns;  // empty: peft's default rule
  std::optional<std::regex> exclude_regex;
  std::vector<std::string> exclude_names;
  std::vector<Pattern> rank_pattern;
  std::vector<Pattern> alpha_pattern;
  std::vector<std::int32_t> invocation;
  std::string base_model;
};

// A key's value, or nullptr when absent or null.
const Json* Get(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

Error BadValue(const std::string& path, const char* key, const char* expected, const Json& got) {
  return MakeError(path, ": ", key, " must be ", expected, ", got ", DescribeJson(got));
}

Result<std::vector<std::string>> StringList(const std::string& path, const char* key,
                                            const Json& v) {
  std::vector<std::string> out;
  if (!v.is_array()) return BadValue(path, key, "a list of strings", v);
  for (const Json& item : v) {
    if (!item.is_string()) return BadValue(path, key, "a list of strings", v);
    out.push_back(item.get<std::string>());
  }
  return out;
}

// The entries of a pattern object in file order (peft iterates the dict as json.load built it).
Result<std::vector<std::pair<std::string, Json>>> OrderedObject(const std::string& text,
                                                                const std::string& path,
                                                                const char* key) {
  std::vector<std::pair<std::string, Json>> out;
  const auto ordered = nlohmann::ordered_json::parse(text, nullptr, false);
  if (ordered.is_discarded() || !ordered.is_object()) return out;
  const auto it = ordered.find(key);
  if (it == ordered.end() || it->is_null()) return out;
  if (!it->is_object()) return BadValue(path, key, "an object", Json::parse(it->dump()));
  for (const auto& [k, v] : it->items()) out.emplace_back(k, Json::parse(v.dump()));
  return out;
}

Result<std::vector<Pattern>> ReadPatterns(const std::string& text, const std::string& path,
                                          const char* key, bool integer) {
  FGNET_ASSIGN_OR_RETURN(const auto entries, OrderedObject(text, path, key));
  std::vector<Pattern> out;
  for (const auto& [k, v] : entries) {
    const std::string what = path + ": " + key + " key";
    if (integer ? !v.is_number_integer() || v.get<std::int64_t>() < 1 : !v.is_number()) {
      return MakeError(path, ": ", key, "[", QuoteName(k), "] must be ",
                       integer ? "a positive integer" : "a number", ", got ", DescribeJson(v));
    }
    FGNET_ASSIGN_OR_RETURN(std::regex re, CompileRegex("(.*\\.)?(" + k + ")", what));
    out.push_back(Pattern{k, std::move(re), v.get<double>()});
  }
  return out;
}

// Keys whose value true selects a LoRA variant fgnet does not run.
struct Unsupported {
  const char* key;
  const char* why;
};
constexpr Unsupported kUnsupportedSwitches[] = {
    {"use_dora", "DoRA adapters are not supported"},
    {"use_qalora", "QA-LoRA adapters are not supported"},
    {"lora_bias", "adapters with a bias on lora_B are not supported"},
    {"fan_in_fan_out", "transposed (Conv1D) weights do not apply to Gemma 3's linear layers"},
};
constexpr Unsupported kUnsupportedObjects[] = {
    {"use_bdlora", "block-diagonal LoRA is not supported"},
    {"arrow_config", "Arrow routing is not supported"},
    {"velora_config", "VeLoRA is not supported"},
    {"kasa_config", "KaSA is not supported"},
    {"monteclora_config", "MonteCLoRA is not supported"},
    {"trainable_token_indices", "trainable token embeddings are not supported"},
};

Status CheckSupported(const Json& j, const std::string& path) {
  const Json* type = Get(j, "peft_type");
  if (type == nullptr) return MakeError(path, ": peft_type is missing (expected \"LORA\")");
  if (!type->is_string() || type->get<std::string>() != "LORA") {
    return MakeError(path, ": peft_type is ", DescribeJson(*type),
                     ": only LORA adapters are supported");
  }
  for (const auto& u : kUnsupportedSwitches) {
    const Json* v = Get(j, u.key);
    if (v == nullptr) continue;
    if (!v->is_boolean()) return BadValue(path, u.key, "true or false", *v);
    if (v->get<bool>()) return MakeError(path, ": ", u.key, " is true: ", u.why);
  }
  for (const auto& u : kUnsupportedObjects) {
    const Json* v = Get(j, u.key);
    if (v != nullptr && !(v->is_boolean() && !v->get<bool>())) {
      return MakeError(path, ": ", u.key, " is ", DescribeJson(*v), ": ", u.why);
    }
  }
  if (const Json* v = Get(j, "bias"); v != nullptr && (!v->is_string() || *v != "none")) {
    return MakeError(path, ": bias is ", DescribeJson(*v),
                     ": adapters that train biases are not supported (only \"none\")");
  }
  for (const char* key : {"modules_to_save", "target_parameters", "layer_replication"}) {
    const Json* v = Get(j, key);
    if (v == nullptr || (v->is_array() && v->empty())) continue;
    if (std::string_view(key) == "modules_to_save") {
      return MakeError(path, ": modules_to_save is ", DescribeJson(*v),
                       ": adapters that carry whole copies of modules are not supported");
    }
    if (std::string_view(key) == "target_parameters") {
      return MakeError(path, ": target_parameters is ", DescribeJson(*v),
                       ": LoRA on parameters (rather than modules) is not supported");
    }
    return MakeError(path, ": layer_replication is ", DescribeJson(*v),
                     ": adapters that replicate layers are not supported");
  }
  return Ok();
}

// `vocab_size` bounds the invocation tokens.
Result<PeftConfig> ParsePeftConfig(const std::string& text, const std::string& path,
                                   std::int64_t vocab_size) {
  FGNET_ASSIGN_OR_RETURN(const Json j, ParseJson(text, path));
  if (!j.is_object()) return MakeError(path, ": expected a JSON object");
  FGNET_TRY(CheckSupported(j, path));
  PeftConfig c;
  c.path = path;
  if (const Json* v = Get(j, "r")) {
    if (!v->is_number_integer() || v->get<std::int64_t>() < 1) {
      return BadValue(path, "r", "a positive integer", *v);
    }
    c.r = v->get<std::int64_t>();
  }
  if (const Json* v = Get(j, "lora_alpha")) {
    if (!v->is_number()) return BadValue(path, "lora_alpha", "a number", *v);
    c.alpha = v->get<double>();
  }
  if (const Json* v = Get(j, "use_rslora")) {
    if (!v->is_boolean()) return BadValue(path, "use_rslora", "true or false", *v);
    c.rslora = v->get<bool>();
  }
  if (const Json* v = Get(j, "target_modules")) {
    if (v->is_string()) {
      std::string t = v->get<std::string>();
      std::string lower = t;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      c.stated_targets = {t};
      if (lower == "all-linear") {
        c.targets = PeftConfig::Targets::kAllLinear;
      } else {
        c.targets = PeftConfig::Targets::kRegex;
        FGNET_ASSIGN_OR_RETURN(c.target_regex, CompileRegex(t, path + ": target_modules"));
      }
    } else {
      FGNET_ASSIGN_OR_RETURN(c.target_names, StringList(path, "target_modules", *v));
      c.targets = PeftConfig::Targets::kList;
      c.stated_targets = c.target_names;
    }
  }
  if (const Json* v = Get(j, "layers_to_transform")) {
    if (v->is_number_integer()) {
      c.use_layers = true;
      c.layers = {v->get<std::int64_t>()};
    } else if (v->is_array()) {
      for (const Json& item : *v) {
        if (!item.is_number_integer()) {
          return BadValue(path, "layers_to_transform", "an integer or a list of integers", *v);
        }
        c.layers.push_back(item.get<std::int64_t>());
      }
      c.use_layers = !c.layers.empty();
    } else {
      return BadValue(path, "layers_to_transform", "an integer or a list of integers", *v);
    }
  }
  if (const Json* v = Get(j, "layers_pattern")) {
    std::vector<std::string> patterns;
    if (v->is_string()) {
      if (!v->get<std::string>().empty()) patterns.push_back(v->get<std::string>());
    } else {
      FGNET_ASSIGN_OR_RETURN(patterns, StringList(path, "layers_pattern", *v));
    }
    for (const std::string& p : patterns) {
      FGNET_ASSIGN_OR_RETURN(std::regex re, CompileRegex("(?:^|.*?\\.)" + p + "\\.(\\d+)\\.",
                                                         path + ": layers_pattern"));
      c.layer_patterns.push_back(std::move(re));
    }
  }
  if (const Json* v = Get(j, "exclude_modules")) {
    if (v->is_string()) {
      FGNET_ASSIGN_OR_RETURN(c.exclude_regex,
                             CompileRegex(v->get<std::string>(), path + ": exclude_modules"));
    } else {
      FGNET_ASSIGN_OR_RETURN(c.exclude_names, StringList(path, "exclude_modules", *v));
    }
  }
  FGNET_ASSIGN_OR_RETURN(c.rank_pattern, ReadPatterns(text, path, "rank_pattern", true));
  FGNET_ASSIGN_OR_RETURN(c.alpha_pattern, ReadPatterns(text, path, "alpha_pattern", false));
  if (const Json* v = Get(j, "alora_invocation_tokens")) {
    if (!v->is_array()) return BadValue(path, "alora_invocation_tokens", "a list of token ids", *v);
    for (std::size_t i = 0; i < v->size(); ++i) {
      const Json& t = (*v)[i];
      if (!t.is_number_integer() || t.get<std::int64_t>() < 0 ||
          t.get<std::int64_t>() >= vocab_size) {
        return MakeError(path, ": alora_invocation_tokens[", i, "] = ", DescribeJson(t),
                         " is not a token id of the base's vocabulary (", vocab_size, " tokens)");
      }
      c.invocation.push_back(static_cast<std::int32_t>(t.get<std::int64_t>()));
    }
  }
  if (const Json* v = Get(j, "base_model_name_or_path")) {
    if (!v->is_string()) return BadValue(path, "base_model_name_or_path", "a string", *v);
    c.base_model = v->get<std::string>();
  }
  return c;
}

// The layer index peft reads from a module key for layers_to_transform; nullopt: none found.
Result<std::optional<std::int64_t>> LayerIndexOf(const PeftConfig& c, const std::string& key) {
  static const std::regex kDefault("(.*?\\.)[^.]*\\.(\\d+)\\.", std::regex::ECMAScript);
  std::vector<const std::regex*> patterns;
  if (c.layer_patterns.empty()) {
    patterns.push_back(&kDefault);
  } else {
    for (const std::regex& re : c.layer_patterns) patterns.push_back(&re);
  }
  for (const std::regex* re : patterns) {
    std::smatch m;
    try {
      if (!std::regex_search(key, m, *re, std::regex_constants::match_continuous)) continue;
    } catch (const std::regex_error& e) {
      return MakeError(c.path, ": layers_pattern: matching ", QuoteName(key), " failed (", e.what(),
                       ")");
    }
    const std::string digits = m[m.size() - 1].str();
    std::int64_t index = 0;
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec != std::errc() || ptr != digits.data() + digits.size()) {
      return std::optional<std::int64_t>();
    }
    return std::optional<std::int64_t>(index);
  }
  return std::optional<std::int64_t>();
}

// Whether target_modules (and exclude_modules, layers_to_transform) select `key`, as peft's
// check_target_module_exists decides. Only meaningful when the targets are stated.
Result<bool> Selected(const PeftConfig& c, const std::string& key) {
  if (c.exclude_regex) {
    FGNET_ASSIGN_OR_RETURN(const bool excluded,
                           FullMatch(*c.exclude_regex, key, c.path + ": exclude_modules"));
    if (excluded) return false;
  }
  for (const std::string& name : c.exclude_names) {
    if (key == name || EndsWith(key, "." + name)) return false;
  }
  switch (c.targets) {
    case PeftConfig::Targets::kUnstated:
    case PeftConfig::Targets::kAllLinear:
      return true;
    case PeftConfig::Targets::kRegex:
      return FullMatch(c.target_regex, key, c.path + ": target_modules");
    case PeftConfig::Targets::kList:
      break;
  }
  if (std::find(c.target_names.begin(), c.target_names.end(), key) != c.target_names.end()) {
    return true;
  }
  const bool found = std::any_of(c.target_names.begin(), c.target_names.end(),
                                 [&](const std::string& n) { return EndsWith(key, "." + n); });
  if (!found || !c.use_layers) return found;
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::int64_t> index, LayerIndexOf(c, key));
  return index.has_value() && std::find(c.layers.begin(), c.layers.end(), *index) != c.layers.end();
}

// The first pattern matching `key`, or nullptr.
Result<const Pattern*> FindPattern(const std::vector<Pattern>& patterns, const std::string& key,
                                   const std::string& what) {
  for (const Pattern& p : patterns) {
    FGNET_ASSIGN_OR_RETURN(const bool hit, FullMatch(p.regex, key, what));
    if (hit) return &p;
  }
  return static_cast<const Pattern*>(nullptr);
}

// ------------------------------------------------------------------------------------------
// adapter_model.safetensors

struct ModuleRef {
  std::string_view prefix;
  std::int64_t layer = 0;
  LoraModule module = LoraModule::kQ;
};

// "<prefix>layers.N.<module path>" -> its parts; nullopt for any other module key.
std::optional<ModuleRef> ParseModuleKey(std::string_view key) {
  for (std::string_view prefix : kTextPrefixes) {
    const std::string layers = std::string(prefix) + "layers.";
    if (key.substr(0, layers.size()) != layers) continue;
    const std::string_view rest = key.substr(layers.size());
    if (rest.empty() || rest[0] < '0' || rest[0] > '9') return std::nullopt;
    std::int64_t layer = 0;
    const auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), layer);
    if (ec != std::errc() || ptr == rest.data() + rest.size() || *ptr != '.') return std::nullopt;
    const std::string_view path = rest.substr(static_cast<std::size_t>(ptr - rest.data()) + 1);
    for (LoraModule m : kAllLoraModules) {
      if (path == LoraModulePath(m)) return ModuleRef{prefix, layer, m};
    }
    return std::nullopt;
  }
  return std::nullopt;
}

// The config keys behind a module's {out, in} dims, for error messages.
std::pair<const char*, const char*> DimNames(LoraModule m) {
  switch (m) {
    case LoraModule::kQ:
      return {"num_attention_heads * head_dim", "hidden_size"};
    case LoraModule::kK:
    case LoraModule::kV:
      return {"num_key_value_heads * head_dim", "hidden_size"};
    case LoraModule::kO:
      return {"hidden_size", "num_attention_heads * head_dim"};
    case LoraModule::kGate:
    case LoraModule::kUp:
      return {"intermediate_size", "hidden_size"};
    case LoraModule::kDown:
      return {"hidden_size", "intermediate_size"};
  }
  return {"?", "?"};
}

struct ModuleTensors {
  const TensorView* a = nullptr;
  const TensorView* b = nullptr;
  std::string a_name, b_name;
};

// Why a tensor name that is not an A or B of a supported module is rejected.
Error RejectTensor(const std::string& file, const std::string& name) {
  const std::string q = QuoteName(name);
  if (name.find("lora_magnitude_vector") != std::string::npos) {
    return MakeError(file, ": tensor ", q, " is a DoRA magnitude: DoRA adapters are not supported");
  }
  if (name.find("lora_embedding_A") != std::string::npos ||
      name.find("lora_embedding_B") != std::string::npos) {
    return MakeError(file, ": tensor ", q,
                     " is LoRA on the token embeddings, which is not supported (", kSupported, ")");
  }
  if (EndsWith(name, ".lora_B.bias")) {
    return MakeError(file, ": tensor ", q,
                     " is a lora_B bias: adapters with lora_bias are not supported");
  }
  return MakeError(file, ": unknown tensor ", q,
                   " (expected base_model.model.<module>.lora_A.weight / lora_B.weight)");
}

Result<std::map<std::pair<std::int64_t, std::size_t>, ModuleTensors>> CollectTensors(
    const SafetensorsFile& file, const Gemma3Config& base, std::string* prefix) {
  std::map<std::pair<std::int64_t, std::size_t>, ModuleTensors> modules;
  const std::string& path = file.path();
  for (const auto& [name, view] : file.tensors()) {
    if (name.compare(0, kRoot.size(), kRoot) != 0) return RejectTensor(path, name);
    const std::string_view rest = std::string_view(name).substr(kRoot.size());
    if (std::any_of(kSkippedPrefixes.begin(), kSkippedPrefixes.end(),
                    [&](std::string_view p) { return rest.substr(0, p.size()) == p; })) {
      continue;
    }
    const bool is_a = EndsWith(rest, kSuffixA);
    if (!is_a && !EndsWith(rest, kSuffixB)) return RejectTensor(path, name);
    const std::string_view key = rest.substr(0, rest.size() - kSuffixA.size());
    const std::optional<ModuleRef> ref = ParseModuleKey(key);
    if (!ref) {
      return MakeError(path, ": tensor ", QuoteName(name), ": LoRA on module ", QuoteName(key),
                       " is not supported (", kSupported, ")");
    }
    if (ref->layer >= base.num_hidden_layers) {
      return MakeError(path, ": tensor ", QuoteName(name), ": layer ", ref->layer,
                       " is past the base's last layer ", base.num_hidden_layers - 1,
                       " (num_hidden_layers ", base.num_hidden_layers, ")");
    }
    if (prefix->empty()) {
      *prefix = std::string(ref->prefix);
    } else if (*prefix != ref->prefix) {
      return MakeError(path, ": tensor ", QuoteName(name), " is under ", QuoteName(ref->prefix),
                       " but other tensors are under ", QuoteName(*prefix));
    }
    ModuleTensors& mt = modules[{ref->layer, static_cast<std::size_t>(ref->module)}];
    (is_a ? mt.a : mt.b) = &view;
    (is_a ? mt.a_name : mt.b_name) = name;
  }
  return modules;
}

Status CheckShapes(const std::string& file, const Gemma3Config& base, std::int64_t layer,
                   LoraModule m, const ModuleTensors& t) {
  const std::string where = "layer " + std::to_string(layer) + " " + std::string(LoraModuleName(m));
  if (t.a == nullptr || t.b == nullptr) {
    const std::string& have = t.a != nullptr ? t.a_name : t.b_name;
    return MakeError(file, ": ", where, ": has ", QuoteName(have), " but no ",
                     t.a == nullptr ? "lora_A" : "lora_B", " tensor");
  }
  const auto [out, in] = LoraModuleShape(base, m);
  const auto [out_name, in_name] = DimNames(m);
  const auto base_dims = [&] {
    std::ostringstream os;
    os << "the base's " << where << " weight is [" << out << ", " << in << "] (" << out_name
       << " = " << out << ", " << in_name << " = " << in << ")";
    return os.str();
  };
  const TensorView& a = *t.a;
  const TensorView& b = *t.b;
  if (a.rank() != 2 || a.dim(0) < 1 || a.dim(1) != in) {
    return MakeError(file, ": tensor ", QuoteName(t.a_name), " has shape ", ShapeToString(a.shape),
                     " but ", base_dims(), ", so lora_A must be [r, ", in, "]");
  }
  if (b.rank() != 2 || b.dim(0) != out || b.dim(1) != a.dim(0)) {
    return MakeError(file, ": tensor ", QuoteName(t.b_name), " has shape ", ShapeToString(b.shape),
                     " but ", base_dims(), " and lora_A has rank ", a.dim(0),
                     ", so lora_B must be [", out, ", ", a.dim(0), "]");
  }
  return Ok();
}

std::string AdapterName(const std::string& dir) {
  std::filesystem::path p(dir);
  if (p.filename().empty()) p = p.parent_path();
  std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..") {
    std::error_code ec;
    const auto abs = std::filesystem::weakly_canonical(dir, ec);
    if (!ec) name = abs.filename().string();
  }
  return name;
}

}  // namespace

Result<bool> PeftPatternKeyMatches(const std::string& pattern_key, const std::string& module_key) {
  FGNET_ASSIGN_OR_RETURN(const std::regex re,
                         CompileRegex("(.*\\.)?(" + pattern_key + ")", "pattern key"));
  return FullMatch(re, module_key, "pattern key");
}

Result<bool> PeftConfigSelects(const std::string& adapter_config_json,
                               const std::string& module_key) {
  FGNET_ASSIGN_OR_RETURN(const PeftConfig config,
                         ParsePeftConfig(adapter_config_json, "adapter_config.json",
                                         std::numeric_limits<std::int32_t>::max()));
  return Selected(config, module_key);
}

Result<LoraAdapter> LoadPeftAdapter(const std::string& dir, const Gemma3Config& base) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return MakeError(dir,
                     ": not an adapter directory (expected adapter_config.json and "
                     "adapter_model.safetensors inside)");
  }
  const std::string config_path = JoinPath(dir, "adapter_config.json");
  const std::string weights_path = JoinPath(dir, "adapter_model.safetensors");
  if (!IsRegularFile(config_path)) return MakeError(config_path, ": missing");
  if (!IsRegularFile(weights_path)) {
    if (IsRegularFile(JoinPath(dir, "adapter_model.bin"))) {
      return MakeError(JoinPath(dir, "adapter_model.bin"),
                       ": PyTorch pickle adapters are not supported; save the adapter with "
                       "safe_serialization=True to get adapter_model.safetensors");
    }
    return MakeError(weights_path, ": missing");
  }
  FGNET_ASSIGN_OR_RETURN(const std::string config_text, ReadFileToString(config_path));
  FGNET_ASSIGN_OR_RETURN(const PeftConfig config,
                         ParsePeftConfig(config_text, config_path, base.vocab_size));
  FGNET_ASSIGN_OR_RETURN(const SafetensorsFile file, SafetensorsFile::Open(weights_path));
  std::string prefix;
  FGNET_ASSIGN_OR_RETURN(const auto modules, CollectTensors(file, base, &prefix));
  if (modules.empty()) {
    return MakeError(weights_path, ": holds no LoRA tensors for the text model's projections");
  }

  LoraAdapter adapter;
  adapter.name = AdapterName(dir);
  adapter.path = dir;
  adapter.format = "peft";
  adapter.config.r = config.r;
  adapter.config.lora_alpha = config.alpha;
  adapter.config.use_rslora = config.rslora;
  adapter.config.target_modules = config.stated_targets;
  adapter.config.alora_invocation_tokens = config.invocation;
  adapter.config.base_model_name_or_path = config.base_model;
  adapter.layers.resize(static_cast<std::size_t>(base.num_hidden_layers));

  for (std::int64_t l = 0; l < base.num_hidden_layers; ++l) {
    for (LoraModule m : kAllLoraModules) {
      const std::string key =
          prefix + "layers." + std::to_string(l) + "." + std::string(LoraModulePath(m));
      const auto it = modules.find({l, static_cast<std::size_t>(m)});
      const bool has = it != modules.end();
      if (config.targets != PeftConfig::Targets::kUnstated) {
        FGNET_ASSIGN_OR_RETURN(const bool selected, Selected(config, key));
        if (selected && !has) {
          return MakeError(config_path, ": target_modules selects ", QuoteName(key), " but ",
                           weights_path, " has no lora_A / lora_B for it");
        }
        if (has && !selected) {
          return MakeError(
              config_path, ": target_modules does not select ", QuoteName(key), " but ",
              weights_path, " has ",
              QuoteName(it->second.a != nullptr ? it->second.a_name : it->second.b_name));
        }
      }
      if (!has) continue;
      FGNET_TRY(CheckShapes(weights_path, base, l, m, it->second));
      const TensorView& a = *it->second.a;
      const TensorView& b = *it->second.b;
      FGNET_ASSIGN_OR_RETURN(const Pattern* rank_key,
                             FindPattern(config.rank_pattern, key, config_path + ": rank_pattern"));
      FGNET_ASSIGN_OR_RETURN(
          const Pattern* alpha_key,
          FindPattern(config.alpha_pattern, key, config_path + ": alpha_pattern"));
      const auto r = rank_key != nullptr ? static_cast<std::int64_t>(rank_key->value) : config.r;
      const double alpha = alpha_key != nullptr ? alpha_key->value : config.alpha;
      if (a.dim(0) != r) {
        return MakeError(weights_path, ": tensor ", QuoteName(it->second.a_name), " has rank ",
                         a.dim(0), " but ", config_path, " gives ", QuoteName(key), " rank ", r,
                         rank_key != nullptr
                             ? " (rank_pattern key " + QuoteName(rank_key->key) + ")"
                             : std::string(" (r)"));
      }
      LoraLayer& layer = adapter.layers[static_cast<std::size_t>(l)][static_cast<std::size_t>(m)];
      layer.rank = static_cast<std::size_t>(r);
      const double scale = config.rslora ? alpha / std::sqrt(static_cast<double>(r))
                                         : alpha / static_cast<double>(r);
      layer.scale = static_cast<float>(scale);
      layer.a = TensorToF32(a);
      layer.b = TensorToF32(b);
    }
  }
  adapter.content_hash = LoraContentHash(adapter);
  FGNET_TRY(ValidateLoraAdapter(adapter, base));
  return adapter;
}

Status WritePeftAdapter(const LoraAdapter& adapter, const std::string& dir) {
  struct Active {
    std::size_t layer;
    LoraModule module;
    const LoraLayer* lora;
    double alpha;
  };
  std::vector<Active> active;
  for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
    for (LoraModule m : kAllLoraModules) {
      const LoraLayer& layer = adapter.at(l, m);
      if (!layer.active()) continue;
      active.push_back(
          {l, m, &layer, static_cast<double>(layer.scale) * static_cast<double>(layer.rank)});
    }
  }
  if (active.empty()) {
    return MakeError(dir, ": adapter ", QuoteName(adapter.name),
                     " adapts no module; nothing to write");
  }
  // The most common rank and alpha become r and lora_alpha (the smaller one on a tie).
  std::map<std::size_t, int> rank_count;
  std::map<double, int> alpha_count;
  for (const Active& a : active) {
    ++rank_count[a.lora->rank];
    ++alpha_count[a.alpha];
  }
  const auto most = [](const auto& counts) {
    auto best = counts.begin();
    for (auto it = counts.begin(); it != counts.end(); ++it) {
      if (it->second > best->second) best = it;
    }
    return best->first;
  };
  const std::size_t r0 = most(rank_count);
  const double alpha0 = most(alpha_count);

  Json rank_pattern = Json::object();
  Json alpha_pattern = Json::object();
  std::array<std::set<std::size_t>, kNumLoraModules> layers_of;
  std::vector<SafetensorsEntry> entries;
  for (const Active& a : active) {
    const std::string path = std::string(LoraModulePath(a.module));
    const std::string short_key = "layers." + std::to_string(a.layer) + "." + path;
    if (a.lora->rank != r0) rank_pattern[short_key] = a.lora->rank;
    if (a.alpha != alpha0) alpha_pattern[short_key] = a.alpha;
    layers_of[static_cast<std::size_t>(a.module)].insert(a.layer);
    const std::string name = std::string(kRoot) + "model." + short_key;
    const auto r = static_cast<std::int64_t>(a.lora->rank);
    const std::int64_t in = static_cast<std::int64_t>(a.lora->a.size()) / r;
    const std::int64_t out = static_cast<std::int64_t>(a.lora->b.size()) / r;
    entries.push_back(
        {name + std::string(kSuffixA), TensorView{DType::kF32, {r, in}, a.lora->a.data()}});
    entries.push_back(
        {name + std::string(kSuffixB), TensorView{DType::kF32, {out, r}, a.lora->b.data()}});
  }
  // A list of names selects a module on every layer: usable only when each module is adapted on
  // all layers or on none. Otherwise a regex names exactly the adapted modules.
  bool uniform = true;
  Json names = Json::array();
  std::string regex;
  for (LoraModule m : kAllLoraModules) {
    const auto& layers = layers_of[static_cast<std::size_t>(m)];
    if (layers.empty()) continue;
    if (layers.size() != adapter.layers.size()) uniform = false;
    names.push_back(std::string(LoraModuleName(m)));
    std::string path(LoraModulePath(m));
    path.replace(path.find('.'), 1, "\\.");
    if (!regex.empty()) regex.append("|");
    regex.append("model\\.layers\\.(?:");
    bool first = true;
    for (std::size_t l : layers) {
      if (!first) regex.append("|");
      first = false;
      regex.append(std::to_string(l));
    }
    regex.append(")\\.").append(path);
  }
  Json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", r0},
      {"lora_alpha", alpha0},
      {"use_rslora", false},
      {"use_dora", false},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"lora_dropout", 0.0},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", rank_pattern},
      {"alpha_pattern", alpha_pattern},
      {"target_modules", uniform ? names : Json(regex)},
      {"base_model_name_or_path", adapter.config.base_model_name_or_path.empty()
                                      ? Json(nullptr)
                                      : Json(adapter.config.base_model_name_or_path)},
  };
  if (adapter.is_activated())
    config["alora_invocation_tokens"] = adapter.config.alora_invocation_tokens;

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return MakeError(dir, ": cannot create the directory: ", ec.message());
  const std::string config_path = JoinPath(dir, "adapter_config.json");
  {
    std::ofstream f(config_path, std::ios::binary | std::ios::trunc);
    f << config.dump(2) << "\n";
    if (!f) return MakeError(config_path, ": write failed");
  }
  return WriteSafetensors(JoinPath(dir, "adapter_model.safetensors"), entries, {{"format", "pt"}});
}

}  // namespace fgnet
