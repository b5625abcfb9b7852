#include "apps/fgnet/model_bench.h"

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "model/synth.h"
#include "util/rng.h"

namespace fgnet::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

constexpr std::uint64_t kPromptStream = 0xbe7c;

std::int32_t ArgMax(const std::vector<float>& v) {
  return static_cast<std::int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

}  // namespace

std::vector<std::int32_t> BenchPromptIds(std::int64_t n, std::int64_t vocab, std::uint64_t seed,
                                         std::uint64_t stream) {
  Philox rng(seed, stream);
  const std::int64_t first = vocab > 512 ? 256 : 0;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) {
    id = static_cast<std::int32_t>(
        first +
        static_cast<std::int64_t>(rng.NextU64() % static_cast<std::uint64_t>(vocab - first)));
  }
  return ids;
}

SynthesizedModel::~SynthesizedModel() {
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

Result<std::string> SynthesizedModel::Create(std::ostream& log) {
  std::string pattern = (std::filesystem::temp_directory_path() / "fgnet-bench-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) return Error("cannot create a temporary directory");
  dir_ = pattern;
  log << "synthesizing a random gemma-3-270m-shaped bf16 checkpoint in " << dir_ << "\n";
  FGNET_TRY(WriteRandomCheckpoint(Gemma3_270MConfig(), SynthOptions{}, dir_));
  return dir_;
}

std::uint64_t DecodeWeightBytes(const Gemma3Config& config, const Gemma3Weights& weights) {
  std::uint64_t bytes = weights.norm.num_bytes() + weights.lm_head.num_bytes();
  if (!config.tie_word_embeddings) {
    bytes += weights.embed_tokens.num_bytes() / static_cast<std::uint64_t>(config.vocab_size);
  }
  for (const Gemma3LayerWeights& l : weights.layers) {
    for (const TensorView* t :
         {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.q_norm, &l.k_norm,
          &l.post_attention_layernorm, &l.pre_feedforward_layernorm, &l.gate_proj, &l.up_proj,
          &l.down_proj, &l.post_feedforward_layernorm}) {
      bytes += t->num_bytes();
    }
  }
  return bytes;
}

std::uint64_t ModelWeightBytes(const Gemma3Config& config, const Gemma3Weights& weights) {
  std::uint64_t bytes = DecodeWeightBytes(config, weights);
  if (!config.tie_word_embeddings) {
    bytes += weights.embed_tokens.num_bytes() -
             weights.embed_tokens.num_bytes() / static_cast<std::uint64_t>(config.vocab_size);
  }
  return bytes;
}

Result<std::string> ModelDirOrSynthesized(const ParsedArgs& args, SynthesizedModel& synthesized,
                                          std::ostream& log) {
  if (auto model = args.OptString("model")) return *model;
  return synthesized.Create(log);
}

Result<ModelBenchResult> BenchModel(const Gemma3Model& model, const Gemma3Weights& weights,
                                    ThreadPool& pool, const ModelBenchOptions& options) {
  const Gemma3Config& config = model.config();
  const std::int64_t vocab = config.vocab_size;
  ModelBenchResult result;
  std::vector<float> logits;

  // Prefill: one Forward of the whole prompt on an empty cache, logits of the last token.
  const auto prompt = BenchPromptIds(options.prompt_tokens, vocab, options.seed, kPromptStream);
  KVCache prefill_cache = model.NewKVCache(options.prompt_tokens);
  double best_prefill = 0;
  for (int r = 0; r < options.repeat + 1; ++r) {  // the first run warms caches and pages
    prefill_cache.Clear();
    const auto t0 = Clock::now();
    FGNET_TRY(
        model.Forward(prompt, prefill_cache, pool, LogitsMode::kLast, &logits, options.adapters));
    const double s = Seconds(t0, Clock::now());
    if (r > 0) best_prefill = std::max(best_prefill, static_cast<double>(prompt.size()) / s);
  }
  result.prefill_tokens_per_s = best_prefill;

  // Decode: batch-1 steps after a prompt, feeding back the argmax.
  const auto decode_prompt =
      BenchPromptIds(options.decode_prompt, vocab, options.seed + 1, kPromptStream);
  KVCache cache = model.NewKVCache(options.decode_prompt + options.decode_tokens + 1);
  double best_rate = 0;
  std::vector<double> best_steps;
  for (int r = 0; r < options.repeat; ++r) {
    cache.Clear();
    FGNET_TRY(
        model.Forward(decode_prompt, cache, pool, LogitsMode::kLast, &logits, options.adapters));
    std::vector<double> steps;
    steps.reserve(static_cast<std::size_t>(options.decode_tokens));
    std::int32_t next = ArgMax(logits);
    const auto start = Clock::now();
    for (std::int64_t i = 0; i < options.decode_tokens; ++i) {
      const auto t0 = Clock::now();
      FGNET_TRY(
          model.Forward({&next, 1}, cache, pool, LogitsMode::kLast, &logits, options.adapters));
      next = ArgMax(logits);
      steps.push_back(Seconds(t0, Clock::now()));
    }
    const double rate = static_cast<double>(options.decode_tokens) / Seconds(start, Clock::now());
    if (rate > best_rate) {
      best_rate = rate;
      best_steps = std::move(steps);
    }
  }
  result.decode_tokens_per_s = best_rate;
  result.decode_ms_p50 = Percentile(best_steps, 0.50) * 1e3;
  result.decode_ms_p99 = Percentile(best_steps, 0.99) * 1e3;
  result.weight_bytes_per_token = DecodeWeightBytes(config, weights);
  result.decode_weight_gb_per_s =
      static_cast<double>(result.weight_bytes_per_token) * best_rate / 1e9;
  return result;
}

std::vector<Measurement> ModelMeasurements(const ModelBenchResult& r, const ModelBenchOptions& o,
                                           double read_bandwidth_gb_s) {
  const std::string best = "best of " + std::to_string(o.repeat);
  std::vector<Measurement> rows = {
      {"prefill", r.prefill_tokens_per_s, "tokens/s",
       std::to_string(o.prompt_tokens) + "-token prompt, empty cache, last-token logits, " + best},
      {"decode (batch 1)", r.decode_tokens_per_s, "tokens/s",
       std::to_string(o.decode_tokens) + " tokens after a " + std::to_string(o.decode_prompt) +
           "-token prompt, " + best},
      {"decode latency p50", r.decode_ms_p50, "ms/token", ""},
      {"decode latency p99", r.decode_ms_p99, "ms/token", ""},
      {"weights read per decoded token", static_cast<double>(r.weight_bytes_per_token) / 1e6, "MB",
       "every matrix once; the tied embedding once, as the output projection"},
      {"decode weight bandwidth", r.decode_weight_gb_per_s, "GB/s",
       "weights read per token x decode tokens/s"},
  };
  if (read_bandwidth_gb_s > 0) {
    rows.push_back(
        {"decode bandwidth / memory read bandwidth",
         100.0 * r.decode_weight_gb_per_s / read_bandwidth_gb_s, "%",
         "the better memory read bandwidth of this run: " + Fmt("%.1f GB/s", read_bandwidth_gb_s)});
  }
  return rows;
}

}  // namespace fgnet::cli
