// `fgnet merge`: LoRA adapters merged into a base checkpoint in delta space (linear, TIES, DARE),
// or concatenated into one exact adapter (concat).
#include <charconv>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_loading.h"
#include "model/merge.h"
#include "model/model_files.h"
#include "model/peft.h"

namespace fgnet::cli {
namespace {

Status RunMerge(const ParsedArgs& args, CommandIo& io) {
  const std::optional<MergeOptions::Method> method = ParseMergeMethod(args.String("method"));
  FGNET_CHECK(method.has_value());  // restricted by Choices()
  FGNET_ASSIGN_OR_RETURN(const std::vector<AdapterArg> specs, AdapterArgs(args));
  FGNET_ASSIGN_OR_RETURN(auto loaded, LoadModel(args.String("model"), {}));
  const Gemma3Config& config = loaded->checkpoint->config();
  std::vector<LoraAdapter> adapters;
  adapters.reserve(specs.size());
  for (const AdapterArg& spec : specs) {
    FGNET_ASSIGN_OR_RETURN(LoraAdapter adapter, LoadAdapter(spec.path, *loaded->checkpoint));
    adapters.push_back(std::move(adapter));
  }
  std::vector<std::pair<const LoraAdapter*, float>> weighted;
  for (std::size_t i = 0; i < adapters.size(); ++i) {
    weighted.emplace_back(&adapters[i], specs[i].scale);
  }
  const std::string& out = args.String("out");
  if (*method == MergeOptions::Method::kConcat) {
    FGNET_ASSIGN_OR_RETURN(LoraAdapter concat, ConcatAdapters(weighted, config));
    FGNET_TRY(WritePeftAdapter(concat, out));
    std::size_t max_rank = 0;
    for (const auto& layer : concat.layers) {
      for (const LoraLayer& m : layer) max_rank = std::max(max_rank, m.rank);
    }
    io.err << "wrote the concatenation of " << adapters.size() << " adapters to " << out
           << ": a PEFT adapter (adapter_config.json, adapter_model.safetensors), rank up to "
           << max_rank << "\n";
    return Ok();
  }
  MergeOptions options;
  options.method = *method;
  options.density = args.Float("density");
  options.seed = static_cast<std::uint64_t>(args.Int("seed"));
  if (auto dtype = args.OptString("dtype")) {
    options.out_dtype = *dtype == "f32"    ? DType::kF32
                        : *dtype == "bf16" ? DType::kBF16
                                           : DType::kF16;
  }
  FGNET_TRY(WriteMergedCheckpoint(*loaded->checkpoint, weighted, options, out));
  io.err << "merged " << adapters.size() << " adapter" << (adapters.size() == 1 ? "" : "s") << " ("
         << MergeMethodName(*method) << ") into " << args.String("model") << " and wrote " << out
         << "\n";
  return Ok();
}

Status ValidateMergeArgs(const ParsedArgs& args) {
  const std::string& method = args.String("method");
  if (args.Given("density") && method != "ties" && method != "dare") {
    return Error("--density applies to --method ties and dare only");
  }
  if (args.Given("seed") && method != "dare") return Error("--seed applies to --method dare only");
  if (args.Given("dtype") && method == "concat") {
    return Error("--dtype does not apply to --method concat, which writes an adapter");
  }
  if (method == "ties" || method == "dare") {
    const double d = args.Float("density");
    if (!(d > 0.0 && d <= 1.0)) return Error("--density must be in (0, 1]");
  }
  return Ok();
}

}  // namespace

void AddMergeCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "merge", "Merge LoRA adapters into a base checkpoint (or concatenate them into one adapter).",
      RunMerge);
  c.Description(
      "Adapters are combined through their dense updates delta = scale * B A, never by averaging "
      "their A and B matrices. linear: W + sum of weight * delta. ties: each delta trimmed to its "
      "--density largest magnitudes, the sign elected per element by the summed deltas, and the "
      "weighted values of that sign averaged. dare: each element of each delta kept with "
      "probability --density and rescaled by 1 / density (seeded, reproducible). The result is a "
      "Hugging Face checkpoint directory: model.safetensors, config.json and the base's "
      "tokenizer and generation files. --method concat instead writes one exact PEFT adapter "
      "directory (adapter_config.json, adapter_model.safetensors) whose rank is the sum of the "
      "ranks, with each weight folded in; it is not a checkpoint. "
      "Activated LoRA (aLoRA) adapters are refused, since merged they would apply at every "
      "position. Adapters may be PEFT directories, RDRR adapter packages or GGUF LoRA files.");
  AddModelOption(c, "The base model (not quantized).").Required();
  c.AddString("adapter", "PATH[:WEIGHT]",
              "An adapter (PEFT directory, RDRR package or GGUF LoRA file), optionally with its "
              "weight (default 1); repeat for several.")
      .Repeatable()
      .Required();
  c.AddString("out", "DIR",
              "Output directory: a checkpoint, or with --method concat a PEFT adapter.")
      .Required();
  c.AddString("method", "METHOD", "How the adapters are combined.")
      .Choices({"linear", "ties", "dare", "concat"})
      .Default("linear");
  c.AddFloat("density", "D", "ties / dare: the fraction of each delta kept, in (0, 1].")
      .Default("1");
  c.AddInt("seed", "N", "dare: the seed of the random drops.").IntRange(0).Default("0");
  c.AddString("dtype", "DTYPE", "Dtype of every written tensor.")
      .Choices({"f32", "bf16", "f16"})
      .DefaultNote("each tensor keeps the base's dtype");
  c.Validate(ValidateMergeArgs);
  c.Example("--model fg-base --adapter weather:0.7 --adapter calendar:0.3 --out fg-merged");
  c.Example("--model fg-base --adapter a --adapter b --method ties --density 0.5 --out fg-ties");
  c.Example("--model fg-base --adapter a:0.5 --adapter b:0.5 --method concat --out ab-adapter");
}

}  // namespace fgnet::cli
