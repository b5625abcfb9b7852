// EngineNodeRunner: prompt rendering, pinned prefixes and the per-node worker.
#include "network/engine_runner.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <optional>
#include <thread>
#include <utility>

#include "model/model_files.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/function_call.h"
#include "tokenizer/text_util.h"

namespace fgnet::network {
namespace {

using Clock = std::chrono::steady_clock;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A pinned prefix of one (adapter set, piece texts); `mu` serialises its creation, so that nodes
// started together pin it once and the others wait for it.
struct PrefixEntry {
  std::mutex mu;
  PrefixHandle handle;
};

// A key part that cannot run into its neighbours.
void AppendKey(std::string* key, std::string_view text) {
  *key += std::to_string(text.size());
  *key += ':';
  *key += text;
}

}  // namespace

// --- Rendering -------------------------------------------------------------------------------

ChatFormat ResolveChatFormat(ChatFormat format, const Tokenizer& tokenizer) {
  if (format != ChatFormat::kAuto) return format;
  return tokenizer.TokenId(kStartFunctionDeclaration).has_value() ? ChatFormat::kFunctionGemma
                                                                  : ChatFormat::kGemma3;
}

Result<RenderedNodePrompt> RenderNodePrompt(const PromptParts& parts,
                                            const OutputContract& contract, ChatFormat format) {
  if (format == ChatFormat::kAuto) return MakeError("prompt: resolve the chat format first");
  const bool function_gemma = format == ChatFormat::kFunctionGemma;
  const bool tools = contract.kind == OutputContract::Kind::kFunctionCalls;
  if (tools && !function_gemma) {
    return MakeError("prompt: a function-call contract needs the FunctionGemma chat format");
  }
  if (tools && !contract.tools.is_array()) {
    return MakeError("prompt: the function-call contract's tools must be a list");
  }
  const std::string system(PythonStrip(parts.system));
  const std::string domain(PythonStrip(parts.domain));
  const std::string role(PythonStrip(parts.role));

  RenderedNodePrompt out;
  out.system = std::string(kBosToken) + std::string(kStartOfTurn) +
               (function_gemma ? "developer\n" : "user\n") + system;
  std::string leading = system;  // the developer (system) message
  const auto add = [&leading](std::string* piece, const std::string& text) {
    if (text.empty()) return;
    *piece = (leading.empty() ? "" : "\n\n") + text;
    leading += *piece;
  };
  add(&out.domain, domain);
  add(&out.role, role);
  if (tools) {
    for (std::size_t t = 0; t < contract.tools.size(); ++t) {
      Result<std::string> declaration = RenderFunctionDeclaration(contract.tools[t]);
      if (!declaration.ok()) {
        return declaration.error().WithContext("prompt: tools[" + std::to_string(t) + "]");
      }
      out.role += std::string(kStartFunctionDeclaration) + *declaration +
                  std::string(kEndFunctionDeclaration);
    }
  }

  const Json messages =
      Json::array({Json{{"role", function_gemma ? "developer" : "system"}, {"content", leading}},
                   Json{{"role", "user"}, {"content", parts.user}}});
  Result<std::string> full =
      function_gemma ? RenderFunctionGemmaPrompt(messages, tools ? contract.tools : Json())
                     : RenderGemma3Prompt(messages);
  if (!full.ok()) return full.error().WithContext("prompt");
  const std::string head = out.system + out.domain + out.role;
  if (full->compare(0, head.size(), head) != 0) {
    return MakeError("prompt: the chat format's rendering does not start with the shared parts");
  }
  out.rest = full->substr(head.size());
  return out;
}

// --- Shared state ------------------------------------------------------------------------------

struct EngineNodeRunner::Shared {
  Engine* engine = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const AdapterRegistry* registry = nullptr;
  EngineNodeRunnerOptions options;
  ChatFormat format = ChatFormat::kGemma3;
  std::vector<std::int32_t> stop_ids;

  mutable std::mutex mu;
  std::map<std::string, std::shared_ptr<PrefixEntry>> prefixes;

  std::shared_ptr<PrefixEntry> Entry(const std::string& key) {
    std::lock_guard lock(mu);
    std::shared_ptr<PrefixEntry>& entry = prefixes[key];
    if (entry == nullptr) entry = std::make_shared<PrefixEntry>();
    return entry;
  }
};

namespace {

// What a node's worker and its Pending share.
struct NodeState {
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  NodeResult result;
  bool cancel = false;
  std::optional<RequestHandle> handle;  // once submitted
  std::atomic<std::int64_t> generated{0};
};

NodeResult ErrorResult(const NodeCall& call, const Error& error) {
  NodeResult result;
  result.status = error.WithContext("node '" + call.node_id + "'");
  result.finish_reason = "error";
  return result;
}

std::vector<AdapterSpec> ToSpecs(const std::vector<NodeAdapter>& adapters) {
  std::vector<AdapterSpec> specs;
  specs.reserve(adapters.size());
  for (const NodeAdapter& a : adapters) specs.push_back({a.name, a.scale});
  return specs;
}

Status CheckAdapters(const AdapterRegistry& registry, const std::vector<NodeAdapter>& adapters,
                     const std::string& where) {
  for (const NodeAdapter& a : adapters) {
    if (registry.Find(a.name) == nullptr) {
      return MakeError(where, "unknown adapter '", a.name, "' (not loaded into the registry)");
    }
  }
  return Ok();
}

// Builds the request (pinning prefixes on the way); fills `result->prefix_hits`.
Result<Request> BuildRequest(EngineNodeRunner::Shared& shared, const NodeCall& call,
                             NodeResult* result) {
  Request request;
  if (call.ensemble.empty()) {
    FGNET_TRY(CheckAdapters(*shared.registry, call.adapters, ""));
    request.adapters = ToSpecs(call.adapters);
  } else {
    if (!call.adapters.empty()) {
      return MakeError("an ensemble call gives adapters per member, not both");
    }
    for (std::size_t m = 0; m < call.ensemble.size(); ++m) {
      const NodeEnsembleMember& member = call.ensemble[m];
      FGNET_TRY(CheckAdapters(*shared.registry, member.adapters,
                              "ensemble[" + std::to_string(m) + "]: "));
      request.ensemble.push_back({ToSpecs(member.adapters), static_cast<float>(member.weight)});
    }
    if (call.ensemble_mode == "mean") {
      request.ensemble_mode = EnsembleMode::kWeightedMean;
    } else if (call.ensemble_mode == "max") {
      request.ensemble_mode = EnsembleMode::kMax;
    } else {
      return MakeError("ensemble mode '", call.ensemble_mode, "' is not mean or max");
    }
  }

  switch (call.output.kind) {
    case OutputContract::Kind::kText:
      break;
    case OutputContract::Kind::kJsonSchema:
      request.json_schema = call.output.schema;
      break;
    case OutputContract::Kind::kFunctionCalls:
      request.tools = call.output.tools;
      request.constrain_tools = true;
      break;
  }
  request.sampling = SamplingParams{.do_sample = call.temperature > 0.0f,
                                    .temperature = call.temperature,
                                    .top_k = call.top_k,
                                    .top_p = call.top_p,
                                    .min_p = call.min_p,
                                    .repetition_penalty = call.repetition_penalty,
                                    .seed = call.seed};
  request.max_tokens = call.max_tokens;
  request.deadline = call.deadline;
  request.stop_ids = shared.stop_ids;

  FGNET_ASSIGN_OR_RETURN(RenderedNodePrompt prompt,
                         RenderNodePrompt(call.prompt, call.output, shared.format));
  if (!shared.options.pin_prefixes || !call.ensemble.empty()) {
    request.prompt = prompt.Full();
    return request;
  }

  // Nested prefixes: system -> domain -> role, keyed by the adapter set and the texts so far.
  std::string key;
  for (const NodeAdapter& a : call.adapters) {
    AppendKey(&key, a.name);
    AppendKey(&key, std::to_string(std::bit_cast<std::uint32_t>(a.scale)));  // exact
  }
  key += '|';
  const std::pair<const char*, const std::string*> pieces[] = {
      {"system", &prompt.system}, {"domain", &prompt.domain}, {"role", &prompt.role}};
  PrefixHandle parent;
  for (const auto& [name, text] : pieces) {
    if (text->empty()) continue;
    AppendKey(&key, *text);
    const std::shared_ptr<PrefixEntry> entry = shared.Entry(key);
    std::lock_guard lock(entry->mu);
    if (entry->handle.valid()) {
      result->prefix_hits.push_back(name);
    } else {
      PrefixRequest prefix;
      prefix.prompt = *text;
      prefix.adapters = request.adapters;
      prefix.parent = parent;
      Result<PrefixHandle> handle = shared.engine->CreatePrefix(std::move(prefix));
      if (!handle.ok()) return handle.error().WithContext(std::string(name) + " prefix");
      entry->handle = std::move(*handle);
    }
    parent = entry->handle;
  }
  request.prefix = parent;
  request.prompt = prompt.rest;
  return request;
}

void RunNode(const std::shared_ptr<EngineNodeRunner::Shared>& shared,
             const std::shared_ptr<NodeState>& state, const NodeCall& call,
             Clock::time_point started) {
  const auto finish = [&](NodeResult result) {
    result.latency_ms = MsBetween(started, Clock::now());
    std::lock_guard lock(state->mu);
    result.completion_tokens = std::max(result.completion_tokens, state->generated.load());
    state->result = std::move(result);
    state->finished = true;
    state->handle.reset();
    state->cv.notify_all();
  };
  const auto ended = [&](const char* reason) {
    NodeResult result;
    result.finish_reason = reason;
    finish(std::move(result));
  };
  if (call.deadline.has_value() && Clock::now() >= *call.deadline) return ended("deadline");

  NodeResult result;
  Result<Request> request = BuildRequest(*shared, call, &result);
  if (!request.ok()) return finish(ErrorResult(call, request.error()));
  if (call.deadline.has_value() && Clock::now() >= *call.deadline) return ended("deadline");
  bool cancelled = false;
  {
    std::lock_guard lock(state->mu);
    cancelled = state->cancel;
  }
  if (cancelled) return ended("cancelled");
  const Clock::time_point submitted = Clock::now();
  RequestHandle handle = shared->engine->Submit(std::move(*request));
  {
    std::lock_guard lock(state->mu);
    state->handle = handle;
    if (state->cancel) handle.Cancel();
  }
  StreamEvent event;
  std::optional<Clock::time_point> first_token;
  while (handle.Next(&event)) {
    if (!first_token.has_value()) first_token = Clock::now();
    state->generated.fetch_add(1);
  }
  const Completion& completion = handle.Wait();
  if (!completion.status.ok()) return finish(ErrorResult(call, completion.status.error()));
  result.text = completion.text;
  result.finish_reason = completion.finish_reason;
  result.prompt_tokens = completion.usage.prompt_tokens;
  result.completion_tokens = completion.usage.completion_tokens;
  result.cached_tokens = completion.usage.cached_tokens;
  result.queue_ms = MsBetween(started, submitted) + completion.timings.queue_ms;
  if (first_token.has_value()) result.time_to_first_token_ms = MsBetween(started, *first_token);
  finish(std::move(result));
}

class EnginePending : public NodeRunner::Pending {
 public:
  EnginePending(std::shared_ptr<EngineNodeRunner::Shared> shared, NodeCall call)
      : state_(std::make_shared<NodeState>()) {
    const Clock::time_point started = Clock::now();
    worker_ = std::thread([shared = std::move(shared), state = state_, call = std::move(call),
                           started] { RunNode(shared, state, call, started); });
  }
  ~EnginePending() override {
    Cancel();
    worker_.join();
  }
  EnginePending(const EnginePending&) = delete;
  EnginePending& operator=(const EnginePending&) = delete;

  NodeResult Wait() override {
    std::unique_lock lock(state_->mu);
    state_->cv.wait(lock, [&] { return state_->finished; });
    return state_->result;
  }

  void Cancel() override {
    std::lock_guard lock(state_->mu);
    if (state_->finished) return;
    state_->cancel = true;
    if (state_->handle.has_value()) state_->handle->Cancel();
  }

  bool done() const override {
    std::lock_guard lock(state_->mu);
    return state_->finished;
  }

  std::int64_t generated_tokens() const override { return state_->generated.load(); }

 private:
  std::shared_ptr<NodeState> state_;
  std::thread worker_;
};

}  // namespace

// --- The runner --------------------------------------------------------------------------------

EngineNodeRunner::EngineNodeRunner(Engine& engine, const Tokenizer& tokenizer,
                                   const AdapterRegistry& registry, EngineNodeRunnerOptions options)
    : shared_(std::make_shared<Shared>()),
      format_(ResolveChatFormat(options.chat_format, tokenizer)) {
  shared_->engine = &engine;
  shared_->tokenizer = &tokenizer;
  shared_->registry = &registry;
  shared_->options = options;
  shared_->format = format_;
  for (const std::string_view token : {kEndOfTurn, std::string_view("<eos>")}) {
    if (const std::optional<std::int32_t> id = tokenizer.TokenId(token); id.has_value()) {
      shared_->stop_ids.push_back(*id);
    }
  }
}

EngineNodeRunner::~EngineNodeRunner() = default;

std::unique_ptr<NodeRunner::Pending> EngineNodeRunner::Start(NodeCall call) {
  return std::make_unique<EnginePending>(shared_, std::move(call));
}

std::size_t EngineNodeRunner::pinned_prefixes() const {
  std::lock_guard lock(shared_->mu);
  std::size_t n = 0;
  for (const auto& [key, entry] : shared_->prefixes) {
    std::lock_guard entry_lock(entry->mu);
    if (entry->handle.valid()) ++n;
  }
  return n;
}

void EngineNodeRunner::ReleasePrefixes() {
  std::map<std::string, std::shared_ptr<PrefixEntry>> released;
  std::lock_guard lock(shared_->mu);
  released.swap(shared_->prefixes);
}

// --- Adapters --------------------------------------------------------------------------------

Status LoadExpertAdapters(const ExpertSet& experts, const Checkpoint& base,
                          AdapterRegistry& registry) {
  for (const Expert& expert : experts.experts) {
    for (std::size_t i = 0; i < expert.adapters.size(); ++i) {
      const ExpertAdapter& adapter = expert.adapters[i];
      const std::string where =
          experts.source + ": expert '" + expert.id + "': adapters[" + std::to_string(i) + "]";
      if (registry.Find(adapter.path) != nullptr) continue;
      Result<LoraAdapter> loaded = LoadAdapter(adapter.path, base);
      if (!loaded.ok()) return loaded.error().WithContext(where);
      Result<std::shared_ptr<const LoraAdapter>> added =
          registry.Add(std::move(*loaded), adapter.path);
      if (!added.ok()) return added.error().WithContext(where);
    }
  }
  return Ok();
}

}  // namespace fgnet::network
