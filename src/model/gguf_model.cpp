#include "model/gguf_model.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "model/io_util.h"

namespace fgnet {
namespace {

constexpr std::string_view kArchitecture = "gemma3";
// llama.cpp's assumptions for gemma3 (see the header).
constexpr std::int64_t kSlidingPeriod = 6;
constexpr double kLocalRopeTheta = 10000.0;
constexpr double kDefaultRopeTheta = 10000.0;
constexpr std::int64_t kLayersOf27B = 62;
// Sizes and ids past this are rejected (no model comes near; it keeps products in range).
constexpr std::int64_t kMaxSize = std::numeric_limits<std::int32_t>::max();
// ggml's quantization version of the block formats fgnet writes (GGML_QNT_VERSION).
constexpr std::uint32_t kQuantizationVersion = 2;

std::string Key(std::string_view suffix) {
  return std::string(kArchitecture) + "." + std::string(suffix);
}

// One tensor of a layer: its GGUF name, its Hugging Face name and where Gemma3Weights keeps it.
struct LayerTensor {
  std::string_view gguf;
  std::string_view hf;
  TensorView Gemma3LayerWeights::*field;
  bool norm;
};

constexpr LayerTensor kLayerTensors[] = {
    {"attn_norm", "input_layernorm", &Gemma3LayerWeights::input_layernorm, true},
    {"attn_q", "self_attn.q_proj", &Gemma3LayerWeights::q_proj, false},
    {"attn_k", "self_attn.k_proj", &Gemma3LayerWeights::k_proj, false},
    {"attn_v", "self_attn.v_proj", &Gemma3LayerWeights::v_proj, false},
    {"attn_output", "self_attn.o_proj", &Gemma3LayerWeights::o_proj, false},
    {"attn_q_norm", "self_attn.q_norm", &Gemma3LayerWeights::q_norm, true},
    {"attn_k_norm", "self_attn.k_norm", &Gemma3LayerWeights::k_norm, true},
    {"post_attention_norm", "post_attention_layernorm",
     &Gemma3LayerWeights::post_attention_layernorm, true},
    {"ffn_norm", "pre_feedforward_layernorm", &Gemma3LayerWeights::pre_feedforward_layernorm, true},
    {"ffn_gate", "mlp.gate_proj", &Gemma3LayerWeights::gate_proj, false},
    {"ffn_up", "mlp.up_proj", &Gemma3LayerWeights::up_proj, false},
    {"ffn_down", "mlp.down_proj", &Gemma3LayerWeights::down_proj, false},
    {"post_ffw_norm", "post_feedforward_layernorm", &Gemma3LayerWeights::post_feedforward_layernorm,
     true},
};

std::string LayerName(std::int64_t layer, std::string_view tensor) {
  return "blk." + std::to_string(layer) + "." + std::string(tensor) + ".weight";
}

// The double whose shortest decimal form is that of `f`: an f32 1e-6 reads as 1e-6.
double F32ToDecimal(float f) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), f);
  double d = static_cast<double>(f);
  if (ec == std::errc()) std::from_chars(buf, end, d);
  return d;
}

// Typed access to the metadata, with errors naming the file and the key.
class Meta {
 public:
  explicit Meta(const GgufFile& file) : file_(file) {}

  Result<std::optional<std::int64_t>> Int(const std::string& key) const {
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) return std::optional<std::int64_t>();
    const std::optional<std::int64_t> i = v->AsInt();
    if (!i) return WrongType(key, *v, "an integer");
    return i;
  }

  // A required integer of at least `min`.
  Result<std::int64_t> Required(const std::string& key, std::int64_t min = 1) const {
    FGNET_ASSIGN_OR_RETURN(const std::optional<std::int64_t> v, Int(key));
    if (!v) return MakeError(file_.path(), ": missing metadata ", QuoteName(key));
    return AtLeast(key, *v, min);
  }

  // An optional integer of at least `min`, or `fallback`.
  Result<std::int64_t> Optional(const std::string& key, std::int64_t fallback,
                                std::int64_t min = 1) const {
    FGNET_ASSIGN_OR_RETURN(const std::optional<std::int64_t> v, Int(key));
    if (!v) return fallback;
    return AtLeast(key, *v, min);
  }

  Result<std::optional<double>> Float(const std::string& key) const {
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) return std::optional<double>();
    if (const auto f = v->AsF32()) return std::optional<double>(F32ToDecimal(*f));
    const std::optional<double> d = v->AsDouble();
    if (!d) return WrongType(key, *v, "a number");
    return d;
  }

  Result<std::optional<std::string>> String(const std::string& key) const {
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) return std::optional<std::string>();
    if (v->AsString() == nullptr) return WrongType(key, *v, "a string");
    return std::optional<std::string>(*v->AsString());
  }

  Error WrongType(const std::string& key, const GgufValue& v, std::string_view want) const {
    return MakeError(file_.path(), ": metadata ", QuoteName(key), " must be ", want, ", found ",
                     GgufTypeName(v.type()), " ", v.Describe());
  }

 private:
  Result<std::int64_t> AtLeast(const std::string& key, std::int64_t v, std::int64_t min) const {
    if (v < min) {
      return MakeError(file_.path(), ": metadata ", QuoteName(key), " is ", v,
                       ", expected at least ", min);
    }
    if (v > kMaxSize) {
      return MakeError(file_.path(), ": metadata ", QuoteName(key), " is ", v,
                       ", more than fgnet supports (", kMaxSize, ")");
    }
    return v;
  }

  const GgufFile& file_;
};

Status CheckArchitecture(const GgufFile& file, std::string_view want_type) {
  const Meta meta(file);
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> arch,
                         meta.String("general.architecture"));
  if (!arch) return MakeError(file.path(), ": missing metadata 'general.architecture'");
  if (*arch != kArchitecture) {
    return MakeError(file.path(), ": general.architecture is ", QuoteName(*arch), ", expected '",
                     kArchitecture, "' (fgnet runs Gemma 3 models only)");
  }
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> type, meta.String("general.type"));
  if (type && *type != want_type) {
    return MakeError(file.path(), ": general.type is ", QuoteName(*type), ", expected '", want_type,
                     "'", *type == "adapter" ? " (this is a LoRA adapter, not a model)" : "");
  }
  return Ok();
}

// The layer types: an integer period (llama.cpp's set_swa_pattern) or one bool per layer.
Result<std::vector<LayerType>> LayerTypes(const GgufFile& file, std::int64_t layers,
                                          bool any_sliding) {
  const std::string key = Key("attention.sliding_window_pattern");
  const GgufValue* v = file.Find(key);
  std::vector<LayerType> types(static_cast<std::size_t>(layers), LayerType::kGlobal);
  if (!any_sliding) {
    if (v != nullptr) {
      return MakeError(file.path(), ": metadata ", QuoteName(key), " is set but ",
                       Key("attention.sliding_window"), " is absent or 0");
    }
    return types;
  }
  std::int64_t period = kSlidingPeriod;
  if (v != nullptr) {
    if (const GgufArray* array = v->AsArray()) {
      if (array->type != GgufType::kBool ||
          static_cast<std::int64_t>(array->items.size()) != layers) {
        return MakeError(file.path(), ": metadata ", QuoteName(key), " is ", v->Describe(),
                         ", expected a period or ", layers, " bools (one per layer)");
      }
      for (std::size_t i = 0; i < types.size(); ++i) {
        types[i] = *array->items[i].AsBool() ? LayerType::kSliding : LayerType::kGlobal;
      }
      return types;
    }
    FGNET_ASSIGN_OR_RETURN(period, Meta(file).Required(key));
  }
  for (std::int64_t i = 0; i < layers; ++i) {
    if (i % period < period - 1) types[static_cast<std::size_t>(i)] = LayerType::kSliding;
  }
  return types;
}

// An expected dimension and the metadata it comes from ("gemma3.embedding_length 40").
struct Dim {
  std::int64_t value;
  std::string what;
};

Status CheckShape(const GgufFile& file, const GgufTensorInfo& t, const std::vector<Dim>& dims) {
  bool same = t.shape.size() == dims.size();
  for (std::size_t i = 0; same && i < dims.size(); ++i) same = t.shape[i] == dims[i].value;
  if (same) return Ok();
  std::vector<std::int64_t> want;
  std::string why;
  for (const Dim& d : dims) {
    want.push_back(d.value);
    if (why.find(d.what) == std::string::npos) why += (why.empty() ? "" : ", ") + d.what;
  }
  return MakeError(file.path(), ": tensor ", QuoteName(t.name), " has shape ",
                   ShapeToString(t.shape), ", expected ", ShapeToString(want),
                   " from the metadata (", why, ")");
}

// Every tensor the config requires is present with the shape the metadata implies; layer
// tensors of layers past block_count are errors.
Status CheckTensors(const GgufFile& file, const Gemma3Config& c) {
  const auto n = [](std::int64_t v) { return std::to_string(v); };
  const Dim hidden{c.hidden_size, Key("embedding_length ") + n(c.hidden_size)};
  const Dim vocab{c.vocab_size, "the rows of token_embd.weight " + n(c.vocab_size)};
  const Dim inter{c.intermediate_size, Key("feed_forward_length ") + n(c.intermediate_size)};
  const Dim head{c.head_dim, Key("attention.key_length ") + n(c.head_dim)};
  const Dim q{c.q_dim(), Key("attention.head_count ") + n(c.num_attention_heads) +
                             " * key_length " + n(c.head_dim)};
  const Dim kv{c.kv_dim(), Key("attention.head_count_kv ") + n(c.num_key_value_heads) +
                               " * key_length " + n(c.head_dim)};
  const auto check = [&](const std::string& name, const std::vector<Dim>& dims) -> Status {
    const GgufTensorInfo* t = file.FindTensor(name);
    if (t == nullptr) return MakeError(file.path(), ": missing tensor ", QuoteName(name));
    return CheckShape(file, *t, dims);
  };
  FGNET_TRY(check("token_embd.weight", {vocab, hidden}));
  FGNET_TRY(check("output_norm.weight", {hidden}));
  if (!c.tie_word_embeddings) FGNET_TRY(check("output.weight", {vocab, hidden}));
  const std::map<std::string_view, std::vector<Dim>> shapes = {
      {"attn_norm", {hidden}},      {"attn_q", {q, hidden}},
      {"attn_k", {kv, hidden}},     {"attn_v", {kv, hidden}},
      {"attn_output", {hidden, q}}, {"attn_q_norm", {head}},
      {"attn_k_norm", {head}},      {"post_attention_norm", {hidden}},
      {"ffn_norm", {hidden}},       {"ffn_gate", {inter, hidden}},
      {"ffn_up", {inter, hidden}},  {"ffn_down", {hidden, inter}},
      {"post_ffw_norm", {hidden}}};
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const LayerTensor& lt : kLayerTensors) {
      FGNET_TRY(check(LayerName(l, lt.gguf), shapes.at(lt.gguf)));
    }
  }
  for (const GgufTensorInfo& t : file.tensors()) {
    const auto parsed = ParseLayerName(t.name);
    if (parsed && parsed->first >= c.num_hidden_layers) {
      return MakeError(file.path(), ": tensor ", QuoteName(t.name), " belongs to layer ",
                       parsed->first, " but ", Key("block_count"), " is ", c.num_hidden_layers);
    }
  }
  return Ok();
}

// The Hugging Face name of a GGUF tensor, or the GGUF name itself for tensors fgnet does not use.
std::string HfName(const std::string& name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  if (const auto parsed = ParseLayerName(name)) {
    for (const LayerTensor& lt : kLayerTensors) {
      if (parsed->second == lt.gguf) {
        return "model.layers." + std::to_string(parsed->first) + "." + std::string(lt.hf) +
               ".weight";
      }
    }
  }
  return name;
}

bool IsHexHash(const std::string& s) {
  if (s.size() != 64) return false;
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string Lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// "none" for a file without quantized tensors; else fgnet.quantization where fgnet recorded the
// scheme, or the scheme llama.cpp's general.file_type names, or the quantized type holding most
// of the layers' bytes ("q8_0", "q4_k", ...).
Result<std::string> QuantizationOf(const GgufFile& file) {
  std::map<DType, std::uint64_t> bytes;
  bool any = false;
  for (const GgufTensorInfo& t : file.tensors()) {
    if (!IsQuantized(t.view.dtype)) continue;
    any = true;
    if (ParseLayerName(t.name)) bytes[t.view.dtype] += t.size;
  }
  if (!any) return std::string("none");
  const Meta meta(file);
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> recorded,
                         meta.String("fgnet.quantization"));
  if (recorded && !recorded->empty()) return *recorded;
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::int64_t> file_type,
                         meta.Int("general.file_type"));
  if (file_type) {
    switch (*file_type) {
      case 2:
        return std::string("q4_0");
      case 7:
        return std::string("q8_0");
      case 14:  // MOSTLY_Q4_K_S
      case 15:  // MOSTLY_Q4_K_M
        return std::string("q4_k");
      case 18:
        return std::string("q6_k");
      default:
        break;
    }
  }
  if (bytes.empty()) return std::string("none");
  auto best = bytes.begin();
  for (auto it = bytes.begin(); it != bytes.end(); ++it) {
    if (it->second > best->second) best = it;
  }
  return Lowercase(DTypeName(best->first));
}

std::string DirectoryOf(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::optional<std::pair<std::int64_t, std::string_view>> ParseLayerName(std::string_view name) {
  constexpr std::string_view kPrefix = "blk.";
  constexpr std::string_view kSuffix = ".weight";
  if (!name.starts_with(kPrefix) || !name.ends_with(kSuffix)) return std::nullopt;
  const char* begin = name.data() + kPrefix.size();
  const char* end = name.data() + name.size() - kSuffix.size();
  std::int64_t layer = 0;
  const auto [ptr, ec] = std::from_chars(begin, end, layer);
  if (ec != std::errc() || ptr == begin || ptr == end || *ptr != '.' || layer < 0) {
    return std::nullopt;
  }
  return std::make_pair(layer, std::string_view(ptr + 1, static_cast<std::size_t>(end - ptr - 1)));
}

Result<Gemma3Config> Gemma3ConfigFromGguf(const GgufFile& file) {
  FGNET_TRY(CheckArchitecture(file, "model"));
  const Meta meta(file);
  const std::string& path = file.path();
  Gemma3Config c;
  c.model_type = "gemma3_text";
  c.architectures = {"Gemma3ForCausalLM"};
  FGNET_ASSIGN_OR_RETURN(c.num_hidden_layers, meta.Required(Key("block_count")));
  if (static_cast<std::uint64_t>(c.num_hidden_layers) > file.tensors().size()) {
    return MakeError(path, ": ", Key("block_count "), c.num_hidden_layers, " but the file holds ",
                     file.tensors().size(), " tensors");
  }
  FGNET_ASSIGN_OR_RETURN(c.hidden_size, meta.Required(Key("embedding_length")));
  FGNET_ASSIGN_OR_RETURN(c.intermediate_size, meta.Required(Key("feed_forward_length")));
  FGNET_ASSIGN_OR_RETURN(c.max_position_embeddings, meta.Required(Key("context_length")));
  FGNET_ASSIGN_OR_RETURN(c.num_attention_heads, meta.Required(Key("attention.head_count")));
  FGNET_ASSIGN_OR_RETURN(c.num_key_value_heads,
                         meta.Optional(Key("attention.head_count_kv"), c.num_attention_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return MakeError(path, ": ", Key("attention.head_count "), c.num_attention_heads,
                     " is not a multiple of ", Key("attention.head_count_kv "),
                     c.num_key_value_heads);
  }
  FGNET_ASSIGN_OR_RETURN(c.head_dim, meta.Optional(Key("attention.key_length"),
                                                   c.hidden_size / c.num_attention_heads));
  if (c.head_dim < 1) {
    return MakeError(path, ": ", Key("attention.key_length"), " is absent and ",
                     Key("embedding_length "), c.hidden_size, " / ", Key("attention.head_count "),
                     c.num_attention_heads, " is 0");
  }
  FGNET_ASSIGN_OR_RETURN(const std::int64_t value_length,
                         meta.Optional(Key("attention.value_length"), c.head_dim));
  if (value_length != c.head_dim) {
    return MakeError(path, ": ", Key("attention.value_length "), value_length, " differs from ",
                     Key("attention.key_length "), c.head_dim,
                     " (Gemma 3 uses one head size for keys and values)");
  }

  const auto positive = [&](const std::string& key, double v) -> Status {
    if (!(v > 0.0) || !std::isfinite(v)) {
      return MakeError(path, ": metadata ", QuoteName(key), " is ", v, ", expected > 0");
    }
    return Ok();
  };
  const std::string eps_key = Key("attention.layer_norm_rms_epsilon");
  FGNET_ASSIGN_OR_RETURN(const std::optional<double> eps, meta.Float(eps_key));
  if (!eps) return MakeError(path, ": missing metadata ", QuoteName(eps_key));
  FGNET_TRY(positive(eps_key, *eps));
  c.rms_norm_eps = *eps;

  const auto float_or = [&](const std::string& key, double fallback) -> Result<double> {
    FGNET_ASSIGN_OR_RETURN(const std::optional<double> v, meta.Float(key));
    if (!v) return fallback;
    FGNET_TRY(positive(key, *v));
    return *v;
  };
  FGNET_ASSIGN_OR_RETURN(c.rope_theta_global, float_or(Key("rope.freq_base"), kDefaultRopeTheta));
  FGNET_ASSIGN_OR_RETURN(c.rope_theta_local, float_or(Key("rope.freq_base_swa"), kLocalRopeTheta));
  FGNET_ASSIGN_OR_RETURN(c.rope_scaling_local, float_or("fgnet.rope_scaling_local", 1.0));

  // RoPE scaling as llama.cpp reads it: the type defaults to linear, the factor comes from
  // rope.scaling.factor or else rope.scale_linear, and 0 (or absent) means none.
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> scaling_type,
                         meta.String(Key("rope.scaling.type")));
  FGNET_ASSIGN_OR_RETURN(std::optional<double> factor, meta.Float(Key("rope.scaling.factor")));
  if (!factor) {
    FGNET_ASSIGN_OR_RETURN(factor, meta.Float(Key("rope.scale_linear")));
  }
  if (scaling_type && *scaling_type != "linear" && *scaling_type != "none") {
    return MakeError(path, ": ", Key("rope.scaling.type "), QuoteName(*scaling_type),
                     " is not supported (only 'linear' and 'none')");
  }
  c.rope_scaling_global = 1.0;
  if ((!scaling_type || *scaling_type == "linear") && factor && *factor != 0.0) {
    FGNET_TRY(positive(Key("rope.scaling.factor"), *factor));
    c.rope_scaling_global = *factor;
  }

  FGNET_ASSIGN_OR_RETURN(c.sliding_window,
                         meta.Optional(Key("attention.sliding_window"), 0, /*min=*/0));
  FGNET_ASSIGN_OR_RETURN(c.layer_types,
                         LayerTypes(file, c.num_hidden_layers, c.sliding_window > 0));

  FGNET_ASSIGN_OR_RETURN(const std::optional<double> qpas,
                         meta.Float("fgnet.query_pre_attn_scalar"));
  if (qpas) {
    FGNET_TRY(positive("fgnet.query_pre_attn_scalar", *qpas));
    c.query_pre_attn_scalar = *qpas;
  } else {
    c.query_pre_attn_scalar = static_cast<double>(
        c.num_hidden_layers == kLayersOf27B ? c.hidden_size / c.num_attention_heads : c.head_dim);
  }

  const auto softcap = [&](const std::string& key) -> Result<std::optional<double>> {
    FGNET_ASSIGN_OR_RETURN(const std::optional<double> v, meta.Float(key));
    if (!v || *v == 0.0) return std::optional<double>();
    FGNET_TRY(positive(key, *v));
    return v;
  };
  FGNET_ASSIGN_OR_RETURN(c.final_logit_softcapping, softcap(Key("final_logit_softcapping")));
  FGNET_ASSIGN_OR_RETURN(c.attn_logit_softcapping, softcap(Key("attn_logit_softcapping")));

  const GgufTensorInfo* embed = file.FindTensor("token_embd.weight");
  if (embed == nullptr) return MakeError(path, ": missing tensor 'token_embd.weight'");
  if (embed->shape.size() != 2) {
    return MakeError(path, ": tensor 'token_embd.weight' has shape ", ShapeToString(embed->shape),
                     ", expected [vocab, ", Key("embedding_length]"));
  }
  c.vocab_size = embed->shape[0];
  if (const GgufValue* tokens = file.Find("tokenizer.ggml.tokens")) {
    const GgufArray* array = tokens->AsArray();
    if (array == nullptr) return meta.WrongType("tokenizer.ggml.tokens", *tokens, "an array");
    if (static_cast<std::int64_t>(array->items.size()) != c.vocab_size) {
      return MakeError(path, ": tokenizer.ggml.tokens has ", array->items.size(),
                       " tokens but token_embd.weight has ", c.vocab_size, " rows");
    }
  }
  c.tie_word_embeddings = file.FindTensor("output.weight") == nullptr;

  FGNET_ASSIGN_OR_RETURN(c.bos_token_id, meta.Optional("tokenizer.ggml.bos_token_id", 2, 0));
  FGNET_ASSIGN_OR_RETURN(c.pad_token_id, meta.Optional("tokenizer.ggml.padding_token_id", 0, 0));
  if (const GgufValue* eos_ids = file.Find("fgnet.eos_token_ids")) {
    const GgufArray* array = eos_ids->AsArray();
    if (array == nullptr) return meta.WrongType("fgnet.eos_token_ids", *eos_ids, "an array");
    c.eos_token_ids.clear();
    for (const GgufValue& id : array->items) {
      const std::optional<std::int64_t> i = id.AsInt();
      if (!i || *i < 0) {
        return MakeError(path, ": fgnet.eos_token_ids holds ", id.Describe(),
                         ", expected token ids");
      }
      c.eos_token_ids.push_back(*i);
    }
  } else {
    FGNET_ASSIGN_OR_RETURN(const std::int64_t eos,
                           meta.Optional("tokenizer.ggml.eos_token_id", 1, 0));
    c.eos_token_ids = {eos};
  }
  return c;
}

Result<Checkpoint> OpenGgufCheckpoint(const std::string& path) {
  FGNET_ASSIGN_OR_RETURN(GgufFile opened, GgufFile::Open(path));
  auto file = std::make_shared<GgufFile>(std::move(opened));
  FGNET_ASSIGN_OR_RETURN(Gemma3Config config, Gemma3ConfigFromGguf(*file));
  FGNET_TRY(CheckTensors(*file, config));

  Checkpoint::Parts parts;
  parts.format = CheckpointFormat::kGguf;
  parts.path = path;
  parts.config_path = path;
  parts.config = std::move(config);
  parts.side_dir = DirectoryOf(path);
  parts.norms_include_one = true;
  FGNET_ASSIGN_OR_RETURN(parts.quantization, QuantizationOf(*file));
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> hash,
                         Meta(*file).String("fgnet.content_hash"));
  if (hash) {
    if (!IsHexHash(*hash)) {
      return MakeError(path, ": fgnet.content_hash ", QuoteName(*hash),
                       " is not 64 lowercase hex digits");
    }
    parts.content_hash = *hash;
  }
  parts.tensors = TensorIndex(path);
  for (const GgufTensorInfo& t : file->tensors()) parts.tensors.Add(HfName(t.name), t.view, path);
  parts.storage = std::move(file);
  return Checkpoint::FromTensors(std::move(parts));
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

float ElementAt(const TensorView& t, std::size_t i) {
  switch (t.dtype) {
    case DType::kF32:
      return t.as<float>()[i];
    case DType::kF16:
      return F16ToF32(t.as<std::uint16_t>()[i]);
    case DType::kBF16:
      return BF16ToF32(t.as<std::uint16_t>()[i]);
    default:
      return 0.0f;
  }
}

// Owned tensor data that must outlive the GgufWriter's Write().
class Buffers {
 public:
  // The f32 factor 1 + w of a norm (or w itself when the checkpoint stores the factor).
  Result<TensorView> Norm(const TensorView& t, bool includes_one, const std::string& name) {
    if (IsQuantized(t.dtype)) {
      return MakeError("norm ", QuoteName(name), " is ", DTypeName(t.dtype),
                       "; norms must be F32, F16 or BF16");
    }
    const auto n = static_cast<std::size_t>(t.num_elements());
    std::vector<std::uint8_t>& buf = New(n * sizeof(float));
    auto* out = reinterpret_cast<float*>(buf.data());
    for (std::size_t i = 0; i < n; ++i) out[i] = (includes_one ? 0.0f : 1.0f) + ElementAt(t, i);
    return TensorView{DType::kF32, t.shape, buf.data()};
  }

  // `t` stored as `dtype` (a float type); `t` itself when no conversion is needed.
  TensorView Convert(const TensorView& t, std::optional<DType> dtype) {
    if (!dtype || IsQuantized(t.dtype) || t.dtype == *dtype) return t;
    const auto n = static_cast<std::size_t>(t.num_elements());
    std::vector<std::uint8_t>& buf = New(n * DTypeSize(*dtype));
    for (std::size_t i = 0; i < n; ++i) {
      const float v = ElementAt(t, i);
      if (*dtype == DType::kF32) {
        std::memcpy(buf.data() + i * 4, &v, 4);
      } else {
        const std::uint16_t h = *dtype == DType::kF16 ? F32ToF16(v) : F32ToBF16(v);
        std::memcpy(buf.data() + i * 2, &h, 2);
      }
    }
    return TensorView{*dtype, t.shape, buf.data()};
  }

 private:
  std::vector<std::uint8_t>& New(std::size_t bytes) {
    buffers_.push_back(std::make_unique<std::vector<std::uint8_t>>(bytes));
    return *buffers_.back();
  }
  std::vector<std::unique_ptr<std::vector<std::uint8_t>>> buffers_;
};

// llama.cpp's general.file_type (LLAMA_FTYPE_*): that of the quantization scheme the checkpoint
// was made with, else that of the type holding most of the layers' matrix bytes.
std::uint32_t FileType(const std::string& quantization,
                       const std::map<DType, std::uint64_t>& bytes) {
  if (quantization == "q8_0") return 7;   // MOSTLY_Q8_0
  if (quantization == "q4_0") return 2;   // MOSTLY_Q4_0
  if (quantization == "q4_k") return 15;  // MOSTLY_Q4_K_M: Q4_K with Q6_K and others mixed in
  DType major = DType::kF32;
  std::uint64_t most = 0;
  for (const auto& [dtype, n] : bytes) {
    if (n > most) {
      most = n;
      major = dtype;
    }
  }
  switch (major) {
    case DType::kF32:
      return 0;  // ALL_F32
    case DType::kF16:
      return 1;  // MOSTLY_F16
    case DType::kQ4_0:
      return 2;  // MOSTLY_Q4_0
    case DType::kQ8_0:
      return 7;  // MOSTLY_Q8_0
    case DType::kQ4_K:
      return bytes.contains(DType::kQ6_K) ? 15 : 14;  // MOSTLY_Q4_K_M / _S
    case DType::kQ6_K:
      return 18;  // MOSTLY_Q6_K
    case DType::kBF16:
      return 32;  // MOSTLY_BF16
  }
  return 0;
}

Result<GgufValue> U32(const std::string& path, const char* what, std::int64_t v) {
  if (v < 0 || v > std::numeric_limits<std::uint32_t>::max()) {
    return MakeError(path, ": ", what, " ", v, " does not fit a u32");
  }
  return GgufValue::U32(static_cast<std::uint32_t>(v));
}

}  // namespace

Status WriteGemma3Gguf(const Checkpoint& ck, const std::string& path,
                       const GgufWriteOptions& options) {
  if (options.float_dtype && IsQuantized(*options.float_dtype)) {
    return MakeError(path, ": float_dtype must be F32, F16 or BF16, not ",
                     DTypeName(*options.float_dtype));
  }
  const Gemma3Config& c = ck.config();
  const Gemma3Weights& w = ck.weights();
  Buffers buffers;
  std::vector<std::pair<std::string, TensorView>> tensors;
  std::map<DType, std::uint64_t> layer_bytes;
  const auto matrix = [&](const std::string& name, const TensorView& t, bool in_layer) {
    const TensorView stored = buffers.Convert(t, options.float_dtype);
    if (in_layer) layer_bytes[stored.dtype] += stored.num_bytes();
    tensors.emplace_back(name, stored);
  };
  const auto norm = [&](const std::string& name, const TensorView& t) -> Status {
    Result<TensorView> stored = buffers.Norm(t, w.norms_include_one, name);
    if (!stored.ok()) return stored.error().WithContext(path);
    tensors.emplace_back(name, *stored);
    return Ok();
  };
  matrix("token_embd.weight", w.embed_tokens, false);
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    for (const LayerTensor& lt : kLayerTensors) {
      const std::string name = LayerName(static_cast<std::int64_t>(l), lt.gguf);
      const TensorView& t = w.layers[l].*lt.field;
      if (lt.norm) {
        FGNET_TRY(norm(name, t));
      } else {
        matrix(name, t, true);
      }
    }
  }
  FGNET_TRY(norm("output_norm.weight", w.norm));
  if (!c.tie_word_embeddings) matrix("output.weight", w.lm_head, false);

  GgufWriter writer(options.alignment);
  const auto set_u32 = [&](const std::string& key, std::int64_t v) -> Status {
    FGNET_ASSIGN_OR_RETURN(GgufValue value, U32(path, key.c_str(), v));
    writer.Set(key, std::move(value));
    return Ok();
  };
  const auto set_f32 = [&](const std::string& key, double v) {
    writer.Set(key, GgufValue::F32(static_cast<float>(v)));
  };
  writer.Set("general.architecture", GgufValue::String(std::string(kArchitecture)));
  writer.Set("general.type", GgufValue::String("model"));
  writer.Set("general.name",
             GgufValue::String(options.name.empty() ? FileStem(ck.dir()) : options.name));
  bool quantized = false;
  for (const auto& [name, t] : tensors) quantized = quantized || IsQuantized(t.dtype);
  const std::string quantization = quantized ? ck.quantization() : std::string("none");
  writer.Set("general.file_type", GgufValue::U32(FileType(quantization, layer_bytes)));
  if (quantized) writer.Set("general.quantization_version", GgufValue::U32(kQuantizationVersion));

  FGNET_TRY(set_u32(Key("context_length"), c.max_position_embeddings));
  FGNET_TRY(set_u32(Key("embedding_length"), c.hidden_size));
  FGNET_TRY(set_u32(Key("block_count"), c.num_hidden_layers));
  FGNET_TRY(set_u32(Key("feed_forward_length"), c.intermediate_size));
  FGNET_TRY(set_u32(Key("attention.head_count"), c.num_attention_heads));
  set_f32(Key("attention.layer_norm_rms_epsilon"), c.rms_norm_eps);
  FGNET_TRY(set_u32(Key("attention.key_length"), c.head_dim));
  FGNET_TRY(set_u32(Key("attention.value_length"), c.head_dim));
  set_f32(Key("rope.freq_base"), c.rope_theta_global);
  if (c.final_logit_softcapping)
    set_f32(Key("final_logit_softcapping"), *c.final_logit_softcapping);
  if (c.attn_logit_softcapping) set_f32(Key("attn_logit_softcapping"), *c.attn_logit_softcapping);
  bool any_sliding = false;
  for (const LayerType t : c.layer_types) any_sliding = any_sliding || t == LayerType::kSliding;
  if (any_sliding) FGNET_TRY(set_u32(Key("attention.sliding_window"), c.sliding_window));
  FGNET_TRY(set_u32(Key("attention.head_count_kv"), c.num_key_value_heads));
  if (c.rope_scaling_global != 1.0) {
    writer.Set(Key("rope.scaling.type"), GgufValue::String("linear"));
    set_f32(Key("rope.scaling.factor"), c.rope_scaling_global);
  }

  // Where the config departs from what llama.cpp assumes for gemma3.
  if (c.rope_theta_local != kLocalRopeTheta) set_f32(Key("rope.freq_base_swa"), c.rope_theta_local);
  if (any_sliding) {
    bool default_pattern = true;
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const bool sliding = i % kSlidingPeriod < kSlidingPeriod - 1;
      default_pattern = default_pattern && c.is_sliding(i) == sliding;
    }
    if (!default_pattern) {
      std::vector<GgufValue> pattern;
      for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
        pattern.push_back(GgufValue::Bool(c.is_sliding(i)));
      }
      writer.Set(Key("attention.sliding_window_pattern"),
                 GgufValue::Array(GgufType::kBool, std::move(pattern)));
    }
  }
  const double assumed_qpas = static_cast<double>(
      c.num_hidden_layers == kLayersOf27B ? c.hidden_size / c.num_attention_heads : c.head_dim);
  if (c.query_pre_attn_scalar != assumed_qpas) {
    set_f32("fgnet.query_pre_attn_scalar", c.query_pre_attn_scalar);
  }
  if (c.rope_scaling_local != 1.0) set_f32("fgnet.rope_scaling_local", c.rope_scaling_local);

  if (c.bos_token_id >= 0) FGNET_TRY(set_u32("tokenizer.ggml.bos_token_id", c.bos_token_id));
  if (!c.eos_token_ids.empty()) {
    FGNET_TRY(set_u32("tokenizer.ggml.eos_token_id", c.eos_token_ids.front()));
  }
  if (c.eos_token_ids.size() != 1) {
    std::vector<GgufValue> ids;
    for (const std::int64_t id : c.eos_token_ids) {
      if (id < 0 || id > std::numeric_limits<std::int32_t>::max()) {
        return MakeError(path, ": eos token id ", id, " does not fit an i32");
      }
      ids.push_back(GgufValue::I32(static_cast<std::int32_t>(id)));
    }
    writer.Set("fgnet.eos_token_ids", GgufValue::Array(GgufType::kInt32, std::move(ids)));
  }
  if (c.pad_token_id >= 0) FGNET_TRY(set_u32("tokenizer.ggml.padding_token_id", c.pad_token_id));
  writer.Set("fgnet.content_hash", GgufValue::String(ck.content_hash()));
  if (quantized && quantization != "none") {
    writer.Set("fgnet.quantization", GgufValue::String(quantization));
  }
  for (const auto& [key, value] : options.extra_metadata) {
    if (key == "general.alignment") {
      return MakeError(path,
                       ": general.alignment is set by GgufWriteOptions::alignment, not as "
                       "extra metadata");
    }
    writer.Set(key, value);
  }

  for (const auto& [name, t] : tensors) writer.AddTensor(name, t);
  return writer.Write(path);
}

}  // namespace fgnet
