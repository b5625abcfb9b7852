// The record of a network run: one entry per node attempt (every round, every backtrack), the
// routing and combining decisions, and the result. Written as JSON (`fgnet run --trace`) and
// shown live by TreeView while the network runs.
// Thread-safety: the structs are plain values; a TreeView serialises its own output.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <vector>

#include "network/node_engine.h"
#include "network/validate.h"
#include "util/json.h"

namespace fgnet::network {

struct NodeTrace {
  std::string node_id;
  std::string expert_id;
  std::vector<NodeAdapter> adapters;
  std::int32_t round = 0;           // ring round / mesh exchange round (0-based)
  std::int32_t attempt = 0;         // > 0 for a backtracking retry of the same tree level
  std::string parent;               // tree: the routing node; "" otherwise
  std::vector<std::string> inputs;  // upstream node ids, in the order they were handed over
  std::string handoff;              // "structured", "summary", "text" or "" (no input)
  // "ok", "invalid" (ran, failed validation), "failed" (error or timeout), "skipped" (an
  // upstream node failed), "cancelled".
  std::string status;
  std::string error;  // for failed / skipped
  std::string finish_reason;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;
  std::vector<std::string> prefix_hits;
  double start_ms = 0;  // since the run began
  double latency_ms = 0;
  bool validated = false;
  ValidationReport validation;
  std::string output;

  Json ToJson() const;
};

struct RouteTrace {
  std::string node_id;          // the routing node
  std::string router;           // "embedding", "expert", "callback"
  Json scores = Json::array();  // [{node, probability}] best first
  std::vector<std::string> chosen;
};

struct NetworkTrace {
  std::string network;
  std::string topology;
  std::string task;
  std::vector<NodeTrace> nodes;  // in start order
  std::vector<RouteTrace> routes;
  Json combiner = Json::object();  // the CombineDecision as JSON, when a combiner ran
  std::int32_t rounds = 0;         // ring rounds run
  std::string stop_reason;         // ring: "rounds", "unchanged", "valid"
  std::string status;              // "ok", "invalid", "failed"
  std::string error;
  std::string output;
  ValidationReport validation;
  double latency_ms = 0;
  std::int64_t prompt_tokens = 0;  // sums over nodes
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;

  Json ToJson() const;
};

// Told about a run as it happens (from the thread running the executor).
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  virtual void OnStart(const NetworkTrace& /*trace*/) {}
  virtual void OnNodeStart(const NodeTrace& /*node*/) {}
  // Called about every 100 ms while nodes run: tokens generated so far per running node.
  virtual void OnProgress(const std::vector<std::pair<std::string, std::int64_t>>& /*tokens*/) {}
  virtual void OnNodeFinish(const NodeTrace& /*node*/) {}
  // A routing node chose its children (tree networks).
  virtual void OnRoute(const RouteTrace& /*route*/) {}
  virtual void OnFinish(const NetworkTrace& /*trace*/) {}
};

// A live tree view of the run: one line per node attempt, indented under the node it came from,
// with a state marker, token progress, latency and validation; a routing decision is a line of its
// own ("> router -> backend 0.39"), with the chosen children below it. On a terminal (ansi = true)
// it redraws in place; otherwise it prints one line per finished node.
class TreeView : public RunObserver {
 public:
  TreeView(std::ostream& out, bool ansi);
  void OnStart(const NetworkTrace& trace) override;
  void OnNodeStart(const NodeTrace& node) override;
  void OnProgress(const std::vector<std::pair<std::string, std::int64_t>>& tokens) override;
  void OnNodeFinish(const NodeTrace& node) override;
  void OnRoute(const RouteTrace& route) override;
  void OnFinish(const NetworkTrace& trace) override;

 private:
  struct Row;
  void Redraw();
  std::ostream& out_;
  bool ansi_;
  std::mutex mu_;
  std::vector<std::shared_ptr<Row>> rows_;
  std::size_t lines_drawn_ = 0;
};

}  // namespace fgnet::network
