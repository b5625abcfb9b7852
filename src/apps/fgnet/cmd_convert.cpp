// `fgnet convert`: a model (and adapters made for it) rewritten as an RDRR package or a GGUF file,
// optionally quantized on the way.
#include <filesystem>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_loading.h"
#include "model/gguf_lora.h"
#include "model/gguf_model.h"
#include "model/io_util.h"
#include "model/quantize.h"
#include "model/rdrr.h"
#include "util/thread_pool.h"

namespace fgnet::cli {
namespace {

namespace fs = std::filesystem;

Status RunConvert(const ParsedArgs& args, CommandIo& io) {
  FGNET_ASSIGN_OR_RETURN(const std::vector<AdapterArg> adapter_args, AdapterArgs(args));
  for (const AdapterArg& a : adapter_args) {
    if (a.scale_given) {
      return MakeError("--adapter ", a.path,
                       ": convert writes adapters as they are; a scale has no meaning here");
    }
  }
  const bool adapters_only = args.Switch("adapters-only");
  if (adapters_only && adapter_args.empty())
    return Error("--adapters-only needs at least one --adapter");
  const std::string& format = args.String("format");
  const std::string& out = args.String("out");
  FGNET_ASSIGN_OR_RETURN(auto loaded, LoadModel(args.String("model"), {.adapters = adapter_args}));
  const Checkpoint* ck = loaded->checkpoint.get();
  const std::string model_id = args.OptString("model-id").value_or(FileStem(args.String("model")));

  std::unique_ptr<Checkpoint> quantized;
  if (auto name = args.OptString("quant")) {
    if (adapters_only) return Error("--quant applies to the model, which --adapters-only skips");
    FGNET_ASSIGN_OR_RETURN(const QuantScheme scheme, ParseQuantScheme(*name));
    ThreadPool pool(ThreadsOption(args));
    io.err << "quantizing the weights to " << QuantSchemeName(scheme) << "\n";
    FGNET_ASSIGN_OR_RETURN(Checkpoint q, QuantizeCheckpoint(*ck, scheme, pool));
    quantized = std::make_unique<Checkpoint>(std::move(q));
    ck = quantized.get();
  }

  if (!adapters_only) {
    if (format == "rdrr") {
      RdrrWriteOptions options;
      options.model_id = model_id;
      options.max_shard_bytes = static_cast<std::uint64_t>(args.Int("shard-mib")) << 20;
      FGNET_TRY(WriteRdrrModel(*ck, out, options));
    } else {
      GgufWriteOptions options;
      options.name = model_id;
      FGNET_TRY(WriteGemma3Gguf(*ck, out, options));
    }
    io.err << "wrote " << out << " (" << format << ", " << ck->quantization() << ", "
           << ck->tensors().size() << " tensors)\n";
  }

  // Adapters: RDRR packages under OUT/adapters/NAME, or GGUF files NAME.gguf beside OUT.
  const std::string adapter_dir =
      args.OptString("adapter-out")
          .value_or(format == "rdrr" ? (fs::path(out) / "adapters").string()
                                     : fs::path(out).parent_path().string());
  if (loaded->adapter_set.empty()) return Ok();
  std::error_code ec;
  if (!adapter_dir.empty()) fs::create_directories(adapter_dir, ec);
  if (ec) return MakeError(adapter_dir, ": cannot create directory: ", ec.message());
  const std::string& base_hash = ck->content_hash();
  for (const AdapterUse& use : loaded->adapter_set) {
    const LoraAdapter& a = *use.adapter;
    if (format == "rdrr") {
      const std::string dir = (fs::path(adapter_dir) / a.name).string();
      FGNET_TRY(WriteRdrrAdapter(a, dir, {a.name, model_id, base_hash}));
      io.err << "wrote adapter " << a.name << " to " << dir << "\n";
    } else {
      const std::string file =
          (fs::path(adapter_dir.empty() ? "." : adapter_dir) / (a.name + ".gguf")).string();
      FGNET_TRY(WriteGgufAdapter(a, file));
      io.err << "wrote adapter " << a.name << " to " << file << "\n";
    }
  }
  return Ok();
}

}  // namespace

void AddConvertCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "convert", "Convert a model (and its adapters) to an RDRR package or a GGUF file.",
      RunConvert);
  c.Description(
      "Reads a model in any format fgnet reads and writes it as an RDRR package (manifest.json "
      "with SHA-256 hashes, shards of at most --shard-mib MiB, 4 KiB-aligned tensors) or as a "
      "gemma3 GGUF file llama.cpp can load. --quant quantizes the weights first: q8_0 (every "
      "matrix Q8_0), q4_0 (projections Q4_0, embeddings Q8_0) or q4_k (projections Q4_K where "
      "their rows are a multiple of 256 weights, else Q4_0; embeddings Q6_K, else Q8_0). Each "
      "--adapter is converted too, into an RDRR adapter package under OUT/adapters/NAME (recording "
      "the base's id and content hash, which loading checks) or a GGUF LoRA file NAME.gguf "
      "beside OUT.");
  AddModelOption(c, "The model to convert.").Required();
  c.AddString("out", "PATH", "The RDRR package directory or the GGUF file to write.").Required();
  c.AddString("format", "FORMAT", "What to write.").Choices({"rdrr", "gguf"}).Default("rdrr");
  c.AddString("quant", "SCHEME", "Quantize the weights: q8_0, q4_0 or q4_k.")
      .Choices({"q8_0", "q4_0", "q4_k"})
      .DefaultNote("the weights as stored");
  c.AddString("model-id", "ID", "The model's id in the output.")
      .DefaultNote("the input's file or directory name");
  c.AddInt("shard-mib", "N", "Largest RDRR shard, in MiB.").IntRange(1, 4096).Default("64");
  AddAdapterOption(c);
  c.AddString("adapter-out", "DIR", "Where the converted adapters go.")
      .DefaultNote("OUT/adapters for rdrr, the directory of OUT for gguf");
  c.AddSwitch("adapters-only",
              "Convert only the adapters (the model is read for its shapes and hash).");
  AddThreadsOption(c);
  c.Example("--model functiongemma-270m-it --out fg270m.rdrr");
  c.Example("--model functiongemma-270m-it --format gguf --quant q8_0 --out fg270m-q8_0.gguf");
  c.Example("--model fg270m.rdrr --adapter math=experts/math --adapters-only --out fg270m.rdrr");
}

}  // namespace fgnet::cli
