// Declarations of the fgnet subcommands. The bodies of generate, logits, tokenize, inspect and
// synth report that they are not built yet; bench lives in bench_command.cpp.
#include "apps/fgnet/commands.h"

#include "apps/fgnet/build_info.h"

namespace fgnet::cli {
namespace {

constexpr std::int64_t kMaxThreads = 1024;

void AddThreadsOption(CommandSpec& c) {
  c.AddInt("threads", "N", "Worker threads.")
      .IntRange(1, kMaxThreads)
      .DefaultNote("all available cores");
}

}  // namespace

Error NotBuiltYet(std::string_view what) {
  return MakeError("not built yet: this build of ", kProgram, " does not include ", what);
}

App MakeFgnetApp() {
  App app(kProgram,
          "fgnet runs Google's Gemma 3 text models and FunctionGemma (with LoRA experts) on the "
          "CPU: generation with function calling, logits dumps, tokenization, checkpoint "
          "inspection, synthetic checkpoints and benchmarks.",
          GetBuildInfo().version);
  AddGenerateCommand(app);
  AddLogitsCommand(app);
  AddTokenizeCommand(app);
  AddInspectCommand(app);
  AddSynthCommand(app);
  AddBenchCommand(app);
  return app;
}

void AddGenerateCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "generate", "Generate a reply to a prompt or a chat, with optional function calling.",
      [](const ParsedArgs&, CommandIo&) -> Status {
        return NotBuiltYet("text generation (tokenizer, model and engine libraries)");
      });
  c.Description(
      "The prompt is formatted with the Gemma chat template (with --tools, the FunctionGemma "
      "function declarations are added to the system turn), then up to --max-tokens tokens are "
      "sampled. Sampling settings that are not given come from the checkpoint's "
      "generation_config.json.");
  c.AddString("model", "DIR",
              "Checkpoint directory: config.json, model.safetensors, tokenizer.json and "
              "optionally generation_config.json.")
      .Required();
  c.AddString("prompt", "TEXT", "The user message (or, with --raw, the text to continue).")
      .AllowFile();
  c.AddString("messages", "FILE.json",
              "Chat messages in OpenAI form: [{\"role\": \"user\", \"content\": \"...\"}, ...] "
              "with roles system, user, assistant and tool.");
  c.AddString("tools", "FILE.json",
              "Function declarations offered to the model, in OpenAI tools form: [{\"type\": "
              "\"function\", \"function\": {\"name\", \"description\", \"parameters\"}}, ...].")
      .Repeatable();
  c.AddInt("max-tokens", "N", "Most tokens to generate.")
      .IntRange(1)
      .DefaultNote("from generation_config.json");
  c.AddFloat("temperature", "X", "Sampling temperature; 0 always picks the most likely token.")
      .FloatRange(0)
      .DefaultNote("from generation_config.json");
  c.AddInt("top-k", "K", "Sample among the K most likely tokens; 0 disables the limit.")
      .IntRange(0)
      .DefaultNote("from generation_config.json");
  c.AddFloat("top-p", "P",
             "Sample among the most likely tokens whose probabilities add up to P; 1 disables.")
      .FloatRange(0, 1)
      .DefaultNote("from generation_config.json");
  c.AddFloat("min-p", "P",
             "Drop tokens less likely than P times the most likely token; 0 disables.")
      .FloatRange(0, 1)
      .DefaultNote("from generation_config.json");
  c.AddFloat("repetition-penalty", "X",
             "Divide the logits of tokens already in the context by X (> 0); 1 disables.")
      .FloatRange(0)
      .DefaultNote("from generation_config.json");
  c.AddInt("seed", "N", "Seed of the sampling stream; the same seed gives the same output.")
      .IntRange(0)
      .Default("0");
  AddThreadsOption(c);
  c.AddSwitch("raw", "Continue --prompt as plain text, without the chat template.");
  c.AddSwitch("json",
              "Print the reply as JSON: {\"text\": ..., \"function_calls\": [{\"name\": ..., "
              "\"arguments\": {...}}]}.");
  c.ExactlyOneOf({"prompt", "messages"});
  c.AtMostOneOf({"raw", "messages"});
  c.AtMostOneOf({"raw", "tools"});
  c.Validate([](const ParsedArgs& args) -> Status {
    if (auto penalty = args.OptFloat("repetition-penalty"); penalty && *penalty <= 0) {
      return MakeError("--repetition-penalty must be greater than 0, got ", *penalty);
    }
    return Ok();
  });
  c.Example(
      "--model functiongemma-270m-it --prompt 'What is the weather in Paris?' "
      "--tools tools.json --json");
  c.Example("--model gemma-3-270m --prompt 'Once upon a time' --raw --temperature 0");
}

void AddLogitsCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "logits", "Run the forward pass over token ids and save the logits of every position.",
      [](const ParsedArgs&, CommandIo&) -> Status {
        return NotBuiltYet("the forward pass (model library)");
      });
  c.Description(
      "No chat template and no BOS token are added: the ids are fed as given. The output is a "
      "float32 .npy array of shape [number of ids, vocab_size].");
  c.AddString("model", "DIR", "Checkpoint directory: config.json and model.safetensors.")
      .Required();
  c.AddIntList("ids", "IDS",
               "Token ids, comma-separated (2,105,2364), or @FILE holding a JSON array or ids "
               "separated by commas or whitespace.")
      .IntRange(0)
      .AllowFile()
      .Required();
  c.AddString("out", "FILE.npy", "Output file for the logits.").Required();
  AddThreadsOption(c);
  c.Example("--model gemma-3-270m --ids 2,105,2364 --out logits.npy");
  c.Example("--model gemma-3-270m --ids @ids.json --out logits.npy --threads 4");
}

void AddTokenizeCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "tokenize", "Encode or decode JSON Lines with a tokenizer.json.",
      [](const ParsedArgs&, CommandIo&) -> Status { return NotBuiltYet("the tokenizer library"); });
  c.Description(
      "Each input line is a JSON object {\"text\": \"...\"} (with --decode, {\"ids\": [...]}); "
      "each output line is the same object with \"ids\" (with --decode, \"text\") added. No BOS "
      "token is added.");
  c.AddString("tokenizer", "PATH", "tokenizer.json, or a directory that holds one.").Required();
  c.AddString("jsonl", "FILE", "Input JSON Lines file; - reads standard input.").Required();
  c.AddSwitch("decode", "Decode ids to text instead of encoding text.");
  c.Example("--tokenizer functiongemma-270m-it --jsonl prompts.jsonl > ids.jsonl");
  c.Example("--tokenizer tokenizer.json --jsonl - --decode < ids.jsonl");
}

void AddInspectCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "inspect", "Describe a checkpoint: config, tensors, parameter count and sizes.",
      [](const ParsedArgs&, CommandIo&) -> Status {
        return NotBuiltYet("checkpoint loading (model library)");
      });
  c.AddPositional("DIR", "Checkpoint directory (config.json and *.safetensors).");
  c.AddSwitch("json", "Print the description as JSON.");
  c.Example("gemma-3-270m");
  c.Example("functiongemma-270m-it --json");
}

void AddSynthCommand(App& app) {
  CommandSpec& c =
      app.AddCommand("synth", "Write a checkpoint of random weights shaped like a real model.",
                     [](const ParsedArgs&, CommandIo&) -> Status {
                       return NotBuiltYet("checkpoint writing (model library)");
                     });
  c.Description(
      "The checkpoint has the config (layers, widths, heads, vocabulary size) of the named model "
      "and weights drawn from the seeded random stream, so benchmarks and tests run without "
      "downloaded weights. The same seed gives the same bytes.");
  c.AddString("like", "MODEL", "The model whose shape to copy.")
      .Choices({"gemma-3-270m", "functiongemma-270m"})
      .Required();
  c.AddString("out", "DIR",
              "Output directory; receives config.json, generation_config.json and "
              "model.safetensors.")
      .Required();
  c.AddInt("seed", "N", "Seed of the weights.").IntRange(0).Default("0");
  c.AddString("dtype", "DTYPE", "Weight type.").Choices({"bf16", "f32"}).Default("bf16");
  c.AddString("tokenizer", "PATH",
              "tokenizer.json (or a directory holding one) to copy into the checkpoint; its "
              "vocabulary size must match the model's.");
  c.Example("--like functiongemma-270m --out /tmp/fg-synth --seed 1");
}

}  // namespace fgnet::cli
