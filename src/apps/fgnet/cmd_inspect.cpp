// `fgnet inspect`: what a checkpoint holds: config, tensors, parameter and memory totals.
#include <cstdio>
#include <string>

#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_loading.h"
#include "model/checkpoint.h"
#include "util/json.h"

namespace fgnet::cli {
namespace {

std::string LayerTypeName(LayerType t) {
  return t == LayerType::kSliding ? "sliding_attention" : "full_attention";
}

// KV bytes one position occupies in every layer, in fgnet's f32 CPU cache.
std::uint64_t KvBytesPerPosition(const Gemma3Config& c) {
  return static_cast<std::uint64_t>(2 * c.kv_dim() * 4 * c.num_hidden_layers);
}

Json Describe(const Checkpoint& checkpoint) {
  const Gemma3Config& c = checkpoint.config();
  Json config = Gemma3ConfigToJson(c);
  Json layer_types = Json::array();
  for (LayerType t : c.layer_types) layer_types.push_back(LayerTypeName(t));
  Json tensors = Json::array();
  for (const auto& [name, entry] : checkpoint.tensors().all()) {
    tensors.push_back({{"name", name},
                       {"dtype", std::string(DTypeName(entry.view.dtype))},
                       {"shape", entry.view.shape},
                       {"bytes", entry.view.num_bytes()},
                       {"file", entry.file}});
  }
  Json bytes_by_dtype = Json::object();
  for (const auto& [dtype, bytes] : checkpoint.tensors().BytesByDType()) {
    bytes_by_dtype[std::string(DTypeName(dtype))] = bytes;
  }
  return {
      {"dir", checkpoint.dir()},
      {"config", config},
      {"layer_types", layer_types},
      {"parameters", checkpoint.num_model_parameters()},
      {"format", std::string(CheckpointFormatName(checkpoint.format()))},
      {"tensor_count", checkpoint.tensors().all().size()},
      {"files", checkpoint.tensors().num_files()},
      {"weight_bytes", checkpoint.tensors().total_bytes()},
      {"weight_bytes_by_dtype", bytes_by_dtype},
      {"quantization", checkpoint.quantization()},
      {"unused_tensors", checkpoint.unused_tensors()},
      {"kv_cache_bytes_per_token", KvBytesPerPosition(c)},
      {"tokenizer", checkpoint.tokenizer_path()},
      {"generation_config", checkpoint.generation_config_path()},
      {"tensors", tensors},
  };
}

Json DescribeAdapter(const AdapterRegistry::Entry& e) {
  const LoraAdapter& a = *e.adapter;
  std::size_t min_rank = 0, max_rank = 0, adapted = 0;
  for (const auto& layer : a.layers) {
    for (const LoraLayer& m : layer) {
      if (!m.active()) continue;
      min_rank = adapted == 0 ? m.rank : std::min(min_rank, m.rank);
      max_rank = std::max(max_rank, m.rank);
      ++adapted;
    }
  }
  Json j = {{"names", e.names},
            {"content_hash", a.content_hash},
            {"format", a.format},
            {"path", a.path},
            {"rank_min", min_rank},
            {"rank_max", max_rank},
            {"adapted_projections", adapted},
            {"modules", a.adapted_modules()},
            {"parameters", a.num_parameters()},
            {"bytes", e.bytes}};
  if (a.is_activated()) j["alora_invocation_tokens"] = a.config.alora_invocation_tokens;
  if (!a.base_model_hash.empty()) j["base_model_hash"] = a.base_model_hash;
  return j;
}

std::string Mib(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

void PrintText(const Checkpoint& checkpoint, std::ostream& out) {
  const Gemma3Config& c = checkpoint.config();
  std::int64_t global = 0;
  for (LayerType t : c.layer_types) global += t == LayerType::kGlobal;
  auto cap = [](const std::optional<double>& v) {
    return v ? std::to_string(*v) : std::string("none");
  };
  out << "checkpoint   " << checkpoint.dir() << " (" << CheckpointFormatName(checkpoint.format())
      << ")\n"
      << "model        " << c.model_type
      << (c.multimodal ? " (text model of a multimodal gemma3)" : "") << "\n"
      << "layers       " << c.num_hidden_layers << " (" << c.num_hidden_layers - global
      << " sliding, window " << c.sliding_window << "; " << global << " global)\n"
      << "widths       hidden " << c.hidden_size << ", intermediate " << c.intermediate_size
      << ", heads " << c.num_attention_heads << " x " << c.head_dim << ", kv heads "
      << c.num_key_value_heads << ", vocab " << c.vocab_size << "\n"
      << "rope         global theta " << c.rope_theta_global << " (scale " << c.rope_scaling_global
      << "), sliding theta " << c.rope_theta_local << " (scale " << c.rope_scaling_local << ")\n"
      << "attention    query_pre_attn_scalar " << c.query_pre_attn_scalar << ", softcap "
      << cap(c.attn_logit_softcapping) << "; final logit softcap " << cap(c.final_logit_softcapping)
      << "\n"
      << "embeddings   " << (c.tie_word_embeddings ? "tied" : "untied") << "; max positions "
      << c.max_position_embeddings << "\n"
      << "parameters   " << checkpoint.num_model_parameters() << "\n"
      << "weights      " << Mib(checkpoint.tensors().total_bytes()) << " in "
      << checkpoint.tensors().num_files() << " file(s):";
  for (const auto& [dtype, bytes] : checkpoint.tensors().BytesByDType()) {
    out << " " << DTypeName(dtype) << " " << Mib(bytes);
  }
  out << "\n"
      << "kv cache     " << KvBytesPerPosition(c) << " bytes per token (f32, all layers; sliding "
      << "layers keep at most " << c.sliding_window << " positions)\n"
      << "tokenizer    "
      << (checkpoint.tokenizer_path().empty() ? "(none)" : checkpoint.tokenizer_path()) << "\n";
  if (!checkpoint.unused_tensors().empty()) {
    out << "unused       " << checkpoint.unused_tensors().size()
        << " tensors outside the text model (e.g. a vision tower)\n";
  }
  if (checkpoint.quantization() != "none") {
    out << "quantization " << checkpoint.quantization() << "\n";
  }
  out << "tensors      " << checkpoint.tensors().all().size() << "\n";
  for (const auto& [name, entry] : checkpoint.tensors().all()) {
    out << "  " << name << "  " << DTypeName(entry.view.dtype) << " "
        << ShapeToString(entry.view.shape) << "\n";
  }
}

void PrintAdapters(const std::vector<AdapterRegistry::Entry>& entries, std::ostream& out) {
  std::uint64_t total = 0;
  for (const auto& e : entries) total += e.bytes;
  out << "adapters     " << entries.size() << ", " << Mib(total) << " in memory\n";
  for (const auto& e : entries) {
    const Json j = DescribeAdapter(e);
    out << "  " << e.names.front() << "  " << e.adapter->content_hash.substr(0, 12) << "  "
        << j["format"].get<std::string>() << "  rank " << j["rank_min"].get<std::size_t>();
    if (j["rank_max"] != j["rank_min"]) out << ".." << j["rank_max"].get<std::size_t>();
    out << " on " << j["adapted_projections"].get<std::size_t>() << " projections (";
    const Json& modules = j["modules"];
    for (std::size_t i = 0; i < modules.size(); ++i) {
      out << (i ? ", " : "") << modules[i].get<std::string>();
    }
    out << ")  " << Mib(e.bytes);
    if (j.contains("alora_invocation_tokens")) {
      out << "  activated by " << j["alora_invocation_tokens"].dump();
    }
    out << "\n";
  }
}

Status RunInspect(const ParsedArgs& args, CommandIo& io) {
  FGNET_ASSIGN_OR_RETURN(const std::vector<AdapterArg> adapters, AdapterArgs(args));
  FGNET_ASSIGN_OR_RETURN(auto loaded, LoadModel(*args.Positional("MODEL"), {.adapters = adapters}));
  const Checkpoint& checkpoint = *loaded->checkpoint;
  const std::vector<AdapterRegistry::Entry> entries = loaded->registry->List();
  if (args.Switch("json")) {
    Json out = Describe(checkpoint);
    if (args.Switch("hash")) out["content_hash"] = checkpoint.content_hash();
    Json list = Json::array();
    for (const auto& e : entries) list.push_back(DescribeAdapter(e));
    out["adapters"] = list;
    out["adapter_bytes"] = loaded->registry->total_bytes();
    io.out << out.dump(2) << "\n";
  } else {
    PrintText(checkpoint, io.out);
    if (args.Switch("hash")) io.out << "content hash " << checkpoint.content_hash() << "\n";
    if (!entries.empty()) PrintAdapters(entries, io.out);
  }
  return Ok();
}

}  // namespace

void AddInspectCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "inspect", "Describe a model and its adapters: config, tensors, parameters, memory.",
      RunInspect);
  c.AddPositional("MODEL", std::string("The model: ") + kModelFormats + ".");
  AddAdapterOption(c);
  c.AddSwitch("hash",
              "Show the model's content hash, by which adapters and caches refer to it (reads "
              "every weight unless the format records it).");
  c.AddSwitch("json", "Print the description as JSON.");
  c.Example("gemma-3-270m");
  c.Example("functiongemma-270m-it --json");
  c.Example("functiongemma-270m-it --adapter experts/math --adapter experts/code.gguf");
}

}  // namespace fgnet::cli
