// Traces as JSON and the TreeView's ANSI redraw, without running a network.
#include "network/trace.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace fgnet::network {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string line; std::getline(is, line);) out.push_back(line);
  return out;
}

TEST(TraceTest, ToJsonHasStableKeysAndRoundedTimes) {
  NodeTrace n;
  n.node_id = "logic";
  n.expert_id = "logic";
  n.adapters = {{"/a/logic", 0.5f}};
  n.status = "ok";
  n.start_ms = 1.23456;
  n.latency_ms = 12.345678;
  n.inputs = {"scaffold"};
  Json j = n.ToJson();
  EXPECT_EQ(j["node"], "logic");
  EXPECT_EQ(j["adapters"][0]["name"], "/a/logic");
  EXPECT_DOUBLE_EQ(j["latency_ms"].get<double>(), 12.35);
  EXPECT_DOUBLE_EQ(j["start_ms"].get<double>(), 1.23);
  EXPECT_EQ(j["inputs"], Json::parse(R"(["scaffold"])"));
  for (const char* key :
       {"round", "attempt", "parent", "handoff", "error", "finish_reason", "prompt_tokens",
        "completion_tokens", "cached_tokens", "prefix_hits", "validated", "validation", "output"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  NetworkTrace t;
  t.network = "net";
  t.topology = "tree";
  t.nodes.push_back(n);
  RouteTrace rt;
  rt.node_id = "root";
  rt.router = "callback";
  rt.scores.push_back({{"node", "logic"}, {"probability", 1.0}});
  rt.chosen = {"logic"};
  t.routes.push_back(rt);
  t.latency_ms = 99.999;
  Json tj = t.ToJson();
  EXPECT_EQ(tj["nodes"].size(), 1u);
  EXPECT_EQ(tj["routes"][0]["chosen"][0], "logic");
  EXPECT_EQ(tj["routes"][0]["router"], "callback");
  EXPECT_DOUBLE_EQ(tj["latency_ms"].get<double>(), 100.0);
  for (const char* key :
       {"network", "topology", "task", "combiner", "rounds", "stop_reason", "status", "error",
        "output", "validation", "prompt_tokens", "completion_tokens", "cached_tokens"}) {
    EXPECT_TRUE(tj.contains(key)) << key;
  }
}

TEST(TreeViewTest, AnsiRedrawsInPlace) {
  std::ostringstream os;
  TreeView view(os, /*ansi=*/true);
  NetworkTrace trace;
  trace.network = "net";
  trace.topology = "tree";
  view.OnStart(trace);
  NodeTrace a;
  a.node_id = "a";
  a.parent = "";
  view.OnNodeStart(a);
  NodeTrace b;
  b.node_id = "b";
  b.parent = "a";
  view.OnNodeStart(b);
  view.OnProgress({{"b", 7}});
  b.status = "invalid";
  b.validated = true;
  b.validation.ok = false;
  b.validation.issues.push_back({"contract", "", 0, 0, "$: missing code"});
  b.completion_tokens = 9;
  view.OnNodeFinish(b);
  a.status = "skipped";
  a.error = "upstream node 'z' failed";
  view.OnNodeFinish(a);
  trace.status = "invalid";
  view.OnFinish(trace);
  std::string out = os.str();
  EXPECT_TRUE(Contains(out, "\x1b[2A")) << out;  // cursor up over two rows
  EXPECT_TRUE(Contains(out, "\x1b[2K"));
  EXPECT_TRUE(Contains(out, ". a"));
  EXPECT_TRUE(Contains(out, "  . b  7 tok"));
  EXPECT_TRUE(Contains(out, "  ! b  9 tok"));
  EXPECT_TRUE(Contains(out, "missing code"));
  EXPECT_TRUE(Contains(out, "- a"));
  EXPECT_TRUE(Contains(Lines(out).back(), "invalid"));
}

TEST(TreeViewTest, RoutingDecisionsAreRowsAboveTheChosenChildren) {
  std::ostringstream os;
  TreeView view(os, /*ansi=*/false);
  NetworkTrace trace;
  trace.network = "net";
  trace.topology = "tree";
  view.OnStart(trace);
  RouteTrace root;
  root.node_id = "router";
  root.router = "embedding";
  root.scores = Json::array(
      {{{"node", "backend"}, {"probability", 0.6}}, {{"node", "frontend"}, {"probability", 0.4}}});
  root.chosen = {"backend"};
  view.OnRoute(root);
  RouteTrace inner = root;
  inner.node_id = "backend";
  inner.scores = Json::array(
      {{{"node", "db"}, {"probability", 0.7}}, {{"node", "api"}, {"probability", 0.3}}});
  inner.chosen = {"db", "api"};
  view.OnRoute(inner);
  NodeTrace db;
  db.node_id = "db";
  db.parent = "backend";
  view.OnNodeStart(db);
  db.status = "ok";
  db.completion_tokens = 5;
  view.OnNodeFinish(db);
  const std::vector<std::string> lines = Lines(os.str());
  ASSERT_EQ(lines.size(), 4u) << os.str();
  EXPECT_EQ(lines[1], "> router -> backend 0.60 (embedding)");
  EXPECT_EQ(lines[2], "  > backend -> db 0.70, api 0.30 (embedding)");
  EXPECT_TRUE(Contains(lines[3], "    + db  5 tok")) << lines[3];
}

}  // namespace
}  // namespace fgnet::network
