// Shared machinery of the network executors (executor.cpp) and the topology runners
// (run_chain_ring.cpp, run_tree.cpp, run_mesh_dag.cpp): building node calls, handoffs, starting
// and waiting for node attempts, traces, combining. Internal to fgnet_network.
// Thread-safety: a NetworkRun belongs to the thread running RunNetwork.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "network/combine.h"
#include "network/executor.h"
#include "network/structured.h"

namespace fgnet::network::internal {

using Clock = std::chrono::steady_clock;

// One upstream output handed to a node.
struct Upstream {
  std::string node_id;
  std::string text;
};

// The {input} of a node and how it was made.
struct PreparedInput {
  std::string text;
  std::string handoff;            // "structured", "summary", "text" or ""
  std::vector<std::string> from;  // upstream node ids, in order
};

// One node attempt started on the runner.
struct Job {
  std::size_t trace_index = 0;
  std::unique_ptr<NodeRunner::Pending> pending;
  std::optional<Clock::time_point> deadline;
  std::int64_t timeout_ms = 0;  // the node's own timeout
  bool network_capped = false;  // the deadline is the network's
  bool cancelled_by_network = false;
  bool cancelled_late = false;  // cancelled because it outlived its deadline
  Clock::time_point started;
  std::optional<OutputContract> contract;  // validate under it (none: no validation)
  NodeResult result;
  bool finished = false;
};

class NetworkRun {
 public:
  NetworkRun(const NetworkSpec& spec, const ExpertSet& experts, const std::string& task,
             NodeRunner& runner, const ExecutorOptions& options);

  const NetworkSpec& spec() const { return spec_; }
  const ExpertSet& experts() const { return experts_; }
  const std::string& task() const { return task_; }
  const ExecutorOptions& options() const { return options_; }
  NetworkTrace& trace() { return trace_; }

  // The user turn of `node` with {task} and {input} filled.
  std::string RenderUserTurn(const NodeSpec& node, const std::string& input) const;
  // A node call: prompt parts, sampling, max_tokens, contract and adapters resolved.
  NodeCall BuildCall(const NodeSpec& node, const std::string& input) const;
  // The handoff of `upstream` outputs to `node` (runs summarizer calls when needed).
  PreparedInput PrepareInput(const NodeSpec& node, const std::vector<Upstream>& upstream,
                             std::int32_t round);

  // Starts one attempt. `trace` gives node/expert/round/attempt/parent/inputs/handoff; the
  // call's deadline is set here. `contract`: validate the output under it (null: no check).
  std::size_t Start(NodeCall call, NodeTrace trace, std::int64_t timeout_ms,
                    const OutputContract* contract);
  // Starts `node` with its handoff prepared from `upstream`.
  std::size_t StartNode(const NodeSpec& node, const std::vector<Upstream>& upstream,
                        std::int32_t round, std::int32_t attempt, const std::string& parent);
  // Waits for every listed job (progress every ~100 ms; the network's timeout cancels).
  void Wait(const std::vector<std::size_t>& jobs);
  std::size_t WaitOne(std::size_t job) {
    Wait({job});
    return job;
  }

  const NodeTrace& TraceOf(std::size_t job) const { return trace_.nodes[jobs_[job]->trace_index]; }
  // Ran to the end and produced output ("ok" or "invalid").
  bool Produced(std::size_t job) const;
  bool Valid(std::size_t job) const { return TraceOf(job).status == "ok"; }
  // "node 'x' (round 2) failed: reason"
  std::string FailureMessage(std::size_t job) const;
  // Records a node that does not run because `failed_node` failed.
  void Skip(const NodeSpec& node, std::int32_t round, const std::string& failed_node);

  // A candidate of `job`'s output under the network contract.
  Candidate MakeCandidate(std::size_t job) const;
  // Combines the outputs of `jobs` (those that produced output) with the network's combiner;
  // `none_as` stands in for CombinerSpec::kNone when there are several.
  Result<std::string> Combine(const std::vector<std::size_t>& jobs, CombinerSpec::Kind none_as);
  // A logit-ensemble call over `nodes`' experts (CombinerSpec::kEnsemble).
  Result<std::string> RunEnsemble(const std::vector<const NodeSpec*>& nodes);

  // Validates the final output and fills the result.
  NetworkResult Finish(Result<std::string> output);

  double MsSinceStart(Clock::time_point t) const;
  bool NetworkDeadlinePassed() const;

 private:
  void Finalize(Job& job);
  std::string NetworkTimeoutMessage() const;

  const NetworkSpec& spec_;
  const ExpertSet& experts_;
  const std::string& task_;
  NodeRunner& runner_;
  const ExecutorOptions& options_;
  Clock::time_point start_;
  std::optional<Clock::time_point> network_deadline_;
  NetworkTrace trace_;
  std::vector<std::unique_ptr<Job>> jobs_;
};

// The nodes of a chain or ring in execution order (ChainOrder).
std::vector<const NodeSpec*> ChainNodes(const NetworkSpec& spec);

Result<std::string> RunChain(NetworkRun& run);
Result<std::string> RunRing(NetworkRun& run);
Result<std::string> RunTree(NetworkRun& run);
Result<std::string> RunMesh(NetworkRun& run);
Result<std::string> RunDag(NetworkRun& run);

}  // namespace fgnet::network::internal
