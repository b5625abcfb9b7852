// Load rejects what it does not implement, and malformed files, with one-line errors that name
// the file and the JSON path.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "mini_tokenizer.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace fgnet {
namespace {

using testing::MiniTokenizerJson;

std::string TempDir(const std::string& name) {
  // Per process: ctest runs tests of this binary concurrently, and rewriting a file another
  // process has mapped would pull it from under that process.
  const std::string dir =
      ::testing::TempDir() + "/fgnet_tokenizer_" + std::to_string(::getpid()) + "_" + name;
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Loads the mini tokenizer after `edit`, and returns the error message ("" when it loads).
std::string LoadError(const std::function<void(Json&)>& edit) {
  Json j = MiniTokenizerJson();
  edit(j);
  const std::string path = TempDir("edit") + "/tokenizer.json";
  WriteFile(path, j.dump());
  auto tok = Tokenizer::Load(path);
  if (tok.ok()) return "";
  const std::string& msg = tok.error().message();
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "does not start with the path: " << msg;
  return msg.substr(path.size() + 2);
}

TEST(TokenizerLoad, MiniTokenizerLoadsFromAFileOrItsDirectory) {
  EXPECT_EQ(LoadError([](Json&) {}), "");
  const std::string dir = TempDir("dir");
  WriteFile(dir + "/tokenizer.json", MiniTokenizerJson().dump());
  auto tok = Tokenizer::Load(dir);
  ASSERT_TRUE(tok.ok()) << tok.error().message();
  EXPECT_EQ(tok->vocab_size(), 272);
}

TEST(TokenizerLoad, MissingFileOrDirectoryWithoutTokenizerJson) {
  auto missing = Tokenizer::Load("/nonexistent/fgnet/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message().rfind("/nonexistent/fgnet/tokenizer.json: cannot open", 0),
            0u)
      << missing.error().message();
  const std::string empty_dir = TempDir("empty");
  std::filesystem::remove(empty_dir + "/tokenizer.json");
  auto in_dir = Tokenizer::Load(empty_dir);
  ASSERT_FALSE(in_dir.ok());
  EXPECT_NE(in_dir.error().message().find(empty_dir + "/tokenizer.json"), std::string::npos);
}

TEST(TokenizerLoad, MalformedJson) {
  const std::string dir = TempDir("malformed");
  const std::string text = MiniTokenizerJson().dump();
  for (const std::string& bad : {text.substr(0, text.size() / 2), std::string(""),
                                 std::string("{\"model\": {\"vocab\": {\"a\": 1,}}}"),
                                 std::string("[1, 2]"), std::string("\"just a string\"")}) {
    const std::string path = dir + "/tokenizer.json";
    WriteFile(path, bad);
    auto tok = Tokenizer::Load(path);
    ASSERT_FALSE(tok.ok()) << bad;
    const std::string& msg = tok.error().message();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  WriteFile(dir + "/tokenizer.json", text.substr(0, text.size() - 1));
  auto cut = Tokenizer::Load(dir + "/tokenizer.json");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().message().find("invalid JSON at byte"), std::string::npos)
      << cut.error().message();
}

TEST(TokenizerLoad, TruncatedRealTokenizer) {
  const std::string text = testing::ReadFileOrFail(testing::NpmTokenizerPath());
  ASSERT_FALSE(text.empty()) << "run scripts/setup.sh";
  auto tok = Tokenizer::FromJson(std::string_view(text).substr(0, 2 << 20),  // inside model.vocab
                                 "gemma3/tokenizer.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.error().message().rfind("gemma3/tokenizer.json: invalid JSON at byte", 0), 0u)
      << tok.error().message();
}

TEST(TokenizerLoad, RejectsUnsupportedModels) {
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["type"] = "WordPiece"; }),
            "model.type: 'WordPiece' is not supported (only BPE)");
  EXPECT_EQ(LoadError([](Json& j) {
              j["model"]["type"] = "Unigram";
              j["model"]["vocab"] = Json::array();
            }),
            "model.type: 'Unigram' is not supported (only BPE)");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["dropout"] = 0.1; }),
            "model.dropout: BPE dropout is not supported");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["continuing_subword_prefix"] = "##"; }),
            "model.continuing_subword_prefix: a continuing subword prefix is not supported");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["ignore_merges"] = true; }),
            "model.ignore_merges: only false is supported");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["frobnicate"] = 1; }),
            "model.frobnicate: unknown field (not supported)");
  EXPECT_EQ(LoadError([](Json& j) { j.erase("model"); }), "model: missing");
}

TEST(TokenizerLoad, RejectsBadVocabulariesAndMerges) {
  EXPECT_EQ(LoadError([](Json& j) { j["model"].erase("vocab"); }), "model.vocab: missing");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["vocab"] = Json::array({"a"}); }),
            "model.vocab: expected an object token -> id");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["vocab"]["zz"] = "7"; }),
            "model.vocab: the id of token 'zz' is not an integer");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["vocab"]["zz"] = 5; }),
            "model.vocab: id 5 is given to both '<0x01>' and 'zz'");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["vocab"]["zz"] = -2; }),
            "model.vocab: token 'zz' has id -2, outside [0, 2^31 - 1)");
  EXPECT_EQ(LoadError([](Json& j) {
              j["model"]["merges"].push_back(Json::array({"a", "q"}));
            }),
            "model.merges[5]: token 'q' is not in model.vocab");
  EXPECT_EQ(LoadError([](Json& j) {
              j["model"]["merges"][0] = Json::array({"b", "a"});
            }),
            "model.merges[0]: token 'ba' is not in model.vocab");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["merges"][1] = Json::array({"a"}); }),
            "model.merges[1]: expected a pair of strings [\"left\", \"right\"] or \"left right\"");
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["unk_token"] = "<nope>"; }),
            "model.unk_token: '<nope>' is not in model.vocab");
  // The older "left right" form of merges is accepted.
  EXPECT_EQ(LoadError([](Json& j) { j["model"]["merges"] = Json::array({"a b", "ab c"}); }), "");
}

TEST(TokenizerLoad, RejectsUnsupportedPipelineParts) {
  EXPECT_EQ(LoadError([](Json& j) {
              j["normalizer"] = {{"type", "NFKC"}};
            }),
            "normalizer.type: 'NFKC' is not supported (only Replace or null)");
  EXPECT_EQ(LoadError([](Json& j) {
              j["normalizer"]["pattern"] = {{"Regex", " +"}};
            }),
            "normalizer.pattern: only {\"String\": ...} patterns are supported");
  EXPECT_EQ(LoadError([](Json& j) {
              j["pre_tokenizer"] = {{"type", "Whitespace"}};
            }),
            "pre_tokenizer.type: 'Whitespace' is not supported (only Split or null)");
  EXPECT_EQ(LoadError([](Json& j) { j["pre_tokenizer"]["behavior"] = "Isolated"; }),
            "pre_tokenizer.behavior: 'Isolated' is not supported (only MergedWithPrevious)");
  EXPECT_EQ(LoadError([](Json& j) { j["pre_tokenizer"]["invert"] = true; }),
            "pre_tokenizer.invert: only false is supported");
  EXPECT_EQ(LoadError([](Json& j) {
              j["decoder"]["decoders"][1] = {{"type", "Strip"}};
            }),
            "decoder.decoders[1].type: 'Strip' is not supported (only Replace, ByteFallback, "
            "Fuse or a Sequence of them)");
  EXPECT_EQ(LoadError([](Json& j) { j["decoder"] = nullptr; }),
            "decoder: missing (a decoder is required)");
  EXPECT_EQ(LoadError([](Json& j) {
              j["truncation"] = {{"max_length", 8}};
            }),
            "truncation: truncation is not supported");
  EXPECT_EQ(LoadError([](Json& j) {
              j["padding"] = {{"strategy", "BatchLongest"}};
            }),
            "padding: padding is not supported");
  EXPECT_EQ(LoadError([](Json& j) { j["extra"] = 1; }), "extra: unknown field (not supported)");
}

TEST(TokenizerLoad, RejectsUnsupportedAddedTokens) {
  EXPECT_EQ(LoadError([](Json& j) { j["added_tokens"][4]["lstrip"] = true; }),
            "added_tokens[4].lstrip: true is not supported (token '\\n')");
  EXPECT_EQ(LoadError([](Json& j) { j["added_tokens"][0]["single_word"] = true; }),
            "added_tokens[0].single_word: true is not supported (token '<pad>')");
  EXPECT_EQ(LoadError([](Json& j) { j["added_tokens"][0]["normalized"] = true; }),
            "added_tokens[0].normalized: true is not supported (token '<pad>')");
  EXPECT_EQ(LoadError([](Json& j) { j["added_tokens"][1]["id"] = 7; }),
            "added_tokens[1].id: '<eos>' has id 7 but is loaded as id 1 (its id in model.vocab)");
  EXPECT_EQ(LoadError([](Json& j) {
              j["added_tokens"].push_back({{"id", 300}, {"content", "<x>"}, {"normalized", false}});
            }),
            "added_tokens[7].id: '<x>' has id 300 but is loaded as id 272 (the next free id)");
  EXPECT_EQ(LoadError([](Json& j) { j["added_tokens"].push_back(j["added_tokens"][0]); }),
            "added_tokens[7]: '<pad>' is given twice");
  EXPECT_EQ(LoadError([](Json& j) { j["added_tokens"][0]["content"] = ""; }),
            "added_tokens[0].content: empty");
}

}  // namespace
}  // namespace fgnet
