// Serving measurements for `fgnet bench-serve`, taken through the Engine (continuous batching
// over paged KV):
//   - aggregate decode tokens/s with N concurrent sequences, each with its own random rank-R
//     adapter on every projection, against the same batch on the base model (the adapters'
//     overhead). Decode throughput = tokens generated between the moment every sequence has its
//     first token and the moment all have finished, over that time (prefill excluded); greedy,
//     no stop ids, so every sequence generates exactly decode_tokens;
//   - time to first token of a prompt made of a long shared prefix plus a short suffix: cold
//     (empty prefix cache), with the prefix in the prefix cache, and after a pinned prefix
//     (Engine::CreatePrefix);
//   - KV memory per sequence at a given context length: the blocks the running sequences hold
//     (EngineMetrics, sampled once every sequence has its first token) x the bytes of a block;
//   - with a tokenizer, the cost of constrained decoding: the mean time to mask the logits of one
//     token (EngineMetrics::grammar_mask_ms / grammar_masks) for sequences under a JSON Schema,
//     on a fresh grammar (each new automaton state walks the vocabulary) and then a warm one.
// Prompts are random token ids (no tokenizer is needed).
// Thread-safety: plain functions; the engine is used from the calling thread.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "apps/fgnet/bench_report.h"
#include "engine/engine.h"
#include "model/gemma3_model.h"
#include "util/status.h"

namespace fgnet::cli {

struct ServeBenchOptions {
  std::vector<std::int64_t> concurrency = {1, 4, 16, 64};
  std::int64_t lora_rank = 16;      // 0: no adapter runs
  std::int64_t prompt_tokens = 16;  // per sequence of the decode runs
  std::int64_t decode_tokens = 64;  // generated per sequence (>= 2)
  std::int64_t prefix_tokens = 2048;
  std::int64_t suffix_tokens = 16;
  std::int64_t context_tokens = 1024;  // 0: no KV measurement
  std::int64_t kv_sequences = 4;
  std::int64_t grammar_sequences = 4;  // 0: no grammar measurement
  bool grammar = false;                // the engine has a tokenizer (grammars need one)
  int repeat = 1;                      // best of
  std::uint64_t seed = 0;
};

struct DecodeThroughput {
  std::int64_t sequences = 0;
  double base_tokens_per_s = 0;
  double adapter_tokens_per_s = 0;  // 0 without adapters
  // The engine's own time a step of the fastest base run, outside the model's forward passes (us).
  double base_scheduler_us = 0;
  // Extra decode time the adapters cost: base / adapter - 1, in percent.
  double overhead_percent() const {
    return adapter_tokens_per_s > 0 ? 100.0 * (base_tokens_per_s / adapter_tokens_per_s - 1.0)
                                    : 0.0;
  }
};

struct ServeBenchResult {
  std::vector<DecodeThroughput> decode;
  double ttft_cold_ms = 0;
  double ttft_cached_ms = 0;
  double ttft_pinned_ms = 0;
  std::int64_t cached_prompt_tokens = 0;  // of the cached run
  double kv_blocks_per_sequence = 0;      // mean blocks held per running sequence
  double kv_bytes_per_sequence = 0;
  double kv_exact_bytes = 0;  // the bytes of exactly the positions a sequence needs
  std::int64_t block_bytes = 0;
  bool grammar_measured = false;
  double grammar_mask_ms_first = 0;  // mean per masked token, fresh grammar
  double grammar_mask_ms_warm = 0;   // mean per masked token, the same grammar again
  std::uint64_t grammar_masks = 0;   // masks of the first run
};

// The name of random benchmark adapter i ("serve-bench-<i>"), a greedy request without stop ids
// of its own, and a completion's failure as an error naming `what`.
std::string BenchAdapterName(std::int64_t i);
Request GreedyRequest(std::vector<std::int32_t> prompt, std::int64_t max_tokens);
Status CompletionStatus(const Completion& c, std::string_view what);

// The KV pool (MiB) of a serving benchmark without one set: the engine's default for `engine`, or
// room for the largest decode run's sequences whole (prompt, new tokens and a block of slack
// each; at most max_running of them decode at once) where that is more, so that the figure for N
// sequences is of N sequences decoding, not of their preemption and recomputation.
std::int64_t ServeBenchKVMemoryMiB(const Gemma3Config& config, const EngineOptions& engine,
                                   const ServeBenchOptions& o);

// Runs every measurement on `engine`, whose stop ids must be empty. `registry` is the engine's
// (random adapters "serve-bench-<i>" are added to it when lora_rank > 0); `log` gets progress.
Result<ServeBenchResult> RunServeBench(Engine& engine, const Gemma3Config& config,
                                       AdapterRegistry* registry, const ServeBenchOptions& options,
                                       std::ostream& log);

// Report rows.
std::vector<Measurement> ServeMeasurements(const ServeBenchResult& result,
                                           const ServeBenchOptions& options,
                                           const EngineOptions& engine_options);

}  // namespace fgnet::cli
