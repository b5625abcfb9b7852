// The graph rules of each topology (chain, ring, tree, mesh, dag) and the chain order.
#include <algorithm>
#include <map>
#include <set>

#include "network/spec.h"
#include "network/spec_reader.h"

namespace fgnet::network {
namespace {

using internal::Index;
using internal::SpecReader;

// The spec's nodes and edges as adjacency lists over node positions.
struct Graph {
  std::vector<std::string> ids;
  std::vector<std::vector<int>> out;
  std::vector<std::vector<int>> in;

  explicit Graph(const NetworkSpec& spec) {
    std::map<std::string, int> index;
    for (const NodeSpec& node : spec.nodes) {
      index.emplace(node.id, static_cast<int>(ids.size()));
      ids.push_back(node.id);
    }
    out.resize(ids.size());
    in.resize(ids.size());
    for (const EdgeSpec& edge : spec.edges) {
      const auto from = index.find(edge.from);
      const auto to = index.find(edge.to);
      if (from == index.end() || to == index.end()) continue;
      out[from->second].push_back(to->second);
      in[to->second].push_back(from->second);
    }
  }
  int size() const { return static_cast<int>(ids.size()); }
  std::string Quoted(int node) const { return "'" + ids[node] + "'"; }
};

std::string QuotedList(const Graph& graph, const std::vector<int>& nodes) {
  std::string text;
  for (int node : nodes) text += (text.empty() ? "" : ", ") + graph.Quoted(node);
  return text;
}

// The path of a chain from `start` following single outgoing edges (stops at a repeat).
std::vector<int> WalkPath(const Graph& graph, int start) {
  std::vector<int> path;
  std::vector<bool> seen(graph.size(), false);
  for (int node = start; node >= 0 && !seen[node];) {
    seen[node] = true;
    path.push_back(node);
    node = graph.out[node].empty() ? -1 : graph.out[node][0];
  }
  return path;
}

// True when the edges form one cycle through every node (each node one edge in, one out).
bool IsClosedLoop(const Graph& graph) {
  for (int i = 0; i < graph.size(); ++i) {
    if (graph.in[i].size() != 1 || graph.out[i].size() != 1) return false;
  }
  return graph.size() > 0 && static_cast<int>(WalkPath(graph, 0).size()) == graph.size();
}

void CheckChain(SpecReader& reader, const NetworkSpec& spec, const Graph& graph,
                std::string_view kind) {
  if (spec.edges.empty()) return;
  if (kind == "ring" && IsClosedLoop(graph)) return;
  const std::string rule = std::string("; a ") + std::string(kind) +
                           "'s edges must form one path through every node" +
                           (kind == "ring" ? " (plus an optional closing edge)" : "");
  bool branching = false;
  for (int i = 0; i < graph.size(); ++i) {
    if (graph.out[i].size() > 1) {
      reader.Add("$.edges", "node " + graph.Quoted(i) + " has " +
                                std::to_string(graph.out[i].size()) + " outgoing edges" + rule);
      branching = true;
    }
    if (graph.in[i].size() > 1) {
      reader.Add("$.edges", "node " + graph.Quoted(i) + " has " +
                                std::to_string(graph.in[i].size()) + " incoming edges" + rule);
      branching = true;
    }
  }
  if (branching) return;
  std::vector<int> starts;
  for (int i = 0; i < graph.size(); ++i) {
    if (graph.in[i].empty()) starts.push_back(i);
  }
  if (starts.empty()) {
    reader.Add("$.edges", "the edges form a cycle that leaves out some nodes" + rule);
  } else if (starts.size() > 1) {
    reader.Add("$.edges", "the edges form " + std::to_string(starts.size()) +
                              " separate paths, starting at " + QuotedList(graph, starts) + rule);
  } else if (static_cast<int>(WalkPath(graph, starts[0]).size()) != graph.size()) {
    std::vector<bool> on_path(graph.size(), false);
    for (int node : WalkPath(graph, starts[0])) on_path[node] = true;
    std::vector<int> off;
    for (int i = 0; i < graph.size(); ++i) {
      if (!on_path[i]) off.push_back(i);
    }
    reader.Add("$.edges", "nodes " + QuotedList(graph, off) + " form a cycle off the path from " +
                              graph.Quoted(starts[0]) + rule);
  }
}

// Levels of an acyclic graph: the number of nodes on its longest path.
int CountLevels(const Graph& graph) {
  std::vector<int> level(graph.size(), 0);
  std::vector<int> pending(graph.size());
  std::vector<int> ready;
  for (int i = 0; i < graph.size(); ++i) {
    pending[i] = static_cast<int>(graph.in[i].size());
    if (pending[i] == 0) ready.push_back(i);
  }
  int levels = 0;
  while (!ready.empty()) {
    const int node = ready.back();
    ready.pop_back();
    level[node] = std::max(level[node], 1);
    levels = std::max(levels, level[node]);
    for (int child : graph.out[node]) {
      level[child] = std::max(level[child], level[node] + 1);
      if (--pending[child] == 0) ready.push_back(child);
    }
  }
  return levels;
}

void CheckTree(SpecReader& reader, const NetworkSpec& spec, const Graph& graph) {
  std::vector<int> roots;
  bool shape_ok = true;
  for (int i = 0; i < graph.size(); ++i) {
    if (graph.in[i].empty()) roots.push_back(i);
    if (graph.in[i].size() > 1) {
      reader.Add("$.edges", "node " + graph.Quoted(i) + " has " +
                                std::to_string(graph.in[i].size()) + " parents (" +
                                QuotedList(graph, graph.in[i]) + "); a tree node has one");
      shape_ok = false;
    }
    if (spec.branching_factor > 0 &&
        static_cast<int>(graph.out[i].size()) > spec.branching_factor) {
      reader.Add("$.topology.branching_factor",
                 "node " + graph.Quoted(i) + " has " + std::to_string(graph.out[i].size()) +
                     " children, more than " + std::to_string(spec.branching_factor));
    }
  }
  if (roots.size() != 1) {
    reader.Add("$.edges", "a tree needs exactly one root (a node without a parent); found " +
                              (roots.empty() ? std::string("none")
                                             : std::to_string(roots.size()) + ": " +
                                                   QuotedList(graph, roots)));
    shape_ok = false;
  } else {
    std::vector<int> depth(graph.size(), 0);
    std::vector<int> queue = {roots[0]};
    depth[roots[0]] = 1;
    int levels = 1;
    for (std::size_t q = 0; q < queue.size(); ++q) {
      for (int child : graph.out[queue[q]]) {
        if (depth[child] != 0) continue;
        depth[child] = depth[queue[q]] + 1;
        levels = std::max(levels, depth[child]);
        queue.push_back(child);
      }
    }
    std::vector<int> unreachable;
    for (int i = 0; i < graph.size(); ++i) {
      if (depth[i] == 0) unreachable.push_back(i);
    }
    if (!unreachable.empty()) {
      reader.Add("$.edges", "nodes " + QuotedList(graph, unreachable) +
                                " are not reachable from the root " + graph.Quoted(roots[0]));
      shape_ok = false;
    }
    if (shape_ok && spec.depth > 0 && levels > spec.depth) {
      reader.Add("$.topology.depth", "the tree has " + std::to_string(levels) +
                                         " levels, more than " + std::to_string(spec.depth));
    }
  }
  if (spec.tree.router == TreeSpec::Router::kExpert) {
    for (int i = 0; i < graph.size(); ++i) {
      if (!graph.out[i].empty() && spec.nodes[i].expert.empty()) {
        reader.Add(Index("$.nodes", i) + ".expert",
                   "router 'expert' needs an expert on inner node " + graph.Quoted(i));
      }
    }
  }
}

// Finds a cycle (depth-first); returns its nodes with the first repeated at the end.
std::vector<int> FindCycle(const Graph& graph) {
  enum Color { kWhite, kGrey, kBlack };
  std::vector<Color> color(graph.size(), kWhite);
  std::vector<std::pair<int, std::size_t>> stack;  // node, next child
  for (int start = 0; start < graph.size(); ++start) {
    if (color[start] != kWhite) continue;
    stack.push_back({start, 0});
    color[start] = kGrey;
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next == graph.out[node].size()) {
        color[node] = kBlack;
        stack.pop_back();
        continue;
      }
      const int child = graph.out[node][next++];
      if (color[child] == kGrey) {
        std::vector<int> cycle;
        std::size_t from = 0;
        while (stack[from].first != child) ++from;
        for (std::size_t k = from; k < stack.size(); ++k) cycle.push_back(stack[k].first);
        cycle.push_back(child);
        return cycle;
      }
      if (color[child] == kWhite) {
        color[child] = kGrey;
        stack.push_back({child, 0});
      }
    }
  }
  return {};
}

void CheckDag(SpecReader& reader, const NetworkSpec& spec, const Graph& graph) {
  const std::vector<int> cycle = FindCycle(graph);
  if (!cycle.empty()) {
    std::string path;
    for (int node : cycle) path += (path.empty() ? "" : " -> ") + graph.ids[node];
    reader.Add("$.edges", "cycle " + path + " (a dag must be acyclic)");
    return;
  }
  const int levels = CountLevels(graph);
  if (spec.depth > 0 && levels > spec.depth) {
    reader.Add("$.topology.depth", "the dag has " + std::to_string(levels) + " levels, more than " +
                                       std::to_string(spec.depth));
  }
}

}  // namespace

namespace internal {

void CheckTopology(SpecReader& reader, const NetworkSpec& spec, const std::vector<bool>& edge_ok) {
  const std::string_view kind = TopologyName(spec.topology);
  if ((spec.topology == Topology::kChain || spec.topology == Topology::kRing) &&
      spec.combiner.kind != CombinerSpec::Kind::kNone) {
    reader.Add("$.combiner.type", "a " + std::string(kind) + " has a single output; combiner '" +
                                      std::string(CombinerName(spec.combiner.kind)) +
                                      "' needs a tree, mesh or dag (use none)");
  }
  if (spec.topology == Topology::kMesh && spec.nodes.size() == 1) {
    reader.Add("$.nodes",
               "a mesh needs at least 2 nodes, got " + std::to_string(spec.nodes.size()));
  }
  // Graph rules only on a sound graph.
  if (std::find(edge_ok.begin(), edge_ok.end(), false) != edge_ok.end()) return;
  if (edge_ok.size() != spec.edges.size()) return;
  std::set<std::string> ids;
  for (const NodeSpec& node : spec.nodes) {
    if (node.id.empty() || !ids.insert(node.id).second) return;
  }
  const Graph graph(spec);
  switch (spec.topology) {
    case Topology::kChain:
    case Topology::kRing:
      CheckChain(reader, spec, graph, kind);
      break;
    case Topology::kTree:
      CheckTree(reader, spec, graph);
      break;
    case Topology::kMesh:
      break;
    case Topology::kDag:
      CheckDag(reader, spec, graph);
      break;
  }
}

}  // namespace internal

std::vector<std::string> ChainOrder(const NetworkSpec& spec) {
  std::vector<std::string> order;
  if (spec.edges.empty()) {
    for (const NodeSpec& node : spec.nodes) order.push_back(node.id);
    return order;
  }
  const Graph graph(spec);
  int start = 0;
  if (!IsClosedLoop(graph)) {
    for (int i = 0; i < graph.size(); ++i) {
      if (graph.in[i].empty()) {
        start = i;
        break;
      }
    }
  }
  for (int node : WalkPath(graph, start)) order.push_back(graph.ids[node]);
  return order;
}

}  // namespace fgnet::network
