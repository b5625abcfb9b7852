// The fgnet program: its subcommands, each declared and implemented in its own cmd_*.cpp (bench
// in bench_command.cpp).
#include "apps/fgnet/commands.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "apps/fgnet/build_info.h"

namespace fgnet::cli {

Result<AdapterArg> ParseAdapterArg(std::string_view text) {
  AdapterArg arg;
  std::string_view rest = text;
  // NAME= only when '=' comes before any '/' (a path may hold '=' in a directory name).
  const std::size_t eq = rest.find('=');
  if (eq != std::string_view::npos && rest.substr(0, eq).find('/') == std::string_view::npos) {
    arg.name = std::string(rest.substr(0, eq));
    rest.remove_prefix(eq + 1);
    if (arg.name.empty()) return MakeError("--adapter '", text, "': the name before '=' is empty");
  }
  // :SCALE only when what follows the last ':' is a number (a path may hold ':').
  const std::size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos) {
    const std::string number(rest.substr(colon + 1));
    char* end = nullptr;
    const float scale = std::strtof(number.c_str(), &end);
    if (!number.empty() && end == number.c_str() + number.size()) {
      if (!std::isfinite(scale)) {
        return MakeError("--adapter '", text, "': the scale ", number, " is not a finite number");
      }
      arg.scale = scale;
      arg.scale_given = true;
      rest = rest.substr(0, colon);
    }
  }
  if (rest.empty()) return MakeError("--adapter '", text, "': no adapter path");
  arg.path = std::string(rest);
  return arg;
}

OptionSpec& AddModelOption(CommandSpec& c, std::string_view help) {
  return c.AddString("model", "PATH", std::string(help) + " The model is " + kModelFormats + ".");
}

void AddAdapterOption(CommandSpec& c) {
  c.AddString("adapter", "[NAME=]PATH[:SCALE]",
              "A LoRA adapter applied at run time (unmerged): a PEFT adapter directory "
              "(adapter_config.json + adapter_model.safetensors), an RDRR adapter package or a "
              "GGUF LoRA file; SCALE multiplies its scaling (default 1). Repeat to mix several "
              "adapters with their scales. Activated LoRA adapters (alora_invocation_tokens) "
              "apply from the last occurrence of their invocation in the prompt on.")
      .Repeatable();
}

Result<std::vector<AdapterArg>> AdapterArgs(const ParsedArgs& args) {
  std::vector<AdapterArg> out;
  for (const std::string& text : args.Strings("adapter")) {
    FGNET_ASSIGN_OR_RETURN(AdapterArg arg, ParseAdapterArg(text));
    out.push_back(std::move(arg));
  }
  return out;
}

void AddThreadsOption(CommandSpec& c) {
  c.AddInt("threads", "N", "Worker threads.")
      .IntRange(1, kMaxThreads)
      .DefaultNote("all available cores");
}

void AddDeviceOption(CommandSpec& c) {
  c.AddString("device", "DEVICE",
              "Where the model runs: cpu, or an NVIDIA GPU as cuda or cuda:N (builds with CUDA).")
      .DefaultNote("cpu");
}

Result<Device> DeviceOption(const ParsedArgs& args) {
  if (auto text = args.OptString("device")) {
    auto device = ParseDevice(*text);
    if (!device.ok()) return device.error().WithContext("--device");
    return *device;
  }
  return Device::Cpu();
}

void AddKVTypeOption(CommandSpec& c) {
  c.AddString("kv-dtype", "TYPE",
              "Element type of the KV cache: f32, or bf16 (half the memory; keys and values "
              "rounded to bf16 as they are written; GPU devices only).")
      .Choices({"f32", "bf16"})
      .Default("f32");
}

DType KVTypeOption(const ParsedArgs& args) {
  return args.String("kv-dtype") == "bf16" ? DType::kBF16 : DType::kF32;
}

std::size_t ThreadsOption(const ParsedArgs& args) {
  if (auto n = args.OptInt("threads")) return static_cast<std::size_t>(*n);
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    return static_cast<std::size_t>(std::max(1, CPU_COUNT(&set)));
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

App MakeFgnetApp() {
  App app(kProgram,
          "fgnet runs Google's Gemma 3 text models and FunctionGemma (with LoRA experts) on the "
          "CPU or an NVIDIA GPU (--device cpu|cuda[:N]): generation with function calling, "
          "batched serving, networks of experts, logits dumps, tokenization, model inspection, "
          "LoRA merging, conversion to RDRR and GGUF with quantization, synthetic checkpoints "
          "and benchmarks. Models may be Hugging Face checkpoints, RDRR packages or GGUF files; "
          "adapters PEFT directories, RDRR packages or GGUF LoRA files.",
          GetBuildInfo().version);
  AddGenerateCommand(app);
  AddLogitsCommand(app);
  AddTokenizeCommand(app);
  AddInspectCommand(app);
  AddSynthCommand(app);
  AddMergeCommand(app);
  AddConvertCommand(app);
  AddBenchCommand(app);
  AddBatchCommand(app);
  AddBenchServeCommand(app);
  AddRunCommand(app);
  AddBenchNetworkCommand(app);
  AddRouteCommand(app);
  return app;
}

}  // namespace fgnet::cli
