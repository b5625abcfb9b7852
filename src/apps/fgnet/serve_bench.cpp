#include "apps/fgnet/serve_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <thread>

#include "apps/fgnet/model_bench.h"
#include "kv/block_pool.h"
#include "model/synth.h"

namespace fgnet::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::vector<std::int32_t> RandomIds(std::int64_t n, std::int64_t vocab, std::uint64_t seed) {
  return BenchPromptIds(n, vocab, seed, /*stream=*/0x5e7e);
}

// A decode run's rate, and the scheduler's own time a step (its steps' wall time less the model's
// forward passes, from the engine's metrics).
struct DecodeRate {
  double tokens_per_s = 0;
  double scheduler_us_per_step = 0;
};

// Decode tokens/s of `n` concurrent greedy sequences (with adapters 0..n-1 when `adapters`).
Result<DecodeRate> DecodeRun(Engine& engine, const Gemma3Config& config, std::int64_t n,
                             bool adapters, const ServeBenchOptions& o, std::uint64_t seed,
                             std::int64_t decode_tokens) {
  std::vector<RequestHandle> handles;
  handles.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    Request r = GreedyRequest(RandomIds(o.prompt_tokens, config.vocab_size,
                                        seed * 1000003 + static_cast<std::uint64_t>(i)),
                              decode_tokens);
    if (adapters) r.adapters = {{BenchAdapterName(i), 1.0f}};
    handles.push_back(engine.Submit(std::move(r)));
  }
  // Once every sequence has its first token, only decode steps are left.
  for (RequestHandle& h : handles) {
    StreamEvent event;
    if (!h.Next(&event)) {
      FGNET_TRY(CompletionStatus(h.Wait(), "a decode request"));
      return Error("a decode request finished without a token");
    }
  }
  const EngineMetrics before = engine.Metrics();
  const Clock::time_point start = Clock::now();
  for (RequestHandle& h : handles) {
    const Completion& c = h.Wait();
    FGNET_TRY(CompletionStatus(c, "a decode request"));
    if (static_cast<std::int64_t>(c.ids.size()) != decode_tokens) {
      return MakeError("a decode request stopped after ", c.ids.size(), " of ", decode_tokens,
                       " tokens (", c.finish_reason, "): are stop ids disabled?");
    }
  }
  const double seconds = Seconds(start, Clock::now());
  const EngineMetrics after = engine.Metrics();
  const auto tokens = static_cast<double>(after.generated_tokens - before.generated_tokens);
  DecodeRate rate;
  if (seconds <= 0 || tokens <= 0) return rate;
  rate.tokens_per_s = tokens / seconds;
  if (after.steps > before.steps) {
    rate.scheduler_us_per_step =
        1e3 * ((after.step_ms - before.step_ms) - (after.forward_ms - before.forward_ms)) /
        static_cast<double>(after.steps - before.steps);
  }
  return rate;
}

Status MeasureDecode(Engine& engine, const Gemma3Config& config, AdapterRegistry* registry,
                     const ServeBenchOptions& o, std::ostream& log, ServeBenchResult* result) {
  const bool adapters = o.lora_rank > 0;
  std::int64_t most = 0;
  for (std::int64_t n : o.concurrency) most = std::max(most, n);
  if (adapters) {
    if (registry == nullptr) return Error("adapter runs need the engine's adapter registry");
    log << "making " << most << " random rank-" << o.lora_rank << " adapters\n";
    for (std::int64_t i = 0; i < most; ++i) {
      if (registry->Find(BenchAdapterName(i)) != nullptr) continue;
      FGNET_TRY(registry->Add(RandomLoraAdapter(config, static_cast<std::size_t>(o.lora_rank),
                                                o.seed + 100 + static_cast<std::uint64_t>(i),
                                                BenchAdapterName(i))));
    }
  }
  // Warm-up: pages in the weights and the KV pool.
  log << "warming up\n";
  FGNET_ASSIGN_OR_RETURN(const DecodeRate warm,
                         DecodeRun(engine, config, 1, adapters, o, o.seed, 4));
  (void)warm;
  std::uint64_t run = 1;
  for (std::int64_t n : o.concurrency) {
    DecodeThroughput d;
    d.sequences = n;
    for (int r = 0; r < o.repeat; ++r) {
      log << "decode: " << n << " sequences x " << o.decode_tokens << " tokens, base model\n";
      FGNET_ASSIGN_OR_RETURN(const DecodeRate base, DecodeRun(engine, config, n, false, o,
                                                              o.seed + run++, o.decode_tokens));
      if (base.tokens_per_s > d.base_tokens_per_s) {
        d.base_tokens_per_s = base.tokens_per_s;
        d.base_scheduler_us = base.scheduler_us_per_step;
      }
      if (adapters) {
        log << "decode: " << n << " sequences x " << o.decode_tokens << " tokens, " << n
            << " adapters\n";
        FGNET_ASSIGN_OR_RETURN(const DecodeRate lora, DecodeRun(engine, config, n, true, o,
                                                                o.seed + run++, o.decode_tokens));
        d.adapter_tokens_per_s = std::max(d.adapter_tokens_per_s, lora.tokens_per_s);
      }
    }
    result->decode.push_back(d);
  }
  return Ok();
}

Result<double> FirstTokenMs(Engine& engine, Request request, std::int64_t* cached) {
  RequestHandle h = engine.Submit(std::move(request));
  const Completion& c = h.Wait();
  FGNET_TRY(CompletionStatus(c, "a time-to-first-token request"));
  if (cached != nullptr) *cached = c.usage.cached_tokens;
  return c.timings.time_to_first_token_ms;
}

Status MeasureFirstToken(Engine& engine, const Gemma3Config& config, const ServeBenchOptions& o,
                         std::ostream& log, ServeBenchResult* result) {
  const std::vector<std::int32_t> prefix =
      RandomIds(o.prefix_tokens, config.vocab_size, o.seed + 7);
  const auto with_suffix = [&](std::uint64_t seed) {
    std::vector<std::int32_t> ids = prefix;
    const auto suffix = RandomIds(o.suffix_tokens, config.vocab_size, seed);
    ids.insert(ids.end(), suffix.begin(), suffix.end());
    return ids;
  };
  const double inf = std::numeric_limits<double>::infinity();
  result->ttft_cold_ms = result->ttft_cached_ms = result->ttft_pinned_ms = inf;
  log << "time to first token: " << o.prefix_tokens << "-token prefix + " << o.suffix_tokens
      << "-token suffix\n";
  for (int r = 0; r < o.repeat; ++r) {
    const std::uint64_t s = o.seed + 1000 + 10 * static_cast<std::uint64_t>(r);
    engine.FlushPrefixCache();
    FGNET_ASSIGN_OR_RETURN(const double cold,
                           FirstTokenMs(engine, GreedyRequest(with_suffix(s), 1), nullptr));
    std::int64_t cached = 0;
    FGNET_ASSIGN_OR_RETURN(const double warm,
                           FirstTokenMs(engine, GreedyRequest(with_suffix(s + 1), 1), &cached));
    engine.FlushPrefixCache();
    PrefixRequest pr;
    pr.prompt_ids = prefix;
    FGNET_ASSIGN_OR_RETURN(PrefixHandle pinned, engine.CreatePrefix(std::move(pr)));
    Request on_prefix = GreedyRequest(RandomIds(o.suffix_tokens, config.vocab_size, s + 2), 1);
    on_prefix.prefix = pinned;
    FGNET_ASSIGN_OR_RETURN(const double pinned_ms,
                           FirstTokenMs(engine, std::move(on_prefix), nullptr));
    result->ttft_cold_ms = std::min(result->ttft_cold_ms, cold);
    if (warm < result->ttft_cached_ms) {
      result->ttft_cached_ms = warm;
      result->cached_prompt_tokens = cached;
    }
    result->ttft_pinned_ms = std::min(result->ttft_pinned_ms, pinned_ms);
  }
  engine.FlushPrefixCache();
  return Ok();
}

Status MeasureKV(Engine& engine, const Gemma3Config& config, const ServeBenchOptions& o,
                 std::ostream& log, ServeBenchResult* result) {
  const std::int64_t context = engine.options().max_context > 0 ? engine.options().max_context
                                                                : config.max_position_embeddings;
  if (o.context_tokens >= context) {
    return MakeError("--context-tokens ", o.context_tokens, " leaves no room in the context of ",
                     context, " tokens");
  }
  // Long enough to keep every sequence running until it is cancelled.
  const std::int64_t max_tokens = std::min<std::int64_t>(1024, context - o.context_tokens);
  log << "KV memory: " << o.kv_sequences << " sequences at " << o.context_tokens << " tokens\n";
  engine.FlushPrefixCache();
  std::vector<RequestHandle> handles;
  for (std::int64_t i = 0; i < o.kv_sequences; ++i) {
    handles.push_back(
        engine.Submit(GreedyRequest(RandomIds(o.context_tokens, config.vocab_size,
                                              o.seed + 5000 + static_cast<std::uint64_t>(i)),
                                    max_tokens)));
  }
  Status status = Ok();
  for (RequestHandle& h : handles) {
    StreamEvent event;
    if (!h.Next(&event)) {
      status = CompletionStatus(h.Wait(), "a KV request");
      if (status.ok()) status = Error("a KV request finished without a token");
      break;
    }
  }
  // The gauges are updated at the end of a step, after its tokens were handed out: once a later
  // step has run, they count the blocks of every sequence's whole prompt.
  const std::uint64_t step = engine.Metrics().steps;
  EngineMetrics m = engine.Metrics();
  const Clock::time_point give_up = Clock::now() + std::chrono::seconds(60);
  while (status.ok() && m.steps <= step && Clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    m = engine.Metrics();
  }
  for (RequestHandle& h : handles) h.Cancel();
  for (RequestHandle& h : handles) h.Wait();
  engine.FlushPrefixCache();
  FGNET_TRY(status);
  const kv::KVLayout layout = kv::KVLayout::ForConfig(config, engine.options().block_size);
  result->block_bytes = static_cast<std::int64_t>(layout.block_bytes());
  // kv_blocks_used counts the blocks somebody holds (blocks held only by the prefix cache are
  // kv_blocks_cached); no prefix is pinned, so they are the running sequences'.
  result->kv_blocks_per_sequence =
      static_cast<double>(m.kv_blocks_used) / static_cast<double>(o.kv_sequences);
  result->kv_bytes_per_sequence =
      result->kv_blocks_per_sequence * static_cast<double>(layout.block_bytes());
  double exact = 0;
  for (std::int64_t l = 0; l < layout.num_layers(); ++l) {
    const bool sliding = layout.layer_sliding[static_cast<std::size_t>(l)] && layout.window > 0;
    const std::int64_t positions =
        sliding ? std::min(o.context_tokens, layout.window) : o.context_tokens;
    exact += static_cast<double>(positions * 2 * layout.row) * sizeof(float);
  }
  result->kv_exact_bytes = exact;
  return Ok();
}

// An object of a bounded string, an integer and a short list of strings.
Json BenchSchema() {
  return Json::parse(R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"},
      "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}},
      "required": ["name", "age", "tags"]})");
}

// Mean milliseconds per grammar mask of `n` constrained sequences; `masks` gets their count.
Result<double> GrammarRun(Engine& engine, const Gemma3Config& config, const ServeBenchOptions& o,
                          std::uint64_t seed, std::uint64_t* masks) {
  const EngineMetrics before = engine.Metrics();
  std::vector<RequestHandle> handles;
  for (std::int64_t i = 0; i < o.grammar_sequences; ++i) {
    Request r = GreedyRequest(RandomIds(o.prompt_tokens, config.vocab_size,
                                        seed * 1000003 + static_cast<std::uint64_t>(i)),
                              o.decode_tokens);
    r.json_schema = BenchSchema();
    handles.push_back(engine.Submit(std::move(r)));
  }
  for (RequestHandle& h : handles) FGNET_TRY(CompletionStatus(h.Wait(), "a constrained request"));
  const EngineMetrics after = engine.Metrics();
  *masks = after.grammar_masks - before.grammar_masks;
  if (*masks == 0) return 0.0;
  return (after.grammar_mask_ms - before.grammar_mask_ms) / static_cast<double>(*masks);
}

Status MeasureGrammar(Engine& engine, const Gemma3Config& config, const ServeBenchOptions& o,
                      std::ostream& log, ServeBenchResult* result) {
  log << "grammar masks: " << o.grammar_sequences << " sequences under a JSON Schema\n";
  FGNET_ASSIGN_OR_RETURN(result->grammar_mask_ms_first,
                         GrammarRun(engine, config, o, o.seed + 9000, &result->grammar_masks));
  std::uint64_t warm_masks = 0;
  FGNET_ASSIGN_OR_RETURN(result->grammar_mask_ms_warm,
                         GrammarRun(engine, config, o, o.seed + 9001, &warm_masks));
  result->grammar_measured = true;
  return Ok();
}

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

}  // namespace

std::string BenchAdapterName(std::int64_t i) { return "serve-bench-" + std::to_string(i); }

Request GreedyRequest(std::vector<std::int32_t> prompt, std::int64_t max_tokens) {
  Request r;
  r.prompt_ids = std::move(prompt);
  r.sampling = SamplingParams{.do_sample = false};
  r.max_tokens = max_tokens;
  return r;
}

Status CompletionStatus(const Completion& c, std::string_view what) {
  if (!c.status.ok()) return c.status.error().WithContext(what);
  if (c.finish_reason == "error") return MakeError(what, ": failed");
  return Ok();
}

std::int64_t ServeBenchKVMemoryMiB(const Gemma3Config& config, const EngineOptions& engine,
                                   const ServeBenchOptions& o) {
  const kv::KVLayout layout = kv::KVLayout::ForConfig(config, engine.block_size, engine.kv_dtype);
  // Sequences decoding at once: the largest run, at most the engine's max_running.
  const std::int64_t most = std::min(
      engine.max_running,
      o.concurrency.empty() ? 0 : *std::max_element(o.concurrency.begin(), o.concurrency.end()));
  const std::int64_t positions = o.prompt_tokens + o.decode_tokens + engine.block_size;
  const std::int64_t bytes =
      most * positions * static_cast<std::int64_t>(layout.bytes_per_position());
  return std::max(DefaultKVMemoryMiB(config, engine), (bytes + (std::int64_t{1} << 20) - 1) >> 20);
}

Result<ServeBenchResult> RunServeBench(Engine& engine, const Gemma3Config& config,
                                       AdapterRegistry* registry, const ServeBenchOptions& o,
                                       std::ostream& log) {
  if (!engine.options().stop_ids.empty()) return Error("the serving bench needs no stop ids");
  if (o.decode_tokens < 2) return Error("the decode measurement needs at least 2 tokens");
  ServeBenchResult result;
  if (!o.concurrency.empty()) FGNET_TRY(MeasureDecode(engine, config, registry, o, log, &result));
  if (o.prefix_tokens > 0) FGNET_TRY(MeasureFirstToken(engine, config, o, log, &result));
  if (o.context_tokens > 0 && o.kv_sequences > 0) {
    FGNET_TRY(MeasureKV(engine, config, o, log, &result));
  }
  if (o.grammar && o.grammar_sequences > 0) {
    FGNET_TRY(MeasureGrammar(engine, config, o, log, &result));
  }
  return result;
}

std::vector<Measurement> ServeMeasurements(const ServeBenchResult& r, const ServeBenchOptions& o,
                                           const EngineOptions& e) {
  std::vector<Measurement> rows;
  const std::string best = o.repeat > 1 ? ", best of " + std::to_string(o.repeat) : "";
  const std::string decode_notes = "greedy, " + std::to_string(o.prompt_tokens) +
                                   "-token prompts, " + std::to_string(o.decode_tokens) +
                                   " tokens each, prefill excluded" + best;
  for (const DecodeThroughput& d : r.decode) {
    const std::string n = std::to_string(d.sequences);
    const std::string plural = d.sequences == 1 ? "" : "s";
    const std::string sequences = n + " sequence" + plural;
    rows.push_back(
        {"decode, " + sequences + ", base", d.base_tokens_per_s, "tokens/s", decode_notes});
    rows.push_back({"scheduler time a decode step, " + sequences, d.base_scheduler_us, "us",
                    "of the base run above: the engine's steps less the model's forward passes"});
    if (o.lora_rank > 0) {
      rows.push_back({"decode, " + sequences + ", " + n + " adapter" + plural,
                      d.adapter_tokens_per_s, "tokens/s",
                      "one random rank-" + std::to_string(o.lora_rank) +
                          " adapter per sequence on all projections, unmerged"});
      rows.push_back({"adapter overhead, " + sequences, d.overhead_percent(), "%",
                      "extra decode time: base tokens/s / adapter tokens/s - 1"});
    }
  }
  if (o.prefix_tokens > 0) {
    const std::string shape = std::to_string(o.prefix_tokens) + "-token prefix + " +
                              std::to_string(o.suffix_tokens) + "-token suffix";
    rows.push_back(
        {"time to first token, cold", r.ttft_cold_ms, "ms", shape + ", empty prefix cache" + best});
    rows.push_back({"time to first token, prefix cached", r.ttft_cached_ms, "ms",
                    shape + ", the prefix in the prefix cache (" +
                        std::to_string(r.cached_prompt_tokens) + " prompt tokens reused)" + best});
    rows.push_back({"time to first token, pinned prefix", r.ttft_pinned_ms, "ms",
                    "the suffix after a prefix from CreatePrefix" + best});
    rows.push_back({"cold / cached time to first token", r.ttft_cold_ms / r.ttft_cached_ms, "x",
                    "cold / pinned: " + Fmt("%.1f", r.ttft_cold_ms / r.ttft_pinned_ms) + "x"});
  }
  if (o.context_tokens > 0 && o.kv_sequences > 0) {
    rows.push_back(
        {"KV memory per sequence", r.kv_bytes_per_sequence / (1 << 20), "MiB",
         std::to_string(o.context_tokens) + "-token context, " +
             Fmt("%.1f", r.kv_blocks_per_sequence) + " blocks of " + std::to_string(e.block_size) +
             " positions (" + Fmt("%.1f", static_cast<double>(r.block_bytes) / 1024) +
             " KiB) held per running sequence, " + std::to_string(o.kv_sequences) + " sequences"});
    rows.push_back({"KV memory per sequence, exact positions", r.kv_exact_bytes / (1 << 20), "MiB",
                    "f32 keys and values of the positions attention can reach (sliding layers: "
                    "the window)"});
  }
  if (r.grammar_measured) {
    const std::string what = std::to_string(o.grammar_sequences) +
                             " greedy sequences under a JSON Schema (object of a string, an "
                             "integer and a list of strings), mean over ";
    rows.push_back({"grammar mask per token, fresh grammar", r.grammar_mask_ms_first, "ms",
                    what + std::to_string(r.grammar_masks) +
                        " masks; each new state walks the vocabulary once"});
    rows.push_back({"grammar mask per token, warm grammar", r.grammar_mask_ms_warm, "ms",
                    "the same schema again: compiled grammar and state masks cached"});
  }
  return rows;
}

}  // namespace fgnet::cli
