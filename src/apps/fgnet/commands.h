// The fgnet program: its subcommands and their options.
//
//   generate   chat / function-calling generation
//   logits     forward pass over token ids -> .npy
//   tokenize   tokenizer.json encode / decode of JSON Lines
//   inspect    describe a checkpoint
//   synth      write a random checkpoint shaped like a real model
//   merge      merge LoRA adapters into a checkpoint, or concatenate them into one adapter
//   bench      machine report, memory bandwidth, prefill and decode throughput
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
void AddMergeCommand(App& app);
void AddBenchCommand(App& app);

inline constexpr std::int64_t kMaxThreads = 1024;

// Declares the common --threads option.
void AddThreadsOption(CommandSpec& c);
// The value of --threads, or by default one thread per CPU this process may run on.
std::size_t ThreadsOption(const ParsedArgs& args);

}  // namespace fgnet::cli
