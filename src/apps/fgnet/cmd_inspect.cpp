// `fgnet inspect`: what a checkpoint holds: config, tensors, parameter and memory totals.
#include <cstdio>
#include <string>

#include "apps/fgnet/commands.h"
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
      {"unused_tensors", checkpoint.unused_tensors()},
      {"kv_cache_bytes_per_token", KvBytesPerPosition(c)},
      {"tokenizer", checkpoint.tokenizer_path()},
      {"generation_config", checkpoint.generation_config_path()},
      {"tensors", tensors},
  };
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
  out << "checkpoint   " << checkpoint.dir() << "\n"
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
  out << "tensors      " << checkpoint.tensors().all().size() << "\n";
  for (const auto& [name, entry] : checkpoint.tensors().all()) {
    out << "  " << name << "  " << DTypeName(entry.view.dtype) << " "
        << ShapeToString(entry.view.shape) << "\n";
  }
}

Status RunInspect(const ParsedArgs& args, CommandIo& io) {
  FGNET_ASSIGN_OR_RETURN(const Checkpoint checkpoint, Checkpoint::Open(*args.Positional("DIR")));
  if (args.Switch("json")) {
    io.out << Describe(checkpoint).dump(2) << "\n";
  } else {
    PrintText(checkpoint, io.out);
  }
  return Ok();
}

}  // namespace

void AddInspectCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "inspect", "Describe a checkpoint: config, tensors, parameter count and sizes.", RunInspect);
  c.AddPositional("DIR", "Checkpoint directory (config.json and *.safetensors).");
  c.AddSwitch("json", "Print the description as JSON.");
  c.Example("gemma-3-270m");
  c.Example("functiongemma-270m-it --json");
}

}  // namespace fgnet::cli
