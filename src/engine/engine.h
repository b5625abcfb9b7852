// The serving engine: one base model, many experts (LoRA adapter sets), many concurrent requests.
//
//   Submit(request) -> RequestHandle: stream tokens (Next), await (Wait), Cancel.
//
// A scheduler thread runs continuous batching: every step it forms one forward pass out of the
// decode tokens of every running sequence and prefill chunks of others, whatever their adapters,
// within a token budget (EngineOptions::max_batch_tokens). KV lives in a paged block pool
// (kv/block_pool.h); whole blocks are shared through the prefix tree (kv/prefix_tree.h), keyed by
// the base model's content hash and the adapters' content hashes, scales and starts, so KV is
// reused only where that is exact. Pinned prefixes (CreatePrefix), nested to any depth, hold their
// KV until released; a request built on one forks its blocks (copy on write). Reusing a prefix
// computed under other adapters is refused unless the request opts into approximate sharing,
// which its Completion then reports.
//
// Scheduling: running sequences decode every step (all advance together); prefill chunks fill the
// rest of the budget in priority order, then arrival order (first come, first served), so a long
// prompt is split over steps rather than stalling decodes. When the pool runs out of blocks, the
// least recently used cached prefixes are evicted; if that is not enough, the running request of
// lowest priority (latest arrival among equals) is preempted: its blocks are released and it is
// recomputed later from its tokens (usually from the prefix tree), its output unchanged.
//
// Errors are per request (the handle's Completion::status, finish_reason "error"), never thrown
// and never affecting other requests: an unknown adapter, a prompt longer than the context, a
// request larger than the whole KV pool, a full queue (back-pressure), an invalid schema.
//
// Thread-safety: every Engine and RequestHandle method may be called from any thread. The model,
// tokenizer and registry must outlive the engine.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/adapter_registry.h"
#include "engine/engine_metrics.h"
#include "engine/sampler.h"
#include "model/gemma3_model.h"
#include "tensor/dtype.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet {

class Grammar;

// An adapter of a request: a registry name or content hash (prefix of >= 12 hex digits).
struct AdapterSpec {
  std::string name;
  float scale = 1.0f;
};

enum class EnsembleMode : std::uint8_t {
  kWeightedMean,  // sum_i w_i * logits_i / sum_i w_i
  kMax,           // max_i (w_i * logits_i)
};

// One expert of a logit ensemble: its adapter set and weight.
struct EnsembleMember {
  std::vector<AdapterSpec> adapters;
  float weight = 1.0f;
};

struct PrefixState;

// A pinned prefix: its KV stays in the pool until the last handle and every request built on it
// are gone (a child prefix keeps the blocks it shares with it).
class PrefixHandle {
 public:
  PrefixHandle() = default;
  bool valid() const { return state_ != nullptr; }
  // The prefix's tokens (parents' included).
  const std::vector<std::int32_t>& tokens() const;
  std::shared_ptr<PrefixState> state() const { return state_; }

 private:
  friend class Engine;
  explicit PrefixHandle(std::shared_ptr<PrefixState> state) : state_(std::move(state)) {}
  std::shared_ptr<PrefixState> state_;
};

struct Request {
  // The prompt: exactly one of prompt_ids, prompt (text, encoded as is: write <bos> and turns
  // yourself) and messages (rendered with the chat template; FunctionGemma's when `tools` is set).
  std::vector<std::int32_t> prompt_ids;
  std::string prompt;
  Json messages;
  Json tools;
  std::vector<AdapterSpec> adapters;
  SamplingParams sampling{.do_sample = false};  // greedy unless set
  std::int64_t max_tokens = 256;
  std::vector<std::string> stop;       // stop strings (the text is cut before them)
  std::vector<std::int32_t> stop_ids;  // in addition to EngineOptions::stop_ids
  // Constrained output (at most one): a JSON Schema, a regular expression, FunctionGemma calls to
  // `tools` (constrain_tools), or a precompiled grammar.
  std::optional<Json> json_schema;
  std::string regex;
  bool constrain_tools = false;
  std::shared_ptr<const Grammar> grammar;
  // Continue after a pinned prefix: the prompt is appended to the prefix's tokens.
  PrefixHandle prefix;
  // Reuse `prefix` even if it was computed under other adapters (an approximation).
  bool approximate_prefix = false;
  std::int32_t priority = 0;  // higher runs first
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // A logit ensemble: when non-empty, one sequence per member decodes one shared output (and
  // `adapters` must be empty).
  std::vector<EnsembleMember> ensemble;
  EnsembleMode ensemble_mode = EnsembleMode::kWeightedMean;
  // Return the logits each token was sampled from (after ensemble merging, before grammar
  // masks): for tests and debugging, [steps, vocab] floats.
  bool return_logits = false;
};

struct Usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;  // prompt positions taken from the prefix cache or a prefix
};

struct Timings {
  double queue_ms = 0;  // submit -> first scheduled
  double time_to_first_token_ms = 0;
  double total_ms = 0;  // submit -> finished
  double time_per_output_token_ms = 0;
};

struct Completion {
  Status status;                  // an error: finish_reason "error" and status.error() says why
  std::vector<std::int32_t> ids;  // generated, stop id excluded
  std::string text;               // decoded (empty without a tokenizer), cut before a stop string
  // "stop" (stop id, stop string or a complete constrained output), "length", "cancelled",
  // "deadline", "error".
  std::string finish_reason;
  Usage usage;
  Timings timings;
  std::int32_t preemptions = 0;
  bool prefix_approximate = false;  // reused KV computed under other adapters
  std::vector<float> logits;        // with Request::return_logits
};

struct StreamEvent {
  std::int32_t id = 0;
  std::string text;  // the text this token made printable (held back near stop strings)
};

struct RequestState;

class RequestHandle {
 public:
  RequestHandle() = default;
  // Blocks for the next generated token; false once the request has finished and every token
  // was returned.
  bool Next(StreamEvent* event);
  // Blocks until the request has finished.
  const Completion& Wait();
  // Asks the engine to stop the request (finish_reason "cancelled"); its blocks are freed at the
  // next step. No effect once finished.
  void Cancel();
  bool done() const;

 private:
  friend class Engine;
  explicit RequestHandle(std::shared_ptr<RequestState> state) : state_(std::move(state)) {}
  std::shared_ptr<RequestState> state_;
};

struct EngineOptions {
  std::int64_t block_size = 16;  // positions per KV block
  // The block pool: 0 picks room for 8 sequences of the full context, at most 512 MiB.
  std::int64_t kv_memory_mib = 0;
  std::int64_t kv_blocks = 0;  // > 0: the pool size in blocks, instead of kv_memory_mib
  // Element type of keys and values: kF32, or kBF16 (half the memory, keys and values rounded to
  // bf16 as transformers keeps them for a bf16 model; GPU models only).
  DType kv_dtype = DType::kF32;
  std::int64_t max_batch_tokens = 512;  // tokens per forward step
  std::int64_t max_running = 256;       // sequences decoding at once
  std::int64_t max_queue = 4096;        // requests waiting; beyond, Submit fails (back-pressure)
  std::int64_t max_context = 0;         // 0: the model's max_position_embeddings
  std::size_t threads = 0;              // compute threads; 0: hardware concurrency
  bool prefix_cache = true;
  // Ids that end every request (e.g. <eos>, <end_of_turn>).
  std::vector<std::int32_t> stop_ids;
};

// The KV pool in MiB that Engine::Create makes of `options` when kv_memory_mib and kv_blocks are
// 0: room for 8 sequences of the full context (max_context, or the model's), at most 512 MiB.
std::int64_t DefaultKVMemoryMiB(const Gemma3Config& config, const EngineOptions& options);

// What CreatePrefix computes.
struct PrefixRequest {
  std::vector<std::int32_t> prompt_ids;  // or
  std::string prompt;
  std::vector<AdapterSpec> adapters;
  PrefixHandle parent;  // the new prefix continues it
};

class Engine {
 public:
  // `base_hash`: the model's content hash (Checkpoint::content_hash()). `tokenizer` may be null
  // (then only prompt_ids, no text, no stop strings, no grammars); `registry` may be null (no
  // adapters).
  static Result<std::unique_ptr<Engine>> Create(const Model& model, std::string base_hash,
                                                const Tokenizer* tokenizer,
                                                AdapterRegistry* registry, EngineOptions options);
  ~Engine();  // cancels what is left and stops the scheduler
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  RequestHandle Submit(Request request);
  // Computes and pins a prefix; blocks until it is ready.
  Result<PrefixHandle> CreatePrefix(PrefixRequest request);

  EngineMetrics Metrics() const;
  const EngineOptions& options() const;
  // Frees every cached block nobody uses (the leak check: afterwards, with no request running and
  // no prefix pinned, every block is free). Blocks until done.
  void FlushPrefixCache();

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fgnet
