#include "apps/fgnet/cli_args.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>
#include <utility>

#include "util/json.h"
#include "util/mapped_file.h"

namespace fgnet::cli {
namespace {

bool IsValidOptionName(std::string_view name) {
  if (name.empty() || name.front() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

[[noreturn]] void DeclarationError(const std::string& what) {
  ::fgnet::detail::CheckFailed(__FILE__, __LINE__, what);
}

std::string FormatNumber(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Parses a whole string as a signed 64-bit integer (an optional leading '+' is accepted).
std::optional<std::int64_t> ParseInt64(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty() || text.front() == '+') return std::nullopt;
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Parses a whole string as a double; nullopt when it is not a number. Infinity and NaN parse.
std::optional<double> ParseDouble(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty() || text.front() == '+') return std::nullopt;
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) return std::numeric_limits<double>::infinity();
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// "must be between 0 and 1" / "must be at least 1" / "must be at most 8", for a range message.
template <class T>
std::string RangeText(T lo, T hi) {
  const auto text = [](T v) {
    if constexpr (std::is_floating_point_v<T>) {
      return FormatNumber(v);
    } else {
      return std::to_string(v);
    }
  };
  if (hi == std::numeric_limits<T>::max() || hi == std::numeric_limits<T>::infinity()) {
    return "must be at least " + text(lo);
  }
  if (lo == std::numeric_limits<T>::lowest() || lo == -std::numeric_limits<T>::infinity()) {
    return "must be at most " + text(hi);
  }
  return "must be between " + text(lo) + " and " + text(hi);
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Integers separated by commas and/or whitespace ("1,2,3", "1, 2, 3", one per line). An empty
// item between two commas is an error. Returns the offending item on failure.
Result<std::vector<std::int64_t>> ParseIntListText(std::string_view text) {
  std::vector<std::int64_t> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view piece = text.substr(start, comma - start);
    if (Trim(piece).empty()) {
      return Error(comma == text.size() && out.empty() ? "the list is empty"
                                                       : "the list has an empty item");
    }
    while (!Trim(piece).empty()) {
      piece = Trim(piece);
      std::size_t word_end = 0;
      while (word_end < piece.size() && !IsSpace(piece[word_end])) ++word_end;
      const std::string_view word = piece.substr(0, word_end);
      const auto value = ParseInt64(word);
      if (!value) return MakeError("'", word, "' is not a 64-bit integer");
      out.push_back(*value);
      piece.remove_prefix(word_end);
    }
    start = comma + 1;
  }
  return out;
}

// The contents of an integer-list file: a JSON array of integers, or integers separated by commas
// and/or whitespace.
Result<std::vector<std::int64_t>> ParseIntListFile(std::string_view text, const std::string& path) {
  const std::string_view trimmed = Trim(text);
  if (!trimmed.starts_with('[')) {
    auto list = ParseIntListText(trimmed);
    if (!list.ok()) return list.error().WithContext(path);
    return list;
  }
  FGNET_ASSIGN_OR_RETURN(Json json, ParseJson(trimmed, path));
  std::vector<std::int64_t> out;
  out.reserve(json.size());
  for (std::size_t i = 0; i < json.size(); ++i) {
    const Json& item = json[i];
    if (!item.is_number_integer() ||
        (item.is_number_unsigned() &&
         item.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))) {
      return MakeError(path, ": element ", i, " is not a 64-bit integer: ", item.dump());
    }
    out.push_back(item.get<std::int64_t>());
  }
  if (out.empty()) return MakeError(path, ": the list is empty");
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// OptionSpec

OptionSpec::OptionSpec(std::string name, ValueType type, std::string value_name, std::string help)
    : name_(std::move(name)),
      type_(type),
      value_name_(std::move(value_name)),
      help_(std::move(help)) {}

OptionSpec& OptionSpec::Required() {
  required_ = true;
  return *this;
}

OptionSpec& OptionSpec::Repeatable() {
  repeatable_ = true;
  return *this;
}

OptionSpec& OptionSpec::Default(std::string text) {
  if (type_ == ValueType::kSwitch) DeclarationError("switch --" + name_ + " cannot have a default");
  default_text_ = std::move(text);
  return *this;
}

OptionSpec& OptionSpec::DefaultNote(std::string note) {
  default_note_ = std::move(note);
  return *this;
}

OptionSpec& OptionSpec::IntRange(std::int64_t min, std::int64_t max) {
  if (type_ != ValueType::kInt && type_ != ValueType::kIntList) {
    DeclarationError("IntRange on non-integer option --" + name_);
  }
  int_min_ = min;
  int_max_ = max;
  return *this;
}

OptionSpec& OptionSpec::FloatRange(double min, double max) {
  if (type_ != ValueType::kFloat) DeclarationError("FloatRange on non-float option --" + name_);
  float_min_ = min;
  float_max_ = max;
  return *this;
}

OptionSpec& OptionSpec::Choices(std::vector<std::string> choices) {
  if (type_ != ValueType::kString) DeclarationError("Choices on non-string option --" + name_);
  choices_ = std::move(choices);
  return *this;
}

OptionSpec& OptionSpec::AllowFile() {
  if (type_ == ValueType::kSwitch) DeclarationError("AllowFile on switch --" + name_);
  allow_file_ = true;
  return *this;
}

std::string OptionSpec::Synopsis() const {
  std::string out = "--" + name_;
  if (type_ == ValueType::kSwitch) return out;
  out += ' ';
  if (!choices_.empty()) {
    for (std::size_t i = 0; i < choices_.size(); ++i) {
      if (i > 0) out += '|';
      out += choices_[i];
    }
  } else {
    out += value_name_;
  }
  if (allow_file_) out += "|@FILE";
  return out;
}

// ---------------------------------------------------------------------------------------------
// ParsedArgs

const ParsedArgs::Entry& ParsedArgs::Get(std::string_view name, ValueType type) const {
  const auto it = options_.find(name);
  if (it == options_.end()) DeclarationError("option --" + std::string(name) + " is not declared");
  if (it->second.type != type) {
    DeclarationError("option --" + std::string(name) + " read with the wrong type");
  }
  return it->second;
}

bool ParsedArgs::Given(std::string_view name) const {
  const auto it = options_.find(name);
  if (it == options_.end()) DeclarationError("option --" + std::string(name) + " is not declared");
  return it->second.given;
}

bool ParsedArgs::Has(std::string_view name) const {
  const auto it = options_.find(name);
  if (it == options_.end()) DeclarationError("option --" + std::string(name) + " is not declared");
  return !it->second.values.empty();
}

bool ParsedArgs::Switch(std::string_view name) const { return Get(name, ValueType::kSwitch).given; }

const std::string& ParsedArgs::String(std::string_view name) const {
  const Entry& e = Get(name, ValueType::kString);
  if (e.values.empty()) DeclarationError("option --" + std::string(name) + " has no value");
  return std::get<std::string>(e.values.back());
}

std::int64_t ParsedArgs::Int(std::string_view name) const {
  const Entry& e = Get(name, ValueType::kInt);
  if (e.values.empty()) DeclarationError("option --" + std::string(name) + " has no value");
  return std::get<std::int64_t>(e.values.back());
}

double ParsedArgs::Float(std::string_view name) const {
  const Entry& e = Get(name, ValueType::kFloat);
  if (e.values.empty()) DeclarationError("option --" + std::string(name) + " has no value");
  return std::get<double>(e.values.back());
}

std::vector<std::string> ParsedArgs::Strings(std::string_view name) const {
  const Entry& e = Get(name, ValueType::kString);
  std::vector<std::string> out;
  for (const Value& v : e.values) out.push_back(std::get<std::string>(v));
  return out;
}

std::vector<std::int64_t> ParsedArgs::IntList(std::string_view name) const {
  const Entry& e = Get(name, ValueType::kIntList);
  std::vector<std::int64_t> out;
  for (const Value& v : e.values) {
    const auto& list = std::get<std::vector<std::int64_t>>(v);
    out.insert(out.end(), list.begin(), list.end());
  }
  return out;
}

std::optional<std::string> ParsedArgs::OptString(std::string_view name) const {
  const Entry& e = Get(name, ValueType::kString);
  if (e.values.empty()) return std::nullopt;
  return std::get<std::string>(e.values.back());
}

std::optional<std::int64_t> ParsedArgs::OptInt(std::string_view name) const {
  const Entry& e = Get(name, ValueType::kInt);
  if (e.values.empty()) return std::nullopt;
  return std::get<std::int64_t>(e.values.back());
}

std::optional<double> ParsedArgs::OptFloat(std::string_view name) const {
  const Entry& e = Get(name, ValueType::kFloat);
  if (e.values.empty()) return std::nullopt;
  return std::get<double>(e.values.back());
}

std::optional<std::string> ParsedArgs::Positional(std::string_view name) const {
  if (std::find(declared_positionals_.begin(), declared_positionals_.end(), name) ==
      declared_positionals_.end()) {
    DeclarationError("positional " + std::string(name) + " is not declared");
  }
  const auto it = positionals_.find(name);
  if (it == positionals_.end()) return std::nullopt;
  return it->second;
}

// ---------------------------------------------------------------------------------------------
// CommandSpec

CommandSpec::CommandSpec(std::string program, std::string name, std::string summary)
    : program_(std::move(program)), name_(std::move(name)), summary_(std::move(summary)) {}

CommandSpec& CommandSpec::Description(std::string text) {
  description_ = std::move(text);
  return *this;
}

CommandSpec& CommandSpec::Example(std::string line) {
  examples_.push_back(std::move(line));
  return *this;
}

OptionSpec& CommandSpec::AddOption(std::string name, ValueType type, std::string value_name,
                                   std::string help) {
  if (!IsValidOptionName(name)) DeclarationError("invalid option name '" + name + "'");
  if (name == "help") DeclarationError("--help is reserved");
  if (FindOption(name) != nullptr) DeclarationError("option --" + name + " declared twice");
  options_.emplace_back(std::move(name), type, std::move(value_name), std::move(help));
  return options_.back();
}

OptionSpec& CommandSpec::AddSwitch(std::string name, std::string help) {
  return AddOption(std::move(name), ValueType::kSwitch, "", std::move(help));
}
OptionSpec& CommandSpec::AddString(std::string name, std::string value_name, std::string help) {
  return AddOption(std::move(name), ValueType::kString, std::move(value_name), std::move(help));
}
OptionSpec& CommandSpec::AddInt(std::string name, std::string value_name, std::string help) {
  return AddOption(std::move(name), ValueType::kInt, std::move(value_name), std::move(help));
}
OptionSpec& CommandSpec::AddFloat(std::string name, std::string value_name, std::string help) {
  return AddOption(std::move(name), ValueType::kFloat, std::move(value_name), std::move(help));
}
OptionSpec& CommandSpec::AddIntList(std::string name, std::string value_name, std::string help) {
  return AddOption(std::move(name), ValueType::kIntList, std::move(value_name), std::move(help));
}

CommandSpec& CommandSpec::AddPositional(std::string name, std::string help, bool required) {
  if (required && !positionals_.empty() && !positionals_.back().required) {
    DeclarationError("required positional " + name + " follows an optional one");
  }
  positionals_.push_back(PositionalSpec{std::move(name), std::move(help), required});
  return *this;
}

CommandSpec& CommandSpec::ExactlyOneOf(std::vector<std::string> names) {
  for (const auto& n : names) {
    if (FindOption(n) == nullptr) DeclarationError("group names undeclared option --" + n);
  }
  exactly_one_of_.push_back(std::move(names));
  return *this;
}

CommandSpec& CommandSpec::AtMostOneOf(std::vector<std::string> names) {
  for (const auto& n : names) {
    if (FindOption(n) == nullptr) DeclarationError("group names undeclared option --" + n);
  }
  at_most_one_of_.push_back(std::move(names));
  return *this;
}

CommandSpec& CommandSpec::Validate(Validator validator) {
  validators_.push_back(std::move(validator));
  return *this;
}

const OptionSpec* CommandSpec::FindOption(std::string_view name) const {
  for (const OptionSpec& o : options_) {
    if (o.name() == name) return &o;
  }
  return nullptr;
}

Error CommandSpec::UsageError(std::string_view message) const {
  return MakeError(program_, " ", name_, ": ", message);
}

Result<Value> CommandSpec::ParseValue(const OptionSpec& option, std::string_view text,
                                      bool from_default) const {
  const std::string flag = "--" + option.name();
  std::string storage;  // holds file contents read through @PATH
  std::optional<std::string> file;
  if (option.allow_file() && !from_default && text.starts_with('@')) {
    if (text.starts_with("@@")) {
      text.remove_prefix(1);  // "@@x" is the literal "@x"
    } else {
      file = std::string(text.substr(1));
      if (file->empty()) return UsageError(flag + ": '@' must be followed by a file path");
      auto contents = ReadFileToString(*file);
      if (!contents.ok()) return UsageError(flag + ": " + contents.error().message());
      storage = std::move(contents).value();
      text = storage;
    }
  }
  const auto got = [&] { return ", got '" + std::string(text) + "'"; };

  switch (option.type()) {
    case ValueType::kSwitch:
      return Value(true);
    case ValueType::kString: {
      const auto& choices = option.choices();
      if (!choices.empty() && std::find(choices.begin(), choices.end(), text) == choices.end()) {
        std::string list;
        for (std::size_t i = 0; i < choices.size(); ++i) list += (i ? ", " : "") + choices[i];
        std::string message = flag + " expects one of " + list + got();
        if (auto s = SuggestClosest(text, choices)) message += " (did you mean '" + *s + "'?)";
        return UsageError(message);
      }
      return Value(std::string(text));
    }
    case ValueType::kInt: {
      const std::string_view trimmed = file ? Trim(text) : text;
      const auto value = ParseInt64(trimmed);
      if (!value) {
        const bool all_digits =
            !trimmed.empty() && trimmed.find_first_not_of("+-0123456789") == std::string::npos;
        return UsageError(
            flag + (all_digits ? " expects a 64-bit integer" : " expects an integer") + got());
      }
      if (const auto lo = option.int_min(), hi = option.int_max();
          lo && (*value < *lo || *value > *hi)) {
        return UsageError(flag + " " + RangeText(*lo, *hi) + ", got " + std::to_string(*value));
      }
      return Value(*value);
    }
    case ValueType::kFloat: {
      const std::string_view trimmed = file ? Trim(text) : text;
      const auto value = ParseDouble(trimmed);
      if (!value) return UsageError(flag + " expects a number" + got());
      if (!std::isfinite(*value)) return UsageError(flag + " expects a finite number" + got());
      if (const auto lo = option.float_min(), hi = option.float_max();
          lo && (*value < *lo || *value > *hi)) {
        return UsageError(flag + " " + RangeText(*lo, *hi) + ", got " + FormatNumber(*value));
      }
      return Value(*value);
    }
    case ValueType::kIntList: {
      std::vector<std::int64_t> list;
      if (file) {
        auto parsed = ParseIntListFile(text, *file);
        if (!parsed.ok()) return UsageError(flag + ": " + parsed.error().message());
        list = std::move(parsed).value();
      } else {
        auto parsed = ParseIntListText(text);
        if (!parsed.ok()) {
          return UsageError(flag + " expects a comma-separated list of integers" + got() + " (" +
                            parsed.error().message() + ")");
        }
        list = std::move(parsed).value();
      }
      const auto lo = option.int_min(), hi = option.int_max();
      for (std::size_t i = 0; lo && i < list.size(); ++i) {
        if (list[i] < *lo || list[i] > *hi) {
          return UsageError(flag + ": item " + std::to_string(i) + " " + RangeText(*lo, *hi) +
                            ", got " + std::to_string(list[i]));
        }
      }
      return Value(std::move(list));
    }
  }
  return UsageError(flag + ": unsupported option type");
}

Status CommandSpec::CheckGroups(const ParsedArgs& parsed) const {
  const auto describe = [](const std::vector<std::string>& names, const char* last_joiner) {
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (i > 0) out += (i + 1 == names.size()) ? last_joiner : ", ";
      out += "--" + names[i];
    }
    return out;
  };
  const auto given_of = [&](const std::vector<std::string>& names) {
    std::vector<std::string> given;
    for (const auto& n : names) {
      if (parsed.Given(n)) given.push_back(n);
    }
    return given;
  };
  for (const auto& group : exactly_one_of_) {
    const auto given = given_of(group);
    if (given.empty()) return UsageError("one of " + describe(group, " or ") + " is required");
    if (given.size() > 1) return UsageError(describe(given, " and ") + " cannot be used together");
  }
  for (const auto& group : at_most_one_of_) {
    const auto given = given_of(group);
    if (given.size() > 1) return UsageError(describe(given, " and ") + " cannot be used together");
  }
  return Ok();
}

Result<ParsedArgs> CommandSpec::Parse(std::span<const std::string> args) const {
  ParsedArgs parsed;
  for (const OptionSpec& o : options_) parsed.options_[o.name()].type = o.type();
  for (const PositionalSpec& p : positionals_) parsed.declared_positionals_.push_back(p.name);

  std::vector<std::string> option_names;
  for (const OptionSpec& o : options_) option_names.push_back(o.name());

  std::vector<std::string> positional_values;
  bool only_positional = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!only_positional && arg == "--") {
      only_positional = true;
      continue;
    }
    const bool is_long = !only_positional && arg.size() > 2 && arg.starts_with("--");
    if (!is_long) {
      // A lone "-" (stdin) and negative numbers are positional values; "-x" is a misspelt option.
      if (!only_positional && arg.size() > 1 && arg[0] == '-' && !ParseDouble(arg)) {
        return UsageError("unknown option '" + arg + "' (options start with '--')");
      }
      positional_values.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    const OptionSpec* option = FindOption(name);
    if (option == nullptr) {
      std::string message = "unknown option --" + name;
      if (auto s = SuggestClosest(name, option_names)) {
        message += " (did you mean --" + *s + "?)";
      } else {
        message += " (see '" + program_ + " " + name_ + " --help')";
      }
      return UsageError(message);
    }
    ParsedArgs::Entry& entry = parsed.options_[name];
    if (entry.given && !option->repeatable()) {
      return UsageError("--" + name + " given more than once");
    }
    Value value;
    if (option->type() == ValueType::kSwitch) {
      if (inline_value) return UsageError("--" + name + " is a switch and takes no value");
      value = true;
    } else {
      std::string text;
      if (inline_value) {
        text = *inline_value;
      } else {
        const bool has_next = i + 1 < args.size() && !args[i + 1].starts_with("--");
        if (!has_next) {
          return UsageError("--" + name + " expects a value (" + option->Synopsis() + ")");
        }
        text = args[++i];
      }
      FGNET_ASSIGN_OR_RETURN(value, ParseValue(*option, text, /*from_default=*/false));
    }
    entry.given = true;
    entry.values.push_back(std::move(value));
  }

  // Positional arguments.
  if (positional_values.size() > positionals_.size()) {
    return UsageError("unexpected argument '" + positional_values[positionals_.size()] + "'");
  }
  for (std::size_t i = 0; i < positionals_.size(); ++i) {
    if (i < positional_values.size()) {
      parsed.positionals_[positionals_[i].name] = positional_values[i];
    } else if (positionals_[i].required) {
      return UsageError("missing required argument " + positionals_[i].name);
    }
  }

  // Required options, then defaults (a default that does not parse is a declaration bug).
  for (const OptionSpec& o : options_) {
    if (o.required() && !parsed.options_[o.name()].given) {
      return UsageError("missing required option --" + o.name());
    }
  }
  for (const OptionSpec& o : options_) {
    if (!o.default_text()) continue;
    auto value = ParseValue(o, *o.default_text(), /*from_default=*/true);
    if (!value.ok()) DeclarationError("bad default: " + value.error().message());
    ParsedArgs::Entry& entry = parsed.options_[o.name()];
    if (!entry.given) entry.values.push_back(std::move(value).value());
  }

  FGNET_TRY(CheckGroups(parsed));
  for (const Validator& validate : validators_) {
    const Status status = validate(parsed);
    if (!status.ok()) return UsageError(status.error().message());
  }
  return parsed;
}

}  // namespace fgnet::cli
