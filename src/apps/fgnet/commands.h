// The fgnet program: its subcommands and their options.
//
//   generate   chat / function-calling generation         (not built yet)
//   logits     forward pass over token ids -> .npy          (not built yet)
//   tokenize   tokenizer.json encode / decode of JSON Lines (not built yet)
//   inspect    describe a checkpoint                        (not built yet)
//   synth      write a random checkpoint shaped like a real model (not built yet)
//   bench      machine report and memory bandwidth (model throughput once the model is built)
//
// Each Add*Command declares one subcommand on `app`; MakeFgnetApp() adds them all.
#pragma once

#include "apps/fgnet/cli_app.h"

namespace fgnet::cli {

inline constexpr const char* kProgram = "fgnet";

App MakeFgnetApp();

void AddGenerateCommand(App& app);
void AddLogitsCommand(App& app);
void AddTokenizeCommand(App& app);
void AddInspectCommand(App& app);
void AddSynthCommand(App& app);
void AddBenchCommand(App& app);

// The error returned by a subcommand whose libraries are not part of this build.
Error NotBuiltYet(std::string_view what);

}  // namespace fgnet::cli
