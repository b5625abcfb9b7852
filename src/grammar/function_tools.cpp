// Grammar::FromFunctionTools: FunctionGemma call blocks for a list of declared tools.
//   output := block+
//   block  := <start_function_call> "call:" (NAME_1 ARGS_1 | ... | NAME_n ARGS_n)
//   <end_function_call>
// where ARGS_i is the function's parameters schema as an object in FunctionGemma's value syntax.
#include <algorithm>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "grammar/json_schema.h"
#include "grammar/nfa.h"
#include "grammar/value_syntax.h"
#include "tokenizer/function_call.h"
#include "tokenizer/text_util.h"

namespace fgnet {
namespace {

using grammar_detail::Fragment;
using grammar_detail::NfaBuilder;
using grammar_detail::OrderedJson;
using grammar_detail::Symbol;

// What ParseModelOutput reads as a function name: up to '{', whitespace, '<', '}' or '>'.
bool IsCallNameWritable(std::string_view name) {
  if (name.empty()) return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    return IsAsciiSpace(c) || c == '{' || c == '}' || c == '<' || c == '>';
  });
}

Result<Symbol> RequireSymbol(const TokenVocabulary& vocab, std::string_view name) {
  const std::optional<std::int32_t> s = vocab.FindSymbol(name);
  if (!s) {
    return MakeError("the vocabulary has no ", name,
                     " token (function calls need FunctionGemma's tokenizer)");
  }
  return grammar_detail::kFirstSpecialSymbol + *s;
}

// One "call:NAME{...}" fragment per tool.
Status CompileCalls(const Json& tools, grammar_detail::ValueWriter& writer,
                    std::vector<Fragment>* calls) {
  NfaBuilder& builder = writer.builder();
  std::vector<std::string> names;
  for (std::size_t i = 0; i < tools.size(); ++i) {
    const std::string path = "tools[" + std::to_string(i) + "]";
    const Json& tool = tools[i];
    if (!tool.is_object()) return MakeError(path, ": expected an object");
    const auto fn_it = tool.find("function");
    const bool wrapped = fn_it != tool.end();
    if (wrapped && !fn_it->is_object()) return MakeError(path, ".function: expected an object");
    const Json& fn = wrapped ? *fn_it : tool;
    const std::string fn_path = wrapped ? path + ".function" : path;
    const auto name_it = fn.find("name");
    if (name_it == fn.end() || !name_it->is_string()) {
      return MakeError(fn_path, ".name: expected a string");
    }
    const std::string name = name_it->get<std::string>();
    if (!IsCallNameWritable(name)) {
      return MakeError(fn_path, ".name: '", name,
                       "' is empty or holds whitespace, braces or angle brackets");
    }
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      return MakeError(fn_path, ".name: '", name, "' is declared twice");
    }
    names.push_back(name);
    const std::string params_path = fn_path + ".parameters";
    const auto params_it = fn.find("parameters");
    OrderedJson params = OrderedJson::object();
    if (params_it != fn.end() && !params_it->is_null()) params = OrderedJson(*params_it);
    grammar_detail::SchemaCompiler compiler(writer, params, params_path);
    FGNET_ASSIGN_OR_RETURN(const Fragment args, compiler.CompileObjectRoot(params, params_path));
    if (builder.overflowed()) {
      return MakeError(params_path, ": the grammar needs more than ", builder.max_states(),
                       " automaton states");
    }
    calls->push_back(builder.Concat(builder.Literal("call:" + name), args));
  }
  return Ok();
}

}  // namespace

Result<std::shared_ptr<const Grammar>> Grammar::FromFunctionTools(
    const Json& tools, std::shared_ptr<const TokenVocabulary> vocab, GrammarOptions options) {
  FGNET_CHECK(vocab != nullptr);
  FGNET_TRY(CheckOptions(options, "tools"));
  const Result<Symbol> start_call = RequireSymbol(*vocab, kStartFunctionCall);
  const Result<Symbol> end_call = RequireSymbol(*vocab, kEndFunctionCall);
  const Result<Symbol> escape = RequireSymbol(*vocab, kEscape);
  for (const Result<Symbol>* s : {&start_call, &end_call, &escape}) {
    if (!s->ok()) return s->error().WithContext("tools");
  }
  if (!tools.is_array() || tools.empty()) {
    return MakeError("tools: expected a non-empty list of tools");
  }
  // Deep documents would recurse deeply in the conversions below: refuse them first.
  if (!grammar_detail::NestingAtMost(tools, grammar_detail::kMaxDocumentDepth)) {
    return MakeError("tools: nested deeper than ", grammar_detail::kMaxDocumentDepth, " levels");
  }

  NfaBuilder builder(grammar_detail::kFirstSpecialSymbol + vocab->num_symbols(),
                     options.max_nfa_states);
  grammar_detail::ValueWriter writer(builder, grammar_detail::ValueSyntax::kFunctionGemma, *escape);
  std::vector<Fragment> calls;
  Status compiled = Ok();
  try {
    compiled = CompileCalls(tools, writer, &calls);
  } catch (const nlohmann::json::exception& e) {
    compiled = MakeError("tools: ", e.what());
  }
  if (!compiled.ok()) return grammar_detail::OneLine(compiled.error());
  const Fragment parts[] = {builder.SymbolRange(*start_call, *start_call), builder.Alternate(calls),
                            builder.SymbolRange(*end_call, *end_call)};
  const Fragment block = builder.Concat(parts);
  const Fragment root = builder.Plus(block);
  return Create(std::move(builder), root, std::move(vocab), std::move(options), "tools");
}

}  // namespace fgnet
