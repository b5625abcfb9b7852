// Help text of a command, and the text utilities used by help and error messages.
#include <algorithm>
#include <set>
#include <utility>

#include "apps/fgnet/cli_args.h"

namespace fgnet::cli {
namespace {

constexpr std::size_t kHelpWidth = 100;
constexpr std::size_t kMaxKeyWidth = 30;

// One "  key   text" row of a help table whose text column starts at `column`.
std::string HelpRow(const std::string& key, const std::string& text, std::size_t column) {
  std::string row = WrapText(text, kHelpWidth, column, column);
  const std::string left = "  " + key;
  if (left.size() + 2 <= column) {
    row.replace(0, left.size(), left);
  } else {
    row = left + "\n" + row;
  }
  return row + "\n";
}

std::string OptionText(const OptionSpec& o) {
  std::string text = o.help();
  if (o.required()) text += " (required)";
  if (o.repeatable()) text += " (repeatable)";
  if (o.default_text()) {
    text += " (default: " + (o.default_text()->empty() ? "''" : *o.default_text()) + ")";
  } else if (o.default_note()) {
    text += " (default: " + *o.default_note() + ")";
  }
  return text;
}

}  // namespace

std::string WrapText(std::string_view text, std::size_t width, std::size_t first_indent,
                     std::size_t indent) {
  std::string out;
  std::size_t line_start = 0;  // index in `out` where the current line begins
  bool first_line = true;
  const auto new_line = [&](std::size_t spaces) {
    if (!first_line) out += '\n';
    first_line = false;
    line_start = out.size();
    out.append(spaces, ' ');
  };
  std::size_t paragraph_begin = 0;
  while (paragraph_begin <= text.size()) {
    std::size_t paragraph_end = text.find('\n', paragraph_begin);
    if (paragraph_end == std::string_view::npos) paragraph_end = text.size();
    const std::string_view paragraph =
        text.substr(paragraph_begin, paragraph_end - paragraph_begin);
    new_line(first_line ? first_indent : indent);
    const std::size_t line_indent = out.size() - line_start;
    std::size_t pos = 0;
    while (pos < paragraph.size()) {
      if (paragraph[pos] == ' ') {
        ++pos;
        continue;
      }
      std::size_t end = paragraph.find(' ', pos);
      if (end == std::string_view::npos) end = paragraph.size();
      const std::string_view word = paragraph.substr(pos, end - pos);
      const std::size_t line_length = out.size() - line_start;
      if (line_length > line_indent && line_length + 1 + word.size() > width) {
        new_line(indent);
      } else if (line_length > line_indent) {
        out += ' ';
      }
      out += word;
      pos = end;
    }
    paragraph_begin = paragraph_end + 1;
  }
  return out;
}

std::size_t EditDistance(std::string_view a, std::string_view b) {
  // Optimal string alignment distance over a full (a+1) x (b+1) table.
  const std::size_t n = a.size(), m = b.size();
  std::vector<std::size_t> d((n + 1) * (m + 1));
  const auto at = [&](std::size_t i, std::size_t j) -> std::size_t& { return d[i * (m + 1) + j]; };
  for (std::size_t i = 0; i <= n; ++i) at(i, 0) = i;
  for (std::size_t j = 0; j <= m; ++j) at(0, j) = j;
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      at(i, j) = std::min({at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        at(i, j) = std::min(at(i, j), at(i - 2, j - 2) + 1);
      }
    }
  }
  return at(n, m);
}

std::optional<std::string> SuggestClosest(std::string_view input,
                                          std::span<const std::string> candidates) {
  if (input.empty()) return std::nullopt;
  const std::size_t threshold = input.size() <= 3 ? 1 : (input.size() <= 6 ? 2 : 3);
  std::optional<std::string> best;
  std::size_t best_distance = threshold + 1;
  for (const std::string& c : candidates) {
    const std::size_t d = EditDistance(input, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  if (best) return best;
  // An abbreviation of exactly one candidate.
  std::optional<std::string> prefix_match;
  for (const std::string& c : candidates) {
    if (input.size() >= 2 && c.starts_with(input)) {
      if (prefix_match) return std::nullopt;
      prefix_match = c;
    }
  }
  return prefix_match;
}

std::string CommandSpec::Usage() const {
  std::string out = "Usage: " + program_ + " " + name_;
  for (const PositionalSpec& p : positionals_) {
    if (p.required) {
      out.append(" ").append(p.name);
    } else {
      out.append(" [").append(p.name).append("]");
    }
  }
  std::set<std::string> grouped;
  for (const auto& group : exactly_one_of_) grouped.insert(group.begin(), group.end());
  bool has_optional = false;
  for (const OptionSpec& o : options_) {
    if (grouped.count(o.name()) != 0) continue;
    if (o.required()) {
      out.append(" ").append(o.Synopsis());
    } else {
      has_optional = true;
    }
  }
  for (const auto& group : exactly_one_of_) {
    out += " (";
    for (std::size_t i = 0; i < group.size(); ++i) {
      if (i > 0) out += " | ";
      out += FindOption(group[i])->Synopsis();
    }
    out += ")";
  }
  if (has_optional) out += " [options]";
  return out;
}

std::string CommandSpec::Help() const {
  std::string out = Usage() + "\n\n" + WrapText(summary_, kHelpWidth, 0, 0) + "\n";
  if (!description_.empty()) {
    out += '\n';
    out += WrapText(description_, kHelpWidth, 0, 0);
    out += '\n';
  }

  // The text column fits the longest key up to kMaxKeyWidth; longer keys get a line of their own.
  std::size_t key_width = std::string("-h, --help").size();
  const auto fit = [&](std::size_t width) {
    if (width <= kMaxKeyWidth) key_width = std::max(key_width, width);
  };
  for (const PositionalSpec& p : positionals_) fit(p.name.size());
  for (const OptionSpec& o : options_) fit(o.Synopsis().size());
  const std::size_t column = 2 + key_width + 2;

  if (!positionals_.empty()) {
    out += "\nArguments:\n";
    for (const PositionalSpec& p : positionals_) {
      out += HelpRow(p.name, p.help + (p.required ? "" : " (optional)"), column);
    }
  }
  out += "\nOptions:\n";
  for (const OptionSpec& o : options_) out += HelpRow(o.Synopsis(), OptionText(o), column);
  out += HelpRow("-h, --help", "Show this help and exit.", column);
  if (!examples_.empty()) {
    out += "\nExamples:\n";
    for (const std::string& e : examples_) out += "  " + program_ + " " + name_ + " " + e + "\n";
  }
  return out;
}

}  // namespace fgnet::cli
