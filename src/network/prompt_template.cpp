// Node prompt templates: {task} and {input} placeholders, {{ and }} for literal braces.
#include "network/spec.h"

namespace fgnet::network {
namespace {

// Walks a template, calling text(piece) for literal text and placeholder(name) for each
// placeholder; returns the first problem, or an empty string.
template <class Text, class Placeholder>
std::string Walk(std::string_view t, Text text, Placeholder placeholder) {
  std::size_t i = 0;
  while (i < t.size()) {
    const char c = t[i];
    if (c == '{' && i + 1 < t.size() && t[i + 1] == '{') {
      text(std::string_view("{"));
      i += 2;
    } else if (c == '}' && i + 1 < t.size() && t[i + 1] == '}') {
      text(std::string_view("}"));
      i += 2;
    } else if (c == '{') {
      const std::size_t close = t.find('}', i + 1);
      if (close == std::string_view::npos) {
        return "unclosed '{' at offset " + std::to_string(i) + " (write {{ for a literal brace)";
      }
      const std::string_view name = t.substr(i + 1, close - i - 1);
      if (name != "task" && name != "input") {
        return "unknown placeholder '{" + std::string(name) +
               "}' (the placeholders are {task} and {input}; write {{ and }} for braces)";
      }
      placeholder(name);
      i = close + 1;
    } else if (c == '}') {
      return "unmatched '}' at offset " + std::to_string(i) + " (write }} for a literal brace)";
    } else {
      const std::size_t next = t.find_first_of("{}", i);
      const std::size_t end = next == std::string_view::npos ? t.size() : next;
      text(t.substr(i, end - i));
      i = end;
    }
  }
  return "";
}

}  // namespace

Status CheckPromptTemplate(std::string_view prompt_template) {
  const std::string problem = Walk(
      prompt_template, [](std::string_view) {}, [](std::string_view) {});
  if (!problem.empty()) return Error(problem);
  return Ok();
}

std::string ExpandPromptTemplate(std::string_view prompt_template, std::string_view task,
                                 std::string_view input) {
  if (prompt_template.empty()) prompt_template = kDefaultPromptTemplate;
  std::string out;
  Walk(
      prompt_template, [&](std::string_view piece) { out += piece; },
      [&](std::string_view name) { out += name == "task" ? task : input; });
  return out;
}

}  // namespace fgnet::network
