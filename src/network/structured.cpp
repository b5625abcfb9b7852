#include "network/structured.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <utility>

namespace fgnet::network {
namespace {

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Documents nested deeper than this are treated as text: serialising and comparing JSON
// recurses, and hostile input must not exhaust the stack.
constexpr int kMaxJsonDepth = 256;

int NestingDepth(std::string_view text) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

// Parses a whole text as JSON, without throwing.
std::optional<Json> TryJson(std::string_view text) {
  text = Trim(text);
  if (text.empty() || NestingDepth(text) > kMaxJsonDepth) return std::nullopt;
  Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return std::nullopt;
  return json;
}

std::string NormalizeLanguage(std::string_view lang) {
  std::string l(lang);
  for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::map<std::string, std::string> kAliases = {
      {"js", "javascript"},  {"jsx", "javascript"},  {"mjs", "javascript"},
      {"cjs", "javascript"}, {"node", "javascript"}, {"ts", "typescript"},
      {"tsx", "typescript"}, {"py", "python"},       {"python3", "python"}};
  if (auto it = kAliases.find(l); it != kAliases.end()) return it->second;
  return l;
}

struct Fence {
  std::string lang;  // as written (lowercase)
  std::string path;
  std::string body;
};

// A prose line naming the file of the block below it: "**src/a.ts**", "`src/a.ts`:",
// "### File: src/a.ts". Empty unless the line is one path with a known extension.
std::string PathFromHeading(std::string_view line) {
  line = Trim(line);
  while (!line.empty() && line.front() == '#') line.remove_prefix(1);
  line = Trim(line);
  for (std::string_view prefix : {"File:", "file:", "Path:", "path:"}) {
    if (line.rfind(prefix, 0) == 0) line = Trim(line.substr(prefix.size()));
  }
  auto strip = [&](char c) {
    while (!line.empty() && (line.front() == c)) line.remove_prefix(1);
    while (!line.empty() && (line.back() == c || line.back() == ':')) line.remove_suffix(1);
  };
  for (int i = 0; i < 2; ++i) {
    strip('*');
    strip('`');
  }
  line = Trim(line);
  if (line.empty() || std::any_of(line.begin(), line.end(), IsSpace)) return "";
  return LanguageOfPath(line).empty() ? "" : std::string(line);
}

// Every ``` block of `text`; an unterminated last block runs to the end.
std::vector<Fence> FindFences(std::string_view text) {
  std::vector<Fence> fences;
  std::size_t pos = 0;
  Fence* open = nullptr;
  std::string_view previous;  // the last non-empty line outside a block
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    std::string_view trimmed = Trim(line);
    if (trimmed.rfind("```", 0) == 0) {
      if (open != nullptr) {
        if (Trim(trimmed.substr(3)).empty()) {
          open = nullptr;
          previous = {};
          pos = end + 1;
          continue;
        }
      } else {
        fences.emplace_back();
        open = &fences.back();
        std::string_view info = Trim(trimmed.substr(3));
        std::vector<std::string> tokens;
        std::size_t i = 0;
        while (i < info.size()) {
          while (i < info.size() && IsSpace(info[i])) ++i;
          std::size_t j = i;
          while (j < info.size() && !IsSpace(info[j])) ++j;
          if (j > i) tokens.emplace_back(info.substr(i, j - i));
          i = j;
        }
        for (std::string& t : tokens) {
          for (const char* prefix : {"title=", "file=", "path=", "filename="}) {
            if (t.rfind(prefix, 0) == 0) t = t.substr(std::string_view(prefix).size());
          }
          if (t.size() >= 2 && (t.front() == '"' || t.front() == '\'') && t.back() == t.front()) {
            t = t.substr(1, t.size() - 2);
          }
        }
        // "```ts src/a.ts", "```ts:src/a.ts", "```src/a.ts"
        if (!tokens.empty()) {
          std::string first = tokens[0];
          if (auto colon = first.find(':'); colon != std::string::npos && tokens.size() == 1) {
            tokens = {first.substr(0, colon), first.substr(colon + 1)};
          }
        }
        if (tokens.size() == 1 && tokens[0].find('.') != std::string::npos &&
            !LanguageOfPath(tokens[0]).empty()) {
          open->path = tokens[0];
        } else {
          if (!tokens.empty()) open->lang = tokens[0];
          if (tokens.size() > 1) open->path = tokens[1];
        }
        for (char& c : open->lang)
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (open->path.empty()) open->path = PathFromHeading(previous);
        pos = end + 1;
        continue;
      }
    }
    if (open != nullptr) {
      open->body.append(line);
      open->body.push_back('\n');
    } else if (!trimmed.empty()) {
      previous = trimmed;
    }
    pos = end + 1;
  }
  return fences;
}

CodeFile FileFromFence(const Fence& fence) {
  CodeFile file;
  file.path = fence.path;
  std::string_view body = fence.body;
  // A first line "// file: PATH" or "# file: PATH" names the file.
  std::string_view first = body.substr(0, body.find('\n'));
  std::string_view head = Trim(first);
  for (std::string_view marker : {"// file:", "# file:"}) {
    if (head.rfind(marker, 0) == 0) {
      if (file.path.empty()) file.path = std::string(Trim(head.substr(marker.size())));
      body.remove_prefix(std::min(body.size(), first.size() + 1));
      break;
    }
  }
  while (!body.empty() && body.back() == '\n') body.remove_suffix(1);
  file.code = std::string(body);
  file.language = LanguageOfPath(file.path);
  if (file.language.empty()) file.language = NormalizeLanguage(fence.lang);
  return file;
}

std::optional<CodeFile> FileFromJson(const Json& object) {
  if (!object.is_object()) return std::nullopt;
  auto code = object.find("code");
  if (code == object.end()) code = object.find("content");
  if (code == object.end() || !code->is_string()) return std::nullopt;
  CodeFile file;
  file.code = code->get<std::string>();
  if (auto it = object.find("path"); it != object.end() && it->is_string()) {
    file.path = it->get<std::string>();
  }
  if (auto it = object.find("language"); it != object.end() && it->is_string()) {
    file.language = NormalizeLanguage(it->get<std::string>());
  }
  if (file.language.empty()) file.language = LanguageOfPath(file.path);
  if (auto it = object.find("imports"); it != object.end() && it->is_array()) {
    for (const Json& entry : *it) {
      if (auto ref = ParseImportRef(entry)) file.imports.push_back(std::move(*ref));
    }
  }
  if (auto it = object.find("exports"); it != object.end() && it->is_array()) {
    for (const Json& entry : *it) {
      if (entry.is_string()) file.exports.push_back(entry.get<std::string>());
    }
  }
  return file;
}

void Classify(Json json, StructuredOutput* out) {
  if (json.is_object() && json.contains("code")) {
    if (auto file = FileFromJson(json)) {
      out->kind = StructuredOutput::Kind::kCode;
      out->files.push_back(std::move(*file));
      out->json = std::move(json);
      return;
    }
  }
  if (json.is_object() && json.contains("files") && json["files"].is_array() &&
      !json["files"].empty()) {
    std::vector<CodeFile> files;
    for (const Json& entry : json["files"]) {
      auto file = FileFromJson(entry);
      if (!file) break;
      files.push_back(std::move(*file));
    }
    if (files.size() == json["files"].size()) {
      out->kind = StructuredOutput::Kind::kFiles;
      out->files = std::move(files);
      out->json = std::move(json);
      return;
    }
  }
  out->kind = StructuredOutput::Kind::kJson;
  out->json = std::move(json);
}

std::string StripQuotes(std::string_view s) {
  s = Trim(s);
  while (!s.empty() && s.back() == ';') s = Trim(s.substr(0, s.size() - 1));
  if (s.size() >= 2 && (s.front() == '\'' || s.front() == '"' || s.front() == '`') &&
      s.back() == s.front()) {
    s = s.substr(1, s.size() - 2);
  }
  return std::string(s);
}

std::vector<std::string> SplitNames(std::string_view list) {
  std::vector<std::string> names;
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t end = list.find(',', start);
    if (end == std::string_view::npos) end = list.size();
    std::string_view item = Trim(list.substr(start, end - start));
    if (item.rfind("type ", 0) == 0) item = Trim(item.substr(5));
    if (auto as = item.find(" as "); as != std::string_view::npos) item = Trim(item.substr(0, as));
    if (!item.empty()) names.emplace_back(item);
    start = end + 1;
  }
  return names;
}

std::string CollapseWhitespace(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : Trim(text)) {
    if (IsSpace(c)) {
      space = true;
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::string TrimCode(std::string_view code) {
  std::string out;
  out.reserve(code.size());
  for (char c : code) {
    if (c != '\r') out.push_back(c);
  }
  return std::string(Trim(out));
}

Json ImportToJson(const ImportRef& ref, bool sort_names) {
  std::vector<std::string> names = ref.names;
  if (sort_names) std::sort(names.begin(), names.end());
  return Json{{"from", ref.from}, {"names", names}};
}

}  // namespace

std::optional<ImportRef> ParseImportRef(const Json& value) {
  if (value.is_object()) {
    ImportRef ref;
    for (const char* key : {"from", "module", "source"}) {
      if (auto it = value.find(key); it != value.end() && it->is_string()) {
        ref.from = it->get<std::string>();
        break;
      }
    }
    if (ref.from.empty()) return std::nullopt;
    if (auto it = value.find("names"); it != value.end() && it->is_array()) {
      for (const Json& name : *it) {
        if (name.is_string()) ref.names.push_back(name.get<std::string>());
      }
    }
    if (auto it = value.find("line"); it != value.end() && it->is_number_integer()) {
      ref.line = it->get<std::int64_t>();
    }
    return ref;
  }
  if (!value.is_string()) return std::nullopt;
  std::string_view s = Trim(value.get_ref<const std::string&>());
  ImportRef ref;
  // Python: "from .mod import a, b as c"
  if (s.rfind("from ", 0) == 0) {
    std::size_t imp = s.find(" import ");
    if (imp == std::string_view::npos) return std::nullopt;
    ref.from = std::string(Trim(s.substr(5, imp - 5)));
    std::string_view names = Trim(s.substr(imp + 8));
    if (names.size() >= 2 && names.front() == '(' && names.back() == ')') {
      names = names.substr(1, names.size() - 2);
    }
    if (names != "*") ref.names = SplitNames(names);
    return ref.from.empty() ? std::nullopt : std::optional<ImportRef>(ref);
  }
  if (s.rfind("import ", 0) == 0) s = Trim(s.substr(7));
  if (s.rfind("type ", 0) == 0) s = Trim(s.substr(5));
  std::size_t from = s.rfind(" from ");
  if (from == std::string_view::npos) {
    ref.from = StripQuotes(s);  // a bare module ("react", "./styles.css", python "os.path")
    return ref.from.empty() ? std::nullopt : std::optional<ImportRef>(ref);
  }
  ref.from = StripQuotes(s.substr(from + 6));
  std::string_view clause = Trim(s.substr(0, from));
  // "Default, { A, B as C }", "* as ns", "{ A }"
  std::size_t brace = clause.find('{');
  std::string_view before = Trim(clause.substr(0, brace));
  if (!before.empty() && before.back() == ',') before = Trim(before.substr(0, before.size() - 1));
  if (!before.empty() && before.front() != '*') ref.names.push_back("default");
  if (brace != std::string_view::npos) {
    std::size_t close = clause.find('}', brace);
    std::string_view inner = clause.substr(
        brace + 1, close == std::string_view::npos ? std::string_view::npos : close - brace - 1);
    for (std::string& name : SplitNames(inner)) ref.names.push_back(std::move(name));
  }
  if (ref.from.empty()) return std::nullopt;
  return ref;
}

std::string LanguageOfPath(std::string_view path) {
  std::size_t slash = path.rfind('/');
  std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return "";
  std::string ext(name.substr(dot + 1));
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::map<std::string, std::string> kByExtension = {
      {"js", "javascript"}, {"jsx", "javascript"}, {"mjs", "javascript"}, {"cjs", "javascript"},
      {"ts", "typescript"}, {"tsx", "typescript"}, {"mts", "typescript"}, {"cts", "typescript"},
      {"py", "python"},     {"json", "json"},      {"css", "css"},        {"html", "html"},
      {"md", "markdown"},   {"go", "go"},          {"rs", "rust"},        {"c", "c"},
      {"h", "c"},           {"cc", "cpp"},         {"cpp", "cpp"},        {"hpp", "cpp"},
      {"java", "java"},     {"sh", "shell"},       {"yaml", "yaml"},      {"yml", "yaml"}};
  auto it = kByExtension.find(ext);
  return it == kByExtension.end() ? "" : it->second;
}

StructuredOutput ExtractStructured(std::string_view text) {
  StructuredOutput out;
  out.text = std::string(text);
  std::string_view trimmed = Trim(text);
  if (trimmed.empty()) return out;

  if (trimmed.find(kStartFunctionCall) != std::string_view::npos) {
    auto parsed = ParseModelOutput(trimmed);
    if (parsed.ok() && !parsed->calls.empty()) {
      out.kind = StructuredOutput::Kind::kCalls;
      out.calls = std::move(parsed->calls);
      return out;
    }
  }
  if (auto json = TryJson(trimmed)) {
    Classify(std::move(*json), &out);
    return out;
  }
  std::vector<Fence> fences = FindFences(trimmed);
  if (fences.size() == 1 && (fences[0].lang.empty() || fences[0].lang == "json")) {
    if (auto json = TryJson(fences[0].body)) {
      Classify(std::move(*json), &out);
      return out;
    }
  }
  std::vector<CodeFile> files;
  for (const Fence& fence : fences) {
    if (fence.lang == "json" && fences.size() > 1 && fence.path.empty()) continue;
    if (!Trim(fence.body).empty()) files.push_back(FileFromFence(fence));
  }
  if (!files.empty()) {
    out.kind = files.size() == 1 ? StructuredOutput::Kind::kCode : StructuredOutput::Kind::kFiles;
    out.files = std::move(files);
    return out;
  }
  // Prose around one JSON object or array: the span from the first opening bracket to the
  // last matching closing one.
  for (auto [open, close] : {std::pair{'{', '}'}, std::pair{'[', ']'}}) {
    std::size_t first = trimmed.find(open);
    std::size_t last = trimmed.rfind(close);
    if (first == std::string_view::npos || last == std::string_view::npos || last < first) {
      continue;
    }
    if (auto json = TryJson(trimmed.substr(first, last - first + 1))) {
      Classify(std::move(*json), &out);
      return out;
    }
  }
  return out;
}

std::string Canonicalize(const StructuredOutput& output) {
  switch (output.kind) {
    case StructuredOutput::Kind::kText:
      return CollapseWhitespace(output.text);
    case StructuredOutput::Kind::kJson:
      return Dump(output.json);
    case StructuredOutput::Kind::kCalls:
      return Dump(FunctionCallsToJson(output.calls));
    case StructuredOutput::Kind::kCode:
    case StructuredOutput::Kind::kFiles:
      break;
  }
  std::vector<const CodeFile*> files;
  for (const CodeFile& f : output.files) files.push_back(&f);
  std::stable_sort(files.begin(), files.end(), [](const CodeFile* a, const CodeFile* b) {
    return a->path != b->path ? a->path < b->path : TrimCode(a->code) < TrimCode(b->code);
  });
  Json list = Json::array();
  for (const CodeFile* f : files) {
    Json imports = Json::array();
    for (const ImportRef& ref : f->imports) imports.push_back(ImportToJson(ref, true));
    std::sort(imports.begin(), imports.end());
    std::set<std::string> exports(f->exports.begin(), f->exports.end());
    list.push_back(Json{{"path", f->path},
                        {"code", TrimCode(f->code)},
                        {"imports", imports},
                        {"exports", exports}});
  }
  return Dump(Json{{"files", list}});
}

std::string RenderHandoff(const StructuredOutput& output) {
  switch (output.kind) {
    case StructuredOutput::Kind::kText:
      return output.text;
    case StructuredOutput::Kind::kJson:
      return Dump(output.json);
    case StructuredOutput::Kind::kCalls: {
      std::string out;
      for (const FunctionCall& call : output.calls) {
        auto rendered = RenderFunctionCall(call);
        out += rendered.ok() ? *rendered : Dump(FunctionCallsToJson({call}));
      }
      return out;
    }
    case StructuredOutput::Kind::kCode:
    case StructuredOutput::Kind::kFiles:
      break;
  }
  std::string out;
  for (const CodeFile& f : output.files) {
    if (!out.empty()) out += "\n\n";
    if (!f.path.empty()) out += "// file: " + f.path + "\n";
    if (!f.imports.empty()) {
      out += "// imports:";
      for (std::size_t i = 0; i < f.imports.size(); ++i) {
        out += i == 0 ? " " : "; ";
        out += f.imports[i].from;
        if (!f.imports[i].names.empty()) {
          out += " {";
          for (std::size_t j = 0; j < f.imports[i].names.size(); ++j) {
            out += (j == 0 ? "" : ", ") + f.imports[i].names[j];
          }
          out += "}";
        }
      }
      out += "\n";
    }
    if (!f.exports.empty()) {
      out += "// exports:";
      for (std::size_t i = 0; i < f.exports.size(); ++i)
        out += (i == 0 ? " " : ", ") + f.exports[i];
      out += "\n";
    }
    out += TrimCode(f.code);
  }
  return out;
}

}  // namespace fgnet::network
