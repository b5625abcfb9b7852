// Traces as JSON, and the live TreeView.
#include "network/trace.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace fgnet::network {
namespace {

double Ms(double v) { return std::round(v * 100.0) / 100.0; }

Json AdaptersJson(const std::vector<NodeAdapter>& adapters) {
  Json out = Json::array();
  for (const NodeAdapter& a : adapters) out.push_back({{"name", a.name}, {"scale", a.scale}});
  return out;
}

std::string FormatMs(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f ms", v);
  return buf;
}

}  // namespace

Json NodeTrace::ToJson() const {
  Json j = Json::object();
  j["node"] = node_id;
  j["expert"] = expert_id;
  j["adapters"] = AdaptersJson(adapters);
  j["round"] = round;
  j["attempt"] = attempt;
  j["parent"] = parent;
  j["inputs"] = inputs;
  j["handoff"] = handoff;
  j["status"] = status;
  j["error"] = error;
  j["finish_reason"] = finish_reason;
  j["prompt_tokens"] = prompt_tokens;
  j["completion_tokens"] = completion_tokens;
  j["cached_tokens"] = cached_tokens;
  j["prefix_hits"] = prefix_hits;
  j["start_ms"] = Ms(start_ms);
  j["latency_ms"] = Ms(latency_ms);
  j["validated"] = validated;
  j["validation"] = validated ? validation.ToJson() : Json(nullptr);
  j["output"] = output;
  return j;
}

Json NetworkTrace::ToJson() const {
  Json j = Json::object();
  j["network"] = network;
  j["topology"] = topology;
  j["task"] = task;
  Json node_list = Json::array();
  for (const NodeTrace& n : nodes) node_list.push_back(n.ToJson());
  j["nodes"] = node_list;
  Json route_list = Json::array();
  for (const RouteTrace& r : routes) {
    route_list.push_back(
        {{"node", r.node_id}, {"router", r.router}, {"scores", r.scores}, {"chosen", r.chosen}});
  }
  j["routes"] = route_list;
  j["combiner"] = combiner;
  j["rounds"] = rounds;
  j["stop_reason"] = stop_reason;
  j["status"] = status;
  j["error"] = error;
  j["output"] = output;
  j["validation"] = validation.ToJson();
  j["latency_ms"] = Ms(latency_ms);
  j["prompt_tokens"] = prompt_tokens;
  j["completion_tokens"] = completion_tokens;
  j["cached_tokens"] = cached_tokens;
  return j;
}

// --- TreeView --------------------------------------------------------------------------------

struct TreeView::Row {
  std::string node_id;
  std::string expert_id;
  std::int32_t round = 0;
  std::int32_t attempt = 0;
  std::size_t depth = 0;
  char marker = '.';
  std::int64_t tokens = 0;
  double latency_ms = 0;
  std::int64_t cached_tokens = 0;
  std::string note;  // validation or error
  bool finished = false;
  std::vector<std::string> chosen;  // a routing row: the children it chose

  std::string Line() const {
    std::string s(depth * 2, ' ');
    if (marker == '>') return s + "> " + node_id + " -> " + note;
    s += marker;
    s += ' ';
    s += node_id;
    if (!expert_id.empty() && expert_id != node_id) s += " [" + expert_id + "]";
    if (round > 0) s += " r" + std::to_string(round + 1);
    if (attempt > 0) s += " retry " + std::to_string(attempt);
    s += "  " + std::to_string(tokens) + " tok";
    if (finished) {
      s += "  " + FormatMs(latency_ms);
      if (cached_tokens > 0) s += "  cached " + std::to_string(cached_tokens);
    }
    if (!note.empty()) s += "  " + note;
    return s;
  }
};

namespace {

char MarkerOf(const std::string& status) {
  if (status == "ok") return '+';
  if (status == "invalid") return '!';
  if (status == "failed" || status == "cancelled") return 'x';
  if (status == "skipped") return '-';
  return '.';
}

std::string NoteOf(const NodeTrace& node) {
  if (node.status == "failed" || node.status == "skipped" || node.status == "cancelled") {
    return node.status + ": " + node.error;
  }
  if (!node.validated) return "";
  if (node.validation.ok) return "valid";
  std::string s = "invalid";
  if (!node.validation.issues.empty()) s += ": " + node.validation.issues[0].ToString();
  if (node.validation.issues.size() > 1) {
    s += " (+" + std::to_string(node.validation.issues.size() - 1) + " more)";
  }
  return s;
}

}  // namespace

TreeView::TreeView(std::ostream& out, bool ansi) : out_(out), ansi_(ansi) {}

void TreeView::OnStart(const NetworkTrace& trace) {
  std::lock_guard<std::mutex> lock(mu_);
  rows_.clear();
  lines_drawn_ = 0;
  out_ << "network '" << trace.network << "' (" << trace.topology << ")\n";
  out_.flush();
}

void TreeView::OnNodeStart(const NodeTrace& node) {
  std::lock_guard<std::mutex> lock(mu_);
  auto row = std::make_shared<Row>();
  row->node_id = node.node_id;
  row->expert_id = node.expert_id;
  row->round = node.round;
  row->attempt = node.attempt;
  // Indented under the node it came from: the routing parent, else the first upstream node.
  std::string from = !node.parent.empty()   ? node.parent
                     : !node.inputs.empty() ? node.inputs.front()
                                            : std::string();
  if (!from.empty()) {
    for (auto it = rows_.rbegin(); it != rows_.rend(); ++it) {
      if ((*it)->node_id == from) {
        row->depth = (*it)->depth + 1;
        break;
      }
    }
  }
  rows_.push_back(row);
  if (ansi_) Redraw();
}

void TreeView::OnRoute(const RouteTrace& route) {
  std::lock_guard<std::mutex> lock(mu_);
  auto row = std::make_shared<Row>();
  row->node_id = route.node_id;
  row->marker = '>';
  row->finished = true;
  row->chosen = route.chosen;
  // Below the routing row that chose this node, if any.
  for (auto it = rows_.rbegin(); it != rows_.rend(); ++it) {
    const std::vector<std::string>& c = (*it)->chosen;
    if (std::find(c.begin(), c.end(), route.node_id) != c.end()) {
      row->depth = (*it)->depth + 1;
      break;
    }
  }
  for (std::size_t i = 0; i < route.chosen.size(); ++i) {
    if (i > 0) row->note += ", ";
    row->note += route.chosen[i];
    for (const Json& score : route.scores) {
      if (score.value("node", "") == route.chosen[i] && score.contains("probability")) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), " %.2f", score["probability"].get<double>());
        row->note += buf;
      }
    }
  }
  row->note += " (" + route.router + ")";
  rows_.push_back(row);
  if (ansi_) {
    Redraw();
  } else {
    out_ << row->Line() << "\n";
    out_.flush();
  }
}

void TreeView::OnProgress(const std::vector<std::pair<std::string, std::int64_t>>& tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, count] : tokens) {
    for (auto it = rows_.rbegin(); it != rows_.rend(); ++it) {
      if ((*it)->node_id == id && !(*it)->finished) {
        (*it)->tokens = count;
        break;
      }
    }
  }
  if (ansi_) Redraw();
}

void TreeView::OnNodeFinish(const NodeTrace& node) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<Row> row;
  for (auto it = rows_.rbegin(); it != rows_.rend(); ++it) {
    if ((*it)->node_id == node.node_id && !(*it)->finished && (*it)->round == node.round &&
        (*it)->attempt == node.attempt) {
      row = *it;
      break;
    }
  }
  if (row == nullptr) {  // a node that never started (skipped)
    row = std::make_shared<Row>();
    row->node_id = node.node_id;
    row->expert_id = node.expert_id;
    row->round = node.round;
    row->attempt = node.attempt;
    rows_.push_back(row);
  }
  row->finished = true;
  row->marker = MarkerOf(node.status);
  row->tokens = node.completion_tokens;
  row->latency_ms = node.latency_ms;
  row->cached_tokens = node.cached_tokens;
  row->note = NoteOf(node);
  if (ansi_) {
    Redraw();
  } else {
    out_ << row->Line() << "\n";
    out_.flush();
  }
}

void TreeView::OnFinish(const NetworkTrace& trace) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ansi_) Redraw();
  out_ << trace.status << " in " << FormatMs(trace.latency_ms) << ": " << trace.nodes.size()
       << " node runs, " << trace.prompt_tokens << " prompt + " << trace.completion_tokens
       << " completion tokens (" << trace.cached_tokens << " cached)";
  if (trace.rounds > 0) out_ << ", " << trace.rounds << " rounds (" << trace.stop_reason << ")";
  if (!trace.error.empty()) out_ << ", error: " << trace.error;
  if (trace.status == "invalid" && !trace.validation.issues.empty()) {
    out_ << ", " << trace.validation.issues.size() << " validation issues";
  }
  out_ << "\n";
  out_.flush();
  lines_drawn_ = 0;
}

void TreeView::Redraw() {
  // Cursor up over the rows drawn last time, then each row on a cleared line.
  if (lines_drawn_ > 0) out_ << "\x1b[" << lines_drawn_ << "A";
  for (const auto& row : rows_) out_ << "\r\x1b[2K" << row->Line() << "\n";
  lines_drawn_ = rows_.size();
  out_.flush();
}

}  // namespace fgnet::network
