// The fgnet program: its subcommands, each declared and implemented in its own cmd_*.cpp (bench
// in bench_command.cpp).
#include "apps/fgnet/commands.h"

#include <sched.h>

#include <algorithm>
#include <thread>

#include "apps/fgnet/build_info.h"

namespace fgnet::cli {

void AddThreadsOption(CommandSpec& c) {
  c.AddInt("threads", "N", "Worker threads.")
      .IntRange(1, kMaxThreads)
      .DefaultNote("all available cores");
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
          "CPU: generation with function calling, logits dumps, tokenization, checkpoint "
          "inspection, synthetic checkpoints and benchmarks.",
          GetBuildInfo().version);
  AddGenerateCommand(app);
  AddLogitsCommand(app);
  AddTokenizeCommand(app);
  AddInspectCommand(app);
  AddSynthCommand(app);
  AddMergeCommand(app);
  AddBenchCommand(app);
  return app;
}

}  // namespace fgnet::cli
