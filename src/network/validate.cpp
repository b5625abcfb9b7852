#include "network/validate.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "network/schema_check.h"

namespace fgnet::network {
namespace {

ValidationIssue ContractIssue(std::string message) {
  ValidationIssue issue;
  issue.check = "contract";
  issue.message = std::move(message);
  return issue;
}

// The declared functions: name -> parameters schema. Accepts {"type": "function", "function":
// {...}} and bare {"name", "parameters"} entries.
std::map<std::string, Json> DeclaredFunctions(const Json& tools) {
  std::map<std::string, Json> out;
  if (!tools.is_array()) return out;
  for (const Json& tool : tools) {
    if (!tool.is_object()) continue;
    const Json* decl = &tool;
    if (auto it = tool.find("function"); it != tool.end() && it->is_object()) decl = &*it;
    auto name = decl->find("name");
    if (name == decl->end() || !name->is_string()) continue;
    auto params = decl->find("parameters");
    out[name->get<std::string>()] =
        params != decl->end() && params->is_object() ? *params : Json::object();
  }
  return out;
}

std::string LanguageOf(const CodeFile& file) {
  return file.language.empty() ? LanguageOfPath(file.path) : file.language;
}

bool IsRelative(const std::string& spec, bool python) {
  if (python) return !spec.empty() && spec[0] == '.';
  return spec == "." || spec == ".." || spec.rfind("./", 0) == 0 || spec.rfind("../", 0) == 0;
}

// "a/./b/../c" -> "a/c"; a leading "./" is dropped. Returns false when ".." climbs above the root.
bool NormalizePath(const std::string& path, std::string* out) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part == "..") {
      if (parts.empty()) return false;
      parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = end + 1;
  }
  out->clear();
  for (std::size_t i = 0; i < parts.size(); ++i) *out += (i == 0 ? "" : "/") + parts[i];
  return true;
}

std::string DirName(const std::string& path) {
  std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::string Join(const std::string& dir, const std::string& rest) {
  return dir.empty() ? rest : dir + "/" + rest;
}

const std::vector<std::string> kScriptExtensions = {".ts",  ".tsx", ".d.ts", ".js",
                                                    ".jsx", ".mjs", ".cjs"};

// Candidate files for a relative import, in the order they are tried.
std::vector<std::string> Candidates(const std::string& importer, const std::string& spec,
                                    bool python) {
  std::vector<std::string> out;
  std::string base;
  if (python) {
    std::size_t dots = 0;
    while (dots < spec.size() && spec[dots] == '.') ++dots;
    std::string dir = DirName(importer);
    for (std::size_t i = 1; i < dots; ++i) dir = Join(dir, "..");
    std::string module = spec.substr(dots);
    std::replace(module.begin(), module.end(), '.', '/');
    if (!NormalizePath(module.empty() ? dir : Join(dir, module), &base)) return out;
    if (!module.empty()) out.push_back(base + ".py");
    out.push_back(Join(base, "__init__.py"));
    return out;
  }
  if (!NormalizePath(Join(DirName(importer), spec), &base)) return out;
  out.push_back(base);
  // "./x.js" written for the TypeScript source x.ts
  for (const char* js : {".js", ".jsx", ".mjs", ".cjs"}) {
    std::string ext = js;
    if (base.size() > ext.size() && base.compare(base.size() - ext.size(), ext.size(), ext) == 0) {
      std::string stem = base.substr(0, base.size() - ext.size());
      out.push_back(stem + (ext == ".jsx"   ? ".tsx"
                            : ext == ".mjs" ? ".mts"
                            : ext == ".cjs" ? ".cts"
                                            : ".ts"));
    }
  }
  for (const std::string& ext : kScriptExtensions) out.push_back(base + ext);
  for (const std::string& ext : kScriptExtensions) out.push_back(Join(base, "index" + ext));
  return out;
}

}  // namespace

std::string ValidationIssue::ToString() const {
  std::string out;
  if (!file.empty()) {
    out = file;
    if (line > 0) out += ":" + std::to_string(line);
    if (line > 0 && column > 0) out += ":" + std::to_string(column);
    out += ": ";
  }
  return out + check + ": " + message;
}

Json ValidationReport::ToJson() const {
  Json list = Json::array();
  for (const ValidationIssue& i : issues) {
    list.push_back(Json{{"check", i.check},
                        {"file", i.file},
                        {"line", i.line},
                        {"column", i.column},
                        {"message", i.message}});
  }
  return Json{
      {"ok", ok}, {"score", score}, {"checks", checks}, {"issues", list}, {"skipped", skipped}};
}

std::vector<ValidationIssue> ValidateContract(const StructuredOutput& output,
                                              const OutputContract& contract) {
  std::vector<ValidationIssue> issues;
  if (contract.kind == OutputContract::Kind::kText) return issues;
  if (contract.kind == OutputContract::Kind::kJsonSchema) {
    const Json* instance = nullptr;
    Json calls;
    switch (output.kind) {
      case StructuredOutput::Kind::kJson:
        instance = &output.json;
        break;
      case StructuredOutput::Kind::kCode:
      case StructuredOutput::Kind::kFiles:
        if (!output.json.is_null()) instance = &output.json;
        break;
      case StructuredOutput::Kind::kCalls:
        calls = FunctionCallsToJson(output.calls);
        instance = &calls;
        break;
      case StructuredOutput::Kind::kText:
        break;
    }
    if (instance == nullptr) {
      issues.push_back(ContractIssue("$: expected a JSON document, got text"));
      return issues;
    }
    for (const SchemaViolation& v : CheckJsonSchema(*instance, contract.schema)) {
      issues.push_back(ContractIssue(v.ToString()));
    }
    return issues;
  }
  // Function calls.
  if (output.kind != StructuredOutput::Kind::kCalls) {
    auto parsed = ParseModelOutput(output.text);
    if (!parsed.ok()) {
      issues.push_back(ContractIssue("$.calls: " + parsed.error().message()));
    } else {
      issues.push_back(ContractIssue("$.calls: expected at least one function call, got none"));
    }
    return issues;
  }
  std::map<std::string, Json> declared = DeclaredFunctions(contract.tools);
  for (std::size_t i = 0; i < output.calls.size(); ++i) {
    const FunctionCall& call = output.calls[i];
    std::string path = "$.calls[" + std::to_string(i) + "]";
    auto it = declared.find(call.name);
    if (it == declared.end()) {
      std::string names;
      for (const auto& [name, params] : declared) names += (names.empty() ? "" : ", ") + name;
      issues.push_back(ContractIssue(
          path + ".name: '" + call.name +
          "' is not a declared function (declared: " + (names.empty() ? "none" : names) + ")"));
      continue;
    }
    for (const SchemaViolation& v :
         CheckJsonSchema(call.arguments, it->second, path + ".arguments")) {
      issues.push_back(ContractIssue(v.ToString()));
    }
  }
  return issues;
}

std::vector<ValidationIssue> CheckImportsExports(const std::vector<CodeFile>& files,
                                                 const std::vector<CodeChecker::FileFacts>& facts) {
  std::vector<ValidationIssue> issues;
  auto issue = [&](std::string check, const std::string& file, std::int64_t line,
                   std::string message) {
    ValidationIssue i;
    i.check = std::move(check);
    i.file = file;
    i.line = line;
    i.message = std::move(message);
    issues.push_back(std::move(i));
  };
  // Paths: normalised, each claimed once.
  std::map<std::string, std::size_t> by_path;
  std::vector<std::string> normalized(files.size());
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (files[i].path.empty()) continue;
    if (!NormalizePath(files[i].path, &normalized[i])) normalized[i] = files[i].path;
    auto [it, inserted] = by_path.emplace(normalized[i], i);
    if (!inserted) {
      issue("paths", files[i].path, 0,
            "path already used by file " + std::to_string(it->second + 1) + " of the output");
    }
  }
  auto parsed = [&](std::size_t i) { return i < facts.size() && facts[i].parsed; };
  auto exports_of = [&](std::size_t i) -> const std::vector<std::string>& {
    return parsed(i) ? facts[i].exports : files[i].exports;
  };
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::map<std::string, int> seen;
    for (const std::string& name : exports_of(i)) {
      if (++seen[name] == 2) {
        issue("exports", files[i].path, 0, "'" + name + "' is exported more than once");
      }
    }
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    const bool python = LanguageOf(files[i]) == "python";
    const std::vector<ImportRef>& imports = parsed(i) ? facts[i].imports : files[i].imports;
    for (const ImportRef& ref : imports) {
      if (!IsRelative(ref.from, python)) continue;  // packages are not checked
      std::string importer = normalized[i].empty() ? files[i].path : normalized[i];
      std::optional<std::size_t> target;
      for (const std::string& candidate : Candidates(importer, ref.from, python)) {
        if (auto it = by_path.find(candidate); it != by_path.end() && it->second != i) {
          target = it->second;
          break;
        }
      }
      if (!target) {
        // Python "from . import a": each name may be a module of the package.
        bool all_modules = python && !ref.names.empty();
        std::string dir;
        if (python && ref.from.find_first_not_of('.') == std::string::npos) {
          std::string up = DirName(importer);
          for (std::size_t d = 1; d < ref.from.size(); ++d) up = Join(up, "..");
          NormalizePath(up, &dir);
          for (const std::string& name : ref.names) {
            all_modules = all_modules && by_path.count(Join(dir, name + ".py")) +
                                                 by_path.count(Join(dir, name + "/__init__.py")) >
                                             0;
          }
        } else {
          all_modules = false;
        }
        if (!all_modules) {
          issue("imports", files[i].path, ref.line,
                "module '" + ref.from + "' does not resolve to a file of the output");
        }
        continue;
      }
      const std::size_t t = *target;
      if (parsed(t) && facts[t].open_exports) continue;
      if (!parsed(t) && files[t].exports.empty()) continue;  // nothing known about its exports
      const std::vector<std::string>& exported = exports_of(t);
      for (const std::string& name : ref.names) {
        if (std::find(exported.begin(), exported.end(), name) != exported.end()) continue;
        if (python && by_path.count(Join(DirName(files[t].path), name + ".py")) > 0) continue;
        issue("imports", files[i].path, ref.line,
              name == "default" ? "'" + ref.from + "' (" + files[t].path + ") has no default export"
                                : "'" + name + "' is not exported by " + files[t].path);
      }
    }
  }
  return issues;
}

ValidationReport Validate(const StructuredOutput& output, const OutputContract& contract,
                          const CodeChecker* checker) {
  ValidationReport report;
  std::int32_t failed = 0;
  if (contract.kind != OutputContract::Kind::kText) {
    std::vector<ValidationIssue> issues = ValidateContract(output, contract);
    ++report.checks;
    if (!issues.empty()) ++failed;
    for (ValidationIssue& i : issues) report.issues.push_back(std::move(i));
  }
  const bool has_code = (output.kind == StructuredOutput::Kind::kCode ||
                         output.kind == StructuredOutput::Kind::kFiles) &&
                        !output.files.empty();
  if (contract.check_code && has_code) {
    std::vector<CodeChecker::FileFacts> facts(output.files.size());
    if (checker != nullptr) {
      facts = checker->Check(output.files, &report.skipped);
    } else {
      report.skipped.push_back("syntax: no code checker");
    }
    // One syntax check per parsed file, one import/export check per file, one path check.
    for (std::size_t i = 0; i < facts.size(); ++i) {
      if (!facts[i].parsed) continue;
      ++report.checks;
      if (!facts[i].syntax.empty()) ++failed;
      for (const ValidationIssue& issue : facts[i].syntax) report.issues.push_back(issue);
    }
    std::vector<ValidationIssue> consistency = CheckImportsExports(output.files, facts);
    std::set<std::string> failing_files;
    bool paths_failed = false;
    for (const ValidationIssue& issue : consistency) {
      if (issue.check == "paths") {
        paths_failed = true;
      } else {
        failing_files.insert(issue.file);
      }
    }
    report.checks += static_cast<std::int32_t>(output.files.size());
    for (const CodeFile& f : output.files) failed += failing_files.count(f.path) > 0 ? 1 : 0;
    if (output.files.size() > 1) {
      ++report.checks;
      if (paths_failed) ++failed;
    }
    for (ValidationIssue& issue : consistency) report.issues.push_back(std::move(issue));
  }
  report.ok = report.issues.empty();
  report.score =
      report.checks == 0 ? 1.0 : static_cast<double>(report.checks - failed) / report.checks;
  return report;
}

}  // namespace fgnet::network
