#include "apps/fgnet/device_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "apps/fgnet/model_bench.h"
#include "engine/engine.h"
#include "kv/block_pool.h"
#include "model/synth.h"

namespace fgnet::cli {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kMiB = 1024.0 * 1024.0;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto at = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1;
  return v[std::min(at, v.size() - 1)];
}

Result<std::unique_ptr<Engine>> NewEngine(const Model& model, AdapterRegistry& registry,
                                          EngineOptions options) {
  options.stop_ids.clear();  // every sequence generates exactly what it asks for
  return Engine::Create(model, "device-bench", nullptr, &registry, options);
}

// One greedy sequence: tokens/s over its decode steps and the gaps between streamed tokens.
Status MeasureSingleDecode(Engine& engine, const Gemma3Config& config, const DeviceBenchOptions& o,
                           std::ostream& log, DeviceBenchResult* result) {
  log << "batch-1 decode: " << o.decode_prompt << "-token prompt, " << o.decode_tokens
      << " new tokens\n";
  std::vector<double> rates, p50s, p99s;
  for (int r = 0; r <= o.repeat; ++r) {  // run 0 warms up
    RequestHandle h = engine.Submit(
        GreedyRequest(BenchPromptIds(o.decode_prompt, config.vocab_size, o.seed + 10 + r, 0xdec0),
                      o.decode_tokens));
    std::vector<Clock::time_point> at;
    StreamEvent event;
    while (h.Next(&event)) at.push_back(Clock::now());
    FGNET_TRY(CompletionStatus(h.Wait(), "the batch-1 decode request"));
    if (static_cast<std::int64_t>(at.size()) != o.decode_tokens || at.size() < 2)
      return MakeError("the batch-1 decode request streamed ", at.size(), " tokens");
    if (r == 0) continue;
    std::vector<double> gaps;
    for (std::size_t i = 1; i < at.size(); ++i)
      gaps.push_back(std::chrono::duration<double, std::milli>(at[i] - at[i - 1]).count());
    const double seconds = std::chrono::duration<double>(at.back() - at.front()).count();
    rates.push_back(static_cast<double>(gaps.size()) / seconds);
    p50s.push_back(Percentile(gaps, 0.50));
    p99s.push_back(Percentile(gaps, 0.99));
  }
  result->decode_tokens_per_s = *std::max_element(rates.begin(), rates.end());
  result->decode_ms_p50 = Percentile(p50s, 0.5);
  result->decode_ms_p99 = Percentile(p99s, 0.5);
  return Ok();
}

// One cold prompt of prefill_tokens: its tokens over the time to its first token.
Status MeasurePrefill(Engine& engine, const Gemma3Config& config, const DeviceBenchOptions& o,
                      std::ostream& log, DeviceBenchResult* result) {
  log << "prefill: " << o.prefill_tokens << " tokens\n";
  double best = 0;
  for (int r = 0; r <= o.repeat; ++r) {
    engine.FlushPrefixCache();
    RequestHandle h = engine.Submit(GreedyRequest(
        BenchPromptIds(o.prefill_tokens, config.vocab_size, o.seed + 20 + r, 0xf111), 1));
    const Completion& c = h.Wait();
    FGNET_TRY(CompletionStatus(c, "the prefill request"));
    if (r == 0 || c.timings.time_to_first_token_ms <= 0) continue;
    best = std::max(
        best, static_cast<double>(o.prefill_tokens) / (c.timings.time_to_first_token_ms / 1000.0));
  }
  result->prefill_tokens_per_s = best;
  engine.FlushPrefixCache();
  return Ok();
}

// KV blocks one sequence of `context` positions holds at most.
std::int64_t BlocksPerSequence(const kv::KVLayout& layout, std::int64_t context) {
  const std::int64_t b = layout.block_size;
  std::int64_t blocks = 0;
  for (bool sliding : layout.group_sliding) {
    const std::int64_t all = (context + b - 1) / b;
    blocks += sliding ? std::min(all, (layout.window - 1) / b + 2) : all;
  }
  return blocks;
}

// The 8-expert network: a pool of `kv_dtype` blocks sized for experts x expert_context
// positions, every expert's sequence filled to that length under its own adapter by an engine
// with the default options (so the pass buffers counted are those of its default 512-token
// steps). `before`: the model's device bytes before the first network ran (its weights).
Status MeasureNetworkMemory(const Model& model, AdapterRegistry& registry,
                            const DeviceBenchOptions& o, DType kv_dtype, std::size_t before,
                            std::ostream& log, DeviceBenchResult* result) {
  const Gemma3Config& config = model.config();
  log << "network memory: " << o.experts << " experts x " << o.expert_context << " tokens, "
      << DTypeName(kv_dtype) << " KV\n";
  EngineOptions e;
  e.block_size = 16;
  e.kv_dtype = kv_dtype;
  const kv::KVLayout layout = kv::KVLayout::ForConfig(config, e.block_size, kv_dtype);
  e.kv_blocks = o.experts * BlocksPerSequence(layout, o.expert_context);
  e.prefix_cache = false;
  FGNET_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, NewEngine(model, registry, e));
  std::vector<RequestHandle> handles;
  for (std::int64_t i = 0; i < o.experts; ++i) {
    Request r = GreedyRequest(
        BenchPromptIds(o.expert_context - 1, config.vocab_size, o.seed + 30 + i, 0x8e7), 1);
    r.adapters = {{BenchAdapterName(i), 1.0f}};
    handles.push_back(engine->Submit(std::move(r)));
  }
  for (RequestHandle& h : handles)
    FGNET_TRY(CompletionStatus(h.Wait(), "a network memory request"));
  DeviceBenchResult::Network n;
  n.kv_dtype = kv_dtype;
  n.weights_mib = static_cast<double>(before) / kMiB;
  n.adapters_mib = static_cast<double>(model.device_bytes() - before) / kMiB;
  n.kv_mib = static_cast<double>(e.kv_blocks) * static_cast<double>(layout.block_bytes()) / kMiB;
  result->networks.push_back(n);
  return Ok();
}

}  // namespace

Result<DeviceBenchResult> RunDeviceBench(const Model& model, AdapterRegistry& registry,
                                         const DeviceBenchOptions& o, std::ostream& log) {
  const Gemma3Config& config = model.config();
  DeviceBenchResult result;
  result.device = model.device_name();
  std::int64_t most = o.experts;
  for (std::int64_t n : o.concurrency) most = std::max(most, n);
  if (o.lora_rank > 0) {
    log << "making " << most << " random rank-" << o.lora_rank << " adapters\n";
    for (std::int64_t i = 0; i < most; ++i) {
      if (registry.Find(BenchAdapterName(i)) != nullptr) continue;
      FGNET_TRY(registry.Add(RandomLoraAdapter(config, static_cast<std::size_t>(o.lora_rank),
                                               o.seed + 100 + static_cast<std::uint64_t>(i),
                                               BenchAdapterName(i))));
    }
  }
  // First, while the model holds only its weights.
  if (o.experts > 0 && o.lora_rank > 0) {
    const std::size_t before = model.device_bytes();
    for (DType kv_dtype : {DType::kF32, DType::kBF16}) {
      if (model.SupportsKVType(kv_dtype))
        FGNET_TRY(MeasureNetworkMemory(model, registry, o, kv_dtype, before, log, &result));
    }
  }

  EngineOptions e;
  e.max_batch_tokens = std::max<std::int64_t>(o.prefill_tokens, o.prefix_tokens + o.suffix_tokens);
  e.max_running = 256;
  // Every prompt plus what it generates (one token for the first-token measurements).
  e.max_context = std::max<std::int64_t>({o.decode_prompt + o.decode_tokens, o.prefill_tokens + 1,
                                          o.prefix_tokens + o.suffix_tokens + 1,
                                          o.batch_prompt + o.decode_tokens});
  e.kv_memory_mib = 2048;
  e.kv_dtype = o.kv_dtype;
  FGNET_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, NewEngine(model, registry, e));
  FGNET_TRY(MeasureSingleDecode(*engine, config, o, log, &result));
  FGNET_TRY(MeasurePrefill(*engine, config, o, log, &result));
  ServeBenchOptions s;
  s.concurrency = o.concurrency;
  s.lora_rank = o.lora_rank;
  s.prompt_tokens = o.batch_prompt;
  s.decode_tokens = o.decode_tokens;
  s.prefix_tokens = o.prefix_tokens;
  s.suffix_tokens = o.suffix_tokens;
  s.context_tokens = 0;
  s.grammar_sequences = 0;
  s.repeat = std::min(o.repeat, 2);
  s.seed = o.seed;
  FGNET_ASSIGN_OR_RETURN(result.serve, RunServeBench(*engine, config, &registry, s, log));
  return result;
}

std::vector<Measurement> DeviceMeasurements(const DeviceBenchResult& r,
                                            const DeviceBenchOptions& o) {
  std::vector<Measurement> out;
  const std::string on = "on " + r.device;
  out.push_back({"batch-1 decode", r.decode_tokens_per_s, "tokens/s",
                 std::to_string(o.decode_prompt) + "-token prompt, " +
                     std::to_string(o.decode_tokens) + " new tokens, greedy, best of " +
                     std::to_string(o.repeat) + ", " + on});
  out.push_back({"batch-1 decode latency p50", r.decode_ms_p50, "ms/token", on});
  out.push_back({"batch-1 decode latency p99", r.decode_ms_p99, "ms/token", on});
  out.push_back({"prefill", r.prefill_tokens_per_s, "tokens/s",
                 std::to_string(o.prefill_tokens) + "-token prompt, KV writes included, " + on});
  for (const DecodeThroughput& d : r.serve.decode) {
    const std::string n = std::to_string(d.sequences);
    out.push_back({"decode, " + n + " sequences", d.base_tokens_per_s, "tokens/s",
                   "aggregate, no adapters, " + on});
    if (d.adapter_tokens_per_s > 0) {
      out.push_back(
          {"decode, " + n + " sequences x " + n + " adapters", d.adapter_tokens_per_s, "tokens/s",
           "aggregate, rank " + std::to_string(o.lora_rank) + " on all projections, " + on});
    }
  }
  out.push_back({"time to first token, cold", r.serve.ttft_cold_ms, "ms",
                 std::to_string(o.prefix_tokens) + " + " + std::to_string(o.suffix_tokens) +
                     " tokens, " + on});
  out.push_back(
      {"time to first token, cached prefix", r.serve.ttft_cached_ms, "ms",
       std::to_string(r.serve.cached_prompt_tokens) + " tokens from the prefix cache, " + on});
  for (const DeviceBenchResult::Network& n : r.networks) {
    const std::string kv(DTypeName(n.kv_dtype));
    out.push_back(
        {"8-expert network GPU memory, " + kv + " KV", n.total_mib(), "MiB",
         "weights and cuBLAS workspace " + std::to_string(static_cast<int>(n.weights_mib)) +
             " + adapters and buffers " + std::to_string(static_cast<int>(n.adapters_mib)) + " + " +
             kv + " KV " + std::to_string(static_cast<int>(n.kv_mib)) + " (" +
             std::to_string(o.experts) + " x " + std::to_string(o.expert_context) +
             " tokens), CUDA context excluded"});
  }
  return out;
}

namespace {

// A figure of the baseline JSON by its path ("decode_batch1.tokens_per_s"), or NaN.
double BaselineFigure(const Json* baseline, std::string_view path) {
  if (baseline == nullptr) return NAN;
  const Json* at = baseline;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t dot = std::min(path.find('.', start), path.size());
    const std::string key(path.substr(start, dot - start));
    if (!at->is_object() || !at->contains(key)) return NAN;
    at = &(*at)[key];
    start = dot + 1;
  }
  return at->is_number() ? at->get<double>() : NAN;
}

std::string Format(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : "%.2f", v);
  return buf;
}

}  // namespace

std::string DeviceBenchTable(const DeviceBenchResult& r, const DeviceBenchOptions& o,
                             const Json* baseline) {
  // Each figure with its place in the baseline report: eager transformers, and compiled
  // (torch.compile, static cache) where the report has it.
  struct Row {
    std::string name, unit;
    double fgnet;
    std::string eager, compiled;
    bool higher_is_better;
  };
  std::vector<Row> rows = {
      {"batch-1 decode (" + std::to_string(o.decode_prompt) + " + " +
           std::to_string(o.decode_tokens) + " tokens)",
       "tokens/s", r.decode_tokens_per_s, "results.decode_b1_loop.tokens_per_s",
       "results.compile_decode_b1_loop.tokens_per_s", true},
      {"batch-1 decode p50", "ms/token", r.decode_ms_p50, "results.decode_b1_loop.ms_p50",
       "results.compile_decode_b1_loop.ms_p50", false},
      {"batch-1 decode p99", "ms/token", r.decode_ms_p99, "results.decode_b1_loop.ms_p99",
       "results.compile_decode_b1_loop.ms_p99", false},
      {"prefill " + std::to_string(o.prefill_tokens) + " tokens", "tokens/s",
       r.prefill_tokens_per_s, "results.prefill_cache.tokens_per_s", "", true}};
  for (const DecodeThroughput& d : r.serve.decode) {
    const std::string n = std::to_string(d.sequences);
    rows.push_back({"decode " + n + " sequences, no adapters", "tokens/s", d.base_tokens_per_s,
                    "results.aggregate_b" + n + ".tokens_per_s",
                    "results.compile_aggregate_b" + n + ".tokens_per_s", true});
    if (d.adapter_tokens_per_s > 0) {
      rows.push_back({"decode " + n + " sequences, " + n + " adapters", "tokens/s",
                      d.adapter_tokens_per_s, "results.aggregate_lora_b" + n + ".tokens_per_s", "",
                      true});
    }
  }
  rows.push_back(
      {"time to first token, cold", "ms", r.serve.ttft_cold_ms, "results.ttft.cold_ms", "", false});
  rows.push_back({"time to first token, cached prefix", "ms", r.serve.ttft_cached_ms,
                  "results.ttft.cached_ms", "", false});
  for (const DeviceBenchResult::Network& n : r.networks) {
    rows.push_back({"8-expert network memory, " + std::string(DTypeName(n.kv_dtype)) + " KV", "MiB",
                    n.total_mib(), "results.memory.peak_mib", "", false});
  }
  std::string out = "GPU: " + r.device + "; KV cache: " + std::string(DTypeName(o.kv_dtype)) +
                    " (the memory rows: as named)\n\n";
  out +=
      "| Measurement | Unit | fgnet | transformers | transformers, compiled | fgnet advantage |\n";
  out += "|---|---|---:|---:|---:|---:|\n";
  for (const Row& row : rows) {
    const double eager = BaselineFigure(baseline, row.eager);
    const double compiled = row.compiled.empty() ? NAN : BaselineFigure(baseline, row.compiled);
    // Against the better of the two baselines.
    double best = eager;
    if (!std::isnan(compiled) &&
        (std::isnan(best) || (row.higher_is_better ? compiled > best : compiled < best))) {
      best = compiled;
    }
    double ratio = NAN;
    if (!std::isnan(best) && best > 0 && row.fgnet > 0)
      ratio = row.higher_is_better ? row.fgnet / best : best / row.fgnet;
    out += "| " + row.name + " | " + row.unit + " | " + Format(row.fgnet) + " | " + Format(eager) +
           " | " + Format(compiled) + " | " +
           (std::isnan(ratio) ? std::string("-") : Format(ratio) + "x") + " |\n";
  }
  if (r.serve.ttft_cached_ms > 0) {
    out += "\nCached-prefix speed-up of the first token: " +
           Format(r.serve.ttft_cold_ms / r.serve.ttft_cached_ms) + "x\n";
  }
  if (baseline != nullptr) {
    out +=
        "Baseline: tools/bench_transformers.py on the same machine; the advantage is against "
        "the better of its two figures.\n";
  }
  return out;
}

}  // namespace fgnet::cli
