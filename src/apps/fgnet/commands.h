// The fgnet program: its subcommands and their options.
//
//   generate   chat / function-calling generation
//   logits     forward pass over token ids -> .npy
//   tokenize   tokenizer.json encode / decode of JSON Lines
//   inspect    describe a model and its adapters
//   synth      write a random checkpoint shaped like a real model
//   merge      merge LoRA adapters into a checkpoint, or concatenate them into one adapter
//   convert    rewrite a model and its adapters as RDRR or GGUF, optionally quantized
//   bench      machine report, memory bandwidth, prefill and decode throughput
//   batch      a JSON Lines file of requests run concurrently through the serving engine
//   bench-serve  serving figures: batched decode with adapters, prefix-cache TTFT, KV per sequence
//   run        a task through a network of experts (chain, ring, tree, mesh, DAG)
//   bench-network  a single expert against networks on one task: latency, tokens, memory
//   route      rank the experts of an experts file for a prompt (embedding router)
//
// Each Add*Command declares one subcommand on `app`; MakeFgnetApp() adds them all.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "apps/fgnet/cli_app.h"
#include "backend/device.h"
#include "tensor/dtype.h"
#include "util/status.h"

namespace fgnet::cli {

inline constexpr const char* kProgram = "fgnet";

App MakeFgnetApp();

void AddGenerateCommand(App& app);
void AddLogitsCommand(App& app);
void AddTokenizeCommand(App& app);
void AddInspectCommand(App& app);
void AddSynthCommand(App& app);
void AddMergeCommand(App& app);
void AddConvertCommand(App& app);
void AddBenchCommand(App& app);
void AddBatchCommand(App& app);
void AddBenchServeCommand(App& app);
void AddRunCommand(App& app);
void AddBenchNetworkCommand(App& app);
void AddRouteCommand(App& app);

inline constexpr std::int64_t kMaxThreads = 1024;

// One --adapter value: [NAME=]PATH[:SCALE]. PATH is a PEFT adapter directory, an RDRR adapter
// package or a GGUF LoRA file; SCALE (default 1) multiplies the adapter's own scaling; NAME
// (default: the adapter's own name) is how requests and reports refer to it.
struct AdapterArg {
  std::string name;
  std::string path;
  float scale = 1.0f;
  bool scale_given = false;
};
// Errors name the argument: an empty path or name, a SCALE that is not a finite number.
Result<AdapterArg> ParseAdapterArg(std::string_view text);

// Declares the --model option (value name PATH): `help` followed by the formats it accepts.
OptionSpec& AddModelOption(CommandSpec& c, std::string_view help);
inline constexpr const char* kModelFormats =
    "a Hugging Face checkpoint directory (config.json + model.safetensors), an RDRR package "
    "(manifest.json + shards) or a GGUF file";

// Declares the repeatable --adapter option of model commands.
void AddAdapterOption(CommandSpec& c);
// Every --adapter value, parsed.
Result<std::vector<AdapterArg>> AdapterArgs(const ParsedArgs& args);

// Declares the common --threads option.
void AddThreadsOption(CommandSpec& c);
// The value of --threads, or by default one thread per CPU this process may run on.
std::size_t ThreadsOption(const ParsedArgs& args);

// --device cpu|cuda|cuda:N, for the commands that run the engine.
void AddDeviceOption(CommandSpec& c);
Result<Device> DeviceOption(const ParsedArgs& args);

// --kv-dtype f32|bf16 (the engine's KVLayout element type), for the commands that run the engine.
void AddKVTypeOption(CommandSpec& c);
DType KVTypeOption(const ParsedArgs& args);

}  // namespace fgnet::cli
