#include "apps/fgnet/network_runtime.h"

#include <algorithm>
#include <set>

#include "apps/fgnet/commands.h"

namespace fgnet::cli {

Result<NetworkTask> ReadNetworkTask(const ParsedArgs& args) {
  const std::optional<std::string> prompt = args.OptString("prompt");
  const std::optional<std::string> task_path = args.OptString("task");
  if (prompt.has_value() == task_path.has_value()) {
    return MakeError("give exactly one of --prompt and --task");
  }
  NetworkTask task;
  if (prompt) {
    if (prompt->empty()) return MakeError("--prompt: the task is empty");
    task.id = "prompt";
    task.text = *prompt;
    return task;
  }
  FGNET_ASSIGN_OR_RETURN(const Json json, ReadJsonFile(*task_path));
  if (!json.is_object()) return MakeError(*task_path, ": expected a JSON object");
  for (const auto& [key, value] : json.items()) {
    if (key != "prompt" && key != "id" && key != "context") {
      return MakeError(*task_path, ": $.", key, ": unknown field (expected prompt, id, context)");
    }
    if (!value.is_string()) return MakeError(*task_path, ": $.", key, ": expected a string");
  }
  if (!json.contains("prompt") || json["prompt"].get<std::string>().empty()) {
    return MakeError(*task_path, ": $.prompt: a non-empty task prompt is required");
  }
  task.text = json["prompt"].get<std::string>();
  task.id = json.value("id", std::string("task"));
  if (json.contains("context") && !json["context"].get<std::string>().empty()) {
    task.text += "\n\n" + json["context"].get<std::string>();
  }
  return task;
}

void AddNetworkRuntimeOptions(CommandSpec& c) {
  c.AddInt("kv-mib", "N", "Memory of the paged KV pool in MiB.")
      .IntRange(1)
      .DefaultNote("room for 8 sequences of the full context, at most 512 MiB");
  c.AddInt("max-batch-tokens", "N", "Tokens per forward step (decodes plus prefill chunks).")
      .IntRange(1)
      .Default("512");
  c.AddSwitch("no-prefix-pinning",
              "Do not pin the shared prompt parts (system, domain, role) as nested prefixes.");
  c.AddInt("router-layer", "N",
           "Hidden-state index the embedding router reads (0 = embeddings, -1 = the last, "
           "final-normed).")
      .Default("-1");
  c.AddString("router-pooling", "MODE", "How the router pools a text's hidden states.")
      .Choices({"mean", "last"})
      .Default("mean");
  c.AddString("router-adapter", "PATH[:SCALE]",
              "A LoRA adapter the embedding router applies while embedding (PEFT directory, RDRR "
              "package or GGUF LoRA file).");
  c.AddString("router-cache", "FILE",
              "Keep the experts' routing embeddings in FILE between runs (read if present, "
              "written after routing).");
  AddThreadsOption(c);
  AddDeviceOption(c);
  AddKVTypeOption(c);
}

Result<std::unique_ptr<NetworkRuntime>> NetworkRuntime::Create(const ParsedArgs& args,
                                                               const network::ExpertSet& experts,
                                                               std::ostream& err) {
  std::unique_ptr<NetworkRuntime> rt(new NetworkRuntime());
  rt->experts_ = &experts;
  rt->err_ = &err;
  FGNET_ASSIGN_OR_RETURN(const Device device, DeviceOption(args));
  FGNET_ASSIGN_OR_RETURN(rt->loaded_,
                         LoadModel(args.String("model"), {.tokenizer = true, .device = device}));
  FGNET_TRY(network::LoadExpertAdapters(experts, *rt->loaded_->checkpoint, *rt->loaded_->registry));
  err << "loaded " << experts.experts.size() << " experts (" << rt->loaded_->registry->size()
      << " adapters, " << rt->loaded_->registry->total_bytes() / 1024 << " KiB)\n";

  EngineOptions& options = rt->engine_options_;
  options.kv_memory_mib = args.OptInt("kv-mib").value_or(0);
  options.max_batch_tokens = args.Int("max-batch-tokens");
  options.kv_dtype = KVTypeOption(args);
  options.threads = ThreadsOption(args);
  options.stop_ids = EngineStopIds(*rt->loaded_);

  rt->router_options_.index = args.Int("router-layer");
  rt->router_options_.pooling =
      args.String("router-pooling") == "last" ? router::Pooling::kLast : router::Pooling::kMean;
  if (auto text = args.OptString("router-adapter")) {
    FGNET_ASSIGN_OR_RETURN(rt->router_adapter_,
                           LoadRoutingAdapter(*text, *rt->loaded_->checkpoint));
    rt->router_options_.adapter = &rt->router_adapter_->adapter;
    rt->router_options_.adapter_scale = rt->router_adapter_->scale;
  }
  rt->router_cache_ = args.OptString("router-cache").value_or("");
  rt->pin_prefixes_ = !args.Switch("no-prefix-pinning");
  FGNET_TRY(rt->StartEngine());
  return rt;
}

NetworkRuntime::~NetworkRuntime() = default;

Status NetworkRuntime::StartEngine() {
  runner_.reset();
  engine_.reset();
  FGNET_ASSIGN_OR_RETURN(
      engine_, Engine::Create(loaded_->engine_model(), loaded_->checkpoint->content_hash(),
                              &*loaded_->tokenizer, loaded_->registry.get(), engine_options_));
  network::EngineNodeRunnerOptions runner_options;
  runner_options.pin_prefixes = pin_prefixes_;
  runner_ = std::make_unique<network::EngineNodeRunner>(*engine_, *loaded_->tokenizer,
                                                        *loaded_->registry, runner_options);
  return Ok();
}

Status NetworkRuntime::RestartEngine() { return StartEngine(); }

Result<network::ExecutorOptions> NetworkRuntime::ExecutorOptionsFor(
    const network::NetworkSpec& spec, network::RunObserver* observer) {
  network::ExecutorOptions options;
  options.code_checker = &checker_;
  options.observer = observer;
  if (spec.topology != network::Topology::kTree ||
      spec.tree.router != network::TreeSpec::Router::kEmbedding) {
    return options;
  }
  if (router_ == nullptr) {
    router_pool_ = std::make_unique<ThreadPool>(engine_options_.threads);
    FGNET_ASSIGN_OR_RETURN(
        router::TextEmbedder embedder,
        router::TextEmbedder::Create(*loaded_->model, *loaded_->tokenizer, *router_pool_,
                                     loaded_->checkpoint->content_hash(), router_options_));
    embedder_ = std::make_unique<router::TextEmbedder>(std::move(embedder));
    router_ = std::make_unique<router::EmbeddingRouter>(*embedder_);
    if (!router_cache_.empty()) {
      FGNET_ASSIGN_OR_RETURN(const router::CacheLoadReport report,
                             router_->LoadCache(router_cache_));
      for (const std::string& line : report.rejected) *err_ << "router cache: " << line << '\n';
    }
  }
  // Every expert a routing node may choose.
  std::set<std::string> routed;
  for (const network::EdgeSpec& edge : spec.edges) {
    routed.insert(spec.FindNode(edge.to)->expert);
  }
  const std::size_t misses = router_->cache_stats().misses;
  for (const std::string& id : routed) {
    const network::Expert* expert = experts_->Find(id);
    FGNET_TRY(router_->AddExpert(expert->id, expert->description, expert->exemplars));
  }
  // Rewrite the cache file only when the model computed new embeddings.
  if (!router_cache_.empty() && router_->cache_stats().misses != misses) {
    FGNET_TRY(router_->SaveCache(router_cache_));
  }
  options.embedding_router =
      [this](const network::RouteContext& context) -> Result<std::vector<network::RouteChoice>> {
    std::vector<std::string> ids;
    for (const network::NodeSpec* child : context.children) ids.push_back(child->expert);
    // Two children may share an expert: rank each expert once.
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    FGNET_ASSIGN_OR_RETURN(const std::vector<router::RankedExpert> ranked,
                           router_->Rank(context.task, ids, context.temperature));
    // Children are ranked by their experts; two children with one expert share its score.
    std::vector<network::RouteChoice> choices;
    for (const router::RankedExpert& score : ranked) {
      for (const network::NodeSpec* child : context.children) {
        if (child->expert == score.id) choices.push_back({child->id, score.probability});
      }
    }
    return choices;
  };
  return options;
}

network::NetworkResult NetworkRuntime::Run(const network::NetworkSpec& spec,
                                           const std::string& task,
                                           network::RunObserver* observer) {
  Result<network::ExecutorOptions> options = ExecutorOptionsFor(spec, observer);
  if (!options.ok()) {
    network::NetworkResult result;
    result.status = options.error();
    result.trace.status = "failed";
    result.trace.error = options.error().message();
    return result;
  }
  return network::RunNetwork(spec, *experts_, task, *runner_, *options);
}

}  // namespace fgnet::cli
