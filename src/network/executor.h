// Runs a network of experts on a task: chain, ring, tree, mesh or DAG, through a NodeRunner.
//
//   chain  nodes in edge order; each node's output is handed to the next.
//   ring   a chain that loops back: after the last node the first sees its output, for
//          RingSpec::rounds rounds, stopping early when the output is unchanged or valid.
//   tree   from the root, a router ranks each node's children (embedding router, router expert
//          answering with a FunctionGemma call, or a callback); the top-k above the threshold
//          run, concurrently; inner nodes route, leaves answer. A leaf whose output fails
//          validation (or whose run fails) is replaced by the next-best sibling, and a level with
//          no sibling left backtracks to its parent's next-best child.
//   mesh   every node on the task at once; optionally an exchange round in which each node sees
//          the others' outputs; then the combiner.
//   dag    topological levels; every node of a level runs at once and receives its parents'
//          outputs, highest edge weight first; several sinks are combined.
// Every node that can run is started before any is waited for, so independent branches share
// the engine's batches. Upstream outputs pass through handoffs: structured outputs are rendered
// compactly; long unstructured text is summarised by the handoff's summarizer expert.
//
// Errors never escape as exceptions and never hang: a node that fails or passes its deadline is
// recorded in the trace ("failed", with the reason), nodes depending on it are "skipped", and the
// result's status names the node and the reason. A mesh or tree survives failed nodes while at
// least one candidate remains.
// Thread-safety: RunNetwork may be called from several threads with the same runner.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "network/node_engine.h"
#include "network/spec.h"
#include "network/trace.h"
#include "network/validate.h"
#include "util/status.h"

namespace fgnet::network {

// A ranked child of a routing node.
struct RouteChoice {
  std::string node_id;
  double probability = 0;
};

struct RouteContext {
  std::string task;
  const NodeSpec* node = nullptr;         // the routing node
  std::vector<const NodeSpec*> children;  // its children, in spec order
  const ExpertSet* experts = nullptr;
  double temperature = 1.0;  // TreeSpec::temperature
};

// Ranks every child (probabilities sum to 1), best first.
using RouteFunction = std::function<Result<std::vector<RouteChoice>>(const RouteContext&)>;

struct ExecutorOptions {
  RouteFunction embedding_router;             // TreeSpec::Router::kEmbedding
  RouteFunction route_callback;               // TreeSpec::Router::kCallback
  const CodeChecker* code_checker = nullptr;  // null: no syntax checks
  RunObserver* observer = nullptr;
};

struct NetworkResult {
  Status status;       // an error names the failing node and why
  std::string output;  // the network's output (empty on error)
  ValidationReport validation;
  NetworkTrace trace;
};

// `spec` must have been validated against `experts` (ParseNetworkSpec). Never throws.
NetworkResult RunNetwork(const NetworkSpec& spec, const ExpertSet& experts, const std::string& task,
                         NodeRunner& runner, const ExecutorOptions& options);

}  // namespace fgnet::network
