// Declarative command-line options for one subcommand of a program (`fgnet <command> [options]`).
//
// A CommandSpec declares typed options and positional arguments; Parse() turns the arguments that
// follow the command name into a ParsedArgs or a one-line usage error that names the program, the
// command and the option, e.g. `fgnet generate: --temperature expects a number, got 'hot'`.
//
// Syntax accepted by Parse():
//   --name value, --name=value   an option with a value (a value starting with "--" needs "=");
//   --name                       a switch (boolean, takes no value);
//   --                           the remaining arguments are positional;
//   anything else                a positional argument.
// Value types: string (optionally restricted to a list of choices), 64-bit integer, finite float
// and comma-separated integer list. An option declared with AllowFile() also accepts `@PATH`: the
// value is read from the file (an integer list file holds a JSON array or integers separated by
// commas or whitespace; a string file is taken verbatim). `@@text` stands for the literal `@text`.
//
// Declaration mistakes (duplicate names, a default that does not parse, reading an undeclared
// option or with the wrong type) are programmer errors and abort through FGNET_CHECK.
// Thread-safety: specs and parsed arguments are immutable values after construction; concurrent
// const use is safe.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "util/status.h"

namespace fgnet::cli {

enum class ValueType : std::uint8_t { kSwitch, kString, kInt, kFloat, kIntList };

using Value = std::variant<bool, std::int64_t, double, std::string, std::vector<std::int64_t>>;

// One `--name` option. Obtained from CommandSpec::Add*(); the setters return *this for chaining.
class OptionSpec {
 public:
  OptionSpec(std::string name, ValueType type, std::string value_name, std::string help);

  // Parse() fails when the option is absent.
  OptionSpec& Required();
  // The option may be given several times; every value is kept (see ParsedArgs::Strings).
  OptionSpec& Repeatable();
  // The value used when the option is absent; parsed like a command-line value when the command
  // is parsed and shown in help as "(default: text)".
  OptionSpec& Default(std::string text);
  // Shown in help as "(default: note)" without supplying a value, e.g. "from generation_config".
  OptionSpec& DefaultNote(std::string note);
  // Accepted range of an integer option, or of every item of an integer list (inclusive).
  OptionSpec& IntRange(std::int64_t min,
                       std::int64_t max = std::numeric_limits<std::int64_t>::max());
  // Accepted range of a float option (inclusive).
  OptionSpec& FloatRange(double min, double max = std::numeric_limits<double>::infinity());
  // Accepted values of a string option.
  OptionSpec& Choices(std::vector<std::string> choices);
  // Accepts `@PATH` to read the value from a file.
  OptionSpec& AllowFile();

  const std::string& name() const { return name_; }
  ValueType type() const { return type_; }
  const std::string& value_name() const { return value_name_; }
  const std::string& help() const { return help_; }
  bool required() const { return required_; }
  bool repeatable() const { return repeatable_; }
  bool allow_file() const { return allow_file_; }
  const std::optional<std::string>& default_text() const { return default_text_; }
  const std::optional<std::string>& default_note() const { return default_note_; }
  const std::vector<std::string>& choices() const { return choices_; }
  std::optional<std::int64_t> int_min() const { return int_min_; }
  std::optional<std::int64_t> int_max() const { return int_max_; }
  std::optional<double> float_min() const { return float_min_; }
  std::optional<double> float_max() const { return float_max_; }

  // "--name VALUE" (or "--name" for a switch), as shown in usage and help.
  std::string Synopsis() const;

 private:
  std::string name_;
  ValueType type_;
  std::string value_name_;
  std::string help_;
  bool required_ = false;
  bool repeatable_ = false;
  bool allow_file_ = false;
  std::optional<std::string> default_text_;
  std::optional<std::string> default_note_;
  std::vector<std::string> choices_;
  std::optional<std::int64_t> int_min_, int_max_;
  std::optional<double> float_min_, float_max_;
};

// A positional argument, e.g. the DIR of `fgnet inspect DIR`.
struct PositionalSpec {
  std::string name;  // shown in usage, e.g. "DIR"; also the key for ParsedArgs::Positional
  std::string help;
  bool required = true;
};

// The parsed arguments of one command. Accessors take the option name without "--"; asking for an
// undeclared name or with the wrong type is a programmer error.
class ParsedArgs {
 public:
  // True when the option appeared on the command line.
  bool Given(std::string_view name) const;
  // True when the option has a value: given, or declared with Default().
  bool Has(std::string_view name) const;

  bool Switch(std::string_view name) const;
  // The value (the last one for a repeatable option). Requires Has(name).
  const std::string& String(std::string_view name) const;
  std::int64_t Int(std::string_view name) const;
  double Float(std::string_view name) const;
  // Every value of the option in command-line order (empty when absent).
  std::vector<std::string> Strings(std::string_view name) const;
  // The integers of every occurrence of an integer-list option, concatenated.
  std::vector<std::int64_t> IntList(std::string_view name) const;

  std::optional<std::string> OptString(std::string_view name) const;
  std::optional<std::int64_t> OptInt(std::string_view name) const;
  std::optional<double> OptFloat(std::string_view name) const;

  // A positional argument by its declared name; nullopt when an optional one is absent.
  std::optional<std::string> Positional(std::string_view name) const;

 private:
  friend class CommandSpec;
  struct Entry {
    ValueType type = ValueType::kString;
    bool given = false;
    std::vector<Value> values;
  };
  const Entry& Get(std::string_view name, ValueType type) const;

  std::map<std::string, Entry, std::less<>> options_;
  std::map<std::string, std::string, std::less<>> positionals_;
  std::vector<std::string> declared_positionals_;
};

// The options and positional arguments of one command, its help text and its parser.
// Copyable; references returned by Add*() stay valid while the spec lives.
class CommandSpec {
 public:
  // `program` and `name` prefix every error ("fgnet generate: ..."); `summary` is the one-line
  // description shown in the program's command list and at the top of the command's help.
  CommandSpec(std::string program, std::string name, std::string summary);

  // A paragraph shown in help below the summary.
  CommandSpec& Description(std::string text);
  // An example invocation shown at the end of help (without the program name).
  CommandSpec& Example(std::string line);

  OptionSpec& AddSwitch(std::string name, std::string help);
  OptionSpec& AddString(std::string name, std::string value_name, std::string help);
  OptionSpec& AddInt(std::string name, std::string value_name, std::string help);
  OptionSpec& AddFloat(std::string name, std::string value_name, std::string help);
  OptionSpec& AddIntList(std::string name, std::string value_name, std::string help);
  // Positional arguments are matched in declaration order; optional ones must come last.
  CommandSpec& AddPositional(std::string name, std::string help, bool required = true);

  // Exactly one of the options must be given.
  CommandSpec& ExactlyOneOf(std::vector<std::string> names);
  // At most one of the options may be given.
  CommandSpec& AtMostOneOf(std::vector<std::string> names);

  // A check run after parsing; its error is reported as a usage error of this command.
  using Validator = std::function<Status(const ParsedArgs&)>;
  CommandSpec& Validate(Validator validator);

  // Parses the arguments after the command name. On error the message is one line that starts
  // with "<program> <command>: ".
  Result<ParsedArgs> Parse(std::span<const std::string> args) const;

  // The full help text: usage line, summary, description, positionals, options, examples.
  std::string Help() const;
  // "Usage: fgnet generate --model DIR (--prompt TEXT | --messages FILE.json) [options]".
  std::string Usage() const;

  const std::string& program() const { return program_; }
  const std::string& name() const { return name_; }
  const std::string& summary() const { return summary_; }
  const std::deque<OptionSpec>& options() const { return options_; }
  const OptionSpec* FindOption(std::string_view name) const;

 private:
  OptionSpec& AddOption(std::string name, ValueType type, std::string value_name, std::string help);
  Error UsageError(std::string_view message) const;
  Result<Value> ParseValue(const OptionSpec& option, std::string_view text,
                           bool from_default) const;
  Status CheckGroups(const ParsedArgs& parsed) const;

  std::string program_;
  std::string name_;
  std::string summary_;
  std::string description_;
  std::vector<std::string> examples_;
  std::deque<OptionSpec> options_;
  std::vector<PositionalSpec> positionals_;
  std::vector<std::vector<std::string>> exactly_one_of_;
  std::vector<std::vector<std::string>> at_most_one_of_;
  std::vector<Validator> validators_;
};

// Edit distance between two strings (insertions, deletions, substitutions, transpositions).
std::size_t EditDistance(std::string_view a, std::string_view b);

// The candidate closest to `input` when it is a plausible misspelling (small edit distance, or
// `input` is a prefix of exactly one candidate); nullopt otherwise.
std::optional<std::string> SuggestClosest(std::string_view input,
                                          std::span<const std::string> candidates);

// Wraps `text` to lines of at most `width` columns, each line prefixed by `indent` spaces except
// the first, which is prefixed by `first_indent` spaces. Words longer than a line stay whole.
std::string WrapText(std::string_view text, std::size_t width, std::size_t first_indent,
                     std::size_t indent);

}  // namespace fgnet::cli
