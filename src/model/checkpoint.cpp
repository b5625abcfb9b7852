#include "model/checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <mutex>
#include <set>
#include <utility>

#include "model/io_util.h"
#include "model/safetensors.h"
#include "util/sha256.h"

namespace fgnet {
namespace {

// One expected dimension and the config keys it comes from ("hidden_size 640").
struct Dim {
  std::int64_t value;
  std::string what;
};

std::string ShapeOf(const std::vector<Dim>& dims) {
  std::vector<std::int64_t> shape;
  shape.reserve(dims.size());
  for (const auto& d : dims) shape.push_back(d.value);
  return ShapeToString(shape);
}

// Binds named tensors, checking each against the shape the config implies.
class Binder {
 public:
  Binder(const TensorIndex& set, const std::string& config_path, std::set<std::string>* used)
      : set_(set), config_path_(config_path), used_(used) {}

  // `why` explains, for a missing tensor, which config value requires it.
  Result<TensorView> Bind(const std::string& name, const std::vector<Dim>& dims,
                          const std::string& why = "") const {
    const TensorView* view = set_.Find(name);
    if (view == nullptr) {
      return MakeError(set_.source(), ": missing tensor ", QuoteName(name), why);
    }
    std::string what;
    const char* verb = " disagrees with tensor ";
    if (view->shape.size() != dims.size()) {
      for (const auto& d : dims) what += (what.empty() ? "" : " and ") + d.what;
      if (dims.size() > 1) verb = " disagree with tensor ";
    } else {
      for (std::size_t i = 0; i < dims.size(); ++i) {
        if (view->shape[i] != dims[i].value) {
          what = dims[i].what;
          break;
        }
      }
    }
    if (!what.empty()) {
      return MakeError(config_path_, ": ", what, verb, QuoteName(name), " of shape ",
                       ShapeToString(view->shape), " in ", set_.FileOf(name), " (expected ",
                       ShapeOf(dims), ")");
    }
    used_->insert(name);
    return *view;
  }

 private:
  const TensorIndex& set_;
  const std::string& config_path_;
  std::set<std::string>* used_;
};

struct Layout {
  std::string prefix;   // of the text model: "<prefix>embed_tokens.weight"
  std::string lm_head;  // the untied output matrix
};

Result<Layout> FindLayout(const TensorIndex& set) {
  const Layout candidates[] = {{"model.", "lm_head.weight"},
                               {"language_model.model.", "language_model.lm_head.weight"},
                               {"model.language_model.", "lm_head.weight"}};
  std::vector<Layout> found;
  for (const auto& c : candidates) {
    if (set.Find(c.prefix + "embed_tokens.weight") != nullptr) found.push_back(c);
  }
  if (found.empty()) {
    return MakeError(set.source(),
                     ": missing tensor 'model.embed_tokens.weight' (nor is there "
                     "'language_model.model.embed_tokens.weight' or "
                     "'model.language_model.embed_tokens.weight'): not a Gemma 3 checkpoint");
  }
  if (found.size() > 1) {
    return MakeError(set.source(), ": holds two text models, under ", QuoteName(found[0].prefix),
                     " and ", QuoteName(found[1].prefix));
  }
  return found[0];
}

// Tensors of layers the config does not have mean the config and the weights disagree.
Status CheckNoExtraLayers(const TensorIndex& set, const std::string& prefix, const Gemma3Config& c,
                          const std::string& config_path) {
  const std::string layers = prefix + "layers.";
  for (auto it = set.all().lower_bound(layers); it != set.all().end(); ++it) {
    const std::string& name = it->first;
    if (name.compare(0, layers.size(), layers) != 0) break;
    std::int64_t index = 0;
    const char* begin = name.data() + layers.size();
    const char* end = name.data() + name.size();
    const auto [ptr, ec] = std::from_chars(begin, end, index);
    if (ec != std::errc() || ptr == begin || ptr == end || *ptr != '.') continue;
    if (index >= c.num_hidden_layers) {
      return MakeError(config_path, ": num_hidden_layers ", c.num_hidden_layers,
                       " disagrees with tensor ", QuoteName(name), " of shape ",
                       ShapeToString(it->second.view.shape), " in ", it->second.file, " (layer ",
                       index, " is past the last layer ", c.num_hidden_layers - 1, ")");
    }
  }
  return Ok();
}

std::uint64_t Elements(const TensorView& v) { return static_cast<std::uint64_t>(v.num_elements()); }

}  // namespace

struct Checkpoint::HashCache {
  std::once_flag once;
  std::string value;
};

std::string_view CheckpointFormatName(CheckpointFormat f) {
  switch (f) {
    case CheckpointFormat::kHuggingFace:
      return "huggingface";
    case CheckpointFormat::kRdrr:
      return "rdrr";
    case CheckpointFormat::kGguf:
      return "gguf";
    case CheckpointFormat::kInMemory:
      return "in-memory";
  }
  return "?";
}

Result<Checkpoint> Checkpoint::Open(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return MakeError(dir, ": cannot open checkpoint directory: ", std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return MakeError(dir, ": not a checkpoint directory");
  Parts parts;
  parts.format = CheckpointFormat::kHuggingFace;
  parts.path = dir;
  parts.side_dir = dir;
  parts.config_path = JoinPath(dir, "config.json");
  if (!IsRegularFile(parts.config_path)) {
    return MakeError(parts.config_path, ": missing (a checkpoint directory needs config.json)");
  }
  FGNET_ASSIGN_OR_RETURN(parts.config, LoadGemma3Config(parts.config_path));
  FGNET_ASSIGN_OR_RETURN(SafetensorsSet set, SafetensorsSet::OpenDirectory(dir));
  auto owned = std::make_shared<SafetensorsSet>(std::move(set));
  parts.tensors = TensorIndex(owned->source());
  for (const auto& [name, view] : owned->all()) parts.tensors.Add(name, view, owned->FileOf(name));
  parts.storage = std::move(owned);
  return FromTensors(std::move(parts));
}

Result<Checkpoint> Checkpoint::FromTensors(Parts parts) {
  Checkpoint ck;
  ck.format_ = parts.format;
  ck.dir_ = std::move(parts.path);
  ck.side_dir_ = std::move(parts.side_dir);
  ck.config_path_ = std::move(parts.config_path);
  ck.config_ = std::move(parts.config);
  ck.tensors_ = std::move(parts.tensors);
  ck.storage_ = std::move(parts.storage);
  ck.weights_.norms_include_one = parts.norms_include_one;
  ck.quantization_ = std::move(parts.quantization);
  ck.hash_ = std::make_shared<HashCache>();
  if (!parts.content_hash.empty()) {
    std::call_once(ck.hash_->once, [&] { ck.hash_->value = std::move(parts.content_hash); });
  }
  const TensorIndex& tensors = ck.tensors_;
  const Gemma3Config& c = ck.config_;

  FGNET_ASSIGN_OR_RETURN(const Layout layout, FindLayout(tensors));
  ck.prefix_ = layout.prefix;
  FGNET_TRY(CheckNoExtraLayers(tensors, layout.prefix, c, ck.config_path_));

  const auto n = [](std::int64_t v) { return std::to_string(v); };
  const Dim hidden{c.hidden_size, "hidden_size " + n(c.hidden_size)};
  const Dim vocab{c.vocab_size, "vocab_size " + n(c.vocab_size)};
  const Dim inter{c.intermediate_size, "intermediate_size " + n(c.intermediate_size)};
  const Dim head{c.head_dim, "head_dim " + n(c.head_dim)};
  const Dim q{c.q_dim(), "num_attention_heads * head_dim = " + n(c.num_attention_heads) + " * " +
                             n(c.head_dim) + " = " + n(c.q_dim())};
  const Dim kv{c.kv_dim(), "num_key_value_heads * head_dim = " + n(c.num_key_value_heads) + " * " +
                               n(c.head_dim) + " = " + n(c.kv_dim())};

  std::set<std::string> used;
  const Binder binder(tensors, ck.config_path_, &used);
  const std::string& p = layout.prefix;
  Gemma3Weights& w = ck.weights_;
  FGNET_ASSIGN_OR_RETURN(w.embed_tokens, binder.Bind(p + "embed_tokens.weight", {vocab, hidden}));
  FGNET_ASSIGN_OR_RETURN(w.norm, binder.Bind(p + "norm.weight", {hidden}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;
  } else {
    FGNET_ASSIGN_OR_RETURN(w.lm_head,
                           binder.Bind(layout.lm_head, {vocab, hidden},
                                       " (" + ck.config_path_ + ": tie_word_embeddings is false)"));
  }
  const std::string why =
      " (" + ck.config_path_ + ": num_hidden_layers is " + n(c.num_hidden_layers) + ")";
  w.layers.resize(static_cast<std::size_t>(c.num_hidden_layers));
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Gemma3LayerWeights& l = w.layers[static_cast<std::size_t>(i)];
    const std::string lp = p + "layers." + n(i) + ".";
    const auto bind = [&](TensorView* out, const char* suffix, const std::vector<Dim>& dims) {
      Result<TensorView> r = binder.Bind(lp + suffix, dims, why);
      if (!r.ok()) return Status(r.error());
      *out = std::move(r).value();
      return Ok();
    };
    FGNET_TRY(bind(&l.input_layernorm, "input_layernorm.weight", {hidden}));
    FGNET_TRY(bind(&l.q_proj, "self_attn.q_proj.weight", {q, hidden}));
    FGNET_TRY(bind(&l.k_proj, "self_attn.k_proj.weight", {kv, hidden}));
    FGNET_TRY(bind(&l.v_proj, "self_attn.v_proj.weight", {kv, hidden}));
    FGNET_TRY(bind(&l.o_proj, "self_attn.o_proj.weight", {hidden, q}));
    FGNET_TRY(bind(&l.q_norm, "self_attn.q_norm.weight", {head}));
    FGNET_TRY(bind(&l.k_norm, "self_attn.k_norm.weight", {head}));
    FGNET_TRY(bind(&l.post_attention_layernorm, "post_attention_layernorm.weight", {hidden}));
    FGNET_TRY(bind(&l.pre_feedforward_layernorm, "pre_feedforward_layernorm.weight", {hidden}));
    FGNET_TRY(bind(&l.gate_proj, "mlp.gate_proj.weight", {inter, hidden}));
    FGNET_TRY(bind(&l.up_proj, "mlp.up_proj.weight", {inter, hidden}));
    FGNET_TRY(bind(&l.down_proj, "mlp.down_proj.weight", {hidden, inter}));
    FGNET_TRY(bind(&l.post_feedforward_layernorm, "post_feedforward_layernorm.weight", {hidden}));
  }
  for (const auto& [name, entry] : tensors.all()) {
    if (!used.contains(name)) ck.unused_.push_back(name);
  }
  return ck;
}

std::uint64_t Checkpoint::num_model_parameters() const {
  const Gemma3Weights& w = weights_;
  std::uint64_t total = Elements(w.embed_tokens) + Elements(w.norm);
  if (!config_.tie_word_embeddings) total += Elements(w.lm_head);
  for (const auto& l : w.layers) {
    for (const TensorView* v :
         {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.q_norm, &l.k_norm,
          &l.post_attention_layernorm, &l.pre_feedforward_layernorm, &l.gate_proj, &l.up_proj,
          &l.down_proj, &l.post_feedforward_layernorm}) {
      total += Elements(*v);
    }
  }
  return total;
}

const std::string& Checkpoint::content_hash() const {
  std::call_once(hash_->once, [this] {
    Sha256 h;
    h.Update("fgnet-model/1");
    h.Update(Gemma3ConfigToJson(config_).dump());
    const auto put = [&h](const std::string& name, const TensorView& t) {
      h.Update(name);
      h.Update(DTypeName(t.dtype));
      h.Update(ShapeToString(t.shape));
      h.Update(t.data, t.num_bytes());
    };
    const Gemma3Weights& w = weights_;
    put("model.embed_tokens.weight", w.embed_tokens);
    put("model.norm.weight", w.norm);
    if (!config_.tie_word_embeddings) put("lm_head.weight", w.lm_head);
    for (std::size_t i = 0; i < w.layers.size(); ++i) {
      const Gemma3LayerWeights& l = w.layers[i];
      const std::string p = "model.layers." + std::to_string(i) + ".";
      put(p + "input_layernorm.weight", l.input_layernorm);
      put(p + "self_attn.q_proj.weight", l.q_proj);
      put(p + "self_attn.k_proj.weight", l.k_proj);
      put(p + "self_attn.v_proj.weight", l.v_proj);
      put(p + "self_attn.o_proj.weight", l.o_proj);
      put(p + "self_attn.q_norm.weight", l.q_norm);
      put(p + "self_attn.k_norm.weight", l.k_norm);
      put(p + "post_attention_layernorm.weight", l.post_attention_layernorm);
      put(p + "pre_feedforward_layernorm.weight", l.pre_feedforward_layernorm);
      put(p + "mlp.gate_proj.weight", l.gate_proj);
      put(p + "mlp.up_proj.weight", l.up_proj);
      put(p + "mlp.down_proj.weight", l.down_proj);
      put(p + "post_feedforward_layernorm.weight", l.post_feedforward_layernorm);
    }
    hash_->value = h.FinishHex();
  });
  return hash_->value;
}

std::string Checkpoint::SideFile(const char* name) const {
  if (side_dir_.empty()) return {};
  std::string path = JoinPath(side_dir_, name);
  return IsRegularFile(path) ? path : std::string();
}

std::string Checkpoint::tokenizer_path() const { return SideFile("tokenizer.json"); }
std::string Checkpoint::tokenizer_config_path() const { return SideFile("tokenizer_config.json"); }
std::string Checkpoint::generation_config_path() const {
  return SideFile("generation_config.json");
}

}  // namespace fgnet
