// Mesh and DAG topologies. Mesh: every node at once on the task, optionally an exchange round
// in which each node sees the others' outputs, then the combiner (or one logit-ensemble call).
// DAG: topological levels, each level's nodes at once, inputs ordered by edge weight.
#include <algorithm>
#include <map>

#include "network/executor_internal.h"

namespace fgnet::network::internal {

Result<std::string> RunMesh(NetworkRun& run) {
  const NetworkSpec& spec = run.spec();
  if (spec.combiner.kind == CombinerSpec::Kind::kEnsemble) {
    std::vector<const NodeSpec*> nodes;
    for (const NodeSpec& n : spec.nodes) nodes.push_back(&n);
    return run.RunEnsemble(nodes);
  }
  std::vector<std::size_t> jobs;
  for (const NodeSpec& n : spec.nodes) jobs.push_back(run.StartNode(n, {}, 0, 0, ""));
  run.Wait(jobs);
  if (spec.mesh.exchange) {
    std::vector<std::size_t> second;
    std::vector<std::vector<Upstream>> inputs(spec.nodes.size());
    for (std::size_t i = 0; i < spec.nodes.size(); ++i) {
      if (!run.Produced(jobs[i])) continue;
      for (std::size_t j = 0; j < spec.nodes.size(); ++j) {
        if (j != i && run.Produced(jobs[j])) {
          inputs[i].push_back({spec.nodes[j].id, run.TraceOf(jobs[j]).output});
        }
      }
    }
    for (std::size_t i = 0; i < spec.nodes.size(); ++i) {
      if (run.Produced(jobs[i]))
        second.push_back(run.StartNode(spec.nodes[i], inputs[i], 1, 0, ""));
    }
    run.Wait(second);
    // A node whose exchange round failed keeps its first answer.
    std::vector<std::size_t> final_jobs;
    std::size_t s = 0;
    for (std::size_t i = 0; i < spec.nodes.size(); ++i) {
      if (!run.Produced(jobs[i])) {
        final_jobs.push_back(jobs[i]);
        continue;
      }
      std::size_t job = second[s++];
      final_jobs.push_back(run.Produced(job) ? job : jobs[i]);
    }
    jobs = std::move(final_jobs);
  }
  bool any = std::any_of(jobs.begin(), jobs.end(), [&](std::size_t j) { return run.Produced(j); });
  if (!any) return MakeError("mesh: every node failed; ", run.FailureMessage(jobs[0]));
  return run.Combine(jobs, CombinerSpec::Kind::kBest);
}

Result<std::string> RunDag(NetworkRun& run) {
  const NetworkSpec& spec = run.spec();
  const std::size_t n = spec.nodes.size();
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < n; ++i) index[spec.nodes[i].id] = i;
  std::vector<int> indegree(n, 0);
  std::vector<bool> has_out(n, false);
  for (const EdgeSpec& e : spec.edges) {
    auto to = index.find(e.to);
    auto from = index.find(e.from);
    if (to == index.end() || from == index.end()) continue;
    ++indegree[to->second];
    has_out[from->second] = true;
  }
  std::vector<std::optional<std::size_t>> job_of(n);
  std::vector<std::string> failed_root(n);  // the failed node a node depends on ("" none)
  std::vector<bool> done(n, false);
  std::string first_error;
  std::size_t finished = 0;
  while (finished < n) {
    std::vector<std::size_t> level;
    for (std::size_t i = 0; i < n; ++i) {
      if (!done[i] && indegree[i] == 0) level.push_back(i);
    }
    if (level.empty()) return MakeError("dag: the edges form a cycle");
    std::vector<std::size_t> started;
    for (std::size_t i : level) {
      const NodeSpec& node = spec.nodes[i];
      // Parents, highest weight first (ties: spec order).
      std::vector<const EdgeSpec*> in_edges;
      for (const EdgeSpec& e : spec.edges) {
        if (e.to == node.id && index.count(e.from) != 0) in_edges.push_back(&e);
      }
      std::stable_sort(in_edges.begin(), in_edges.end(),
                       [](const EdgeSpec* a, const EdgeSpec* b) { return a->weight > b->weight; });
      std::vector<Upstream> upstream;
      std::string failed;
      for (const EdgeSpec* e : in_edges) {
        std::size_t p = index[e->from];
        if (!failed_root[p].empty()) {
          failed = failed_root[p];
          break;
        }
        upstream.push_back({e->from, run.TraceOf(*job_of[p]).output});
      }
      if (!failed.empty()) {
        failed_root[i] = failed;
        run.Skip(node, 0, failed);
        continue;
      }
      job_of[i] = run.StartNode(node, upstream, 0, 0, "");
      started.push_back(*job_of[i]);
    }
    run.Wait(started);
    for (std::size_t i : level) {
      done[i] = true;
      ++finished;
      if (job_of[i] && !run.Produced(*job_of[i])) {
        failed_root[i] = spec.nodes[i].id;
        if (first_error.empty()) first_error = run.FailureMessage(*job_of[i]);
      }
      for (const EdgeSpec& e : spec.edges) {
        if (e.from == spec.nodes[i].id && index.count(e.to) != 0) --indegree[index[e.to]];
      }
    }
  }
  if (!first_error.empty()) return MakeError(first_error);
  std::vector<std::size_t> sinks;
  for (std::size_t i = 0; i < n; ++i) {
    if (!has_out[i] && job_of[i]) sinks.push_back(*job_of[i]);
  }
  if (sinks.empty()) return MakeError("dag: no sink node ran");
  return run.Combine(sinks, CombinerSpec::Kind::kConcat);
}

}  // namespace fgnet::network::internal
