// Network specs: parsing, validation of every field (the graph rules are in spec_topology.cpp)
// and writing back to JSON. The schema is documented in docs/network-spec.md.
#include "network/spec.h"

#include <cmath>
#include <map>

#include "network/spec_reader.h"

namespace fgnet::network {
namespace {

using internal::Child;
using internal::DidYouMean;
using internal::Index;
using internal::JsonTypeName;
using internal::SpecReader;

const std::vector<std::string> kTopologies = {"chain", "ring", "tree", "mesh", "dag"};
const std::vector<std::string> kCombiners = {"none",   "majority",  "weighted", "best",
                                             "concat", "llm-merge", "ensemble"};
const std::vector<std::string> kEnsembleModes = {"mean", "max"};
const std::vector<std::string> kUntil = {"rounds", "unchanged", "valid", "unchanged_or_valid"};
const std::vector<std::string> kRouters = {"embedding", "expert", "callback"};
const std::vector<std::string> kOutputKinds = {"text", "json_schema", "function_calls"};

// Returns the object member `key` when present and an object (reports otherwise).
const Json* ObjectMember(SpecReader& reader, const Json& json, std::string_view key,
                         const std::string& path) {
  const auto it = json.find(key);
  if (it == json.end()) return nullptr;
  if (!reader.IsObject(*it, Child(path, key))) return nullptr;
  return &*it;
}

// Reports `id` when it names no expert (only with an experts file).
void CheckExpertRef(SpecReader& reader, const ExpertSet* experts, const std::string& id,
                    const std::string& path) {
  if (experts == nullptr || experts->Find(id) != nullptr) return;
  std::vector<std::string> ids;
  for (const Expert& e : experts->experts) ids.push_back(e.id);
  reader.Add(path, "expert '" + id + "' does not exist" + DidYouMean(id, ids));
}

void ReadOutput(SpecReader& reader, const Json& json, const std::string& path,
                OutputContract* out) {
  reader.CheckKeys(json, path, {"type", "schema", "tools", "check_code"});
  int kind = 0;
  if (reader.GetEnum(json, "type", path, kOutputKinds, &kind)) {
    out->kind = static_cast<OutputContract::Kind>(kind);
  }
  reader.GetBool(json, "check_code", path, &out->check_code);
  const Json null;
  const Json& schema = json.contains("schema") ? json.at("schema") : null;
  const Json& tools = json.contains("tools") ? json.at("tools") : null;
  if (!schema.is_null()) {
    if (schema.is_object() || schema.is_boolean()) {
      out->schema = schema;
    } else {
      reader.Add(Child(path, "schema"),
                 "expected an object or a boolean (a JSON Schema), got " + JsonTypeName(schema));
    }
  } else if (out->kind == OutputContract::Kind::kJsonSchema) {
    reader.Add(Child(path, "schema"), "required for type json_schema");
  }
  const std::string tools_path = Child(path, "tools");
  if (!tools.is_null()) {
    if (!tools.is_array()) {
      reader.Add(tools_path,
                 "expected an array of function declarations, got " + JsonTypeName(tools));
    } else {
      for (std::size_t i = 0; i < tools.size(); ++i) {
        const Json& tool = tools[i];
        const Json* named = &tool;
        if (tool.is_object() && tool.contains("function")) named = &tool.at("function");
        const bool has_name = named->is_object() && named->contains("name") &&
                              named->at("name").is_string() &&
                              !named->at("name").get<std::string>().empty();
        if (!has_name) {
          reader.Add(Index(tools_path, i),
                     "a function declaration needs a name ({\"type\": \"function\", "
                     "\"function\": {\"name\": ...}} or {\"name\": ...})");
        }
      }
      out->tools = tools;
    }
  }
  if (out->kind == OutputContract::Kind::kFunctionCalls && (!tools.is_array() || tools.empty())) {
    if (tools.is_null()) {
      reader.Add(tools_path, "required for type function_calls");
    } else if (tools.is_array()) {
      reader.Add(tools_path, "type function_calls needs at least one function declaration");
    }
  }
}

void ReadNode(SpecReader& reader, const Json& json, const std::string& path,
              const ExpertSet* experts, NodeSpec* node) {
  reader.CheckKeys(json, path,
                   {"id", "expert", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                    "seed", "max_tokens", "prompt", "output", "timeout_ms"});
  if (reader.Require(json, "id", path) && reader.GetString(json, "id", path, &node->id) &&
      node->id.empty()) {
    reader.Add(Child(path, "id"), "must not be empty");
  }
  if (reader.GetString(json, "expert", path, &node->expert) && !node->expert.empty()) {
    CheckExpertRef(reader, experts, node->expert, Child(path, "expert"));
  }
  internal::ReadSampling(reader, json, path, &node->sampling);
  node->prompt_template = std::string(kDefaultPromptTemplate);
  if (reader.GetString(json, "prompt", path, &node->prompt_template)) {
    const Status status = CheckPromptTemplate(node->prompt_template);
    if (!status.ok()) reader.Add(Child(path, "prompt"), status.error().message());
  }
  if (const Json* output = ObjectMember(reader, json, "output", path)) {
    OutputContract contract;
    ReadOutput(reader, *output, Child(path, "output"), &contract);
    node->output = std::move(contract);
  }
  if (reader.GetInt(json, "timeout_ms", path, &node->timeout_ms)) {
    reader.CheckRange(node->timeout_ms >= 0, Child(path, "timeout_ms"), json.at("timeout_ms"),
                      ">= 0");
  }
}

// Reads the nodes, reporting empty and duplicate ids.
void ReadNodes(SpecReader& reader, const Json& json, const ExpertSet* experts, NetworkSpec* spec) {
  const auto it = json.find("nodes");
  if (it == json.end()) {
    reader.Add("$.nodes", "required");
    return;
  }
  if (!it->is_array()) {
    reader.Add("$.nodes", "expected an array, got " + JsonTypeName(*it));
    return;
  }
  if (it->empty()) reader.Add("$.nodes", "at least one node is required");
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string path = Index("$.nodes", i);
    NodeSpec node;
    if (reader.IsObject((*it)[i], path)) ReadNode(reader, (*it)[i], path, experts, &node);
    if (!node.id.empty()) {
      const auto [where, inserted] = seen.emplace(node.id, i);
      if (!inserted) {
        reader.Add(Child(path, "id"), "duplicate node id '" + node.id + "' (also " +
                                          Index("$.nodes", where->second) + ")");
      }
    }
    spec->nodes.push_back(std::move(node));
  }
}

std::vector<std::string> NodeIds(const NetworkSpec& spec) {
  std::vector<std::string> ids;
  for (const NodeSpec& n : spec.nodes) {
    if (!n.id.empty()) ids.push_back(n.id);
  }
  return ids;
}

void CheckNodeRef(SpecReader& reader, const NetworkSpec& spec, const std::string& id,
                  const std::string& path) {
  if (spec.FindNode(id) != nullptr) return;
  reader.Add(path, "node '" + id + "' does not exist" + DidYouMean(id, NodeIds(spec)));
}

// Reads the edges; edge_ok[i] tells whether edge i may take part in the graph checks.
void ReadEdges(SpecReader& reader, const Json& json, NetworkSpec* spec,
               std::vector<bool>* edge_ok) {
  const auto it = json.find("edges");
  if (it == json.end()) return;
  if (!it->is_array()) {
    reader.Add("$.edges", "expected an array, got " + JsonTypeName(*it));
    return;
  }
  std::map<std::pair<std::string, std::string>, std::size_t> seen;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string path = Index("$.edges", i);
    const Json& item = (*it)[i];
    EdgeSpec edge;
    bool ok = reader.IsObject(item, path);
    if (ok) {
      reader.CheckKeys(item, path, {"from", "to", "weight"});
      for (const char* key : {"from", "to"}) {
        std::string* end = std::string_view(key) == "from" ? &edge.from : &edge.to;
        if (!reader.Require(item, key, path) || !reader.GetString(item, key, path, end)) {
          ok = false;
        } else if (spec->FindNode(*end) == nullptr) {
          CheckNodeRef(reader, *spec, *end, Child(path, key));
          ok = false;
        }
      }
      if (reader.GetNumber(item, "weight", path, &edge.weight)) {
        reader.CheckRange(edge.weight >= 0 && edge.weight <= 1, Child(path, "weight"),
                          item.at("weight"), "in [0, 1]");
      }
    }
    if (ok && edge.from == edge.to) {
      reader.Add(path, "self loop on node '" + edge.from + "'");
      ok = false;
    }
    if (ok) {
      const auto [where, inserted] = seen.emplace(std::make_pair(edge.from, edge.to), i);
      if (!inserted) {
        reader.Add(path, "duplicate edge '" + edge.from + "' -> '" + edge.to + "' (also " +
                             Index("$.edges", where->second) + ")");
        ok = false;
      }
    }
    spec->edges.push_back(std::move(edge));
    edge_ok->push_back(ok);
  }
}

void ReadCombiner(SpecReader& reader, const Json& json, const ExpertSet* experts,
                  NetworkSpec* spec) {
  const std::string path = "$.combiner";
  CombinerSpec& c = spec->combiner;
  reader.CheckKeys(json, path, {"type", "weights", "expert", "mode"});
  int kind = 0;
  if (reader.GetEnum(json, "type", path, kCombiners, &kind)) {
    c.kind = static_cast<CombinerSpec::Kind>(kind);
  }
  if (const Json* weights = ObjectMember(reader, json, "weights", path)) {
    const std::string weights_path = Child(path, "weights");
    for (const auto& item : weights->items()) {
      const std::string here = Child(weights_path, item.key());
      if (spec->FindNode(item.key()) == nullptr) {
        CheckNodeRef(reader, *spec, item.key(), here);
      }
      if (!item.value().is_number()) {
        reader.Add(here, "expected a number, got " + JsonTypeName(item.value()));
        continue;
      }
      const double w = item.value().get<double>();
      reader.CheckRange(std::isfinite(w) && w >= 0 && w <= 1e6, here, item.value(),
                        "in [0, 1000000]");
      c.weights[item.key()] = w;
    }
  }
  if (reader.GetString(json, "expert", path, &c.expert) && !c.expert.empty()) {
    CheckExpertRef(reader, experts, c.expert, Child(path, "expert"));
  }
  if (c.kind == CombinerSpec::Kind::kLlmMerge && c.expert.empty()) {
    reader.Add(Child(path, "expert"), "required for combiner llm-merge");
  }
  int mode = 0;
  if (reader.GetEnum(json, "mode", path, kEnsembleModes, &mode))
    c.ensemble_mode = kEnsembleModes[mode];
}

void ReadSettings(SpecReader& reader, const Json& json, const ExpertSet* experts,
                  NetworkSpec* spec) {
  if (const Json* ring = ObjectMember(reader, json, "ring", "$")) {
    reader.CheckKeys(*ring, "$.ring", {"rounds", "until"});
    if (reader.GetInt32(*ring, "rounds", "$.ring", &spec->ring.rounds)) {
      reader.CheckRange(spec->ring.rounds >= 1 && spec->ring.rounds <= 100, "$.ring.rounds",
                        ring->at("rounds"), "in [1, 100]");
    }
    int until = 0;
    if (reader.GetEnum(*ring, "until", "$.ring", kUntil, &until)) {
      spec->ring.until = static_cast<RingSpec::Until>(until);
    }
  }
  if (const Json* tree = ObjectMember(reader, json, "tree", "$")) {
    const std::string p = "$.tree";
    TreeSpec& t = spec->tree;
    reader.CheckKeys(
        *tree, p, {"router", "top_k", "threshold", "temperature", "backtrack", "max_backtracks"});
    int router = 0;
    if (reader.GetEnum(*tree, "router", p, kRouters, &router)) {
      t.router = static_cast<TreeSpec::Router>(router);
    }
    if (reader.GetInt32(*tree, "top_k", p, &t.top_k)) {
      reader.CheckRange(t.top_k >= 1, "$.tree.top_k", tree->at("top_k"), ">= 1");
    }
    if (reader.GetNumber(*tree, "threshold", p, &t.threshold)) {
      reader.CheckRange(t.threshold >= 0 && t.threshold <= 1, "$.tree.threshold",
                        tree->at("threshold"), "in [0, 1]");
    }
    if (reader.GetNumber(*tree, "temperature", p, &t.temperature)) {
      reader.CheckRange(t.temperature > 0, "$.tree.temperature", tree->at("temperature"), "> 0");
    }
    reader.GetBool(*tree, "backtrack", p, &t.backtrack);
    if (reader.GetInt32(*tree, "max_backtracks", p, &t.max_backtracks)) {
      reader.CheckRange(t.max_backtracks >= 0, "$.tree.max_backtracks", tree->at("max_backtracks"),
                        ">= 0");
    }
  }
  if (const Json* mesh = ObjectMember(reader, json, "mesh", "$")) {
    reader.CheckKeys(*mesh, "$.mesh", {"exchange"});
    reader.GetBool(*mesh, "exchange", "$.mesh", &spec->mesh.exchange);
  }
  if (const Json* handoff = ObjectMember(reader, json, "handoff", "$")) {
    const std::string p = "$.handoff";
    HandoffSpec& h = spec->handoff;
    reader.CheckKeys(*handoff, p, {"summarizer", "max_summary_tokens", "max_input_chars"});
    if (reader.GetString(*handoff, "summarizer", p, &h.summarizer) && !h.summarizer.empty()) {
      CheckExpertRef(reader, experts, h.summarizer, "$.handoff.summarizer");
    }
    if (reader.GetInt(*handoff, "max_summary_tokens", p, &h.max_summary_tokens)) {
      reader.CheckRange(h.max_summary_tokens >= 1, "$.handoff.max_summary_tokens",
                        handoff->at("max_summary_tokens"), ">= 1");
    }
    if (reader.GetInt(*handoff, "max_input_chars", p, &h.max_input_chars)) {
      reader.CheckRange(h.max_input_chars >= 1, "$.handoff.max_input_chars",
                        handoff->at("max_input_chars"), ">= 1");
    }
  }
  if (const Json* output = ObjectMember(reader, json, "output", "$")) {
    ReadOutput(reader, *output, "$.output", &spec->output);
  }
  if (reader.GetInt(json, "max_tokens", "$", &spec->max_tokens)) {
    reader.CheckRange(spec->max_tokens >= 1, "$.max_tokens", json.at("max_tokens"), ">= 1");
  }
  for (const char* key : {"node_timeout_ms", "timeout_ms"}) {
    std::int64_t* value =
        std::string_view(key) == "timeout_ms" ? &spec->timeout_ms : &spec->node_timeout_ms;
    if (reader.GetInt(json, key, "$", value)) {
      reader.CheckRange(*value >= 0, Child("$", key), json.at(key), ">= 0");
    }
  }
}

Json OutputToJson(const OutputContract& output) {
  Json json = Json::object();
  json["type"] = kOutputKinds[static_cast<int>(output.kind)];
  json["schema"] = output.schema;
  json["tools"] = output.tools;
  json["check_code"] = output.check_code;
  return json;
}

}  // namespace

Result<NetworkSpec> ParseNetworkSpec(const Json& json, std::string_view source,
                                     const ExpertSet* experts) {
  SpecReader reader(source);
  NetworkSpec spec;
  spec.source = std::string(source);
  if (!reader.IsObject(json, "$")) return reader.ToError();
  reader.CheckKeys(json, "$",
                   {"version", "name", "topology", "nodes", "edges", "combiner", "ring", "tree",
                    "mesh", "handoff", "output", "max_tokens", "node_timeout_ms", "timeout_ms"});
  std::int64_t version = 0;
  if (reader.Require(json, "version", "$") && reader.GetInt(json, "version", "$", &version)) {
    if (version != 1) {
      reader.Add("$.version", "unsupported version " + std::to_string(version) +
                                  " (this build reads version 1)");
    }
  }
  reader.GetString(json, "name", "$", &spec.name);
  if (const Json* topology = ObjectMember(reader, json, "topology", "$")) {
    const std::string p = "$.topology";
    reader.CheckKeys(*topology, p, {"type", "depth", "branching_factor"});
    int type = 0;
    if (reader.GetEnum(*topology, "type", p, kTopologies, &type)) {
      spec.topology = static_cast<Topology>(type);
    }
    if (reader.GetInt32(*topology, "depth", p, &spec.depth)) {
      reader.CheckRange(spec.depth >= 0, "$.topology.depth", topology->at("depth"), ">= 0");
    }
    if (reader.GetInt32(*topology, "branching_factor", p, &spec.branching_factor)) {
      reader.CheckRange(spec.branching_factor >= 0, "$.topology.branching_factor",
                        topology->at("branching_factor"), ">= 0");
    }
  }
  ReadNodes(reader, json, experts, &spec);
  std::vector<bool> edge_ok;
  ReadEdges(reader, json, &spec, &edge_ok);
  if (const Json* combiner = ObjectMember(reader, json, "combiner", "$")) {
    ReadCombiner(reader, *combiner, experts, &spec);
  }
  ReadSettings(reader, json, experts, &spec);
  internal::CheckTopology(reader, spec, edge_ok);
  if (!reader.ok()) return reader.ToError();
  return spec;
}

Result<NetworkSpec> LoadNetworkSpec(const std::string& path, const ExpertSet* experts) {
  FGNET_ASSIGN_OR_RETURN(Json json, ReadJsonFile(path));
  return ParseNetworkSpec(json, path, experts);
}

Json NetworkSpecToJson(const NetworkSpec& spec) {
  Json json = Json::object();
  json["version"] = spec.version;
  json["name"] = spec.name;
  json["topology"] = {{"type", std::string(TopologyName(spec.topology))},
                      {"depth", spec.depth},
                      {"branching_factor", spec.branching_factor}};
  Json nodes = Json::array();
  for (const NodeSpec& node : spec.nodes) {
    Json n = Json::object();
    n["id"] = node.id;
    n["expert"] = node.expert;
    internal::WriteSampling(node.sampling, &n);
    n["prompt"] =
        node.prompt_template.empty() ? std::string(kDefaultPromptTemplate) : node.prompt_template;
    if (node.output) n["output"] = OutputToJson(*node.output);
    n["timeout_ms"] = node.timeout_ms;
    nodes.push_back(std::move(n));
  }
  json["nodes"] = std::move(nodes);
  Json edges = Json::array();
  for (const EdgeSpec& edge : spec.edges) {
    edges.push_back({{"from", edge.from}, {"to", edge.to}, {"weight", edge.weight}});
  }
  json["edges"] = std::move(edges);
  Json weights = Json::object();
  for (const auto& [node, weight] : spec.combiner.weights) weights[node] = weight;
  json["combiner"] = {{"type", std::string(CombinerName(spec.combiner.kind))},
                      {"weights", std::move(weights)},
                      {"expert", spec.combiner.expert},
                      {"mode", spec.combiner.ensemble_mode}};
  json["ring"] = {{"rounds", spec.ring.rounds},
                  {"until", kUntil[static_cast<int>(spec.ring.until)]}};
  json["tree"] = {{"router", kRouters[static_cast<int>(spec.tree.router)]},
                  {"top_k", spec.tree.top_k},
                  {"threshold", spec.tree.threshold},
                  {"temperature", spec.tree.temperature},
                  {"backtrack", spec.tree.backtrack},
                  {"max_backtracks", spec.tree.max_backtracks}};
  json["mesh"] = {{"exchange", spec.mesh.exchange}};
  json["handoff"] = {{"summarizer", spec.handoff.summarizer},
                     {"max_summary_tokens", spec.handoff.max_summary_tokens},
                     {"max_input_chars", spec.handoff.max_input_chars}};
  json["output"] = OutputToJson(spec.output);
  json["max_tokens"] = spec.max_tokens;
  json["node_timeout_ms"] = spec.node_timeout_ms;
  json["timeout_ms"] = spec.timeout_ms;
  return json;
}

}  // namespace fgnet::network
