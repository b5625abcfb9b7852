// Network executors against a scripted runner: topologies, handoffs, routing, backtracking,
// combiners, errors and deadlines, traces and the TreeView.
#include "network/executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "fake_runner.h"
#include "network/trace.h"

namespace fgnet::network {
namespace {

using testing::Fail;
using testing::FakeRunner;
using testing::Hang;
using testing::Text;

ExpertSet MakeExperts() {
  ExpertSet set;
  set.system_prompt = "You write code.";
  set.domains["frontend"] = "Frontend context.";
  for (const char* id : {"scaffold", "logic", "style", "test", "router", "summarizer", "merger",
                         "a", "b", "c", "d"}) {
    Expert e;
    e.id = id;
    e.role = std::string("You are ") + id + ".";
    e.adapters.push_back({std::string("/adapters/") + id, 1.0f});
    set.experts.push_back(e);
  }
  return set;
}

NodeSpec Node(const std::string& id, const std::string& expert = "") {
  NodeSpec n;
  n.id = id;
  n.expert = expert.empty() ? (id.size() == 1 ? id : std::string("logic")) : expert;
  return n;
}

NetworkSpec Spec(Topology topology, std::vector<NodeSpec> nodes, std::vector<EdgeSpec> edges = {}) {
  NetworkSpec spec;
  spec.name = "net";
  spec.topology = topology;
  spec.nodes = std::move(nodes);
  spec.edges = std::move(edges);
  spec.node_timeout_ms = 10000;
  return spec;
}

OutputContract CodeContract() {
  OutputContract c;
  c.kind = OutputContract::Kind::kJsonSchema;
  c.schema = Json::parse(R"({"type":"object","properties":{"code":{"type":"string"}},
                             "required":["code"]})");
  return c;
}

const NodeTrace* FindTrace(const NetworkTrace& trace, const std::string& id, int round = 0) {
  for (const NodeTrace& n : trace.nodes) {
    if (n.node_id == id && n.round == round) return &n;
  }
  return nullptr;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class ExecutorTest : public ::testing::Test {
 protected:
  NetworkResult Run(const NetworkSpec& spec, const std::string& task = "Build a button.") {
    return RunNetwork(spec, experts_, task, runner_, options_);
  }
  ExpertSet experts_ = MakeExperts();
  FakeRunner runner_;
  ExecutorOptions options_;
};

// --- chain -------------------------------------------------------------------------------------

TEST_F(ExecutorTest, ChainRunsInEdgeOrderAndHandsOffStructuredOutput) {
  NetworkSpec spec =
      Spec(Topology::kChain, {Node("c"), Node("a"), Node("b")}, {{"a", "b", 1.0}, {"b", "c", 1.0}});
  runner_.Set("a", Text(R"({"code":"export const x = 1;","imports":[],"exports":["x"]})"));
  runner_.Set("b", Text("plain B"));
  runner_.Set("c", Text("final C"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(r.output, "final C");
  EXPECT_EQ(r.trace.status, "ok");
  EXPECT_TRUE(Contains(runner_.Find("b")->prompt.user, "export const x = 1;"));
  EXPECT_TRUE(Contains(runner_.Find("c")->prompt.user, "plain B"));
  EXPECT_EQ(runner_.Find("a")->prompt.user, "Build a button.");
  const NodeTrace* b = FindTrace(r.trace, "b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->handoff, "structured");
  EXPECT_EQ(b->inputs, std::vector<std::string>{"a"});
  EXPECT_EQ(FindTrace(r.trace, "c")->handoff, "text");
  EXPECT_EQ(FindTrace(r.trace, "a")->handoff, "");
  EXPECT_EQ(r.trace.nodes.size(), 3u);
  EXPECT_EQ(r.trace.completion_tokens, 12);
}

TEST_F(ExecutorTest, PromptPartsSamplingAndLimitsAreResolved) {
  experts_.experts[1].domain = "frontend";  // logic
  experts_.experts[1].sampling.top_p = 0.9f;
  experts_.experts[1].sampling.temperature = 0.7f;
  experts_.experts[1].sampling.max_tokens = 99;
  NodeSpec n = Node("worker", "logic");
  n.sampling.temperature = 0.2f;
  n.prompt_template = "Task: {task} {{literal}} [{input}]";
  n.timeout_ms = 5000;
  NodeSpec m = Node("other", "style");
  NetworkSpec spec = Spec(Topology::kChain, {n, m}, {{"worker", "other", 1.0}});
  spec.max_tokens = 77;
  spec.timeout_ms = 60000;
  spec.output = CodeContract();
  runner_.Set("worker", Text(R"({"code":"x"})"));
  runner_.Set("other", Text(R"({"code":"y"})"));
  const auto before = std::chrono::steady_clock::now();
  NetworkResult r = Run(spec, "T");
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  std::optional<NodeCall> w = runner_.Find("worker");
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->prompt.system, "You write code.");
  EXPECT_EQ(w->prompt.domain_id, "frontend");
  EXPECT_EQ(w->prompt.domain, "Frontend context.");
  EXPECT_EQ(w->prompt.role, "You are logic.");
  EXPECT_EQ(w->prompt.user, "Task: T {literal} []");
  EXPECT_FLOAT_EQ(w->temperature, 0.2f);  // node overrides expert
  EXPECT_FLOAT_EQ(w->top_p, 0.9f);        // expert default
  EXPECT_EQ(w->top_k, 0);                 // greedy default
  EXPECT_EQ(w->max_tokens, 99);
  EXPECT_EQ(w->expert_id, "logic");
  ASSERT_EQ(w->adapters.size(), 1u);
  EXPECT_EQ(w->adapters[0].name, "/adapters/logic");
  EXPECT_EQ(w->output.kind, OutputContract::Kind::kJsonSchema);
  ASSERT_TRUE(w->deadline.has_value());
  EXPECT_LE(*w->deadline, before + std::chrono::milliseconds(5000) + std::chrono::seconds(5));
  EXPECT_GE(*w->deadline, before + std::chrono::milliseconds(4000));
  std::optional<NodeCall> o = runner_.Find("other");
  EXPECT_EQ(o->max_tokens, 77);  // the network's
  EXPECT_FLOAT_EQ(o->temperature, 0.0f);
  EXPECT_EQ(o->prompt.domain_id, "");
  EXPECT_TRUE(Contains(o->prompt.user, "y") || Contains(o->prompt.user, "x"));
  EXPECT_EQ(r.trace.status, "ok");
  EXPECT_TRUE(r.validation.ok);
}

TEST_F(ExecutorTest, InvalidFinalOutputKeepsOkStatusButMarksTheTrace) {
  NetworkSpec spec = Spec(Topology::kChain, {Node("a")});
  spec.output = CodeContract();
  runner_.Set("a", Text("not json at all"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.trace.status, "invalid");
  EXPECT_FALSE(r.validation.ok);
  EXPECT_EQ(r.output, "not json at all");
}

// --- ring --------------------------------------------------------------------------------------

TEST_F(ExecutorTest, RingRunsEveryRoundAndFeedsTheLastOutputBack) {
  NetworkSpec spec = Spec(Topology::kRing, {Node("scaffold"), Node("logic")},
                          {{"scaffold", "logic", 1.0}, {"logic", "scaffold", 1.0}});
  spec.ring.rounds = 3;
  spec.ring.until = RingSpec::Until::kRounds;
  for (int r = 0; r < 3; ++r) {
    runner_.Set("scaffold", Text("scaffold r" + std::to_string(r)), r);
    runner_.Set("logic", Text("logic r" + std::to_string(r)), r);
  }
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"scaffold", "logic", "scaffold", "logic",
                                                          "scaffold", "logic"}));
  EXPECT_EQ(r.output, "logic r2");
  EXPECT_EQ(r.trace.rounds, 3);
  EXPECT_EQ(r.trace.stop_reason, "rounds");
  EXPECT_TRUE(Contains(runner_.Find("scaffold", 1)->prompt.user, "logic r0"));
  EXPECT_TRUE(Contains(runner_.Find("logic", 2)->prompt.user, "scaffold r2"));
  EXPECT_FALSE(Contains(runner_.Find("scaffold", 0)->prompt.user, "logic"));
  ASSERT_NE(FindTrace(r.trace, "logic", 2), nullptr);
  EXPECT_EQ(FindTrace(r.trace, "scaffold", 1)->inputs, std::vector<std::string>{"logic"});
}

TEST_F(ExecutorTest, RingStopsWhenTheOutputIsUnchanged) {
  NetworkSpec spec = Spec(Topology::kRing, {Node("scaffold"), Node("logic")},
                          {{"scaffold", "logic", 1.0}, {"logic", "scaffold", 1.0}});
  spec.ring.rounds = 5;
  spec.ring.until = RingSpec::Until::kUnchanged;
  runner_.Set("logic", Text("first"), 0);
  runner_.Set("logic", Text("  same\n answer"), 1);
  runner_.Set("logic", Text("same answer"), 2);
  runner_.Set("logic", Text("different"), 3);
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.trace.rounds, 3);
  EXPECT_EQ(r.trace.stop_reason, "unchanged");
  EXPECT_EQ(runner_.calls().size(), 6u);
}

TEST_F(ExecutorTest, RingStopsWhenTheOutputIsValid) {
  NetworkSpec spec = Spec(Topology::kRing, {Node("scaffold"), Node("logic")},
                          {{"scaffold", "logic", 1.0}, {"logic", "scaffold", 1.0}});
  spec.ring.rounds = 4;
  spec.ring.until = RingSpec::Until::kValid;
  spec.output = CodeContract();
  NodeSpec& scaffold = spec.nodes[0];
  scaffold.output = OutputContract{};  // free text
  spec.nodes[1].output = OutputContract{};
  runner_.Set("logic", Text("draft"), 0);
  runner_.Set("logic", Text(R"({"code":"done"})"), 1);
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.trace.rounds, 2);
  EXPECT_EQ(r.trace.stop_reason, "valid");
  EXPECT_EQ(r.trace.status, "ok");
  EXPECT_EQ(runner_.calls().size(), 4u);
}

// --- tree --------------------------------------------------------------------------------------

NetworkSpec Tree3(TreeSpec::Router router) {
  NetworkSpec spec =
      Spec(Topology::kTree, {Node("root", "router"), Node("a"), Node("b"), Node("c")},
           {{"root", "a", 1.0}, {"root", "b", 1.0}, {"root", "c", 1.0}});
  spec.tree.router = router;
  return spec;
}

RouteFunction Ranking(std::vector<RouteChoice> choices) {
  return [choices](const RouteContext&) -> Result<std::vector<RouteChoice>> { return choices; };
}

TEST_F(ExecutorTest, TreeRoutesByCallbackToTheBestChild) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kCallback);
  std::vector<std::string> seen_children;
  options_.route_callback = [&](const RouteContext& ctx) -> Result<std::vector<RouteChoice>> {
    for (const NodeSpec* c : ctx.children) seen_children.push_back(c->id);
    EXPECT_EQ(ctx.node->id, "root");
    EXPECT_EQ(ctx.task, "Build a button.");
    return std::vector<RouteChoice>{{"b", 0.6}, {"a", 0.3}, {"c", 0.1}};
  };
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_EQ(seen_children, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(runner_.call_ids(), std::vector<std::string>{"b"});
  EXPECT_EQ(r.output, "b output");
  ASSERT_EQ(r.trace.routes.size(), 1u);
  EXPECT_EQ(r.trace.routes[0].router, "callback");
  EXPECT_EQ(r.trace.routes[0].chosen, std::vector<std::string>{"b"});
  EXPECT_EQ(r.trace.routes[0].scores[0]["node"], "b");
  EXPECT_EQ(FindTrace(r.trace, "b")->parent, "root");
}

TEST_F(ExecutorTest, TreeEmbeddingRouterWithTopKAndThresholdRunsChildrenTogether) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kEmbedding);
  spec.tree.top_k = 3;
  spec.tree.threshold = 0.25;
  spec.tree.temperature = 0.5;
  spec.combiner.kind = CombinerSpec::Kind::kMajority;
  double seen_temperature = 0;
  options_.embedding_router = [&](const RouteContext& ctx) -> Result<std::vector<RouteChoice>> {
    seen_temperature = ctx.temperature;
    return std::vector<RouteChoice>{{"c", 0.1}, {"a", 0.3}, {"b", 0.6}};
  };
  runner_.Set("a", Text("same", 100));
  runner_.Set("b", Text("same", 100));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_DOUBLE_EQ(seen_temperature, 0.5);
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(runner_.max_in_flight(), 2);
  EXPECT_EQ(r.trace.routes[0].router, "embedding");
  EXPECT_EQ(r.trace.routes[0].chosen, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(r.output, "same");
}

TEST_F(ExecutorTest, TreeThresholdStillRunsTheBestChild) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kCallback);
  spec.tree.top_k = 2;
  spec.tree.threshold = 0.9;
  options_.route_callback = Ranking({{"a", 0.4}, {"b", 0.35}, {"c", 0.25}});
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(runner_.call_ids(), std::vector<std::string>{"a"});
}

TEST_F(ExecutorTest, TreeRouterExpertAnswersWithAFunctionCall) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kExpert);
  runner_.Set("root", Text("<start_function_call>call:route{children:[<escape>c<escape>,"
                           "<escape>a<escape>]}<end_function_call>"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"root", "c"}));
  std::optional<NodeCall> root = runner_.Find("root");
  EXPECT_EQ(root->output.kind, OutputContract::Kind::kFunctionCalls);
  ASSERT_EQ(root->output.tools.size(), 1u);
  const Json& fn = root->output.tools[0]["function"];
  EXPECT_EQ(fn["name"], "route");
  EXPECT_EQ(fn["parameters"]["properties"]["children"]["items"]["enum"],
            Json::parse(R"(["a","b","c"])"));
  // At least one child: an empty answer would route nowhere.
  EXPECT_EQ(fn["parameters"]["properties"]["children"]["minItems"], 1);
  EXPECT_EQ(fn["parameters"]["properties"]["children"]["maxItems"], 3);
  EXPECT_EQ(r.trace.routes[0].router, "expert");
  EXPECT_EQ(r.trace.routes[0].scores[0]["node"], "c");
  EXPECT_EQ(r.trace.routes[0].scores[1]["node"], "a");
  EXPECT_EQ(r.trace.routes[0].scores[2]["node"], "b");
  EXPECT_EQ(r.output, "c output");
}

TEST_F(ExecutorTest, TreeRouterExpertWithoutACallFailsClearly) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kExpert);
  runner_.Set("root", Text("I would pick b."));
  NetworkResult r = Run(spec);
  ASSERT_FALSE(r.status.ok());
  EXPECT_TRUE(Contains(r.status.error().message(), "routing at node 'root'"))
      << r.status.error().message();
  EXPECT_TRUE(Contains(r.status.error().message(), "named no child"));
  EXPECT_EQ(runner_.call_ids(), std::vector<std::string>{"root"});
  EXPECT_EQ(FindTrace(r.trace, "root")->status, "invalid");
}

TEST_F(ExecutorTest, TreeRouterExpertsOfOneLevelRunTogether) {
  NetworkSpec spec =
      Spec(Topology::kTree,
           {Node("root", "router"), Node("x", "router"), Node("y", "router"), Node("x1", "a"),
            Node("y1", "b")},
           {{"root", "x", 1.0}, {"root", "y", 1.0}, {"x", "x1", 1.0}, {"y", "y1", 1.0}});
  spec.tree.router = TreeSpec::Router::kExpert;
  spec.tree.top_k = 2;
  spec.combiner.kind = CombinerSpec::Kind::kConcat;
  auto route = [](const std::string& child) {
    return "<start_function_call>call:route{children:[<escape>" + child +
           "<escape>]}<end_function_call>";
  };
  runner_.Set("root", Text(route("y")));
  runner_.Set("x", Text(route("x1"), 100));
  runner_.Set("y", Text(route("y1"), 100));
  runner_.Set("x1", Text("from x1"));
  runner_.Set("y1", Text("from y1"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  std::vector<std::string> ids = runner_.call_ids();
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[0], "root");
  EXPECT_EQ((std::vector<std::string>{ids[1], ids[2]}), (std::vector<std::string>{"y", "x"}));
  EXPECT_EQ(runner_.max_in_flight(), 2);
  EXPECT_EQ(FindTrace(r.trace, "x")->parent, "root");
  EXPECT_EQ(FindTrace(r.trace, "y1")->parent, "y");
  EXPECT_EQ(r.trace.routes.size(), 3u);
  EXPECT_TRUE(Contains(r.output, "from x1"));
  EXPECT_TRUE(Contains(r.output, "from y1"));
}

TEST_F(ExecutorTest, TreeBacktracksToTheNextSibling) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kCallback);
  spec.output = CodeContract();
  options_.route_callback = Ranking({{"b", 0.5}, {"c", 0.3}, {"a", 0.2}});
  runner_.Set("b", Fail("boom"));
  runner_.Set("c", Text("not code"));  // invalid
  runner_.Set("a", Text(R"({"code":"a"})"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"b", "c", "a"}));
  EXPECT_EQ(r.output, R"({"code":"a"})");
  EXPECT_EQ(r.trace.status, "ok");
  EXPECT_EQ(FindTrace(r.trace, "b")->status, "failed");
  EXPECT_EQ(FindTrace(r.trace, "c")->status, "invalid");
  EXPECT_EQ(FindTrace(r.trace, "c")->attempt, 1);
  EXPECT_EQ(FindTrace(r.trace, "a")->attempt, 2);
  EXPECT_EQ(r.trace.routes[0].chosen, (std::vector<std::string>{"b", "c", "a"}));
}

TEST_F(ExecutorTest, TreeBacktracksUpALevel) {
  NetworkSpec spec = Spec(Topology::kTree,
                          {Node("root", "router"), Node("x", "router"), Node("y", "router"),
                           Node("x1", "a"), Node("x2", "b"), Node("y1", "c")},
                          {{"root", "x", 1.0},
                           {"root", "y", 1.0},
                           {"x", "x1", 1.0},
                           {"x", "x2", 1.0},
                           {"y", "y1", 1.0}});
  spec.tree.router = TreeSpec::Router::kCallback;
  options_.route_callback = [](const RouteContext& ctx) -> Result<std::vector<RouteChoice>> {
    std::vector<RouteChoice> out;
    for (const NodeSpec* c : ctx.children) out.push_back({c->id, 1.0 / ctx.children.size()});
    return out;
  };
  runner_.Set("x1", Fail("x1 broke"));
  runner_.Set("x2", Fail("x2 broke"));
  runner_.Set("y1", Text("from y1"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"x1", "x2", "y1"}));
  EXPECT_EQ(r.output, "from y1");
  EXPECT_EQ(r.trace.routes.size(), 3u);
  EXPECT_EQ(r.trace.routes[0].chosen, (std::vector<std::string>{"x", "y"}));
}

TEST_F(ExecutorTest, TreeStopsAfterMaxBacktracks) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kCallback);
  spec.tree.max_backtracks = 1;
  options_.route_callback = Ranking({{"a", 0.5}, {"b", 0.3}, {"c", 0.2}});
  runner_.Set("a", Fail("a broke"));
  runner_.Set("b", Fail("b broke"));
  NetworkResult r = Run(spec);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.trace.status, "failed");
  EXPECT_TRUE(Contains(r.status.error().message(), "a broke")) << r.status.error().message();
  EXPECT_EQ(r.output, "");
}

TEST_F(ExecutorTest, TreeWithoutBacktrackingFailsAtOnce) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kCallback);
  spec.tree.backtrack = false;
  options_.route_callback = Ranking({{"a", 0.5}, {"b", 0.3}, {"c", 0.2}});
  runner_.Set("a", Fail("a broke"));
  NetworkResult r = Run(spec);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(runner_.call_ids(), std::vector<std::string>{"a"});
}

TEST_F(ExecutorTest, TreeWithoutARouterFunctionFailsClearly) {
  NetworkSpec spec = Tree3(TreeSpec::Router::kEmbedding);
  NetworkResult r = Run(spec);
  ASSERT_FALSE(r.status.ok());
  EXPECT_TRUE(Contains(r.status.error().message(), "embedding router"))
      << r.status.error().message();
}

// --- mesh and combiners ------------------------------------------------------------------------

NetworkSpec Mesh4(CombinerSpec::Kind kind) {
  NetworkSpec spec = Spec(Topology::kMesh, {Node("a"), Node("b"), Node("c"), Node("d")});
  spec.combiner.kind = kind;
  return spec;
}

TEST_F(ExecutorTest, MeshStartsEveryNodeAtOnceAndTakesTheMajority) {
  NetworkSpec spec = Mesh4(CombinerSpec::Kind::kMajority);
  runner_.Set("a", Text("X", 100));
  runner_.Set("b", Text("Y", 100));
  runner_.Set("c", Text(" X ", 100));
  runner_.Set("d", Text("Z", 100));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_EQ(runner_.max_in_flight(), 4);
  EXPECT_TRUE(r.output == "X" || r.output == " X ") << r.output;
  EXPECT_EQ(r.trace.combiner["kind"], "majority");
  EXPECT_EQ(r.trace.combiner["method"], "winner");
}

TEST_F(ExecutorTest, MeshExchangeRoundShowsEachNodeTheOthers) {
  NetworkSpec spec = Mesh4(CombinerSpec::Kind::kMajority);
  spec.nodes.pop_back();
  spec.mesh.exchange = true;
  runner_.Set("a", Text("from a"), 0);
  runner_.Set("b", Text("from b"), 0);
  runner_.Set("c", Text("from c"), 0);
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  ASSERT_EQ(runner_.calls().size(), 6u);
  std::string a2 = runner_.Find("a", 1)->prompt.user;
  EXPECT_TRUE(Contains(a2, "from b"));
  EXPECT_TRUE(Contains(a2, "from c"));
  EXPECT_FALSE(Contains(a2, "from a"));
  EXPECT_TRUE(Contains(a2, "'b'"));  // headers name the upstream node
  EXPECT_EQ(FindTrace(r.trace, "a", 1)->inputs, (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(FindTrace(r.trace, "c", 1)->inputs, (std::vector<std::string>{"a", "b"}));
}

TEST_F(ExecutorTest, MeshWeightedVotes) {
  NetworkSpec spec = Mesh4(CombinerSpec::Kind::kWeighted);
  spec.nodes.pop_back();
  spec.combiner.weights = {{"a", 0.2}, {"b", 0.9}, {"c", 0.2}};
  runner_.Set("a", Text("X"));
  runner_.Set("b", Text("Y"));
  runner_.Set("c", Text("X"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.output, "Y");
}

TEST_F(ExecutorTest, MeshBestPicksTheValidOutputAndSurvivesAFailedNode) {
  NetworkSpec spec = Mesh4(CombinerSpec::Kind::kBest);
  spec.output = CodeContract();
  runner_.Set("a", Text("garbage"));
  runner_.Set("b", Fail("b broke"));
  runner_.Set("c", Text(R"({"code":"good"})"));
  runner_.Set("d", Text("more garbage"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.output, R"({"code":"good"})");
  EXPECT_EQ(r.trace.status, "ok");
  EXPECT_EQ(FindTrace(r.trace, "b")->status, "failed");
}

TEST_F(ExecutorTest, ConcatMergesTextButPicksAWinnerForDifferentFiles) {
  NetworkSpec spec = Mesh4(CombinerSpec::Kind::kConcat);
  spec.nodes.resize(2);
  runner_.Set("a", Text("part one"));
  runner_.Set("b", Text("part two"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.trace.combiner["method"], "merged");
  EXPECT_TRUE(Contains(r.output, "part one"));
  EXPECT_TRUE(Contains(r.output, "part two"));

  FakeRunner other;
  other.Set("a",
            Text(R"({"files":[{"path":"a.js","code":"export const a = 1;","exports":["a"]}]})"));
  other.Set("b",
            Text(R"({"files":[{"path":"b.js","code":"export const b = 1;","exports":["b"]}]})"));
  NetworkResult w = RunNetwork(spec, experts_, "task", other, options_);
  ASSERT_TRUE(w.status.ok());
  EXPECT_EQ(w.trace.combiner["method"], "winner");
  EXPECT_TRUE(Contains(w.output, "a.js") != Contains(w.output, "b.js")) << w.output;
}

TEST_F(ExecutorTest, LlmMergeCallsTheCombinerExpert) {
  NetworkSpec spec = Mesh4(CombinerSpec::Kind::kLlmMerge);
  spec.nodes.resize(2);
  spec.combiner.expert = "merger";
  runner_.Set("a", Text("alpha"));
  runner_.Set("b", Text("beta"));
  runner_.Set("combiner", Text("merged alpha+beta"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  std::optional<NodeCall> call = runner_.Find("combiner");
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->expert_id, "merger");
  EXPECT_EQ(call->prompt.role, "You are merger.");
  EXPECT_TRUE(Contains(call->prompt.user, "alpha"));
  EXPECT_TRUE(Contains(call->prompt.user, "beta"));
  EXPECT_EQ(r.output, "merged alpha+beta");
  EXPECT_EQ(FindTrace(r.trace, "combiner")->inputs, (std::vector<std::string>{"a", "b"}));
}

TEST_F(ExecutorTest, EnsembleIsOneCallOverEveryExpert) {
  NetworkSpec spec = Mesh4(CombinerSpec::Kind::kEnsemble);
  spec.nodes.resize(3);
  spec.combiner.weights = {{"b", 0.5}};
  spec.combiner.ensemble_mode = "max";
  runner_.Set("ensemble", Text("together"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  ASSERT_EQ(runner_.calls().size(), 1u);
  NodeCall call = runner_.calls()[0];
  EXPECT_TRUE(call.adapters.empty());
  ASSERT_EQ(call.ensemble.size(), 3u);
  EXPECT_EQ(call.ensemble[0].adapters[0].name, "/adapters/a");
  EXPECT_EQ(call.ensemble[1].adapters[0].name, "/adapters/b");
  EXPECT_DOUBLE_EQ(call.ensemble[1].weight, 0.5);
  EXPECT_DOUBLE_EQ(call.ensemble[2].weight, 1.0);
  EXPECT_EQ(call.ensemble_mode, "max");
  EXPECT_EQ(r.output, "together");
}

// --- dag ---------------------------------------------------------------------------------------

TEST_F(ExecutorTest, DagRunsLevelsTogetherAndOrdersInputsByWeight) {
  NetworkSpec spec =
      Spec(Topology::kDag, {Node("s", "a"), Node("p", "b"), Node("q", "c"), Node("t", "d")},
           {{"s", "p", 1.0}, {"s", "q", 1.0}, {"p", "t", 0.4}, {"q", "t", 0.9}});
  runner_.Set("p", Text("P text", 100));
  runner_.Set("q", Text("Q text", 100));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  std::vector<std::string> ids = runner_.call_ids();
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[0], "s");
  EXPECT_EQ(ids[3], "t");
  EXPECT_EQ(runner_.max_in_flight(), 2);
  std::string t_user = runner_.Find("t")->prompt.user;
  ASSERT_TRUE(Contains(t_user, "Q text") && Contains(t_user, "P text"));
  EXPECT_LT(t_user.find("Q text"), t_user.find("P text"));
  EXPECT_EQ(FindTrace(r.trace, "t")->inputs, (std::vector<std::string>{"q", "p"}));
  EXPECT_EQ(r.output, "t output");
}

TEST_F(ExecutorTest, DagCombinesSeveralSinks) {
  NetworkSpec spec = Spec(Topology::kDag, {Node("s", "a"), Node("p", "b"), Node("q", "c")},
                          {{"s", "p", 1.0}, {"s", "q", 1.0}});
  spec.combiner.kind = CombinerSpec::Kind::kConcat;
  runner_.Set("p", Text("P part"));
  runner_.Set("q", Text("Q part"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_TRUE(Contains(r.output, "P part"));
  EXPECT_TRUE(Contains(r.output, "Q part"));
}

TEST_F(ExecutorTest, DagSkipsDependentsOfAFailedNode) {
  NetworkSpec spec = Spec(Topology::kDag, {Node("s", "a"), Node("p", "b"), Node("t", "c")},
                          {{"s", "p", 1.0}, {"p", "t", 1.0}});
  runner_.Set("p", Fail("p broke"));
  NetworkResult r = Run(spec);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.error().message(), "node 'p' failed: p broke");
  const NodeTrace* t = FindTrace(r.trace, "t");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->status, "skipped");
  EXPECT_TRUE(Contains(t->error, "'p'"));
}

// --- handoffs ----------------------------------------------------------------------------------

TEST_F(ExecutorTest, LongTextIsSummarisedForTheNextNode) {
  NetworkSpec spec = Spec(Topology::kChain, {Node("scaffold"), Node("style", "style")},
                          {{"scaffold", "style", 1.0}});
  spec.handoff.summarizer = "summarizer";
  spec.handoff.max_input_chars = 50;
  spec.handoff.max_summary_tokens = 33;
  runner_.Set("scaffold", Text(std::string(200, 'w')));
  runner_.Set("style.summary", Text("SHORT SUMMARY"));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok()) << r.status.error().message();
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"scaffold", "style.summary", "style"}));
  std::optional<NodeCall> sum = runner_.Find("style.summary");
  EXPECT_EQ(sum->expert_id, "summarizer");
  EXPECT_EQ(sum->max_tokens, 33);
  EXPECT_TRUE(Contains(sum->prompt.user, std::string(200, 'w')));
  EXPECT_TRUE(Contains(sum->prompt.user, "You are style."));  // the downstream role
  std::string user = runner_.Find("style")->prompt.user;
  EXPECT_TRUE(Contains(user, "SHORT SUMMARY"));
  EXPECT_FALSE(Contains(user, std::string(60, 'w')));
  EXPECT_EQ(FindTrace(r.trace, "style")->handoff, "summary");
  ASSERT_NE(FindTrace(r.trace, "style.summary"), nullptr);
}

TEST_F(ExecutorTest, LongTextIsCutWithoutASummarizer) {
  NetworkSpec spec = Spec(Topology::kChain, {Node("scaffold"), Node("style", "style")},
                          {{"scaffold", "style", 1.0}});
  spec.handoff.max_input_chars = 50;
  runner_.Set("scaffold", Text(std::string(200, 'w')));
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  std::string user = runner_.Find("style")->prompt.user;
  EXPECT_TRUE(Contains(user, std::string(50, 'w')));
  EXPECT_FALSE(Contains(user, std::string(51, 'w')));
  EXPECT_EQ(FindTrace(r.trace, "style")->handoff, "text");
}

// --- errors and deadlines ----------------------------------------------------------------------

TEST_F(ExecutorTest, FailingNodeSkipsItsDependentsAndNamesItself) {
  NetworkSpec spec =
      Spec(Topology::kChain, {Node("a"), Node("b"), Node("c")}, {{"a", "b", 1.0}, {"b", "c", 1.0}});
  runner_.Set("b", Fail("out of memory"));
  NetworkResult r = Run(spec);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.error().message(), "node 'b' failed: out of memory");
  EXPECT_EQ(r.trace.status, "failed");
  EXPECT_EQ(r.trace.error, "node 'b' failed: out of memory");
  EXPECT_EQ(FindTrace(r.trace, "b")->status, "failed");
  EXPECT_EQ(FindTrace(r.trace, "b")->error, "out of memory");
  EXPECT_EQ(FindTrace(r.trace, "c")->status, "skipped");
  EXPECT_EQ(FindTrace(r.trace, "c")->error, "upstream node 'b' failed");
  EXPECT_EQ(runner_.call_ids(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(ExecutorTest, HangingNodePassesItsDeadlineWithAClearError) {
  NetworkSpec spec = Spec(Topology::kRing, {Node("scaffold"), Node("logic")},
                          {{"scaffold", "logic", 1.0}, {"logic", "scaffold", 1.0}});
  spec.ring.rounds = 3;
  spec.ring.until = RingSpec::Until::kRounds;
  spec.nodes[1].timeout_ms = 50;
  runner_.Set("logic", Hang(), 1);
  const auto start = std::chrono::steady_clock::now();
  NetworkResult r = Run(spec);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.error().message(), "node 'logic' (round 2) failed: deadline of 50 ms passed");
  const NodeTrace* t = FindTrace(r.trace, "logic", 1);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->status, "failed");
  EXPECT_EQ(t->finish_reason, "deadline");
  EXPECT_LT(took, std::chrono::seconds(30));  // no hang
}

TEST_F(ExecutorTest, NetworkTimeoutCancelsWhatIsRunning) {
  NetworkSpec spec = Mesh4(CombinerSpec::Kind::kMajority);
  spec.timeout_ms = 100;
  for (const char* id : {"a", "b", "c", "d"}) runner_.Set(id, Hang());
  NetworkResult r = Run(spec);
  ASSERT_FALSE(r.status.ok());
  EXPECT_TRUE(Contains(r.status.error().message(), "network timeout of 100 ms passed"))
      << r.status.error().message();
  for (const NodeTrace& n : r.trace.nodes) EXPECT_EQ(n.status, "failed");
  for (const NodeCall& c : runner_.calls()) ASSERT_TRUE(c.deadline.has_value());
}

// --- the example networks --------------------------------------------------------------------

TEST(ExampleNetworksTest, EveryExampleRunsToAValidOutput) {
  const std::string dir = std::string(FGNET_EXAMPLES_DIR) + "/networks/";
  Result<ExpertSet> experts = LoadExperts(dir + "experts.json");
  ASSERT_TRUE(experts.ok()) << experts.error().message();
  for (const std::string name : {"ring3", "ring4", "tree", "tree-expert", "mesh4", "dag-react"}) {
    SCOPED_TRACE(name);
    Result<NetworkSpec> spec = LoadNetworkSpec(dir + name + ".json", &*experts);
    ASSERT_TRUE(spec.ok()) << spec.error().message();
    FakeRunner runner;
    runner.SetDefault(Text(R"({"code":"export const x = 1;","imports":[],"exports":["x"]})"));
    if (name == "tree-expert") {  // the router experts answer with route calls
      runner.Set("router", Text("<start_function_call>call:route{children:[<escape>backend"
                                "<escape>]}<end_function_call>"));
      runner.Set("backend", Text("<start_function_call>call:route{children:[<escape>db<escape>,"
                                 "<escape>api<escape>]}<end_function_call>"));
    }
    ExecutorOptions options;
    options.embedding_router = [](const RouteContext& ctx) -> Result<std::vector<RouteChoice>> {
      std::vector<RouteChoice> out;
      for (const NodeSpec* c : ctx.children) out.push_back({c->id, 1.0 / ctx.children.size()});
      return out;
    };
    options.route_callback = options.embedding_router;
    NetworkResult r = RunNetwork(*spec, *experts, "Build a login form.", runner, options);
    ASSERT_TRUE(r.status.ok()) << r.status.error().message();
    EXPECT_EQ(r.trace.status, "ok") << r.trace.ToJson().dump(2);
    EXPECT_FALSE(runner.calls().empty());
    for (const NodeTrace& n : r.trace.nodes) EXPECT_EQ(n.status, "ok") << n.node_id;
    if (name == "tree-expert") {
      ASSERT_EQ(r.trace.routes.size(), 2u);
      EXPECT_EQ(r.trace.routes[0].chosen, (std::vector<std::string>{"backend"}));
      EXPECT_EQ(r.trace.routes[1].chosen, (std::vector<std::string>{"db"}));  // top_k 1
    }
    for (const NodeCall& c : runner.calls()) {
      EXPECT_FALSE(c.prompt.system.empty()) << c.node_id;
      EXPECT_TRUE(c.deadline.has_value()) << c.node_id;
    }
  }
}

// --- observer, traces, tree view ---------------------------------------------------------------

class RecordingObserver : public RunObserver {
 public:
  void OnStart(const NetworkTrace&) override { events.push_back("start"); }
  void OnNodeStart(const NodeTrace& n) override { events.push_back("node+" + n.node_id); }
  void OnProgress(const std::vector<std::pair<std::string, std::int64_t>>& t) override {
    ++progress;
    if (!t.empty()) last_progress = t;
  }
  void OnNodeFinish(const NodeTrace& n) override {
    events.push_back("node-" + n.node_id + ":" + n.status);
  }
  void OnFinish(const NetworkTrace& t) override { events.push_back("finish:" + t.status); }
  std::vector<std::string> events;
  int progress = 0;
  std::vector<std::pair<std::string, std::int64_t>> last_progress;
};

TEST_F(ExecutorTest, ObserverSeesEveryEventAndProgress) {
  NetworkSpec spec = Spec(Topology::kChain, {Node("a")});
  runner_.Set("a", Text("slow", 350));
  RecordingObserver obs;
  options_.observer = &obs;
  NetworkResult r = Run(spec);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(obs.events, (std::vector<std::string>{"start", "node+a", "node-a:ok", "finish:ok"}));
  EXPECT_GE(obs.progress, 1);
  ASSERT_EQ(obs.last_progress.size(), 1u);
  EXPECT_EQ(obs.last_progress[0].first, "a");
  EXPECT_EQ(obs.last_progress[0].second, 2);
}

TEST_F(ExecutorTest, TraceOfARunRoundTripsThroughJson) {
  NetworkSpec spec = Spec(Topology::kChain, {Node("a"), Node("b")}, {{"a", "b", 1.0}});
  NetworkResult r = Run(spec);
  Json j = r.trace.ToJson();
  EXPECT_EQ(j["topology"], "chain");
  EXPECT_EQ(j["nodes"][1]["inputs"][0], "a");
  EXPECT_EQ(j["status"], "ok");
  EXPECT_EQ(j["nodes"][0]["cached_tokens"], 3);
  EXPECT_EQ(Json::parse(j.dump()), j);
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string line; std::getline(is, line);) out.push_back(line);
  return out;
}

TEST_F(ExecutorTest, TreeViewPlainPrintsOneLinePerFinishedNode) {
  std::ostringstream os;
  TreeView view(os, /*ansi=*/false);
  options_.observer = &view;
  NetworkSpec spec =
      Spec(Topology::kChain, {Node("a"), Node("b"), Node("c")}, {{"a", "b", 1.0}, {"b", "c", 1.0}});
  runner_.Set("c", Fail("c broke"));
  NetworkResult r = Run(spec);
  ASSERT_FALSE(r.status.ok());
  std::string out = os.str();
  EXPECT_EQ(out.find("\x1b["), std::string::npos);
  std::vector<std::string> lines = Lines(out);
  ASSERT_EQ(lines.size(), 5u) << out;
  EXPECT_TRUE(Contains(lines[0], "net")) << lines[0];
  EXPECT_EQ(lines[1].rfind("+ a", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("  + b", 0), 0u) << lines[2];  // under its upstream node
  EXPECT_EQ(lines[3].rfind("    x c", 0), 0u) << lines[3];
  EXPECT_TRUE(Contains(lines[3], "c broke"));
  EXPECT_TRUE(Contains(lines[1], "4 tok"));
  EXPECT_TRUE(Contains(lines[1], "cached 3"));
  EXPECT_TRUE(Contains(lines[1], " ms"));
  EXPECT_TRUE(Contains(lines[4], "failed")) << lines[4];
}

}  // namespace
}  // namespace fgnet::network
