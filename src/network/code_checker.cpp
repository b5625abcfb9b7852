// CodeChecker: the syntax checks. Two small parser scripts, embedded here, run out of process:
// JavaScript / TypeScript through `node -e` with the TypeScript compiler's parser, Python through
// `python3 -c` with the ast module. Each reads every file of its language as one JSON document
// on stdin ([{"name", "code"}]) and writes one JSON document on stdout: per file its syntax
// errors (1-based line and column), imports and exports. Nothing generated is executed.
#include <cstdlib>
#include <string>
#include <utility>

#include "network/validate.h"
#include "util/subprocess.h"

#ifndef FGNET_NODE_MODULES_DIR
#define FGNET_NODE_MODULES_DIR ""
#endif

namespace fgnet::network {
namespace {

constexpr const char* kNodeScript = R"JS(
let ts;
try {
  ts = require('typescript');
} catch (e) {
  process.stdout.write(JSON.stringify({missing: 'typescript'}));
  process.exit(0);
}
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const files = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  process.stdout.write(JSON.stringify(files.map(safeCheck)));
});
function safeCheck(file) {
  try {
    return check(file);
  } catch (e) {  // an unexpected tree: report nothing rather than fail every file
    return {errors: [], imports: [], exports: [], open: true};
  }
}
function scriptKind(name) {
  const n = name.toLowerCase();
  if (n.endsWith('.tsx')) return ts.ScriptKind.TSX;
  if (n.endsWith('.ts') || n.endsWith('.mts') || n.endsWith('.cts')) return ts.ScriptKind.TS;
  return ts.ScriptKind.JSX;  // JavaScript, with JSX allowed
}
function modifiersOf(node) {
  if (ts.canHaveModifiers && !ts.canHaveModifiers(node)) return [];
  return (ts.getModifiers ? ts.getModifiers(node) : node.modifiers) || [];
}
function hasModifier(node, kind) {
  return modifiersOf(node).some((m) => m.kind === kind);
}
function bindingNames(name, out) {
  if (!name) return;
  if (ts.isIdentifier(name)) { out.push(name.text); return; }
  for (const element of name.elements || []) {
    if (!ts.isOmittedExpression(element)) bindingNames(element.name, out);
  }
}
function check(file) {
  const sf = ts.createSourceFile(file.name, file.code, ts.ScriptTarget.Latest, true,
                                 scriptKind(file.name));
  const lineOf = (pos) => sf.getLineAndCharacterOfPosition(pos).line + 1;
  const result = {errors: [], imports: [], exports: [], open: false};
  for (const d of sf.parseDiagnostics || []) {
    const where = sf.getLineAndCharacterOfPosition(d.start || 0);
    result.errors.push({line: where.line + 1, column: where.character + 1,
                        message: ts.flattenDiagnosticMessageText(d.messageText, ' ')});
  }
  for (const st of sf.statements) {
    const line = lineOf(st.getStart(sf));
    if (ts.isImportDeclaration(st)) {
      if (!ts.isStringLiteral(st.moduleSpecifier)) continue;
      const names = [];
      const clause = st.importClause;
      if (clause) {
        if (clause.name) names.push('default');
        const bindings = clause.namedBindings;
        if (bindings && ts.isNamedImports(bindings)) {
          for (const e of bindings.elements) names.push((e.propertyName || e.name).text);
        }
      }
      result.imports.push({from: st.moduleSpecifier.text, names, line});
    } else if (ts.isExportDeclaration(st)) {
      const clause = st.exportClause;
      if (st.moduleSpecifier && ts.isStringLiteral(st.moduleSpecifier)) {
        const names = [];
        if (clause && ts.isNamedExports(clause)) {
          for (const e of clause.elements) {
            names.push((e.propertyName || e.name).text);
            result.exports.push(e.name.text);
          }
        } else if (clause && ts.isNamespaceExport(clause)) {
          result.exports.push(clause.name.text);
        } else {
          result.open = true;  // export * from '...'
        }
        result.imports.push({from: st.moduleSpecifier.text, names, line});
      } else if (clause && ts.isNamedExports(clause)) {
        for (const e of clause.elements) result.exports.push(e.name.text);
      }
    } else if (ts.isExportAssignment(st)) {
      result.exports.push('default');
    } else if (hasModifier(st, ts.SyntaxKind.ExportKeyword)) {
      if (hasModifier(st, ts.SyntaxKind.DefaultKeyword)) {
        result.exports.push('default');
      } else if (ts.isVariableStatement(st)) {
        for (const d of st.declarationList.declarations) bindingNames(d.name, result.exports);
      } else if (st.name && (ts.isIdentifier(st.name) || ts.isStringLiteral(st.name))) {
        result.exports.push(st.name.text);
      }
    }
  }
  return result;
}
)JS";

constexpr const char* kPythonScript = R"PY(
import ast, json, sys

def check(f):
    result = {"errors": [], "imports": [], "exports": [], "open": False}
    try:
        tree = ast.parse(f["code"], filename=f["name"])
    except SyntaxError as e:
        result["errors"].append({"line": e.lineno or 0, "column": e.offset or 0,
                                 "message": e.msg})
        return result
    except (ValueError, RecursionError, MemoryError) as e:
        result["errors"].append({"line": 0, "column": 0, "message": str(e)})
        return result
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports.append((node.lineno, node.col_offset, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            module = "." * (node.level or 0) + (node.module or "")
            names = [a.name for a in node.names if a.name != "*"]
            imports.append((node.lineno, node.col_offset, module, names))
    imports.sort(key=lambda i: (i[0], i[1]))
    result["imports"] = [{"from": m, "names": n, "line": l} for l, _, m, n in imports]
    exports, explicit = [], None
    def add(name):
        if name not in exports:
            exports.append(name)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        add(n.id)
                        if n.id == "__all__" and isinstance(node, ast.Assign):
                            try:
                                explicit = [str(x) for x in ast.literal_eval(node.value)]
                            except Exception:
                                pass
        elif isinstance(node, ast.Import):
            for a in node.names:
                add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name == "*":
                    result["open"] = True
                else:
                    add(a.asname or a.name)
    result["exports"] = explicit if explicit is not None else exports
    return result

def safe_check(f):
    try:
        return check(f)
    except Exception as e:  # e.g. RecursionError while walking a very deep tree
        return {"errors": [], "imports": [], "exports": [], "open": True}

files = json.loads(sys.stdin.buffer.read().decode("utf-8", "replace"))
sys.stdout.write(json.dumps([safe_check(f) for f in files]))
)PY";

bool IsScriptLanguage(const std::string& language) {
  return language == "javascript" || language == "typescript";
}

std::string DefaultName(const std::string& language, std::size_t index) {
  std::string ext = language == "typescript" ? ".ts" : language == "python" ? ".py" : ".jsx";
  return "file" + std::to_string(index + 1) + ext;
}

}  // namespace

CodeChecker::CodeChecker(CodeCheckerOptions options) : options_(std::move(options)) {
  if (options_.node_path.empty()) {
    const char* env = std::getenv("FGNET_NODE_PATH");
    options_.node_path = env != nullptr && *env != '\0' ? env : FGNET_NODE_MODULES_DIR;
  }
}

std::vector<CodeChecker::FileFacts> CodeChecker::Check(const std::vector<CodeFile>& files,
                                                       std::vector<std::string>* skipped) const {
  std::vector<FileFacts> facts(files.size());
  struct Group {
    const char* label;  // "typescript" or "python"
    std::vector<std::size_t> indices;
  };
  Group script{"typescript", {}};
  Group python{"python", {}};
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::string language =
        files[i].language.empty() ? LanguageOfPath(files[i].path) : files[i].language;
    if (IsScriptLanguage(language)) script.indices.push_back(i);
    if (language == "python") python.indices.push_back(i);
  }
  auto note = [&](const std::string& text) {
    if (skipped != nullptr) skipped->push_back(text);
  };
  for (Group* group : {&script, &python}) {
    if (group->indices.empty()) continue;
    const bool is_python = group == &python;
    Json input = Json::array();
    for (std::size_t i : group->indices) {
      std::string language =
          files[i].language.empty() ? LanguageOfPath(files[i].path) : files[i].language;
      std::string name = files[i].path.empty() ? DefaultName(language, i) : files[i].path;
      // A JavaScript file without a JavaScript extension is parsed as JSX.
      if (!is_python && language == "javascript" && LanguageOfPath(name) != "javascript") {
        name += ".jsx";
      }
      if (!is_python && language == "typescript" && LanguageOfPath(name) != "typescript") {
        name += ".ts";
      }
      input.push_back(Json{{"name", name}, {"code", files[i].code}});
    }
    std::vector<std::string> argv;
    std::vector<std::pair<std::string, std::string>> env;
    const std::string& tool = is_python ? options_.python : options_.node;
    if (is_python) {
      argv = {tool, "-I", "-c", kPythonScript};
    } else {
      argv = {tool, "-e", kNodeScript};
      if (!options_.node_path.empty()) env.emplace_back("NODE_PATH", options_.node_path);
    }
    std::string prefix = std::string("syntax (") + group->label + "): ";
    auto run = RunProcess(argv, input.dump(-1, ' ', false, Json::error_handler_t::replace), env,
                          options_.timeout_ms);
    if (!run.ok()) {
      bool missing = run.error().message().find("not found") != std::string::npos;
      note(prefix + (missing ? tool + " not found" : run.error().message()));
      continue;
    }
    if (run->timed_out) {
      note(prefix + tool + " timed out after " + std::to_string(options_.timeout_ms) + " ms");
      continue;
    }
    Json output = Json::parse(run->stdout_text, nullptr, /*allow_exceptions=*/false);
    if (output.is_object() && output.contains("missing")) {
      note(prefix + "typescript not found (NODE_PATH " +
           (options_.node_path.empty() ? std::string("unset") : options_.node_path) + ")");
      continue;
    }
    if (run->exit_code != 0 || !output.is_array() || output.size() != group->indices.size()) {
      std::string err = run->stderr_text.substr(0, run->stderr_text.find('\n'));
      note(prefix + tool + " failed (exit code " + std::to_string(run->exit_code) + ")" +
           (err.empty() ? "" : ": " + err));
      continue;
    }
    for (std::size_t k = 0; k < group->indices.size(); ++k) {
      const std::size_t i = group->indices[k];
      const Json& r = output[k];
      FileFacts& f = facts[i];
      f.parsed = true;
      f.open_exports = r.value("open", false);
      for (const Json& e : r.value("errors", Json::array())) {
        ValidationIssue issue;
        issue.check = "syntax";
        issue.file = files[i].path;
        issue.line = e.value("line", std::int64_t{0});
        issue.column = e.value("column", std::int64_t{0});
        issue.message = e.value("message", std::string("syntax error"));
        f.syntax.push_back(std::move(issue));
      }
      for (const Json& imp : r.value("imports", Json::array())) {
        if (auto ref = ParseImportRef(imp)) f.imports.push_back(std::move(*ref));
      }
      for (const Json& name : r.value("exports", Json::array())) {
        if (name.is_string()) f.exports.push_back(name.get<std::string>());
      }
    }
  }
  return facts;
}

}  // namespace fgnet::network
