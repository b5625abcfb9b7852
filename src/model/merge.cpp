#include "model/merge.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "model/io_util.h"
#include "model/safetensors.h"
#include "util/json.h"
#include "util/mapped_file.h"
#include "util/rng.h"

namespace fgnet {
namespace {

std::string Describe(const LoraAdapter& a) {
  return QuoteName(a.name) + (a.path.empty() ? std::string() : " (" + a.path + ")");
}

Status CheckAdapters(WeightedAdapters adapters, const Gemma3Config& base) {
  if (adapters.empty()) return MakeError("merge: no adapters given");
  for (std::size_t i = 0; i < adapters.size(); ++i) {
    const auto& [adapter, weight] = adapters[i];
    if (adapter == nullptr) return MakeError("merge: adapter ", i, " is missing (null)");
    if (adapter->is_activated()) {
      std::ostringstream tokens;
      for (std::size_t t = 0; t < adapter->config.alora_invocation_tokens.size(); ++t) {
        tokens << (t ? ", " : "") << adapter->config.alora_invocation_tokens[t];
      }
      return MakeError("adapter ", Describe(*adapter),
                       " is an activated LoRA (aLoRA, invocation tokens [", tokens.str(),
                       "]): merged into the weights it would apply at every position instead of "
                       "only from its invocation sequence on; apply it unmerged instead");
    }
    if (!std::isfinite(weight)) {
      return MakeError("adapter ", Describe(*adapter), ": the weight ", weight, " is not finite");
    }
    FGNET_TRY(ValidateLoraAdapter(*adapter, base));
  }
  return Ok();
}

Status CheckOptions(const MergeOptions& options) {
  const bool sparse = options.method == MergeOptions::Method::kTies ||
                      options.method == MergeOptions::Method::kDare;
  if (sparse && !(options.density > 0.0 && options.density <= 1.0)) {
    return MakeError("merge: density ", options.density, " for ", MergeMethodName(options.method),
                     " must be in (0, 1]");
  }
  if (options.out_dtype && IsQuantized(*options.out_dtype)) {
    return MakeError("merge: output dtype ", DTypeName(*options.out_dtype),
                     " is quantized; merged checkpoints are F32, BF16 or F16");
  }
  return Ok();
}

// delta [out, in] += factor * B A.
void AddProduct(const LoraLayer& l, float factor, std::int64_t out, std::int64_t in, float* delta) {
  const std::size_t r = l.rank;
  const auto n_in = static_cast<std::size_t>(in);
  for (std::int64_t o = 0; o < out; ++o) {
    float* row = delta + static_cast<std::size_t>(o) * n_in;
    for (std::size_t k = 0; k < r; ++k) {
      const float c = factor * l.b[static_cast<std::size_t>(o) * r + k];
      const float* a = l.a.data() + k * n_in;
      for (std::size_t i = 0; i < n_in; ++i) row[i] += c * a[i];
    }
  }
}

// Module `m` of layer `l` of the concatenation of `adapters` (inactive when none adapts it).
LoraLayer ConcatModule(WeightedAdapters adapters, std::size_t l, LoraModule m,
                       const Gemma3Config& base) {
  const auto [out, in] = LoraModuleShape(base, m);
  const auto n_out = static_cast<std::size_t>(out);
  std::size_t rank = 0;
  for (const auto& [adapter, weight] : adapters) rank += adapter->at(l, m).rank;
  LoraLayer result;
  if (rank == 0) return result;
  result.rank = rank;
  result.scale = 1.0f;
  result.a.reserve(rank * static_cast<std::size_t>(in));
  result.b.assign(n_out * rank, 0.0f);
  std::size_t column = 0;
  for (const auto& [adapter, weight] : adapters) {
    const LoraLayer& layer = adapter->at(l, m);
    if (!layer.active()) continue;
    result.a.insert(result.a.end(), layer.a.begin(), layer.a.end());
    const float factor = weight * layer.scale;
    for (std::size_t o = 0; o < n_out; ++o) {
      for (std::size_t k = 0; k < layer.rank; ++k) {
        result.b[o * rank + column + k] = factor * layer.b[o * layer.rank + k];
      }
    }
    column += layer.rank;
  }
  return result;
}

// Keeps the k = floor(density * n) largest magnitudes of `t` (equal ones at the cut in index
// order) and zeroes the rest; density >= 1 keeps everything.
void TrimToTopK(std::vector<float>& t, double density) {
  if (density >= 1.0) return;
  const auto k = static_cast<std::size_t>(density * static_cast<double>(t.size()));
  if (k == 0) {
    std::fill(t.begin(), t.end(), 0.0f);
    return;
  }
  std::vector<float> magnitudes(t.size());
  for (std::size_t i = 0; i < t.size(); ++i) magnitudes[i] = std::fabs(t[i]);
  std::nth_element(magnitudes.begin(), magnitudes.begin() + static_cast<std::ptrdiff_t>(k - 1),
                   magnitudes.end(), std::greater<float>());
  const float threshold = magnitudes[k - 1];
  std::size_t above = 0;
  for (float v : t) above += std::fabs(v) > threshold;
  std::size_t equal_left = k - above;
  for (float& v : t) {
    const float mag = std::fabs(v);
    if (mag > threshold) continue;
    if (mag == threshold && equal_left > 0) {
      --equal_left;
      continue;
    }
    v = 0.0f;
  }
}

// The merged delta of one module; `concat` is the concatenated adapter for kConcat.
std::vector<float> ModuleDelta(WeightedAdapters adapters, std::size_t l, LoraModule m,
                               const Gemma3Config& base, const MergeOptions& options,
                               const LoraAdapter* concat) {
  const auto [out, in] = LoraModuleShape(base, m);
  const auto n = static_cast<std::size_t>(out * in);
  std::vector<float> merged(n, 0.0f);
  switch (options.method) {
    case MergeOptions::Method::kLinear:
      for (const auto& [adapter, weight] : adapters) {
        const LoraLayer& layer = adapter->at(l, m);
        if (layer.active()) AddProduct(layer, weight * layer.scale, out, in, merged.data());
      }
      return merged;
    case MergeOptions::Method::kConcat: {
      if (concat != nullptr) {
        const LoraLayer& layer = concat->at(l, m);
        if (layer.active()) AddProduct(layer, layer.scale, out, in, merged.data());
      } else {
        const LoraLayer layer = ConcatModule(adapters, l, m, base);
        if (layer.active()) AddProduct(layer, layer.scale, out, in, merged.data());
      }
      return merged;
    }
    case MergeOptions::Method::kDare: {
      std::vector<float> delta(n);
      for (std::size_t i = 0; i < adapters.size(); ++i) {
        const auto& [adapter, weight] = adapters[i];
        const LoraLayer& layer = adapter->at(l, m);
        if (!layer.active()) continue;
        std::fill(delta.begin(), delta.end(), 0.0f);
        AddProduct(layer, layer.scale, out, in, delta.data());
        Philox rng(options.seed, (static_cast<std::uint64_t>(i) << 32) +
                                     static_cast<std::uint64_t>(l) * 8 +
                                     static_cast<std::uint64_t>(m));
        const auto inv = static_cast<float>(1.0 / options.density);
        for (std::size_t e = 0; e < n; ++e) {
          if (rng.NextDouble() < options.density) merged[e] += weight * (delta[e] * inv);
        }
      }
      return merged;
    }
    case MergeOptions::Method::kTies:
      break;
  }
  // TIES.
  std::vector<std::vector<float>> trimmed;
  std::vector<float> weights;
  for (const auto& [adapter, weight] : adapters) {
    const LoraLayer& layer = adapter->at(l, m);
    if (!layer.active()) continue;  // a zero delta: no sign, no vote, no value
    std::vector<float> t(n, 0.0f);
    AddProduct(layer, layer.scale, out, in, t.data());
    TrimToTopK(t, options.density);
    trimmed.push_back(std::move(t));
    weights.push_back(weight);
  }
  for (std::size_t e = 0; e < n; ++e) {
    float sum = 0.0f;
    for (const auto& t : trimmed) sum += t[e];
    const float elected = sum >= 0.0f ? 1.0f : -1.0f;
    float total = 0.0f;
    int count = 0;
    for (std::size_t i = 0; i < trimmed.size(); ++i) {
      const float v = trimmed[i][e];
      if (v == 0.0f || (v > 0.0f ? 1.0f : -1.0f) != elected) continue;
      total += weights[i] * v;
      ++count;
    }
    merged[e] = count > 0 ? total / static_cast<float>(count) : 0.0f;
  }
  return merged;
}

std::vector<std::uint8_t> Narrow(const std::vector<float>& f, DType dtype) {
  std::vector<std::uint8_t> out(f.size() * DTypeSize(dtype));
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &f[i], 4);
    } else {
      const std::uint16_t h = dtype == DType::kBF16 ? F32ToBF16(f[i]) : F32ToF16(f[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

const char* TorchDTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "float32";
    case DType::kBF16:
      return "bfloat16";
    case DType::kF16:
      return "float16";
    default:
      return "?";
  }
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) return MakeError(path, ": write failed");
  return Ok();
}

// config.json: the base's bytes, or with its dtype keys rewritten when the dtype changes.
Status WriteConfig(const Checkpoint& base, const MergeOptions& options, const std::string& path) {
  const std::string& source = base.config_path();
  if (!IsRegularFile(source) || source.size() < 11 ||
      source.compare(source.size() - 11, 11, "config.json") != 0) {
    return WriteText(path, Gemma3ConfigToJson(base.config()).dump(2) + "\n");
  }
  FGNET_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(source));
  if (!options.out_dtype) return WriteText(path, text);
  FGNET_ASSIGN_OR_RETURN(Json json, ParseJson(text, source));
  const auto update = [&](Json& j) {
    for (const char* key : {"dtype", "torch_dtype"}) {
      if (j.is_object() && j.contains(key)) j[key] = TorchDTypeName(*options.out_dtype);
    }
  };
  update(json);
  if (json.contains("text_config")) update(json["text_config"]);
  return WriteText(path, json.dump(2) + "\n");
}

Status CopySideFile(const std::string& from, const std::string& out_dir, const char* name) {
  if (from.empty()) return Ok();
  std::error_code ec;
  std::filesystem::copy_file(from, JoinPath(out_dir, name),
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (ec)
    return MakeError(JoinPath(out_dir, name), ": cannot copy from ", from, ": ", ec.message());
  return Ok();
}

}  // namespace

std::string_view MergeMethodName(MergeOptions::Method method) {
  switch (method) {
    case MergeOptions::Method::kLinear:
      return "linear";
    case MergeOptions::Method::kTies:
      return "ties";
    case MergeOptions::Method::kDare:
      return "dare";
    case MergeOptions::Method::kConcat:
      return "concat";
  }
  return "?";
}

std::optional<MergeOptions::Method> ParseMergeMethod(std::string_view name) {
  for (auto m : {MergeOptions::Method::kLinear, MergeOptions::Method::kTies,
                 MergeOptions::Method::kDare, MergeOptions::Method::kConcat}) {
    if (name == MergeMethodName(m)) return m;
  }
  return std::nullopt;
}

Result<LoraAdapter> ConcatAdapters(WeightedAdapters weighted, const Gemma3Config& base) {
  FGNET_TRY(CheckAdapters(weighted, base));
  LoraAdapter result;
  result.format = "in-memory";
  result.layers.resize(static_cast<std::size_t>(base.num_hidden_layers));
  std::string base_model = weighted[0].first->config.base_model_name_or_path;
  std::string base_hash = weighted[0].first->base_model_hash;
  for (const auto& [adapter, weight] : weighted) {
    result.name += (result.name.empty() ? "" : "+") + adapter->name;
    if (adapter->config.base_model_name_or_path != base_model) base_model.clear();
    if (adapter->base_model_hash != base_hash) base_hash.clear();
  }
  std::size_t max_rank = 0;
  for (std::size_t l = 0; l < result.layers.size(); ++l) {
    for (LoraModule m : kAllLoraModules) {
      LoraLayer layer = ConcatModule(weighted, l, m, base);
      max_rank = std::max(max_rank, layer.rank);
      result.layers[l][static_cast<std::size_t>(m)] = std::move(layer);
    }
  }
  result.config.r = static_cast<std::int64_t>(max_rank);
  result.config.lora_alpha = static_cast<double>(max_rank);
  result.config.target_modules = result.adapted_modules();
  result.config.base_model_name_or_path = base_model;
  result.base_model_hash = base_hash;
  result.content_hash = LoraContentHash(result);
  return result;
}

Result<std::vector<float>> MergedModuleDelta(WeightedAdapters adapters, std::size_t layer,
                                             LoraModule module, const Gemma3Config& base,
                                             const MergeOptions& options) {
  FGNET_TRY(CheckOptions(options));
  FGNET_TRY(CheckAdapters(adapters, base));
  if (layer >= static_cast<std::size_t>(base.num_hidden_layers)) {
    return MakeError("merge: layer ", layer, " is past the base's last layer ",
                     base.num_hidden_layers - 1);
  }
  return ModuleDelta(adapters, layer, module, base, options, nullptr);
}

Status WriteMergedCheckpoint(const Checkpoint& base, WeightedAdapters adapters,
                             const MergeOptions& options, const std::string& out_dir) {
  const Gemma3Config& config = base.config();
  if (base.quantization() != "none") {
    return MakeError(base.dir(), ": the base is quantized (", base.quantization(),
                     "); merging needs F32, BF16 or F16 weights");
  }
  for (const auto& [name, entry] : base.tensors().all()) {
    if (IsQuantized(entry.view.dtype)) {
      return MakeError(base.dir(), ": tensor ", QuoteName(name), " is ",
                       DTypeName(entry.view.dtype), "; merging needs F32, BF16 or F16 weights");
    }
  }
  if (base.weights().norms_include_one) {
    return MakeError(base.dir(),
                     ": the base stores its norms as (1 + w) (GGUF); merging writes "
                     "Hugging Face checkpoints from Hugging Face or RDRR bases only");
  }
  FGNET_TRY(CheckOptions(options));
  FGNET_TRY(CheckAdapters(adapters, config));
  std::error_code ec;
  if (std::filesystem::exists(out_dir, ec) &&
      std::filesystem::equivalent(out_dir, base.dir(), ec)) {
    return MakeError(out_dir, ": is the base checkpoint's own directory; choose another output");
  }
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return MakeError(out_dir, ": cannot create the directory: ", ec.message());

  std::optional<LoraAdapter> concat;
  if (options.method == MergeOptions::Method::kConcat) {
    FGNET_ASSIGN_OR_RETURN(concat, ConcatAdapters(adapters, config));
  }
  std::map<std::string, std::pair<std::size_t, LoraModule>> projections;
  for (std::size_t l = 0; l < static_cast<std::size_t>(config.num_hidden_layers); ++l) {
    for (LoraModule m : kAllLoraModules) {
      const bool adapted = std::any_of(adapters.begin(), adapters.end(),
                                       [&](const auto& a) { return a.first->at(l, m).active(); });
      if (!adapted) continue;
      projections[base.tensor_prefix() + "layers." + std::to_string(l) + "." +
                  std::string(LoraModulePath(m)) + ".weight"] = {l, m};
    }
  }
  std::vector<std::vector<std::uint8_t>> buffers;
  buffers.reserve(base.tensors().size());
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, entry] : base.tensors().all()) {
    const TensorView& view = entry.view;
    const DType out = options.out_dtype.value_or(view.dtype);
    const auto projection = projections.find(name);
    if (projection == projections.end() && out == view.dtype) {
      entries.push_back({name, view});
      continue;
    }
    std::vector<float> values = TensorToF32(view);
    if (projection != projections.end()) {
      const auto [l, m] = projection->second;
      const std::vector<float> delta =
          ModuleDelta(adapters, l, m, config, options, concat ? &*concat : nullptr);
      // Adding a zero changes nothing but the sign of a zero weight; skipping keeps the bytes.
      for (std::size_t i = 0; i < values.size(); ++i) {
        if (delta[i] != 0.0f) values[i] += delta[i];
      }
    }
    buffers.push_back(Narrow(values, out));
    entries.push_back({name, TensorView{out, view.shape, buffers.back().data()}});
  }
  FGNET_TRY(WriteSafetensors(JoinPath(out_dir, "model.safetensors"), entries, {{"format", "pt"}}));
  FGNET_TRY(WriteConfig(base, options, JoinPath(out_dir, "config.json")));
  FGNET_TRY(CopySideFile(base.tokenizer_path(), out_dir, "tokenizer.json"));
  FGNET_TRY(CopySideFile(base.tokenizer_config_path(), out_dir, "tokenizer_config.json"));
  FGNET_TRY(CopySideFile(base.generation_config_path(), out_dir, "generation_config.json"));
  return Ok();
}

}  // namespace fgnet
