// What `fgnet run` and `fgnet bench-network` share: a model, its expert adapters, one serving
// engine, the node runner on it, the embedding router (for tree networks) and the code checker,
// built from the command's options.
// Thread-safety: one NetworkRuntime runs one network at a time per caller thread; the engine
// underneath batches whatever its runners submit.
#pragma once

#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "apps/fgnet/cli_app.h"
#include "apps/fgnet/model_loading.h"
#include "engine/engine.h"
#include "network/engine_runner.h"
#include "network/executor.h"
#include "network/spec.h"
#include "router/embedding_router.h"
#include "router/text_embedder.h"
#include "util/thread_pool.h"

namespace fgnet::cli {

// A task: --prompt TEXT, or --task FILE with {"prompt", "id"?, "context"?}.
struct NetworkTask {
  std::string id;
  std::string text;  // the prompt, then the context after a blank line
};
Result<NetworkTask> ReadNetworkTask(const ParsedArgs& args);

// Declares the engine and router options shared by network commands.
void AddNetworkRuntimeOptions(CommandSpec& c);

class NetworkRuntime {
 public:
  // Loads the model (with tokenizer) and every expert's adapters, and starts an engine.
  static Result<std::unique_ptr<NetworkRuntime>> Create(const ParsedArgs& args,
                                                        const network::ExpertSet& experts,
                                                        std::ostream& err);
  ~NetworkRuntime();

  // A fresh engine (and runner) with the same options: an empty prefix cache and KV pool.
  Status RestartEngine();

  // Executor options for `spec`: the embedding router when the spec routes by embeddings (the
  // experts' embeddings are computed on first use and cached), the code checker, `observer`.
  Result<network::ExecutorOptions> ExecutorOptionsFor(const network::NetworkSpec& spec,
                                                      network::RunObserver* observer);

  network::NetworkResult Run(const network::NetworkSpec& spec, const std::string& task,
                             network::RunObserver* observer);

  const LoadedModel& model() const { return *loaded_; }
  Engine& engine() { return *engine_; }

 private:
  NetworkRuntime() = default;
  Status StartEngine();

  const network::ExpertSet* experts_ = nullptr;
  std::ostream* err_ = nullptr;  // notes (router cache entries rejected)
  std::unique_ptr<LoadedModel> loaded_;
  EngineOptions engine_options_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<network::EngineNodeRunner> runner_;
  router::EmbedderOptions router_options_;
  std::optional<RoutingAdapter> router_adapter_;
  std::unique_ptr<ThreadPool> router_pool_;
  std::unique_ptr<router::TextEmbedder> embedder_;
  std::string router_cache_;
  bool pin_prefixes_ = true;
  std::unique_ptr<router::EmbeddingRouter> router_;
  network::CodeChecker checker_;
};

}  // namespace fgnet::cli
