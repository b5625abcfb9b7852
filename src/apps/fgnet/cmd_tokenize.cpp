// `fgnet tokenize`: encode (or decode) JSON Lines with a tokenizer.json.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace fgnet::cli {
namespace {

// One output line for one input line; errors name the line.
Result<std::string> ProcessLine(const Tokenizer& tokenizer, const std::string& line, bool decode,
                                const std::string& where) {
  FGNET_ASSIGN_OR_RETURN(Json in, ParseJson(line, where));
  if (!in.is_object()) return MakeError(where, ": expected a JSON object");
  if (decode) {
    const auto it = in.find("ids");
    if (it == in.end() || !it->is_array()) {
      return MakeError(where, ": expected {\"ids\": [...]}");
    }
    std::vector<std::int32_t> ids;
    for (const Json& id : *it) {
      if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
          id.get<std::int64_t>() >= tokenizer.vocab_size()) {
        return MakeError(where, ": 'ids' holds ", id.dump(), ", not a token id in [0, ",
                         tokenizer.vocab_size(), ")");
      }
      ids.push_back(id.get<std::int32_t>());
    }
    return Json{{"text", tokenizer.Decode(ids)}}.dump();
  }
  const auto it = in.find("text");
  if (it == in.end() || !it->is_string()) {
    return MakeError(where, ": expected {\"text\": \"...\"}");
  }
  return Json{{"ids", tokenizer.Encode(it->get<std::string>())}}.dump();
}

Status RunTokenize(const ParsedArgs& args, CommandIo& io) {
  FGNET_ASSIGN_OR_RETURN(const Tokenizer tokenizer, Tokenizer::Load(args.String("tokenizer")));
  const std::string& path = args.String("jsonl");
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    file.open(path);
    if (!file) return MakeError(path, ": cannot open");
    in = &file;
  }
  const std::string name = path == "-" ? "<stdin>" : path;
  const bool decode = args.Switch("decode");
  std::string line;
  for (std::int64_t number = 1; std::getline(*in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    FGNET_ASSIGN_OR_RETURN(
        std::string out, ProcessLine(tokenizer, line, decode, name + ":" + std::to_string(number)));
    io.out << out << '\n';
  }
  if (in->bad()) return MakeError(name, ": read error");
  return Ok();
}

}  // namespace

void AddTokenizeCommand(App& app) {
  CommandSpec& c =
      app.AddCommand("tokenize", "Encode or decode JSON Lines with a tokenizer.json.", RunTokenize);
  c.Description(
      "Each input line is a JSON object {\"text\": \"...\"}; each output line is {\"ids\": "
      "[...]}, the token ids of the text with no BOS or EOS added. With --decode, input lines are "
      "{\"ids\": [...]} and output lines {\"text\": \"...\"}. Blank lines are skipped; a bad line "
      "stops the run with an error naming it.");
  c.AddString("tokenizer", "PATH", "tokenizer.json, or a directory that holds one.").Required();
  c.AddString("jsonl", "FILE", "Input JSON Lines file; - reads standard input.").Required();
  c.AddSwitch("decode", "Decode ids to text instead of encoding text.");
  c.Example("--tokenizer functiongemma-270m-it --jsonl prompts.jsonl > ids.jsonl");
  c.Example("--tokenizer tokenizer.json --jsonl - --decode < ids.jsonl");
}

}  // namespace fgnet::cli
