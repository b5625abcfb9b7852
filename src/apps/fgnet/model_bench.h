// Model throughput for `fgnet bench`: prefill tokens/s, batch-1 decode tokens/s with per-token
// latency percentiles, and the weight bandwidth a decode step achieves; and the random 270M
// checkpoint the benchmarks use when no model is given.
// Thread-safety: plain functions; a SynthesizedModel is one owner's.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "apps/fgnet/bench_report.h"
#include "apps/fgnet/cli_args.h"
#include "model/gemma3_model.h"
#include "model/weights.h"
#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet::cli {

// n random prompt ids for benchmarks from the Philox stream (seed, stream): uniform over the
// vocabulary past its first 256 (control) tokens when it has more than 512, else over all of it.
std::vector<std::int32_t> BenchPromptIds(std::int64_t n, std::int64_t vocab, std::uint64_t seed,
                                         std::uint64_t stream);

struct ModelBenchOptions {
  std::int64_t prompt_tokens = 512;  // prefill measurement
  std::int64_t decode_prompt = 128;  // prompt before the decode measurement
  std::int64_t decode_tokens = 128;
  int repeat = 3;          // best of
  std::uint64_t seed = 0;  // of the random prompt ids
  // The adapter set of the measured sequence (run-time LoRA).
  std::vector<AdapterUse> adapters;
};

struct ModelBenchResult {
  double prefill_tokens_per_s = 0;
  double decode_tokens_per_s = 0;
  double decode_ms_p50 = 0;
  double decode_ms_p99 = 0;
  std::uint64_t weight_bytes_per_token = 0;  // bytes of weights one decode step reads
  double decode_weight_gb_per_s = 0;         // weight_bytes_per_token * decode tokens/s
};

// Bytes of weights a decode step reads: every matrix and norm once (a tied embedding once, as the
// output projection), plus one embedding row.
std::uint64_t DecodeWeightBytes(const Gemma3Config& config, const Gemma3Weights& weights);

// Bytes of the model's weights as held in memory (a tied embedding counted once).
std::uint64_t ModelWeightBytes(const Gemma3Config& config, const Gemma3Weights& weights);

// A random checkpoint of the gemma-3-270m shapes in a temporary directory, made on request and
// removed with this object (the benchmarks' default model).
class SynthesizedModel {
 public:
  SynthesizedModel() = default;
  SynthesizedModel(const SynthesizedModel&) = delete;
  SynthesizedModel& operator=(const SynthesizedModel&) = delete;
  ~SynthesizedModel();
  // Writes the checkpoint (bf16) and returns its directory; says so on `log`.
  Result<std::string> Create(std::ostream& log);

 private:
  std::string dir_;
};

// --model's directory, or a SynthesizedModel made in `synthesized` when it is not given.
Result<std::string> ModelDirOrSynthesized(const ParsedArgs& args, SynthesizedModel& synthesized,
                                          std::ostream& log);

Result<ModelBenchResult> BenchModel(const Gemma3Model& model, const Gemma3Weights& weights,
                                    ThreadPool& pool, const ModelBenchOptions& options);

// Report rows for `result`; `read_bandwidth_gb_s` (0 when not measured) adds the decode
// bandwidth as a fraction of the machine's.
std::vector<Measurement> ModelMeasurements(const ModelBenchResult& result,
                                           const ModelBenchOptions& options,
                                           double read_bandwidth_gb_s);

}  // namespace fgnet::cli
