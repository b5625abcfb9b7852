// A program made of subcommands (`fgnet <command> [options]`): registration, dispatch, help and
// the exit-code contract.
//
//   App app("fgnet", "Inference engine for Gemma 3 text models", "0.1.0");
//   CommandSpec& c = app.AddCommand("logits", "Write the logits of token ids",
//       [](const ParsedArgs& args, CommandIo& io) -> Status { ... return Ok(); });
//   c.AddString("model", "DIR", "Checkpoint directory").Required();
//   return app.Run(args, std::cout, std::cerr);
//
// Exit codes: 0 success (and help / version), 1 runtime error (`<program> <command>: <message>`
// on stderr), 2 usage error (one line naming the command and the option). Every message is a
// single line. Exceptions thrown by a command (std::bad_alloc included) are caught and reported
// as runtime errors; nothing escapes Run().
// Thread-safety: Run() is const and may be called concurrently once all commands are added.
#pragma once

#include <deque>
#include <functional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>

#include "apps/fgnet/cli_args.h"
#include "util/status.h"

namespace fgnet::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Where a command writes: `out` for results, `err` for progress and diagnostics.
struct CommandIo {
  std::ostream& out;
  std::ostream& err;
};

// A command body. Runtime problems are returned as an Error; App prefixes the program and
// command names, so the message should not repeat them.
using CommandFn = std::function<Status(const ParsedArgs& args, CommandIo& io)>;

class App {
 public:
  App(std::string program, std::string summary, std::string version);

  // Registers a command; declare its options on the returned spec. The reference stays valid
  // while the App lives.
  CommandSpec& AddCommand(std::string name, std::string summary, CommandFn run);

  // Runs `args` (argv without the program name) and returns the exit code.
  //   <program> --help | -h | help        program help on `out`
  //   <program> help <command>            command help on `out`
  //   <program> --version                 version on `out`
  //   <program> <command> ... --help      command help on `out`
  //   <program> <command> [options]       parse, then run the command
  int Run(std::span<const std::string> args, std::ostream& out, std::ostream& err) const;

  // Program help: usage, summary and the list of commands.
  std::string Help() const;

  const CommandSpec* FindCommand(std::string_view name) const;
  const std::string& program() const { return program_; }

 private:
  struct Command {
    CommandSpec spec;
    CommandFn run;
  };
  int RunCommand(const Command& command, std::span<const std::string> args, std::ostream& out,
                 std::ostream& err) const;
  int UnknownCommand(std::string_view name, std::ostream& err) const;
  const Command* Find(std::string_view name) const;

  std::string program_;
  std::string summary_;
  std::string version_;
  std::deque<Command> commands_;
};

// Collapses a message to one line: newlines and tabs become spaces.
std::string OneLine(std::string_view message);

}  // namespace fgnet::cli
