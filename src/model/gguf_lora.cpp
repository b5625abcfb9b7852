#include "model/gguf_lora.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>

#include "backend/cpu/quant.h"
#include "model/gguf.h"
#include "model/gguf_model.h"
#include "model/io_util.h"

namespace fgnet {
namespace {

constexpr std::string_view kArchitecture = "gemma3";

std::string_view GgufModuleName(LoraModule m) {
  switch (m) {
    case LoraModule::kQ:
      return "attn_q";
    case LoraModule::kK:
      return "attn_k";
    case LoraModule::kV:
      return "attn_v";
    case LoraModule::kO:
      return "attn_output";
    case LoraModule::kGate:
      return "ffn_gate";
    case LoraModule::kUp:
      return "ffn_up";
    case LoraModule::kDown:
      return "ffn_down";
  }
  return "?";
}

std::string BaseTensorName(std::size_t layer, LoraModule m) {
  return "blk." + std::to_string(layer) + "." + std::string(GgufModuleName(m)) + ".weight";
}

// "blk.N.<module>.weight" -> (N, module).
std::optional<std::pair<std::size_t, LoraModule>> ParseBaseName(std::string_view name) {
  const auto parsed = ParseLayerName(name);
  if (!parsed) return std::nullopt;
  for (LoraModule m : kAllLoraModules) {
    if (parsed->second == GgufModuleName(m)) {
      return std::make_pair(static_cast<std::size_t>(parsed->first), m);
    }
  }
  return std::nullopt;
}

// The scale llama.cpp gives a module of rank `rank` (llama_adapter_lora_weight::get_scale):
// alpha / rank in f32, or 1 when alpha is 0.
float ScaleOf(float alpha, std::size_t rank) {
  if (alpha == 0.0f) return 1.0f;
  return alpha / static_cast<float>(rank);
}

// The double whose shortest decimal form is that of `f`.
double F32ToDecimal(float f) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), f);
  double d = static_cast<double>(f);
  if (ec == std::errc()) std::from_chars(buf, end, d);
  return d;
}

// The tensor's values as f32 (float types widened exactly, quantized blocks dequantized).
std::vector<float> ToF32(const GgufTensorInfo& t) {
  const auto cols = static_cast<std::size_t>(t.shape.back());
  const std::size_t rows = static_cast<std::size_t>(t.view.num_elements()) / cols;
  const std::size_t row_bytes = DTypeRowBytes(t.view.dtype, cols);
  std::vector<float> out(rows * cols);
  for (std::size_t r = 0; r < rows; ++r) {
    cpu::DequantizeRow(t.view.dtype, t.view.as<std::uint8_t>() + r * row_bytes, cols,
                       out.data() + r * cols);
  }
  return out;
}

Result<std::optional<std::string>> StringKey(const GgufFile& file, const char* key) {
  const GgufValue* v = file.Find(key);
  if (v == nullptr) return std::optional<std::string>();
  if (v->AsString() == nullptr) {
    return MakeError(file.path(), ": metadata '", key, "' must be a string, found ",
                     GgufTypeName(v->type()));
  }
  return std::optional<std::string>(*v->AsString());
}

Status CheckHeader(const GgufFile& file) {
  const std::string& path = file.path();
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> type, StringKey(file, "general.type"));
  if (!type || *type != "adapter") {
    return MakeError(path, ": not a LoRA adapter (general.type is ",
                     type ? QuoteName(*type) : std::string("absent"), ", expected 'adapter')");
  }
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> arch,
                         StringKey(file, "general.architecture"));
  if (!arch || *arch != kArchitecture) {
    return MakeError(path, ": general.architecture is ",
                     arch ? QuoteName(*arch) : std::string("absent"), ", expected '", kArchitecture,
                     "' (an adapter for another model family)");
  }
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> adapter_type,
                         StringKey(file, "adapter.type"));
  if (!adapter_type || *adapter_type != "lora") {
    return MakeError(path, ": adapter.type is ",
                     adapter_type ? QuoteName(*adapter_type) : std::string("absent"),
                     ", expected 'lora'");
  }
  return Ok();
}

}  // namespace

Result<LoraAdapter> LoadGgufAdapter(const std::string& path, const Gemma3Config& base) {
  FGNET_ASSIGN_OR_RETURN(const GgufFile file, GgufFile::Open(path));
  FGNET_TRY(CheckHeader(file));

  float alpha = 0.0f;
  if (const GgufValue* v = file.Find("adapter.lora.alpha")) {
    const std::optional<double> d = v->AsDouble();
    if (!d || !std::isfinite(*d)) {
      return MakeError(path, ": adapter.lora.alpha must be a finite number, found ",
                       GgufTypeName(v->type()), " ", v->Describe());
    }
    alpha = static_cast<float>(*d);
  }

  LoraAdapter adapter;
  adapter.name = FileStem(path);
  adapter.path = path;
  adapter.format = "gguf";
  adapter.config.lora_alpha = F32ToDecimal(alpha);
  if (const GgufValue* v = file.Find("adapter.alora.invocation_tokens")) {
    const GgufArray* array = v->AsArray();
    if (array == nullptr) {
      return MakeError(path, ": adapter.alora.invocation_tokens must be an array, found ",
                       GgufTypeName(v->type()));
    }
    for (const GgufValue& item : array->items) {
      const std::optional<std::int64_t> id = item.AsInt();
      if (!id || *id < 0 || *id > std::numeric_limits<std::int32_t>::max()) {
        return MakeError(path, ": adapter.alora.invocation_tokens holds ", item.Describe(),
                         ", expected token ids");
      }
      adapter.config.alora_invocation_tokens.push_back(static_cast<std::int32_t>(*id));
    }
  }
  FGNET_ASSIGN_OR_RETURN(const std::optional<std::string> base_hash,
                         StringKey(file, "fgnet.lora.base_model_hash"));
  if (base_hash) adapter.base_model_hash = *base_hash;

  // Pair the tensors: base name -> (lora_a, lora_b).
  struct Pair {
    const GgufTensorInfo* a = nullptr;
    const GgufTensorInfo* b = nullptr;
  };
  std::map<std::string, Pair> pairs;
  for (const GgufTensorInfo& t : file.tensors()) {
    const std::string_view name = t.name;
    if (name.ends_with(".lora_a")) {
      pairs[std::string(name.substr(0, name.size() - 7))].a = &t;
    } else if (name.ends_with(".lora_b")) {
      pairs[std::string(name.substr(0, name.size() - 7))].b = &t;
    } else if (name.ends_with("_norm.weight")) {
      continue;  // norm vectors (mergekit) are skipped, as llama.cpp does
    } else {
      return MakeError(path, ": tensor ", QuoteName(name),
                       " is neither a '.lora_a' nor a '.lora_b' tensor");
    }
  }

  adapter.layers.resize(static_cast<std::size_t>(base.num_hidden_layers));
  std::size_t max_rank = 0;
  for (const auto& [base_name, pair] : pairs) {
    const auto parsed = ParseBaseName(base_name);
    if (!parsed) {
      return MakeError(path, ": tensor ", QuoteName(base_name + (pair.a ? ".lora_a" : ".lora_b")),
                       " adapts ", QuoteName(base_name),
                       ", which fgnet cannot apply (only the attn_q, attn_k, attn_v, "
                       "attn_output, ffn_gate, ffn_up and ffn_down weights of each layer)");
    }
    const auto [layer, module] = *parsed;
    if (pair.a == nullptr || pair.b == nullptr) {
      const std::string have = base_name + (pair.a ? ".lora_a" : ".lora_b");
      const std::string missing = base_name + (pair.a ? ".lora_b" : ".lora_a");
      return MakeError(path, ": tensor ", QuoteName(have), " has no matching ", QuoteName(missing));
    }
    if (layer >= adapter.layers.size()) {
      return MakeError(path, ": tensor ", QuoteName(pair.a->name), " adapts layer ", layer,
                       " but the base model has ", base.num_hidden_layers, " layers");
    }
    const auto [out, in] = LoraModuleShape(base, module);
    const std::vector<std::int64_t>& as = pair.a->shape;
    const std::vector<std::int64_t>& bs = pair.b->shape;
    if (as.size() != 2 || bs.size() != 2 || as[0] != bs[1]) {
      return MakeError(path, ": tensors ", QuoteName(pair.a->name), " of shape ", ShapeToString(as),
                       " and ", QuoteName(pair.b->name), " of shape ", ShapeToString(bs),
                       " are not A [rank, in] and B [out, rank] of one rank");
    }
    const std::int64_t rank = as[0];
    if (as[1] != in || bs[0] != out) {
      return MakeError(path, ": tensors ", QuoteName(pair.a->name), " of shape ", ShapeToString(as),
                       " and ", QuoteName(pair.b->name), " of shape ", ShapeToString(bs),
                       " do not fit the base model's ", QuoteName(base_name), " of shape [", out,
                       ", ", in, "] (expected [", rank, ", ", in, "] and [", out, ", ", rank, "])");
    }
    LoraLayer& l = adapter.layers[layer][static_cast<std::size_t>(module)];
    l.rank = static_cast<std::size_t>(rank);
    l.scale = ScaleOf(alpha, l.rank);
    l.a = ToF32(*pair.a);
    l.b = ToF32(*pair.b);
    max_rank = std::max(max_rank, l.rank);
  }
  adapter.config.r = static_cast<std::int64_t>(max_rank);
  adapter.config.target_modules = adapter.adapted_modules();
  FGNET_TRY(ValidateLoraAdapter(adapter, base));
  adapter.content_hash = LoraContentHash(adapter);
  return adapter;
}

namespace {

struct Module {
  std::size_t layer;
  LoraModule module;
  const LoraLayer* lora;
};

// How many modules `alpha` gives their exact scale.
std::size_t CountExact(float alpha, const std::vector<Module>& modules) {
  std::size_t n = 0;
  for (const Module& m : modules) n += ScaleOf(alpha, m.lora->rank) == m.lora->scale ? 1 : 0;
  return n;
}

// An alpha giving module `m` its exact scale, if one exists near scale * rank.
std::optional<float> ExactAlpha(const LoraLayer& m) {
  if (m.scale == 0.0f) return std::nullopt;
  const float guess =
      static_cast<float>(static_cast<double>(m.scale) * static_cast<double>(m.rank));
  float a = guess;
  for (int step = 0; step < 4; ++step)
    a = std::nextafter(a, -std::numeric_limits<float>::infinity());
  for (int step = 0; step < 9; ++step) {
    if (a != 0.0f && std::isfinite(a) && ScaleOf(a, m.rank) == m.scale) return a;
    a = std::nextafter(a, std::numeric_limits<float>::infinity());
  }
  return std::nullopt;
}

}  // namespace

Status WriteGgufAdapter(const LoraAdapter& adapter, const std::string& path) {
  std::vector<Module> modules;
  for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
    for (LoraModule m : kAllLoraModules) {
      const LoraLayer& lora = adapter.at(l, m);
      if (!lora.active()) continue;
      if (!std::isfinite(lora.scale)) {
        return MakeError(path, ": layer ", l, " ", LoraModuleName(m), ": the scale is not finite");
      }
      modules.push_back({l, m, &lora});
    }
  }

  // The alpha that gives the most modules their exact scale (the first such, in module order).
  float alpha = 0.0f;
  std::size_t best = 0;
  for (const Module& m : modules) {
    const std::optional<float> candidate = ExactAlpha(*m.lora);
    if (!candidate) continue;
    const std::size_t n = CountExact(*candidate, modules);
    if (n > best) {
      best = n;
      alpha = *candidate;
    }
  }
  if (alpha == 0.0f) {
    // No module's scale is expressible (e.g. every scale is 0): any alpha will do, the scales
    // all go into B.
    alpha = modules.empty() ? 0.0f : static_cast<float>(modules.front().lora->rank);
  }

  GgufWriter writer;
  writer.Set("general.architecture", GgufValue::String(std::string(kArchitecture)));
  writer.Set("general.type", GgufValue::String("adapter"));
  if (!adapter.name.empty()) writer.Set("general.name", GgufValue::String(adapter.name));
  writer.Set("adapter.type", GgufValue::String("lora"));
  writer.Set("adapter.lora.alpha", GgufValue::F32(alpha));
  if (adapter.is_activated()) {
    std::vector<GgufValue> tokens;
    for (const std::int32_t id : adapter.config.alora_invocation_tokens) {
      if (id < 0) return MakeError(path, ": invocation token ", id, " is negative");
      tokens.push_back(GgufValue::U32(static_cast<std::uint32_t>(id)));
    }
    writer.Set("adapter.alora.invocation_tokens",
               GgufValue::Array(GgufType::kUint32, std::move(tokens)));
  }
  if (!adapter.base_model_hash.empty()) {
    writer.Set("fgnet.lora.base_model_hash", GgufValue::String(adapter.base_model_hash));
  }

  std::vector<std::unique_ptr<std::vector<float>>> folded;
  for (const Module& m : modules) {
    const LoraLayer& lora = *m.lora;
    const auto rank = static_cast<std::int64_t>(lora.rank);
    const auto in = static_cast<std::int64_t>(lora.a.size() / lora.rank);
    const auto out = static_cast<std::int64_t>(lora.b.size() / lora.rank);
    if (lora.a.size() != lora.rank * static_cast<std::size_t>(in) ||
        lora.b.size() != lora.rank * static_cast<std::size_t>(out) || in == 0 || out == 0) {
      return MakeError(path, ": layer ", m.layer, " ", LoraModuleName(m.module), ": A has ",
                       lora.a.size(), " and B ", lora.b.size(), " values, not multiples of rank ",
                       lora.rank);
    }
    const float* b = lora.b.data();
    const float expressed = ScaleOf(alpha, lora.rank);
    if (expressed != lora.scale) {
      // Fold what alpha cannot express into B: scale * B == expressed * B'.
      const double ratio = static_cast<double>(lora.scale) / static_cast<double>(expressed);
      auto buf = std::make_unique<std::vector<float>>(lora.b.size());
      for (std::size_t i = 0; i < lora.b.size(); ++i) {
        (*buf)[i] = static_cast<float>(static_cast<double>(lora.b[i]) * ratio);
        if (!std::isfinite((*buf)[i])) {
          return MakeError(path, ": layer ", m.layer, " ", LoraModuleName(m.module), ": its scale ",
                           lora.scale, " cannot be expressed with alpha ", alpha);
        }
      }
      b = buf->data();
      folded.push_back(std::move(buf));
    }
    const std::string base_name = BaseTensorName(m.layer, m.module);
    writer.AddTensor(base_name + ".lora_a", TensorView{DType::kF32, {rank, in}, lora.a.data()});
    writer.AddTensor(base_name + ".lora_b", TensorView{DType::kF32, {out, rank}, b});
  }
  return writer.Write(path);
}

}  // namespace fgnet
