// The Engine's API side: request preparation on the caller's thread (prompt, adapters, sampling,
// grammar, limits), handles, pinned prefixes and shutdown. The step loop is in scheduler.cpp.

#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "engine/engine_internal.h"
#include "engine/model_session.h"
#include "engine/scheduler.h"
#include "tokenizer/chat_format.h"

namespace fgnet {

// --- Handles -------------------------------------------------------------------------------

const std::vector<std::int32_t>& PrefixHandle::tokens() const {
  static const std::vector<std::int32_t> kNone;
  return state_ != nullptr ? state_->tokens : kNone;
}

PrefixState::~PrefixState() {
  if (!kv.has_value()) return;
  {
    std::lock_guard lock(inbox->mu);
    if (!inbox->stopped) {  // the scheduler frees it
      inbox->graveyard.push_back(std::move(*kv));
      inbox->cv.notify_all();
      kv.reset();
      return;
    }
  }
  std::lock_guard lock(inbox->pool_mu);  // after shutdown: freed here
  kv.reset();
}

bool RequestHandle::Next(StreamEvent* event) {
  if (state_ == nullptr) return false;
  std::unique_lock lock(state_->mu);
  state_->cv.wait(lock, [&] { return !state_->events.empty() || state_->finished; });
  if (state_->events.empty()) return false;
  *event = std::move(state_->events.front());
  state_->events.pop_front();
  return true;
}

const Completion& RequestHandle::Wait() {
  static const Completion kInvalid{.status = MakeError("an empty request handle")};
  if (state_ == nullptr) return kInvalid;
  std::unique_lock lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->finished; });
  return state_->completion;
}

void RequestHandle::Cancel() {
  if (state_ == nullptr) return;
  {
    std::lock_guard lock(state_->mu);
    if (state_->finished) return;
    state_->cancel = true;
  }
  std::lock_guard lock(state_->inbox->mu);
  state_->inbox->cv.notify_all();
}

bool RequestHandle::done() const {
  if (state_ == nullptr) return true;
  std::lock_guard lock(state_->mu);
  return state_->finished;
}

// --- The engine ----------------------------------------------------------------------------

struct Engine::Impl {
  const Model* model = nullptr;
  std::string base_hash;
  const Tokenizer* tokenizer = nullptr;
  AdapterRegistry* registry = nullptr;
  EngineOptions options;
  std::shared_ptr<Inbox> inbox = std::make_shared<Inbox>();
  std::shared_ptr<kv::BlockPool> pool;
  std::unique_ptr<Scheduler> scheduler;
  std::thread thread;
  std::once_flag vocab_once;
  std::shared_ptr<const TokenVocabulary> vocab;
  // Compiled grammars by source, so that requests with the same schema or tools share one
  // automaton and its mask cache (the most recent kGrammarCacheSize are kept).
  static constexpr std::size_t kGrammarCacheSize = 64;
  std::mutex grammars_mu;
  std::vector<std::pair<std::string, std::shared_ptr<const Grammar>>> grammars;

  Result<std::unique_ptr<Group>> Prepare(Request& request);
  Status ResolveAdapters(const std::vector<AdapterSpec>& specs, Group& group,
                         std::vector<AdapterUse>* uses, const std::string& where);
  Result<std::vector<std::int32_t>> PromptTokens(const Request& request);
  Result<std::shared_ptr<const Grammar>> BuildGrammar(const Request& request,
                                                      const std::vector<std::int32_t>& stops);
  std::int64_t BlocksNeeded(std::int64_t positions) const;
  RequestHandle Enqueue(std::unique_ptr<Group> group);
  static RequestHandle Failed(const std::shared_ptr<Inbox>& inbox, Error error);
};

std::int64_t DefaultKVMemoryMiB(const Gemma3Config& config, const EngineOptions& options) {
  const kv::KVLayout layout = kv::KVLayout::ForConfig(config, options.block_size, options.kv_dtype);
  const std::int64_t context =
      options.max_context > 0 ? options.max_context : config.max_position_embeddings;
  const std::int64_t full = 8 * context * static_cast<std::int64_t>(layout.bytes_per_position());
  return std::clamp<std::int64_t>(full >> 20, 1, 512);
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Engine>> Engine::Create(const Model& model, std::string base_hash,
                                               const Tokenizer* tokenizer,
                                               AdapterRegistry* registry, EngineOptions options) {
  const Gemma3Config& c = model.config();
  if (options.block_size < 1 || options.block_size > 4096)
    return MakeError("engine: block_size ", options.block_size, " is not in [1, 4096]");
  if (options.max_batch_tokens < 1) return MakeError("engine: max_batch_tokens must be at least 1");
  if (options.max_running < 1) return MakeError("engine: max_running must be at least 1");
  if (options.max_queue < 1) return MakeError("engine: max_queue must be at least 1");
  if (options.max_context <= 0) options.max_context = c.max_position_embeddings;
  if (options.kv_dtype != DType::kF32 && options.kv_dtype != DType::kBF16) {
    return MakeError("engine: kv_dtype ", DTypeName(options.kv_dtype), " is not f32 or bf16");
  }
  if (!model.SupportsKVType(options.kv_dtype)) {
    return MakeError("engine: ", DTypeName(options.kv_dtype),
                     " keys and values are not supported on ", model.device_name(), " (F32 only)");
  }
  const kv::KVLayout layout = kv::KVLayout::ForConfig(c, options.block_size, options.kv_dtype);
  if (options.kv_memory_mib < 0) return MakeError("engine: kv_memory_mib must not be negative");
  if (options.kv_memory_mib == 0) options.kv_memory_mib = DefaultKVMemoryMiB(c, options);
  const std::int64_t blocks = options.kv_blocks > 0
                                  ? options.kv_blocks
                                  : options.kv_memory_mib * (std::int64_t{1} << 20) /
                                        static_cast<std::int64_t>(layout.block_bytes());
  if (blocks < layout.num_groups()) {
    return MakeError("engine: kv_memory_mib ", options.kv_memory_mib,
                     " holds fewer blocks than one position needs (", layout.num_groups(),
                     " blocks of ", layout.block_bytes(), " bytes)");
  }
  FGNET_ASSIGN_OR_RETURN(std::unique_ptr<Memory> memory,
                         model.AllocateKV(layout.block_bytes() * static_cast<std::size_t>(blocks)));
  auto impl = std::make_unique<Impl>();
  impl->model = &model;
  impl->base_hash = std::move(base_hash);
  impl->tokenizer = tokenizer;
  impl->registry = registry;
  impl->options = options;
  impl->pool = std::make_shared<kv::BlockPool>(layout, blocks, std::move(memory));
  impl->scheduler = std::make_unique<Scheduler>(model, impl->base_hash, impl->pool, impl->inbox,
                                                impl->options, tokenizer);
  impl->thread = std::thread([s = impl->scheduler.get()] { s->Run(); });
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::~Engine() {
  {
    std::lock_guard lock(impl_->inbox->mu);
    impl_->inbox->stopped = true;
    impl_->inbox->cv.notify_all();
  }
  impl_->thread.join();
  std::lock_guard lock(impl_->inbox->pool_mu);
  impl_->scheduler.reset();  // cancels what is left, frees its blocks and the prefix tree
}

const EngineOptions& Engine::options() const { return impl_->options; }

EngineMetrics Engine::Metrics() const { return impl_->scheduler->Metrics(); }

void Engine::FlushPrefixCache() {
  std::unique_lock lock(impl_->inbox->mu);
  const std::uint64_t target = impl_->inbox->flushes_done + 1;
  impl_->inbox->flush = true;
  impl_->inbox->cv.notify_all();
  impl_->inbox->cv.wait(
      lock, [&] { return impl_->inbox->flushes_done >= target || impl_->inbox->stopped; });
}

RequestHandle Engine::Impl::Failed(const std::shared_ptr<Inbox>& inbox, Error error) {
  auto state = std::make_shared<RequestState>();
  state->inbox = inbox;
  state->finished = true;
  state->completion.status = std::move(error);
  state->completion.finish_reason = "error";
  return RequestHandle(std::move(state));
}

RequestHandle Engine::Submit(Request request) {
  auto group = impl_->Prepare(request);
  if (!group.ok()) {
    impl_->scheduler->CountFailed();
    return Impl::Failed(impl_->inbox, group.error());
  }
  return impl_->Enqueue(std::move(*group));
}

RequestHandle Engine::Impl::Enqueue(std::unique_ptr<Group> group) {
  auto state = std::make_shared<RequestState>();
  state->inbox = inbox;
  group->state = state;
  group->submitted_at = Clock::now();
  {
    std::lock_guard lock(inbox->mu);
    if (inbox->stopped) return Failed(inbox, Error("engine: shutting down"));
    if (inbox->waiting >= options.max_queue) {
      scheduler->CountRejected();
      return Failed(
          inbox, Error("engine: queue full: " + std::to_string(inbox->waiting) +
                       " requests waiting (max_queue " + std::to_string(options.max_queue) + ")"));
    }
    group->seq_no = inbox->next_seq_no++;
    ++inbox->waiting;
    inbox->submitted.push_back(std::move(group));
    inbox->cv.notify_all();
  }
  return RequestHandle(std::move(state));
}

Result<PrefixHandle> Engine::CreatePrefix(PrefixRequest prefix) {
  Request request;
  request.prompt_ids = std::move(prefix.prompt_ids);
  request.prompt = std::move(prefix.prompt);
  request.adapters = std::move(prefix.adapters);
  request.prefix = prefix.parent;
  request.max_tokens = 0;
  auto group = impl_->Prepare(request);
  if (!group.ok()) return Error("prefix: " + group.error().message());
  auto state = std::make_shared<PrefixState>();
  state->tokens = (*group)->tokens;
  state->adapters = (*group)->members[0].adapters;
  state->keep = (*group)->keep;
  state->inbox = impl_->inbox;
  state->pool = impl_->pool;
  (*group)->pin_into = state;
  RequestHandle handle = impl_->Enqueue(std::move(*group));
  const Completion& done = handle.Wait();
  if (!done.status.ok()) return Error("prefix: " + done.status.error().message());
  return PrefixHandle(std::move(state));
}

// --- Request preparation (caller's thread) -------------------------------------------------

Result<std::vector<std::int32_t>> Engine::Impl::PromptTokens(const Request& request) {
  const int given = (request.prompt_ids.empty() ? 0 : 1) + (request.prompt.empty() ? 0 : 1) +
                    (request.messages.is_null() ? 0 : 1);
  if (given != 1) {
    return MakeError("request: give exactly one of prompt_ids, prompt and messages (", given,
                     " given)");
  }
  if (!request.prompt_ids.empty()) {
    const std::int64_t vocab_size = model->config().vocab_size;
    for (std::size_t i = 0; i < request.prompt_ids.size(); ++i) {
      if (request.prompt_ids[i] < 0 || request.prompt_ids[i] >= vocab_size) {
        return MakeError("request: prompt_ids[", i, "] = ", request.prompt_ids[i],
                         " is out of range [0, ", vocab_size, ")");
      }
    }
    return request.prompt_ids;
  }
  if (tokenizer == nullptr)
    return MakeError("request: a text prompt needs a tokenizer; give prompt_ids");
  std::string text = request.prompt;
  if (!request.messages.is_null()) {
    if (request.prefix.valid())
      return MakeError(
          "request: messages cannot continue a prefix; give the continuation as prompt");
    Result<std::string> rendered = request.tools.is_null()
                                       ? RenderGemma3Prompt(request.messages)
                                       : RenderFunctionGemmaPrompt(request.messages, request.tools);
    if (!rendered.ok()) return Error("request: " + rendered.error().message());
    text = std::move(*rendered);
  }
  return tokenizer->Encode(text);
}

Status Engine::Impl::ResolveAdapters(const std::vector<AdapterSpec>& specs, Group& group,
                                     std::vector<AdapterUse>* uses, const std::string& where) {
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const AdapterSpec& spec = specs[i];
    if (!std::isfinite(spec.scale))
      return MakeError(where, "adapters[", i, "]: scale is not a finite number");
    std::shared_ptr<const LoraAdapter> adapter =
        registry != nullptr ? registry->Find(spec.name) : nullptr;
    if (adapter == nullptr)
      return MakeError(where, "adapters[", i, "]: unknown adapter '", spec.name, "'");
    uses->push_back({adapter.get(), spec.scale, 0});
    group.keep.push_back(std::move(adapter));
  }
  return Ok();
}

Result<std::shared_ptr<const Grammar>> Engine::Impl::BuildGrammar(
    const Request& request, const std::vector<std::int32_t>& stops) {
  const int kinds = (request.json_schema.has_value() ? 1 : 0) + (request.regex.empty() ? 0 : 1) +
                    (request.constrain_tools ? 1 : 0) + (request.grammar != nullptr ? 1 : 0);
  if (kinds == 0) return std::shared_ptr<const Grammar>();
  if (kinds > 1)
    return MakeError("request: give at most one of json_schema, regex, constrain_tools, grammar");
  if (request.grammar != nullptr) return request.grammar;
  if (tokenizer == nullptr) return MakeError("request: constrained output needs a tokenizer");
  std::call_once(vocab_once, [this] { vocab = TokenVocabulary::FromTokenizer(*tokenizer); });
  std::string key = request.json_schema.has_value() ? "schema:" + request.json_schema->dump()
                    : request.constrain_tools       ? "tools:" + request.tools.dump()
                                                    : "regex:" + request.regex;
  for (std::int32_t id : stops) key += "," + std::to_string(id);
  {
    std::lock_guard lock(grammars_mu);
    for (auto it = grammars.begin(); it != grammars.end(); ++it) {
      if (it->first != key) continue;
      std::shared_ptr<const Grammar> found = it->second;
      std::rotate(it, it + 1, grammars.end());  // most recent last
      return found;
    }
  }
  GrammarOptions grammar_options;
  grammar_options.stop_ids = stops;
  Result<std::shared_ptr<const Grammar>> grammar =
      request.json_schema.has_value()
          ? Grammar::FromJsonSchema(*request.json_schema, vocab, grammar_options)
      : request.constrain_tools
          ? (request.tools.is_null()
                 ? Result<std::shared_ptr<const Grammar>>(
                       MakeError("request: constrain_tools needs tools"))
                 : Grammar::FromFunctionTools(request.tools, vocab, grammar_options))
          : Grammar::FromRegex(request.regex, vocab, grammar_options);
  if (!grammar.ok()) return Error("request: " + grammar.error().message());
  std::lock_guard lock(grammars_mu);
  if (grammars.size() == kGrammarCacheSize) grammars.erase(grammars.begin());
  grammars.emplace_back(std::move(key), *grammar);
  return grammar;
}

std::int64_t Engine::Impl::BlocksNeeded(std::int64_t positions) const {
  const kv::KVLayout& layout = pool->layout();
  const std::int64_t b = layout.block_size;
  const std::int64_t full = (positions + b - 1) / b;
  // A sliding group holds the window plus, while prefilling, one step's chunk.
  const std::int64_t sliding =
      std::min(full, (layout.window + options.max_batch_tokens + b - 1) / b + 1);
  std::int64_t total = 0;
  for (std::int64_t g = 0; g < layout.num_groups(); ++g)
    total += layout.group_sliding[static_cast<std::size_t>(g)] ? sliding : full;
  return total;
}

Result<std::unique_ptr<Group>> Engine::Impl::Prepare(Request& request) {
  auto group = std::make_unique<Group>();
  FGNET_ASSIGN_OR_RETURN(std::vector<std::int32_t> prompt, PromptTokens(request));
  if (request.prefix.valid()) {
    std::vector<std::int32_t> tokens = request.prefix.tokens();
    tokens.insert(tokens.end(), prompt.begin(), prompt.end());
    prompt = std::move(tokens);
    group->prefix = request.prefix.state();
    group->approximate_prefix = request.approximate_prefix;
  }
  if (prompt.empty()) return MakeError("request: the prompt is empty");
  const auto prompt_len = static_cast<std::int64_t>(prompt.size());
  if (prompt_len >= options.max_context) {
    return MakeError("request: the prompt of ", prompt_len, " tokens does not fit the context of ",
                     options.max_context, " tokens");
  }
  if (request.max_tokens < 0) return MakeError("request: max_tokens must not be negative");
  group->max_tokens = std::min(request.max_tokens, options.max_context - prompt_len);
  FGNET_TRY(request.sampling.Validate());
  if (!request.ensemble.empty() && !request.adapters.empty())
    return MakeError("request: give adapters per ensemble member, not both");
  if (!request.stop.empty() && tokenizer == nullptr)
    return MakeError("request: stop strings need a tokenizer");

  // Members and their adapters (activated adapters start where the prompt invokes them).
  std::vector<EnsembleMember> members = request.ensemble;
  if (members.empty()) members.push_back({request.adapters, 1.0f});
  group->members.resize(members.size());
  std::vector<std::string> key_parts;
  for (std::size_t m = 0; m < members.size(); ++m) {
    const std::string where =
        request.ensemble.empty() ? "request: " : "request: ensemble[" + std::to_string(m) + "]: ";
    if (!(members[m].weight >= 0.0f) || !std::isfinite(members[m].weight))
      return MakeError(where, "weight must be a finite number >= 0");
    std::vector<AdapterUse> uses;
    FGNET_TRY(ResolveAdapters(members[m].adapters, *group, &uses, where));
    group->members[m].adapters = ResolveAdapterSet(uses, prompt);
    group->members[m].weight = members[m].weight;
    std::string key;
    for (const AdapterSpec& spec : members[m].adapters) key += (key.empty() ? "" : "+") + spec.name;
    key_parts.push_back(key.empty() ? "base" : key);
  }
  for (const std::string& k : key_parts)
    group->metrics_key += (group->metrics_key.empty() ? "" : ",") + k;
  if (group->members.size() > 1) group->metrics_key = "ensemble(" + group->metrics_key + ")";

  group->stop_ids = options.stop_ids;
  group->stop_ids.insert(group->stop_ids.end(), request.stop_ids.begin(), request.stop_ids.end());
  FGNET_ASSIGN_OR_RETURN(std::shared_ptr<const Grammar> grammar,
                         BuildGrammar(request, group->stop_ids));
  if (grammar != nullptr) group->matcher = std::make_unique<GrammarMatcher>(std::move(grammar));
  group->sampler.emplace(request.sampling);
  group->sampler->AddHistory(prompt);
  if (tokenizer != nullptr) group->stops.emplace(*tokenizer, request.stop);
  group->priority = request.priority;
  group->return_logits = request.return_logits;
  group->deadline = request.deadline;
  group->mode = request.ensemble_mode;
  group->prompt_len = prompt_len;
  group->tokens = std::move(prompt);

  const std::int64_t per_member = BlocksNeeded(prompt_len + group->max_tokens);
  const std::int64_t needed = per_member * static_cast<std::int64_t>(group->members.size());
  if (needed > pool->num_blocks()) {
    return MakeError("request: out of KV memory: it needs up to ", needed,
                     " blocks but the pool holds ", pool->num_blocks(),
                     " (raise kv_memory_mib or lower max_tokens)");
  }
  return group;
}

}  // namespace fgnet
