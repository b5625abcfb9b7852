// What a network executor asks of an inference engine: run one node (an expert on a prompt) and
// hand back its output. EngineNodeRunner (engine_runner.h) runs nodes on the serving engine, so
// the nodes a network starts together share its batches and its prefix cache (in its own library,
// fgnet_network_runner, so that the rest of the layer needs no engine); tests script a
// fake one.
//
// Start() returns at once; the executor starts every node it can run, then waits for them, so
// independent branches are in flight together. A node's deadline is part of its call: a runner
// ends a node whose deadline passed (finish_reason "deadline"), so no wait outlives it.
// Thread-safety: Start() and the Pending methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "network/spec.h"
#include "util/status.h"

namespace fgnet::network {

// The prompt of a node, in the parts it shares with other nodes. A runner renders them with the
// model's chat format, in this order, and may pin each leading part as a nested prefix:
//   system (every expert) -> domain (experts of one domain) -> role (one expert) -> user.
struct PromptParts {
  std::string system;
  std::string domain_id;
  std::string domain;
  std::string role;
  std::string user;  // the task and handoff (never shared)
};

struct NodeAdapter {
  std::string name;  // the name the runner's registry knows it by (its path, for experts files)
  float scale = 1.0f;
};

// One member of a logit ensemble (CombinerSpec::kEnsemble).
struct NodeEnsembleMember {
  std::vector<NodeAdapter> adapters;
  double weight = 1.0;
};

struct NodeCall {
  std::string node_id;  // for traces and errors
  std::string expert_id;
  std::vector<NodeAdapter> adapters;
  PromptParts prompt;
  // Resolved sampling: temperature 0 (or unset) is greedy.
  float temperature = 0.0f;
  float top_p = 1.0f;
  std::int32_t top_k = 0;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  std::uint64_t seed = 0;
  std::int64_t max_tokens = 256;
  OutputContract output;  // constrains decoding (JSON Schema or FunctionGemma calls)
  std::vector<NodeEnsembleMember> ensemble;  // non-empty: a logit ensemble (adapters empty)
  std::string ensemble_mode = "mean";
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

struct NodeResult {
  Status status;  // an error: the node failed (the message says why)
  std::string text;
  std::string finish_reason;  // "stop", "length", "deadline", "cancelled", "error"
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;  // prompt tokens reused from the prefix cache
  // The shared prompt parts served from pinned prefixes, outermost first ("system", "domain",
  // "role").
  std::vector<std::string> prefix_hits;
  double queue_ms = 0;
  double time_to_first_token_ms = 0;
  double latency_ms = 0;  // start -> finished
};

class NodeRunner {
 public:
  class Pending {
   public:
    virtual ~Pending() = default;
    // Blocks until the node has finished (or its deadline passed).
    virtual NodeResult Wait() = 0;
    // Ends the node early (finish_reason "cancelled"); no effect once finished.
    virtual void Cancel() = 0;
    virtual bool done() const = 0;
    // Tokens generated so far (for progress displays).
    virtual std::int64_t generated_tokens() const = 0;
  };

  virtual ~NodeRunner() = default;
  // Starts a node. Problems with the call itself (an unknown adapter, a bad contract) are
  // reported through the Pending's result, never thrown.
  virtual std::unique_ptr<Pending> Start(NodeCall call) = 0;
};

}  // namespace fgnet::network
