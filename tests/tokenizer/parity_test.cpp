// Parity with the `tokenizers` library (reference files made by tools/make_tokenizer_reference.py
// from tests/fixtures/tokenizer/corpus.jsonl): exact ids for every corpus line, decodes with and
// without special tokens, Decode(Encode(text)) round trips and streaming decodes.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace fgnet {
namespace {

using testing::FunctionGemmaTokenizer;
using testing::Gemma3Tokenizer;
using testing::ReadFixtureJsonl;

std::string Streamed(const Tokenizer& tok, const std::vector<std::int32_t>& ids, bool skip) {
  StreamDecoder stream(tok, skip);
  std::string out;
  for (const std::int32_t id : ids) out += stream.Push(id);
  out += stream.Flush();
  return out;
}

std::string DescribeMismatch(const Tokenizer& tok, const std::vector<std::int32_t>& got,
                             const std::vector<std::int32_t>& want) {
  std::size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  auto describe = [&](const std::vector<std::int32_t>& ids) {
    if (i >= ids.size()) return std::string("<end>");
    return std::to_string(ids[i]) + " '" + std::string(tok.IdToToken(ids[i])) + "'";
  };
  return "first difference at token " + std::to_string(i) + ": got " + describe(got) +
         ", tokenizers has " + describe(want) + " (" + std::to_string(got.size()) + " vs " +
         std::to_string(want.size()) + " tokens)";
}

void CheckCorpus(const Tokenizer& tok, const char* reference_name, const char* label) {
  const std::vector<Json> corpus = ReadFixtureJsonl("corpus.jsonl");
  const std::vector<Json> reference = ReadFixtureJsonl(reference_name);
  ASSERT_FALSE(corpus.empty());
  ASSERT_EQ(corpus.size(), reference.size()) << reference_name << " does not match corpus.jsonl";
  std::size_t exact = 0;
  std::size_t tokens = 0;
  int reported = 0;
  for (std::size_t i = 0; i < corpus.size(); ++i) {
    const std::string text = corpus[i]["text"].get<std::string>();
    const auto want = reference[i]["ids"].get<std::vector<std::int32_t>>();
    const std::string decoded = reference[i]["decoded"].get<std::string>();
    const std::string decoded_skip = reference[i]["decoded_skip"].get<std::string>();
    tokens += want.size();
    const std::vector<std::int32_t> got = tok.Encode(text);
    if (got == want) {
      ++exact;
    } else if (reported++ < 10) {
      ADD_FAILURE() << label << " corpus line " << i + 1 << ": "
                    << DescribeMismatch(tok, got, want);
    }
    EXPECT_EQ(tok.Decode(want), decoded) << label << " line " << i + 1;
    EXPECT_EQ(tok.Decode(want, /*skip_special=*/true), decoded_skip) << label << " line " << i + 1;
    // Round trip: only U+2581 in the text does not come back (it decodes as a space).
    const std::string round_trip = tok.Decode(got);
    EXPECT_EQ(round_trip, decoded) << label << " line " << i + 1;
    if (text.find("\u2581") == std::string::npos) {
      EXPECT_EQ(round_trip, text) << label << " line " << i + 1;
    }
    EXPECT_EQ(Streamed(tok, want, false), decoded) << label << " line " << i + 1;
    EXPECT_EQ(Streamed(tok, want, true), decoded_skip) << label << " line " << i + 1;
  }
  std::printf("%s: %zu of %zu corpus lines encode exactly as tokenizers (%zu tokens)\n", label,
              exact, corpus.size(), tokens);
  EXPECT_EQ(exact, corpus.size());
}

// Id sequences that Encode never produces (invalid byte runs, specials between bytes, ids past
// the vocabulary) decode as tokenizers decodes them.
void CheckDecodeCases(const Tokenizer& tok, const char* label) {
  const std::vector<Json> cases = ReadFixtureJsonl("decode_cases.jsonl");
  const std::vector<Json> reference = ReadFixtureJsonl("decode_reference.jsonl");
  ASSERT_FALSE(cases.empty());
  ASSERT_EQ(cases.size(), reference.size());
  std::size_t checked = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto ids = cases[i]["ids"].get<std::vector<std::int32_t>>();
    for (const bool skip : {false, true}) {
      const Json& text = reference[i][label][skip ? 1 : 0];
      if (text.is_null()) continue;  // tokenizers raised (not expected with these cases)
      EXPECT_EQ(tok.Decode(ids, skip), text.get<std::string>())
          << label << " decode case " << i + 1 << " skip_special=" << skip;
      ++checked;
    }
  }
  EXPECT_EQ(checked, cases.size() * 2);
}

// Lines of a larger seeded random corpus with the ids of tokenizers (see the fixtures' README).
void CheckStressSample(const Tokenizer& tok) {
  const std::vector<Json> sample = ReadFixtureJsonl("stress_sample_gemma3.jsonl");
  ASSERT_FALSE(sample.empty());
  std::size_t exact = 0;
  for (const Json& line : sample) {
    const auto want = line["ids"].get<std::vector<std::int32_t>>();
    const std::vector<std::int32_t> got = tok.Encode(line["text"].get<std::string>());
    if (got == want) {
      ++exact;
    } else {
      ADD_FAILURE() << "stress line " << line["line"] << ": " << DescribeMismatch(tok, got, want);
    }
  }
  std::printf("gemma3: %zu of %zu stress sample lines encode exactly as tokenizers\n", exact,
              sample.size());
}

TEST(TokenizerParity, Gemma3MatchesTokenizers) {
  const Tokenizer* tok = Gemma3Tokenizer();
  ASSERT_NE(tok, nullptr);
  CheckCorpus(*tok, "reference_gemma3.jsonl", "gemma3");
  CheckDecodeCases(*tok, "gemma3");
  CheckStressSample(*tok);
}

TEST(TokenizerParity, FunctionGemmaMatchesTokenizers) {
  const Tokenizer* tok = FunctionGemmaTokenizer();
  ASSERT_NE(tok, nullptr);
  CheckCorpus(*tok, "reference_functiongemma.jsonl", "functiongemma");
  CheckDecodeCases(*tok, "functiongemma");
}

}  // namespace
}  // namespace fgnet
