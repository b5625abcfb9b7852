// Tree topology: routing nodes rank their children (embedding router, router expert, callback),
// the top-k above the threshold run concurrently, leaves answer. A failed or invalid leaf is
// replaced by its next-best sibling; a subtree with no valid leaf counts as a failed child of its
// parent (backtracking up), within TreeSpec::max_backtracks retries in all.
#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "network/executor_internal.h"
#include "tokenizer/function_call.h"

namespace fgnet::network::internal {
namespace {

struct LeafResult {
  std::size_t job;
  bool valid;
};

class TreeRunner {
 public:
  explicit TreeRunner(NetworkRun& run) : run_(run), spec_(run.spec()) {
    backtracks_left_ = spec_.tree.backtrack ? std::max(0, spec_.tree.max_backtracks) : 0;
  }

  Result<std::string> Run() {
    const NodeSpec* root = nullptr;
    for (const NodeSpec& n : spec_.nodes) {
      bool incoming = std::any_of(spec_.edges.begin(), spec_.edges.end(),
                                  [&](const EdgeSpec& e) { return e.to == n.id; });
      if (!incoming) {
        root = &n;
        break;
      }
    }
    if (root == nullptr) root = &spec_.nodes[0];
    std::vector<LeafResult> leaves;
    if (Children(*root).empty()) {
      std::size_t job = run_.WaitOne(run_.StartNode(*root, {}, 0, 0, ""));
      leaves.push_back({job, run_.Valid(job)});
      if (!run_.Produced(job)) return MakeError(run_.FailureMessage(job));
    } else {
      Explore(*root, "", &leaves);
    }
    std::vector<std::size_t> chosen;
    for (const LeafResult& l : leaves) {
      if (l.valid) chosen.push_back(l.job);
    }
    if (chosen.empty()) {  // no valid leaf: the invalid outputs compete
      for (const LeafResult& l : leaves) {
        if (run_.Produced(l.job)) chosen.push_back(l.job);
      }
    }
    if (chosen.empty()) {
      std::string why = first_error_.empty() ? "no leaf ran" : first_error_;
      return MakeError("tree: no leaf produced an output; ", why);
    }
    return run_.Combine(chosen, CombinerSpec::Kind::kBest);
  }

 private:
  std::vector<const NodeSpec*> Children(const NodeSpec& node) const {
    std::vector<const NodeSpec*> out;
    for (const EdgeSpec& e : spec_.edges) {
      if (e.from != node.id) continue;
      if (const NodeSpec* c = spec_.FindNode(e.to)) out.push_back(c);
    }
    return out;
  }

  void NoteError(const std::string& error) {
    if (first_error_.empty()) first_error_ = error;
  }

  // Starts the routing call of `node`: its expert answers a FunctionGemma call
  // route(children=[...]).
  std::size_t StartRouteCall(const NodeSpec& node, const std::string& parent,
                             std::int32_t attempt) {
    Json ids = Json::array();
    for (const NodeSpec* c : Children(node)) ids.push_back(c->id);
    Json tool = {{"type", "function"},
                 {"function",
                  {{"name", "route"},
                   {"description", "Choose the children that should handle the task, best first."},
                   {"parameters",
                    {{"type", "object"},
                     {"properties",
                      {{"children",
                        {{"type", "array"},
                         {"description", "child node ids, best first"},
                         {"items", {{"type", "string"}, {"enum", ids}}},
                         {"minItems", 1},
                         {"maxItems", ids.size()}}}}},
                     {"required", Json::array({"children"})}}}}}};
    NodeCall call = run_.BuildCall(node, "");
    call.output = OutputContract{};
    call.output.kind = OutputContract::Kind::kFunctionCalls;
    call.output.tools = Json::array({tool});
    call.output.check_code = false;
    NodeTrace t;
    t.node_id = node.id;
    t.expert_id = node.expert;
    t.parent = parent;
    t.attempt = attempt;
    OutputContract contract = call.output;
    return run_.Start(std::move(call), std::move(t), node.timeout_ms, &contract);
  }

  // The ranking a router expert's answer gives (`started`: its routing call, if started).
  Result<std::vector<RouteChoice>> RouteByExpert(const NodeSpec& node, const std::string& parent,
                                                 const std::vector<const NodeSpec*>& children,
                                                 std::optional<std::size_t> started) {
    std::size_t job = started ? *started : StartRouteCall(node, parent, 0);
    run_.Wait({job});
    if (!run_.Produced(job)) return MakeError(run_.FailureMessage(job));
    Result<ParsedModelOutput> parsed = ParseModelOutput(run_.TraceOf(job).output);
    std::vector<std::string> named;
    if (parsed.ok()) {
      for (const FunctionCall& fc : parsed->calls) {
        if (fc.name != "route" || !fc.arguments.contains("children")) continue;
        const Json& list = fc.arguments["children"];
        if (!list.is_array()) continue;
        for (const Json& v : list) {
          if (!v.is_string()) continue;
          std::string id = v.get<std::string>();
          bool known = std::any_of(children.begin(), children.end(),
                                   [&](const NodeSpec* c) { return c->id == id; });
          if (known && std::find(named.begin(), named.end(), id) == named.end()) {
            named.push_back(id);
          }
        }
      }
    }
    if (named.empty()) {
      return MakeError("the router expert's answer named no child (expected a call ",
                       "route(children=[...]))");
    }
    std::vector<RouteChoice> ranking;
    for (const std::string& id : named) {
      ranking.push_back({id, 1.0 / static_cast<double>(named.size())});
    }
    for (const NodeSpec* c : children) {
      if (std::find(named.begin(), named.end(), c->id) == named.end()) {
        ranking.push_back({c->id, 0.0});
      }
    }
    return ranking;
  }

  Result<std::vector<RouteChoice>> Route(const NodeSpec& node, const std::string& parent,
                                         const std::vector<const NodeSpec*>& children,
                                         std::string* router_name,
                                         std::optional<std::size_t> started) {
    RouteContext ctx;
    ctx.task = run_.task();
    ctx.node = &node;
    ctx.children = children;
    ctx.experts = &run_.experts();
    ctx.temperature = spec_.tree.temperature;
    Result<std::vector<RouteChoice>> ranking = MakeError("no router");
    switch (spec_.tree.router) {
      case TreeSpec::Router::kEmbedding:
        *router_name = "embedding";
        if (!run_.options().embedding_router) {
          return MakeError("node '", node.id, "': the embedding router is not available");
        }
        ranking = run_.options().embedding_router(ctx);
        break;
      case TreeSpec::Router::kCallback:
        *router_name = "callback";
        if (!run_.options().route_callback) {
          return MakeError("node '", node.id, "': no route callback was given");
        }
        ranking = run_.options().route_callback(ctx);
        break;
      case TreeSpec::Router::kExpert:
        *router_name = "expert";
        ranking = RouteByExpert(node, parent, children, started);
        break;
    }
    if (!ranking.ok())
      return MakeError("routing at node '", node.id, "': ", ranking.error().message());
    // Keep known children once each, best first (stable), then any the router left out.
    std::vector<RouteChoice> out;
    std::set<std::string> seen;
    std::vector<RouteChoice> sorted = *ranking;
    std::stable_sort(sorted.begin(), sorted.end(), [](const RouteChoice& a, const RouteChoice& b) {
      return a.probability > b.probability;
    });
    for (const RouteChoice& c : sorted) {
      bool known = std::any_of(children.begin(), children.end(),
                               [&](const NodeSpec* n) { return n->id == c.node_id; });
      if (known && seen.insert(c.node_id).second) out.push_back(c);
    }
    for (const NodeSpec* c : children) {
      if (seen.insert(c->id).second) out.push_back({c->id, 0.0});
    }
    return out;
  }

  // Runs the subtree under `node`; appends its leaf results. Returns true when some leaf of it
  // produced a valid output.
  bool Explore(const NodeSpec& node, const std::string& parent, std::vector<LeafResult>* leaves,
               std::optional<std::size_t> route_call = std::nullopt) {
    std::vector<const NodeSpec*> children = Children(node);
    std::string router_name;
    Result<std::vector<RouteChoice>> routed =
        Route(node, parent, children, &router_name, route_call);
    if (!routed.ok()) {
      NoteError(routed.error().message());
      return false;
    }
    const std::vector<RouteChoice>& ranking = *routed;
    RouteTrace rt;
    rt.node_id = node.id;
    rt.router = router_name;
    for (const RouteChoice& c : ranking) {
      rt.scores.push_back({{"node", c.node_id}, {"probability", c.probability}});
    }
    std::size_t next = 0;
    std::vector<const NodeSpec*> batch;
    const std::size_t k = static_cast<std::size_t>(std::max(1, spec_.tree.top_k));
    while (next < ranking.size() && batch.size() < k) {
      if (!batch.empty() && ranking[next].probability < spec_.tree.threshold) break;
      batch.push_back(spec_.FindNode(ranking[next].node_id));
      rt.chosen.push_back(ranking[next].node_id);
      ++next;
    }
    run_.trace().routes.push_back(rt);
    if (run_.options().observer != nullptr) run_.options().observer->OnRoute(rt);
    const std::size_t route_index = run_.trace().routes.size() - 1;
    bool any_valid = false;
    std::int32_t attempt = 0;
    while (!batch.empty()) {
      // Start every leaf and every routing call of the batch at once, then go down the inner
      // children.
      std::vector<std::pair<const NodeSpec*, std::size_t>> started;
      std::map<const NodeSpec*, std::size_t> route_calls;
      std::vector<std::size_t> ids;
      for (const NodeSpec* child : batch) {
        if (Children(*child).empty()) {
          started.emplace_back(child, run_.StartNode(*child, {}, 0, attempt, node.id));
          ids.push_back(started.back().second);
        } else if (spec_.tree.router == TreeSpec::Router::kExpert) {
          route_calls[child] = StartRouteCall(*child, node.id, attempt);
          ids.push_back(route_calls[child]);
        }
      }
      run_.Wait(ids);
      std::size_t failures = 0;
      for (const auto& s : started) {
        bool valid = run_.Valid(s.second);
        leaves->push_back({s.second, valid});
        if (valid) {
          any_valid = true;
        } else {
          ++failures;
          NoteError(run_.Produced(s.second) ? "leaf '" + s.first->id + "' output was invalid"
                                            : run_.FailureMessage(s.second));
        }
      }
      for (const NodeSpec* child : batch) {
        if (Children(*child).empty()) continue;
        auto call = route_calls.find(child);
        std::optional<std::size_t> route_job;
        if (call != route_calls.end()) route_job = call->second;
        if (Explore(*child, node.id, leaves, route_job)) {
          any_valid = true;
        } else {
          ++failures;
        }
      }
      batch.clear();
      ++attempt;
      while (failures > 0 && backtracks_left_ > 0 && next < ranking.size()) {
        --failures;
        --backtracks_left_;
        batch.push_back(spec_.FindNode(ranking[next].node_id));
        run_.trace().routes[route_index].chosen.push_back(ranking[next].node_id);
        ++next;
      }
    }
    return any_valid;
  }

  NetworkRun& run_;
  const NetworkSpec& spec_;
  std::int32_t backtracks_left_ = 0;
  std::string first_error_;
};

}  // namespace

Result<std::string> RunTree(NetworkRun& run) { return TreeRunner(run).Run(); }

}  // namespace fgnet::network::internal
