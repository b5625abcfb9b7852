// The fgnet program: its subcommands, each declared and implemented in its own cmd_*.cpp (bench
// in bench_command.cpp).
#include "apps/fgnet/commands.h"

#include "apps/fgnet/build_info.h"

namespace fgnet::cli {

void AddThreadsOption(CommandSpec& c) {
  c.AddInt("threads", "N", "Worker threads.")
      .IntRange(1, kMaxThreads)
      .DefaultNote("all available cores");
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

}  // namespace fgnet::cli
