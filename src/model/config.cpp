#include "model/config.h"

#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include "model/io_util.h"

namespace fgnet {
namespace {

constexpr std::string_view kSlidingName = "sliding_attention";
constexpr std::string_view kFullName = "full_attention";
constexpr std::int64_t kMaxSize = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t kMaxLayers = 4096;

// Typed access to the keys of one JSON object; errors name the source file and the key's JSON
// path ("text_config.hidden_size"). Absent keys leave the output untouched (the default).
class Keys {
 public:
  Keys(const Json& object, std::string_view source, std::string prefix)
      : object_(object), source_(source), prefix_(std::move(prefix)) {}

  const Json* Find(std::string_view key) const {
    const auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  bool Has(std::string_view key) const { return Find(key) != nullptr; }
  std::string Path(std::string_view key) const { return prefix_ + std::string(key); }

  template <class... Parts>
  Error Fail(std::string_view key, const Parts&... parts) const {
    return MakeError(source_, ": ", Path(key), ": ", parts...);
  }

  Status PositiveInt(std::string_view key, std::int64_t* out, std::int64_t limit = kMaxSize) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    if (!v->is_number_integer() || (!v->is_number_unsigned() && v->get<std::int64_t>() <= 0) ||
        (v->is_number_unsigned() && v->get<std::uint64_t>() == 0)) {
      return Fail(key, "must be a positive integer, got ", DescribeJson(*v));
    }
    if (v->get<std::uint64_t>() > static_cast<std::uint64_t>(limit)) {
      return Fail(key, DescribeJson(*v), " is implausibly large (limit ", limit, ")");
    }
    *out = v->get<std::int64_t>();
    return Ok();
  }

  Status Number(std::string_view key, double* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    if (!v->is_number() || !std::isfinite(v->get<double>())) {
      return Fail(key, "must be a finite number, got ", DescribeJson(*v));
    }
    *out = v->get<double>();
    return Ok();
  }

  Status PositiveNumber(std::string_view key, double* out) const {
    double value = 0;
    FGNET_TRY(Number(key, &value));
    if (!Has(key)) return Ok();
    if (value <= 0) return Fail(key, "must be positive, got ", DescribeJson(*Find(key)));
    *out = value;
    return Ok();
  }

  // null (or absent) means "off".
  Status OptionalPositiveNumber(std::string_view key, std::optional<double>* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    if (v->is_null()) {
      out->reset();
      return Ok();
    }
    double value = 0;
    FGNET_TRY(PositiveNumber(key, &value));
    *out = value;
    return Ok();
  }

  Status Bool(std::string_view key, bool* out, bool null_means_false = false) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    if (null_means_false && v->is_null()) {
      *out = false;
      return Ok();
    }
    if (!v->is_boolean()) return Fail(key, "must be true or false, got ", DescribeJson(*v));
    *out = v->get<bool>();
    return Ok();
  }

  Status String(std::string_view key, std::string* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    if (!v->is_string()) return Fail(key, "must be a string, got ", DescribeJson(*v));
    *out = v->get<std::string>();
    return Ok();
  }

  // A token id or null (-1).
  Status TokenId(std::string_view key, std::int64_t* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    if (v->is_null()) {
      *out = -1;
      return Ok();
    }
    if (!v->is_number_integer() || v->get<std::int64_t>() < 0) {
      return Fail(key, "must be a non-negative integer or null, got ", DescribeJson(*v));
    }
    *out = v->get<std::int64_t>();
    return Ok();
  }

  // An id, a list of ids, or null (empty).
  Status TokenIds(std::string_view key, std::vector<std::int64_t>* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Ok();
    out->clear();
    if (v->is_null()) return Ok();
    const auto valid = [](const Json& id) {
      return id.is_number_integer() && id.get<std::int64_t>() >= 0;
    };
    if (valid(*v)) {
      out->push_back(v->get<std::int64_t>());
      return Ok();
    }
    if (v->is_array()) {
      for (const Json& id : *v) {
        if (!valid(id)) break;
        out->push_back(id.get<std::int64_t>());
      }
      if (out->size() == v->size()) return Ok();
    }
    return Fail(key, "must be a non-negative integer, a list of them, or null, got ",
                DescribeJson(*v));
  }

 private:
  const Json& object_;
  std::string_view source_;
  std::string prefix_;
};

// One resolved RoPE parameter: its value and the JSON path it came from ("" when synthesised).
struct RopeValue {
  const Json* value = nullptr;
  std::string path;
};

struct RopeSpec {
  double theta = 0;
  double factor = 1;
};

// Resolves the RoPE of one layer type as transformers 5.x does (see config.h).
Result<RopeSpec> ResolveRope(const Keys& keys, std::string_view layer_type, std::string_view source,
                             const std::string& prefix) {
  const bool global = layer_type == kFullName;
  const Json default_type = "default";
  std::map<std::string, RopeValue> params;
  const Json* entry = nullptr;
  if (const Json* rp = keys.Find("rope_parameters"); rp != nullptr && !rp->is_null()) {
    if (const auto it = rp->find(layer_type); it != rp->end() && !it->is_null()) entry = &*it;
  }
  const std::string entry_path = prefix + "rope_parameters." + std::string(layer_type);
  if (entry != nullptr) {
    if (!entry->is_object()) {
      return MakeError(source, ": ", entry_path, ": must be an object, got ", DescribeJson(*entry));
    }
    for (const auto& [k, v] : entry->items()) params[k] = {&v, entry_path + "." + k};
  } else {
    params["rope_type"] = {&default_type, ""};
  }
  if (const Json* scaling = keys.Find("rope_scaling"); global && scaling && !scaling->is_null()) {
    if (!scaling->is_object()) {
      return keys.Fail("rope_scaling", "must be an object or null, got ", DescribeJson(*scaling));
    }
    for (const auto& [k, v] : scaling->items()) params[k] = {&v, prefix + "rope_scaling." + k};
  }
  const auto get = [&](const std::string& k) -> const RopeValue* {
    const auto it = params.find(k);
    return it == params.end() ? nullptr : &it->second;
  };
  const auto fail = [&](const RopeValue& v, const auto&... parts) {
    return MakeError(source, ": ", v.path, ": ", parts...);
  };

  const RopeValue* type_value = get("rope_type");
  const RopeValue* legacy_type = get("type");
  if (type_value == nullptr) type_value = legacy_type;
  std::string rope_type = "default";
  if (type_value != nullptr) {
    if (!type_value->value->is_string()) {
      return fail(*type_value, "must be a string, got ", DescribeJson(*type_value->value));
    }
    rope_type = type_value->value->get<std::string>();
  }
  if (legacy_type != nullptr && legacy_type != type_value &&
      *legacy_type->value != *type_value->value) {
    if (type_value->path.empty()) {
      return fail(*legacy_type, DescribeJson(*legacy_type->value),
                  " without rope_type: transformers 5.x ignores it (4.x applies it); write "
                  "rope_type instead");
    }
    return fail(*legacy_type, DescribeJson(*legacy_type->value), " disagrees with ",
                type_value->path, " ", DescribeJson(*type_value->value));
  }

  RopeSpec spec;
  spec.theta = global ? 1'000'000.0 : 10'000.0;
  const std::string_view legacy_theta_key = global ? "rope_theta" : "rope_local_base_freq";
  if (const RopeValue* theta = get("rope_theta"); theta != nullptr) {
    const Json& t = *theta->value;
    if (!t.is_number() || !std::isfinite(t.get<double>()) || t.get<double>() <= 0) {
      return fail(*theta, "must be a positive number, got ", DescribeJson(t));
    }
    spec.theta = t.get<double>();
  } else {
    FGNET_TRY(keys.PositiveNumber(legacy_theta_key, &spec.theta));
  }

  if (rope_type == "linear") {
    const RopeValue* factor = get("factor");
    if (factor == nullptr) {
      const std::string where = type_value->path.empty() ? entry_path : type_value->path;
      return MakeError(source, ": ", where, ": rope_type 'linear' needs a factor");
    }
    const Json& f = *factor->value;
    if (!f.is_number() || !std::isfinite(f.get<double>()) || f.get<double>() <= 0) {
      return fail(*factor, "must be a positive number, got ", DescribeJson(f));
    }
    spec.factor = f.get<double>();
  } else if (rope_type != "default") {
    return fail(*type_value, "unsupported rope_type ", QuoteName(rope_type),
                ": fgnet supports default and linear");
  }
  return spec;
}

Status ReadLayerTypes(const Keys& keys, Gemma3Config* c) {
  const Json* types = keys.Find("layer_types");
  const auto n = static_cast<std::size_t>(c->num_hidden_layers);
  c->layer_types.clear();
  if (types == nullptr || types->is_null()) {
    std::int64_t pattern = 6;
    FGNET_TRY(keys.PositiveInt("sliding_window_pattern", &pattern));
    for (std::size_t i = 0; i < n; ++i) {
      const bool global = (static_cast<std::int64_t>(i) + 1) % pattern == 0;
      c->layer_types.push_back(global ? LayerType::kGlobal : LayerType::kSliding);
    }
    return Ok();
  }
  if (!types->is_array()) {
    return keys.Fail("layer_types", "must be a list of strings, got ", DescribeJson(*types));
  }
  if (types->size() != n) {
    return keys.Fail("layer_types", "has ", types->size(), " entries but num_hidden_layers is ",
                     c->num_hidden_layers);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const Json& t = (*types)[i];
    if (t.is_string() && t.get_ref<const std::string&>() == kSlidingName) {
      c->layer_types.push_back(LayerType::kSliding);
    } else if (t.is_string() && t.get_ref<const std::string&>() == kFullName) {
      c->layer_types.push_back(LayerType::kGlobal);
    } else {
      return keys.Fail("layer_types", "entry ", i, " is ", DescribeJson(t),
                       "; fgnet runs sliding_attention and full_attention");
    }
  }
  return Ok();
}

Status CheckArchitectures(const Keys& top, Gemma3Config* c) {
  const Json* archs = top.Find("architectures");
  if (archs == nullptr || archs->is_null()) return Ok();
  if (!archs->is_array()) {
    return top.Fail("architectures", "must be a list of strings, got ", DescribeJson(*archs));
  }
  for (const Json& a : *archs) {
    if (!a.is_string()) {
      return top.Fail("architectures", "must be a list of strings, got ", DescribeJson(*archs));
    }
    const auto& name = a.get_ref<const std::string&>();
    if (name != "Gemma3ForCausalLM" && name != "Gemma3ForConditionalGeneration") {
      return top.Fail("architectures", "unsupported architecture ", QuoteName(name),
                      ": fgnet runs Gemma3ForCausalLM and Gemma3ForConditionalGeneration");
    }
    c->architectures.push_back(name);
  }
  return Ok();
}

Status ReadTextModel(const Keys& t, const std::string& prefix, std::string_view source,
                     Gemma3Config* c) {
  // transformers' Gemma3TextConfig defaults.
  c->vocab_size = 262'208;
  c->hidden_size = 2304;
  c->intermediate_size = 9216;
  c->num_hidden_layers = 26;
  c->num_attention_heads = 8;
  c->num_key_value_heads = 4;
  c->head_dim = 256;
  c->max_position_embeddings = 131'072;
  c->sliding_window = 4096;
  c->query_pre_attn_scalar = 256;
  c->rms_norm_eps = 1e-6;

  FGNET_TRY(t.PositiveInt("vocab_size", &c->vocab_size));
  FGNET_TRY(t.PositiveInt("hidden_size", &c->hidden_size));
  FGNET_TRY(t.PositiveInt("intermediate_size", &c->intermediate_size));
  FGNET_TRY(t.PositiveInt("num_hidden_layers", &c->num_hidden_layers, kMaxLayers));
  FGNET_TRY(t.PositiveInt("num_attention_heads", &c->num_attention_heads));
  FGNET_TRY(t.PositiveInt("num_key_value_heads", &c->num_key_value_heads));
  FGNET_TRY(t.PositiveInt("head_dim", &c->head_dim));
  FGNET_TRY(t.PositiveInt("max_position_embeddings", &c->max_position_embeddings));
  if (c->num_attention_heads % c->num_key_value_heads != 0) {
    return t.Fail("num_attention_heads", c->num_attention_heads,
                  " is not a multiple of num_key_value_heads ", c->num_key_value_heads);
  }

  std::int64_t scalar = 256;
  FGNET_TRY(t.PositiveInt("query_pre_attn_scalar", &scalar));
  c->query_pre_attn_scalar = static_cast<double>(scalar);
  double eps = c->rms_norm_eps;
  FGNET_TRY(t.Number("rms_norm_eps", &eps));
  if (eps < 0) return t.Fail("rms_norm_eps", "must not be negative, got ", eps);
  c->rms_norm_eps = eps;
  FGNET_TRY(t.OptionalPositiveNumber("final_logit_softcapping", &c->final_logit_softcapping));
  FGNET_TRY(t.OptionalPositiveNumber("attn_logit_softcapping", &c->attn_logit_softcapping));

  FGNET_TRY(t.String("hidden_activation", &c->hidden_activation));
  if (c->hidden_activation != "gelu_pytorch_tanh") {
    return t.Fail("hidden_activation", "unsupported activation ", QuoteName(c->hidden_activation),
                  ": fgnet runs gelu_pytorch_tanh");
  }
  bool bidirectional = false;
  FGNET_TRY(t.Bool("use_bidirectional_attention", &bidirectional, /*null_means_false=*/true));
  if (bidirectional) {
    return t.Fail("use_bidirectional_attention",
                  "true is not supported: fgnet runs causal Gemma 3 language models");
  }
  bool bias = false;
  FGNET_TRY(t.Bool("attention_bias", &bias));
  if (bias) return t.Fail("attention_bias", "true is not supported: Gemma 3 has no biases");

  FGNET_TRY(ReadLayerTypes(t, c));
  if (const Json* w = t.Find("sliding_window"); w != nullptr && w->is_null()) {
    c->sliding_window = 0;
  } else {
    FGNET_TRY(t.PositiveInt("sliding_window", &c->sliding_window));
  }
  for (std::size_t i = 0; i < c->layer_types.size(); ++i) {
    if (c->layer_types[i] == LayerType::kSliding && c->sliding_window == 0) {
      return t.Fail("sliding_window", "is null but layer ", i, " uses sliding_attention");
    }
  }

  if (const Json* rp = t.Find("rope_parameters"); rp != nullptr && !rp->is_null()) {
    if (!rp->is_object()) {
      return t.Fail("rope_parameters", "must be an object, got ", DescribeJson(*rp));
    }
    for (const auto& [k, v] : rp->items()) {
      if (k != kFullName && k != kSlidingName) {
        return t.Fail("rope_parameters", "key ", QuoteName(k),
                      " is not a layer type; fgnet reads rope_parameters keyed by full_attention "
                      "and sliding_attention");
      }
    }
  }
  FGNET_ASSIGN_OR_RETURN(const RopeSpec global, ResolveRope(t, kFullName, source, prefix));
  FGNET_ASSIGN_OR_RETURN(const RopeSpec local, ResolveRope(t, kSlidingName, source, prefix));
  c->rope_theta_global = global.theta;
  c->rope_scaling_global = global.factor;
  c->rope_theta_local = local.theta;
  c->rope_scaling_local = local.factor;
  return Ok();
}

Status CheckTokenIdInVocab(const Keys& keys, std::string_view key, std::int64_t id,
                           std::int64_t vocab) {
  if (id >= vocab) {
    return keys.Fail(key, "id ", id, " is outside the vocabulary (vocab_size ", vocab, ")");
  }
  return Ok();
}

}  // namespace

Result<Gemma3Config> ParseGemma3Config(const Json& json, std::string_view source) {
  if (!json.is_object()) {
    return MakeError(source, ": must be a JSON object, got ", json.type_name());
  }
  const Keys top(json, source, "");
  const Json* model_type = top.Find("model_type");
  if (model_type == nullptr) {
    return MakeError(source, ": missing model_type (fgnet runs gemma3_text)");
  }
  if (!model_type->is_string()) {
    return top.Fail("model_type", "must be a string, got ", DescribeJson(*model_type));
  }
  Gemma3Config c;
  const Json empty = Json::object();
  const Json* text = &json;
  std::string prefix;
  if (*model_type == "gemma3") {
    c.multimodal = true;
    prefix = "text_config.";
    const Json* tc = top.Find("text_config");
    if (tc == nullptr || tc->is_null()) {
      text = &empty;  // transformers builds a default Gemma3TextConfig
    } else if (!tc->is_object()) {
      return top.Fail("text_config", "must be an object, got ", DescribeJson(*tc));
    } else {
      text = tc;
    }
    const auto inner = text->find("model_type");
    if (inner != text->end() && *inner != "gemma3_text") {
      return MakeError(source, ": unsupported text_config.model_type ", DescribeJson(*inner),
                       ": fgnet runs gemma3_text");
    }
  } else if (*model_type != "gemma3_text") {
    return MakeError(source, ": unsupported model_type ",
                     QuoteName(model_type->get_ref<const std::string&>()),
                     ": fgnet runs gemma3_text");
  }
  FGNET_TRY(CheckArchitectures(top, &c));
  const Keys t(*text, source, prefix);
  FGNET_TRY(ReadTextModel(t, prefix, source, &c));

  // Token ids: the top level of a multimodal config wins, as transformers reads it there.
  const Keys& id_keys_eos = c.multimodal && top.Has("eos_token_id") ? top : t;
  FGNET_TRY(id_keys_eos.TokenIds("eos_token_id", &c.eos_token_ids));
  for (const auto id : c.eos_token_ids) {
    FGNET_TRY(CheckTokenIdInVocab(id_keys_eos, "eos_token_id", id, c.vocab_size));
  }
  for (const auto& [key, out] :
       {std::pair{"bos_token_id", &c.bos_token_id}, std::pair{"pad_token_id", &c.pad_token_id}}) {
    const Keys& keys = c.multimodal && top.Has(key) ? top : t;
    FGNET_TRY(keys.TokenId(key, out));
    FGNET_TRY(CheckTokenIdInVocab(keys, key, *out, c.vocab_size));
  }
  FGNET_TRY((c.multimodal ? top : t).Bool("tie_word_embeddings", &c.tie_word_embeddings));

  for (const char* key : {"dtype", "torch_dtype"}) {
    const Keys& keys = t.Has(key) ? t : top;
    if (const Json* v = keys.Find(key); v != nullptr && !v->is_null()) {
      FGNET_TRY(keys.String(key, &c.torch_dtype));
      break;
    }
  }
  return c;
}

Result<Gemma3Config> LoadGemma3Config(const std::string& path) {
  FGNET_ASSIGN_OR_RETURN(const Json json, ReadJsonFile(path));
  return ParseGemma3Config(json, path);
}

Json Gemma3ConfigToJson(const Gemma3Config& c) {
  const auto rope = [](double theta, double factor) {
    Json r = {{"rope_type", factor == 1.0 ? "default" : "linear"}, {"rope_theta", theta}};
    if (factor != 1.0) r["factor"] = factor;
    return r;
  };
  const auto id_or_null = [](std::int64_t id) { return id < 0 ? Json(nullptr) : Json(id); };
  Json j = Json::object();
  j["architectures"] = Json::array({"Gemma3ForCausalLM"});
  j["model_type"] = "gemma3_text";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["sliding_window"] = c.sliding_window > 0 ? Json(c.sliding_window) : Json(nullptr);
  Json types = Json::array();
  for (const auto t : c.layer_types) {
    types.push_back(t == LayerType::kSliding ? kSlidingName : kFullName);
  }
  j["layer_types"] = std::move(types);
  j["rope_parameters"] = {
      {std::string(kFullName), rope(c.rope_theta_global, c.rope_scaling_global)},
      {std::string(kSlidingName), rope(c.rope_theta_local, c.rope_scaling_local)}};
  const double scalar = c.query_pre_attn_scalar;
  j["query_pre_attn_scalar"] = scalar == std::floor(scalar) && std::abs(scalar) < 1e15
                                   ? Json(static_cast<std::int64_t>(scalar))
                                   : Json(scalar);
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["final_logit_softcapping"] =
      c.final_logit_softcapping ? Json(*c.final_logit_softcapping) : Json(nullptr);
  j["attn_logit_softcapping"] =
      c.attn_logit_softcapping ? Json(*c.attn_logit_softcapping) : Json(nullptr);
  j["hidden_activation"] = c.hidden_activation;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = id_or_null(c.bos_token_id);
  j["pad_token_id"] = id_or_null(c.pad_token_id);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["attention_bias"] = false;
  j["use_bidirectional_attention"] = false;
  if (!c.torch_dtype.empty()) j["dtype"] = c.torch_dtype;
  return j;
}

}  // namespace fgnet
