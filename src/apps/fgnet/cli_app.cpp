#include "apps/fgnet/cli_app.h"

#include <algorithm>
#include <exception>
#include <new>
#include <utility>
#include <vector>

namespace fgnet::cli {
namespace {

bool IsHelpFlag(std::string_view arg) { return arg == "--help" || arg == "-h"; }

// True when `args` asks for help before any "--" separator.
bool AsksForHelp(std::span<const std::string> args) {
  for (const std::string& a : args) {
    if (a == "--") return false;
    if (IsHelpFlag(a)) return true;
  }
  return false;
}

}  // namespace

std::string OneLine(std::string_view message) {
  std::string out(message);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  std::replace_if(
      out.begin(), out.end(), [](char c) { return c == '\n' || c == '\r' || c == '\t'; }, ' ');
  return out;
}

App::App(std::string program, std::string summary, std::string version)
    : program_(std::move(program)), summary_(std::move(summary)), version_(std::move(version)) {}

CommandSpec& App::AddCommand(std::string name, std::string summary, CommandFn run) {
  FGNET_CHECK(Find(name) == nullptr);
  FGNET_CHECK(run != nullptr);
  commands_.push_back(
      Command{CommandSpec(program_, std::move(name), std::move(summary)), std::move(run)});
  return commands_.back().spec;
}

const App::Command* App::Find(std::string_view name) const {
  for (const Command& c : commands_) {
    if (c.spec.name() == name) return &c;
  }
  return nullptr;
}

const CommandSpec* App::FindCommand(std::string_view name) const {
  const Command* c = Find(name);
  return c == nullptr ? nullptr : &c->spec;
}

std::string App::Help() const {
  std::string out = "Usage: " + program_ + " <command> [options]\n\n";
  out += WrapText(summary_, 100, 0, 0) + "\n\nCommands:\n";
  std::size_t width = 0;
  for (const Command& c : commands_) width = std::max(width, c.spec.name().size());
  for (const Command& c : commands_) {
    const std::size_t column = 2 + width + 3;
    std::string row = WrapText(c.spec.summary(), 100, column, column);
    row.replace(0, 2 + c.spec.name().size(), "  " + c.spec.name());
    out += row + "\n";
  }
  out += "\nRun '" + program_ + " <command> --help' for the options of a command.\n";
  return out;
}

int App::UnknownCommand(std::string_view name, std::ostream& err) const {
  std::vector<std::string> names;
  for (const Command& c : commands_) names.push_back(c.spec.name());
  err << program_ << ": unknown command '" << OneLine(name) << "'";
  if (auto s = SuggestClosest(name, names)) {
    err << " (did you mean '" << *s << "'?)\n";
  } else {
    err << " (run '" << program_ << " --help' for the list of commands)\n";
  }
  return kExitUsage;
}

int App::Run(std::span<const std::string> args, std::ostream& out, std::ostream& err) const {
  try {
    if (args.empty()) {
      err << program_ << ": missing command (run '" << program_
          << " --help' for the list of commands)\n";
      return kExitUsage;
    }
    const std::string& first = args[0];
    if (IsHelpFlag(first) || first == "help") {
      if (first == "help" && args.size() > 1) {
        const Command* c = Find(args[1]);
        if (c == nullptr) return UnknownCommand(args[1], err);
        out << c->spec.Help();
      } else {
        out << Help();
      }
      return kExitOk;
    }
    if (first == "--version") {
      out << program_ << " " << version_ << "\n";
      return kExitOk;
    }
    if (first.starts_with("-")) {
      err << program_ << ": expected a command before '" << OneLine(first) << "' (run '" << program_
          << " --help' for the list of commands)\n";
      return kExitUsage;
    }
    const Command* command = Find(first);
    if (command == nullptr) return UnknownCommand(first, err);
    return RunCommand(*command, args.subspan(1), out, err);
  } catch (const std::bad_alloc&) {
    err << program_ << ": out of memory\n";
  } catch (const std::exception& e) {
    err << program_ << ": internal error: " << OneLine(e.what()) << "\n";
  } catch (...) {
    err << program_ << ": internal error: unknown exception\n";
  }
  return kExitFailure;
}

int App::RunCommand(const Command& command, std::span<const std::string> args, std::ostream& out,
                    std::ostream& err) const {
  const std::string prefix = program_ + " " + command.spec.name() + ": ";
  try {
    if (AsksForHelp(args)) {
      out << command.spec.Help();
      return kExitOk;
    }
    Result<ParsedArgs> parsed = command.spec.Parse(args);
    if (!parsed.ok()) {
      err << OneLine(parsed.error().message()) << "\n";
      return kExitUsage;
    }
    CommandIo io{out, err};
    const Status status = command.run(*parsed, io);
    out.flush();
    if (!status.ok()) {
      err << prefix << OneLine(status.error().message()) << "\n";
      return kExitFailure;
    }
    if (out.fail()) {
      err << prefix << "cannot write the output\n";
      return kExitFailure;
    }
    return kExitOk;
  } catch (const std::bad_alloc&) {
    err << prefix << "out of memory\n";
  } catch (const std::exception& e) {
    err << prefix << "internal error: " << OneLine(e.what()) << "\n";
  } catch (...) {
    err << prefix << "internal error: unknown exception\n";
  }
  return kExitFailure;
}

}  // namespace fgnet::cli
