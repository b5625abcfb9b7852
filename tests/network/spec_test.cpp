// Experts files and network specs: the examples parse, every validation rule reports its JSON
// path and message, several problems come together, and specs round-trip through JSON.
#include "network/spec.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace fgnet::network {
namespace {

const std::string kExamples = std::string(FGNET_EXAMPLES_DIR) + "/networks/";

Json J(const char* text) { return Json::parse(text); }

ExpertSet TestExperts() {
  auto set = ParseExperts(J(R"({"version": 1, "domains": {"frontend": "ctx"}, "experts": [
      {"id": "react", "adapter": "adapters/react", "domain": "frontend"},
      {"id": "style"}, {"id": "summarizer"}, {"id": "merger"}]})"),
                          "experts.json", "/base");
  EXPECT_TRUE(set.ok()) << set.error().message();
  return std::move(set).value();
}

// The error message of parsing an experts file that must fail.
std::string ExpertsError(const Json& json) {
  auto set = ParseExperts(json, "experts.json", "");
  EXPECT_FALSE(set.ok());
  return set.ok() ? "" : set.error().message();
}

// The error message of parsing a network spec that must fail.
std::string SpecError(const Json& json, const ExpertSet* experts = nullptr) {
  auto spec = ParseNetworkSpec(json, "net.json", experts);
  EXPECT_FALSE(spec.ok());
  return spec.ok() ? "" : spec.error().message();
}

// A valid two-node chain to break one field at a time.
Json Chain() { return J(R"({"version": 1, "nodes": [{"id": "a"}, {"id": "b"}]})"); }

Json WithNodes(const char* topology, const char* nodes, const char* edges) {
  Json json = Chain();
  json["topology"] = J(topology);
  json["nodes"] = J(nodes);
  json["edges"] = J(edges);
  return json;
}

// --- Examples --------------------------------------------------------------------------------

TEST(SpecExamples, EveryExampleParses) {
  auto experts = LoadExperts(kExamples + "experts.json");
  ASSERT_TRUE(experts.ok()) << experts.error().message();
  EXPECT_EQ(experts->experts.size(), 19u);
  EXPECT_EQ(experts->domains.size(), 4u);
  const Expert* react = experts->Find("react");
  ASSERT_NE(react, nullptr);
  ASSERT_EQ(react->adapters.size(), 1u);
  EXPECT_EQ(react->adapters[0].path,
            std::filesystem::path(kExamples + "../adapters/react").lexically_normal().string());
  EXPECT_EQ(react->domain, "frontend");
  EXPECT_GE(react->exemplars.size(), 2u);
  EXPECT_TRUE(experts->Find("summarizer")->adapters.empty());
  for (const Expert& e : experts->experts) {
    EXPECT_FALSE(e.role.empty()) << e.id;
    EXPECT_FALSE(e.description.empty()) << e.id;
    EXPECT_GE(e.exemplars.size(), 2u) << e.id;
  }
  for (const char* name : {"ring3.json", "ring4.json", "tree.json", "tree-expert.json",
                           "mesh4.json", "dag-react.json"}) {
    auto spec = LoadNetworkSpec(kExamples + name, &*experts);
    ASSERT_TRUE(spec.ok()) << spec.error().message();
    EXPECT_EQ(spec->output.kind, OutputContract::Kind::kJsonSchema) << name;
    EXPECT_LE(spec->max_tokens, 64) << name;
    auto again = ParseNetworkSpec(NetworkSpecToJson(*spec), name, &*experts);
    ASSERT_TRUE(again.ok()) << again.error().message();
    EXPECT_EQ(NetworkSpecToJson(*again), NetworkSpecToJson(*spec)) << name;
  }
  auto task = ReadJsonFile(kExamples + "task.json");
  ASSERT_TRUE(task.ok());
  EXPECT_TRUE((*task)["prompt"].is_string());
}

TEST(SpecExamples, ExampleShapes) {
  auto experts = LoadExperts(kExamples + "experts.json");
  ASSERT_TRUE(experts.ok());
  auto ring4 = LoadNetworkSpec(kExamples + "ring4.json", &*experts);
  ASSERT_TRUE(ring4.ok());
  EXPECT_EQ(ring4->topology, Topology::kRing);
  EXPECT_EQ(ring4->ring.rounds, 3);
  EXPECT_EQ(ring4->ring.until, RingSpec::Until::kUnchangedOrValid);
  EXPECT_EQ(ChainOrder(*ring4), (std::vector<std::string>{"scaffold", "logic", "style", "test"}));
  auto tree = LoadNetworkSpec(kExamples + "tree.json", &*experts);
  ASSERT_TRUE(tree.ok());
  EXPECT_EQ(tree->nodes.size(), 13u);
  EXPECT_EQ(tree->tree.top_k, 1);
  EXPECT_TRUE(tree->tree.backtrack);
  auto dag = LoadNetworkSpec(kExamples + "dag-react.json", &*experts);
  ASSERT_TRUE(dag.ok());
  ASSERT_EQ(dag->edges.size(), 4u);
  EXPECT_EQ(dag->FindNode("jsx")->expert, "react");
  EXPECT_DOUBLE_EQ(dag->edges[3].weight, 0.3);
  auto mesh = LoadNetworkSpec(kExamples + "mesh4.json", &*experts);
  ASSERT_TRUE(mesh.ok());
  EXPECT_EQ(mesh->combiner.kind, CombinerSpec::Kind::kBest);
  EXPECT_TRUE(mesh->mesh.exchange);
}

// Every JSON example of docs/network-spec.md parses (as an experts file or a network spec).
TEST(SpecExamples, DocumentationExamplesParse) {
  std::ifstream in(std::string(FGNET_EXAMPLES_DIR) + "/../docs/network-spec.md");
  ASSERT_TRUE(in.good());
  const std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int specs = 0;
  for (std::size_t at = doc.find("```json\n"); at != std::string::npos;
       at = doc.find("```json\n", at)) {
    at += 8;
    const std::size_t end = doc.find("```", at);
    ASSERT_NE(end, std::string::npos);
    auto json = ParseJson(doc.substr(at, end - at), "network-spec.md");
    ASSERT_TRUE(json.ok()) << json.error().message();
    if (json->contains("experts")) {
      auto set = ParseExperts(*json, "network-spec.md", "");
      EXPECT_TRUE(set.ok()) << set.error().message();
    } else if (json->contains("nodes")) {
      auto spec = ParseNetworkSpec(*json, "network-spec.md", nullptr);
      EXPECT_TRUE(spec.ok()) << spec.error().message();
      ++specs;
    }
  }
  EXPECT_EQ(specs, 6);
}

// --- Experts files ---------------------------------------------------------------------------

TEST(Experts, ParsesEveryField) {
  auto set = ParseExperts(J(R"({"version": 1, "system_prompt": "sys",
      "domains": {"frontend": "ctx"},
      "experts": [{"id": "react", "adapters": [{"path": "a/react", "scale": 0.5},
                                                {"path": "/abs/b"}],
                   "role": "r", "domain": "frontend", "description": "d", "exemplars": ["x", "y"],
                   "sampling": {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "min_p": 0,
                                "repetition_penalty": 1.1, "seed": 7, "max_tokens": 128}},
                  {"id": "base"}]})"),
                          "experts.json", "/root/dir");
  ASSERT_TRUE(set.ok()) << set.error().message();
  EXPECT_EQ(set->source, "experts.json");
  EXPECT_EQ(set->system_prompt, "sys");
  EXPECT_EQ(set->domains.at("frontend"), "ctx");
  const Expert& e = set->experts[0];
  ASSERT_EQ(e.adapters.size(), 2u);
  EXPECT_EQ(e.adapters[0].path, "/root/dir/a/react");
  EXPECT_FLOAT_EQ(e.adapters[0].scale, 0.5f);
  EXPECT_EQ(e.adapters[1].path, "/abs/b");
  EXPECT_FLOAT_EQ(e.adapters[1].scale, 1.0f);
  EXPECT_EQ(e.exemplars, (std::vector<std::string>{"x", "y"}));
  EXPECT_FLOAT_EQ(*e.sampling.temperature, 0.2f);
  EXPECT_EQ(*e.sampling.top_k, 40);
  EXPECT_EQ(*e.sampling.seed, 7u);
  EXPECT_EQ(*e.sampling.max_tokens, 128);
  EXPECT_TRUE(set->experts[1].adapters.empty());
  EXPECT_FALSE(set->experts[1].sampling.temperature.has_value());
  EXPECT_EQ(set->Find("base"), &set->experts[1]);
}

TEST(Experts, AdapterShorthand) {
  auto set = ParseExperts(J(R"({"version": 1, "experts": [{"id": "a", "adapter": "../x"}]})"),
                          "e.json", "dir/sub");
  ASSERT_TRUE(set.ok()) << set.error().message();
  ASSERT_EQ(set->experts[0].adapters.size(), 1u);
  EXPECT_EQ(set->experts[0].adapters[0].path, "dir/x");
  EXPECT_FLOAT_EQ(set->experts[0].adapters[0].scale, 1.0f);
}

TEST(Experts, Version) {
  EXPECT_EQ(ExpertsError(J(R"({"experts": []})")), "experts.json: $.version: required");
  EXPECT_EQ(ExpertsError(J(R"({"version": 2, "experts": []})")),
            "experts.json: $.version: unsupported version 2 (this build reads version 1)");
}

TEST(Experts, Ids) {
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [{"id": "a"}, {"id": "a"}]})")),
            "experts.json: $.experts[1].id: duplicate expert id 'a' (also $.experts[0])");
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [{"id": ""}]})")),
            "experts.json: $.experts[0].id: must not be empty");
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [{"id": "my expert"}]})")),
            "experts.json: $.experts[0].id: 'my expert' has characters outside [A-Za-z0-9_.-]");
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [{"role": "r"}]})")),
            "experts.json: $.experts[0].id: required");
}

TEST(Experts, Domain) {
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "domains": {"frontend": "f"},
                               "experts": [{"id": "a", "domain": "frontnd"}]})")),
            "experts.json: $.experts[0].domain: domain 'frontnd' is not a key of $.domains (did "
            "you mean 'frontend'?)");
}

TEST(Experts, SamplingRanges) {
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [{"id": "a", "sampling": {
      "temperature": -1, "top_p": 1.5, "top_k": -2, "min_p": 2, "repetition_penalty": 0,
      "max_tokens": 0, "seed": -3}}]})")),
            "experts.json: $.experts[0].sampling.temperature: -1 is not >= 0\n"
            "experts.json: $.experts[0].sampling.top_p: 1.5 is not in (0, 1]\n"
            "experts.json: $.experts[0].sampling.top_k: -2 is not >= 0\n"
            "experts.json: $.experts[0].sampling.min_p: 2 is not in [0, 1]\n"
            "experts.json: $.experts[0].sampling.repetition_penalty: 0 is not > 0\n"
            "experts.json: $.experts[0].sampling.seed: -3 is not >= 0\n"
            "experts.json: $.experts[0].sampling.max_tokens: 0 is not >= 1");
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [{"id": "a", "sampling": {
      "top_p": 0}}]})")),
            "experts.json: $.experts[0].sampling.top_p: 0 is not in (0, 1]");
}

TEST(Experts, AdapterProblems) {
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [{"id": "a",
      "adapters": [{"path": "p", "scale": 1e39}, {"scale": 1}, {"path": ""}]}]})")),
            "experts.json: $.experts[0].adapters[0].scale: 1e+39 is not a finite float\n"
            "experts.json: $.experts[0].adapters[1].path: required\n"
            "experts.json: $.experts[0].adapters[2].path: must not be empty");
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [{"id": "a", "adapter": "x",
      "adapters": []}]})")),
            "experts.json: $.experts[0]: give either 'adapter' or 'adapters', not both");
}

TEST(Experts, UnknownKeysAndTypes) {
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "expert": [], "experts": [{"id": "a",
      "descripton": "x", "exemplars": ["ok", 3], "role": 5,
      "sampling": {"temprature": 0.5, "top_k": 1.5}}]})")),
            "experts.json: $.expert: unknown key (did you mean 'experts'?)\n"
            "experts.json: $.experts[0].descripton: unknown key (did you mean 'description'?)\n"
            "experts.json: $.experts[0].role: expected a string, got a number\n"
            "experts.json: $.experts[0].exemplars[1]: expected a string, got a number\n"
            "experts.json: $.experts[0].sampling.temprature: unknown key (did you mean "
            "'temperature'?)\n"
            "experts.json: $.experts[0].sampling.top_k: expected an integer, got 1.5");
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": [], "zzzz": 1})")),
            "experts.json: $.zzzz: unknown key");
  EXPECT_EQ(ExpertsError(J("[1]")), "experts.json: $: expected an object, got an array");
  EXPECT_EQ(ExpertsError(J(R"({"version": 1, "experts": {}})")),
            "experts.json: $.experts: expected an array, got an object");
}

TEST(Experts, OddKeysNeverThrow) {
  Json json = J(R"({"version": 1, "experts": []})");
  json["bad \xff key"] = 1;
  json["with space"] = 2;
  EXPECT_EQ(ExpertsError(json),
            "experts.json: $[\"bad \xEF\xBF\xBD key\"]: unknown key\n"
            "experts.json: $[\"with space\"]: unknown key");
}

// --- Network specs: fields --------------------------------------------------------------------

TEST(Spec, ParsesEveryFieldAndDefaults) {
  auto spec = ParseNetworkSpec(Chain(), "net.json", nullptr);
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  EXPECT_EQ(spec->topology, Topology::kChain);
  EXPECT_EQ(spec->nodes[0].prompt_template, kDefaultPromptTemplate);
  EXPECT_EQ(spec->max_tokens, 256);
  EXPECT_EQ(spec->node_timeout_ms, 60000);
  EXPECT_EQ(spec->combiner.kind, CombinerSpec::Kind::kNone);
  EXPECT_FALSE(spec->nodes[0].output.has_value());

  const ExpertSet experts = TestExperts();
  auto full = ParseNetworkSpec(J(R"({"version": 1, "name": "n",
      "topology": {"type": "mesh", "depth": 2, "branching_factor": 0},
      "nodes": [{"id": "x", "expert": "react", "temperature": 0.5, "top_p": 0.8, "top_k": 3,
                 "min_p": 0.1, "repetition_penalty": 1.2, "seed": 9, "max_tokens": 12,
                 "prompt": "Do {task} with {{braces}} and {input}", "timeout_ms": 5,
                 "output": {"type": "function_calls",
                            "tools": [{"type": "function", "function": {"name": "f"}}]}},
                {"id": "y", "expert": "style"}],
      "edges": [{"from": "x", "to": "y", "weight": 0.25}],
      "combiner": {"type": "llm-merge", "weights": {"x": 2, "y": 0.5}, "expert": "merger",
                   "mode": "max"},
      "ring": {"rounds": 3, "until": "valid"},
      "tree": {"router": "callback", "top_k": 2, "threshold": 0.1, "temperature": 0.7,
               "backtrack": false, "max_backtracks": 0},
      "mesh": {"exchange": true},
      "handoff": {"summarizer": "summarizer", "max_summary_tokens": 64, "max_input_chars": 99},
      "output": {"type": "json_schema", "schema": {"type": "object"}, "check_code": false},
      "max_tokens": 32, "node_timeout_ms": 1000, "timeout_ms": 5000})"),
                               "net.json", &experts);
  ASSERT_TRUE(full.ok()) << full.error().message();
  const NetworkSpec& s = *full;
  EXPECT_EQ(s.name, "n");
  EXPECT_EQ(s.depth, 2);
  const NodeSpec& x = s.nodes[0];
  EXPECT_FLOAT_EQ(*x.sampling.min_p, 0.1f);
  EXPECT_EQ(*x.sampling.seed, 9u);
  EXPECT_EQ(x.prompt_template, "Do {task} with {{braces}} and {input}");
  ASSERT_TRUE(x.output.has_value());
  EXPECT_EQ(x.output->kind, OutputContract::Kind::kFunctionCalls);
  EXPECT_EQ(x.timeout_ms, 5);
  EXPECT_DOUBLE_EQ(s.edges[0].weight, 0.25);
  EXPECT_EQ(s.combiner.kind, CombinerSpec::Kind::kLlmMerge);
  EXPECT_DOUBLE_EQ(s.combiner.weights.at("x"), 2.0);
  EXPECT_EQ(s.combiner.ensemble_mode, "max");
  EXPECT_EQ(s.ring.until, RingSpec::Until::kValid);
  EXPECT_EQ(s.tree.router, TreeSpec::Router::kCallback);
  EXPECT_FALSE(s.tree.backtrack);
  EXPECT_TRUE(s.mesh.exchange);
  EXPECT_EQ(s.handoff.max_input_chars, 99);
  EXPECT_FALSE(s.output.check_code);
  EXPECT_EQ(s.timeout_ms, 5000);

  // Round trip: every field survives, floats without noise.
  const Json json = NetworkSpecToJson(s);
  EXPECT_EQ(json["nodes"][0]["temperature"].dump(), "0.5");
  EXPECT_EQ(json["nodes"][0]["min_p"].dump(), "0.1");
  auto again = ParseNetworkSpec(json, "net.json", &experts);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(NetworkSpecToJson(*again), json);
  EXPECT_EQ(again->nodes[0].output->tools, x.output->tools);
  EXPECT_EQ(again->output.schema, s.output.schema);
  EXPECT_EQ(*again->nodes[0].sampling.repetition_penalty, *x.sampling.repetition_penalty);
  EXPECT_FALSE(again->nodes[1].sampling.top_p.has_value());
}

TEST(Spec, VersionAndTypes) {
  EXPECT_EQ(SpecError(J(R"({"nodes": [{"id": "a"}]})")), "net.json: $.version: required");
  EXPECT_EQ(SpecError(J(R"({"version": 3, "nodes": [{"id": "a"}]})")),
            "net.json: $.version: unsupported version 3 (this build reads version 1)");
  EXPECT_EQ(SpecError(J(R"({"version": 1})")), "net.json: $.nodes: required");
  EXPECT_EQ(SpecError(J(R"({"version": 1, "nodes": []})")),
            "net.json: $.nodes: at least one node is required");
  EXPECT_EQ(SpecError(J(R"({"version": "1", "nodes": [{"id": "a"}], "name": 3,
      "ring": [], "mesh": {"exchange": 1}})")),
            "net.json: $.version: expected an integer, got a string\n"
            "net.json: $.name: expected a string, got a number\n"
            "net.json: $.ring: expected an object, got an array\n"
            "net.json: $.mesh.exchange: expected a boolean, got a number");
}

TEST(Spec, UnknownKeysWithSuggestions) {
  Json json = Chain();
  json["combner"] = J(R"({"type": "best"})");
  json["nodes"][0]["temprature"] = 0.1;
  json["topology"] = J(R"({"type": "rng"})");
  EXPECT_EQ(SpecError(json),
            "net.json: $.combner: unknown key (did you mean 'combiner'?)\n"
            "net.json: $.topology.type: 'rng' is not one of chain, ring, tree, mesh, dag (did "
            "you mean 'ring'?)\n"
            "net.json: $.nodes[0].temprature: unknown key (did you mean 'temperature'?)");
}

TEST(Spec, NodeIds) {
  EXPECT_EQ(SpecError(J(R"({"version": 1, "nodes": [{"id": "a"}, {"id": ""}, {"id": "a"},
      {"expert": "x"}]})")),
            "net.json: $.nodes[1].id: must not be empty\n"
            "net.json: $.nodes[2].id: duplicate node id 'a' (also $.nodes[0])\n"
            "net.json: $.nodes[3].id: required");
}

TEST(Spec, UnknownExpert) {
  const ExpertSet experts = TestExperts();
  Json json = Chain();
  json["nodes"][0]["expert"] = "raect";
  json["nodes"][1]["expert"] = "zzzzzz";
  EXPECT_EQ(SpecError(json, &experts),
            "net.json: $.nodes[0].expert: expert 'raect' does not exist (did you mean "
            "'react'?)\n"
            "net.json: $.nodes[1].expert: expert 'zzzzzz' does not exist");
  // Without an experts file, expert ids are not checked.
  EXPECT_TRUE(ParseNetworkSpec(json, "net.json", nullptr).ok());
}

TEST(Spec, NodeSamplingAndTimeouts) {
  Json json = Chain();
  json["nodes"][0]["top_p"] = 1.5;
  json["nodes"][0]["max_tokens"] = 0;
  json["nodes"][1]["timeout_ms"] = -1;
  json["max_tokens"] = 0;
  json["node_timeout_ms"] = -5;
  json["timeout_ms"] = -6;
  EXPECT_EQ(SpecError(json),
            "net.json: $.nodes[0].top_p: 1.5 is not in (0, 1]\n"
            "net.json: $.nodes[0].max_tokens: 0 is not >= 1\n"
            "net.json: $.nodes[1].timeout_ms: -1 is not >= 0\n"
            "net.json: $.max_tokens: 0 is not >= 1\n"
            "net.json: $.node_timeout_ms: -5 is not >= 0\n"
            "net.json: $.timeout_ms: -6 is not >= 0");
}

TEST(Spec, PromptPlaceholders) {
  Json json = Chain();
  json["nodes"][0]["prompt"] = "Do {task} for {user}";
  json["nodes"][1]["prompt"] = "open { brace";
  EXPECT_EQ(SpecError(json),
            "net.json: $.nodes[0].prompt: unknown placeholder '{user}' (the placeholders are "
            "{task} and {input}; write {{ and }} for braces)\n"
            "net.json: $.nodes[1].prompt: unclosed '{' at offset 5 (write {{ for a literal "
            "brace)");
  json["nodes"][1]["prompt"] = "a } b";
  EXPECT_EQ(SpecError(json).substr(SpecError(json).find('\n') + 1),
            "net.json: $.nodes[1].prompt: unmatched '}' at offset 2 (write }} for a literal "
            "brace)");
}

TEST(Spec, ExpandPromptTemplate) {
  EXPECT_EQ(ExpandPromptTemplate("T={task} I={input} {{x}}", "do it", "up"), "T=do it I=up {x}");
  EXPECT_EQ(ExpandPromptTemplate("", "t", "i"), "t\n\ni");
  EXPECT_TRUE(CheckPromptTemplate("{{task}}").ok());
  EXPECT_FALSE(CheckPromptTemplate("{tasks}").ok());
}

TEST(Spec, Edges) {
  Json json = WithNodes(R"({"type": "dag"})", R"([{"id": "style"}, {"id": "b"}])",
                        R"([{"from": "style", "to": "styl"}, {"from": "b", "to": "b"},
                            {"from": "style", "to": "b", "weight": 1.5},
                            {"from": "style", "to": "b"}, {"to": "b"}])");
  EXPECT_EQ(SpecError(json),
            "net.json: $.edges[0].to: node 'styl' does not exist (did you mean 'style'?)\n"
            "net.json: $.edges[1]: self loop on node 'b'\n"
            "net.json: $.edges[2].weight: 1.5 is not in [0, 1]\n"
            "net.json: $.edges[3]: duplicate edge 'style' -> 'b' (also $.edges[2])\n"
            "net.json: $.edges[4].from: required");
}

// --- Network specs: topologies ---------------------------------------------------------------

TEST(Spec, ChainOrderWithoutEdges) {
  auto spec = ParseNetworkSpec(Chain(), "net.json", nullptr);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(ChainOrder(*spec), (std::vector<std::string>{"a", "b"}));
  auto out_of_order =
      ParseNetworkSpec(WithNodes(R"({"type": "chain"})", R"([{"id": "a"}, {"id": "b"}])",
                                 R"([{"from": "b", "to": "a"}])"),
                       "net.json", nullptr);
  ASSERT_TRUE(out_of_order.ok()) << out_of_order.error().message();
  EXPECT_EQ(ChainOrder(*out_of_order), (std::vector<std::string>{"b", "a"}));
}

TEST(Spec, ChainMustBeOnePath) {
  const char* nodes = R"([{"id": "a"}, {"id": "b"}, {"id": "c"}])";
  EXPECT_EQ(SpecError(WithNodes(R"({"type": "chain"})", nodes,
                                R"([{"from": "a", "to": "b"}, {"from": "a", "to": "c"}])")),
            "net.json: $.edges: node 'a' has 2 outgoing edges; a chain's edges must form one "
            "path through every node");
  EXPECT_EQ(SpecError(WithNodes(R"({"type": "chain"})", nodes, R"([{"from": "a", "to": "b"}])")),
            "net.json: $.edges: the edges form 2 separate paths, starting at 'a', 'c'; a "
            "chain's edges must form one path through every node");
  EXPECT_EQ(SpecError(WithNodes(R"({"type": "chain"})", nodes,
                                R"([{"from": "a", "to": "b"}, {"from": "b", "to": "c"},
                                    {"from": "c", "to": "a"}])")),
            "net.json: $.edges: the edges form a cycle that leaves out some nodes; a chain's "
            "edges must form one path through every node");
  EXPECT_EQ(SpecError(WithNodes(R"({"type": "chain"})",
                                R"([{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}])",
                                R"([{"from": "a", "to": "b"}, {"from": "c", "to": "d"},
                                    {"from": "d", "to": "c"}])")),
            "net.json: $.edges: nodes 'c', 'd' form a cycle off the path from 'a'; a chain's "
            "edges must form one path through every node");
}

TEST(Spec, Ring) {
  const char* nodes = R"([{"id": "a"}, {"id": "b"}, {"id": "c"}])";
  const Json closed = WithNodes(R"({"type": "ring"})", nodes,
                                R"([{"from": "a", "to": "b"}, {"from": "b", "to": "c"},
                                    {"from": "c", "to": "a"}])");
  auto spec = ParseNetworkSpec(closed, "net.json", nullptr);
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  EXPECT_EQ(ChainOrder(*spec), (std::vector<std::string>{"a", "b", "c"}));
  Json bad = WithNodes(R"({"type": "ring"})", nodes,
                       R"([{"from": "a", "to": "b"}, {"from": "c", "to": "b"}])");
  bad["ring"] = J(R"({"rounds": 0, "until": "never"})");
  EXPECT_EQ(SpecError(bad),
            "net.json: $.ring.rounds: 0 is not in [1, 100]\n"
            "net.json: $.ring.until: 'never' is not one of rounds, unchanged, valid, "
            "unchanged_or_valid\n"
            "net.json: $.edges: node 'b' has 2 incoming edges; a ring's edges must form one "
            "path through every node (plus an optional closing edge)");
  Json many = closed;
  many["ring"] = J(R"({"rounds": 101})");
  EXPECT_EQ(SpecError(many), "net.json: $.ring.rounds: 101 is not in [1, 100]");
}

TEST(Spec, CombinerOnChainOrRing) {
  Json json = Chain();
  json["combiner"] = J(R"({"type": "best"})");
  EXPECT_EQ(SpecError(json),
            "net.json: $.combiner.type: a chain has a single output; combiner 'best' needs a "
            "tree, mesh or dag (use none)");
}

Json Tree(const char* edges) {
  return WithNodes(R"({"type": "tree"})",
                   R"([{"id": "r", "expert": "x"}, {"id": "a"}, {"id": "b"}, {"id": "c"}])", edges);
}

TEST(Spec, TreeShape) {
  const char* good = R"([{"from": "r", "to": "a"}, {"from": "r", "to": "b"},
                         {"from": "a", "to": "c"}])";
  EXPECT_TRUE(ParseNetworkSpec(Tree(good), "net.json", nullptr).ok());
  EXPECT_EQ(SpecError(Tree(R"([{"from": "r", "to": "a"}, {"from": "b", "to": "c"}])")),
            "net.json: $.edges: a tree needs exactly one root (a node without a parent); found "
            "2: 'r', 'b'");
  EXPECT_EQ(SpecError(Tree(R"([{"from": "r", "to": "a"}, {"from": "r", "to": "b"},
                              {"from": "a", "to": "c"}, {"from": "b", "to": "c"}])")),
            "net.json: $.edges: node 'c' has 2 parents ('a', 'b'); a tree node has one");
  EXPECT_EQ(SpecError(Tree(R"([{"from": "r", "to": "a"}, {"from": "b", "to": "c"},
                              {"from": "c", "to": "b"}])")),
            "net.json: $.edges: nodes 'b', 'c' are not reachable from the root 'r'");
  Json limited = Tree(good);
  limited["topology"] = J(R"({"type": "tree", "depth": 2, "branching_factor": 1})");
  EXPECT_EQ(SpecError(limited),
            "net.json: $.topology.branching_factor: node 'r' has 2 children, more than 1\n"
            "net.json: $.topology.depth: the tree has 3 levels, more than 2");
}

TEST(Spec, TreeSettings) {
  Json json = Tree(R"([{"from": "r", "to": "a"}, {"from": "r", "to": "b"},
                       {"from": "a", "to": "c"}])");
  json["tree"] = J(R"({"router": "expert", "top_k": 0, "threshold": 1.5, "temperature": 0,
                       "max_backtracks": -1, "backtrack": true})");
  EXPECT_EQ(SpecError(json),
            "net.json: $.tree.top_k: 0 is not >= 1\n"
            "net.json: $.tree.threshold: 1.5 is not in [0, 1]\n"
            "net.json: $.tree.temperature: 0 is not > 0\n"
            "net.json: $.tree.max_backtracks: -1 is not >= 0\n"
            "net.json: $.nodes[1].expert: router 'expert' needs an expert on inner node 'a'");
}

TEST(Spec, MeshNeedsTwoNodes) {
  EXPECT_EQ(SpecError(WithNodes(R"({"type": "mesh"})", R"([{"id": "a"}])", "[]")),
            "net.json: $.nodes: a mesh needs at least 2 nodes, got 1");
  EXPECT_TRUE(ParseNetworkSpec(WithNodes(R"({"type": "mesh"})", R"([{"id": "a"}, {"id": "b"}])",
                                         R"([{"from": "a", "to": "b"}, {"from": "b", "to": "a"}])"),
                               "net.json", nullptr)
                  .ok());
}

TEST(Spec, DagCycleAndDepth) {
  const char* nodes = R"([{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}])";
  EXPECT_EQ(SpecError(WithNodes(R"({"type": "dag"})", nodes,
                                R"([{"from": "a", "to": "b"}, {"from": "b", "to": "c"},
                                    {"from": "c", "to": "b"}])")),
            "net.json: $.edges: cycle b -> c -> b (a dag must be acyclic)");
  const char* diamond = R"([{"from": "a", "to": "b"}, {"from": "a", "to": "c"},
                            {"from": "b", "to": "d"}, {"from": "c", "to": "d"},
                            {"from": "b", "to": "c"}])";
  EXPECT_TRUE(
      ParseNetworkSpec(WithNodes(R"({"type": "dag", "depth": 4})", nodes, diamond), "n", nullptr)
          .ok());
  EXPECT_EQ(SpecError(WithNodes(R"({"type": "dag", "depth": 3})", nodes, diamond)),
            "net.json: $.topology.depth: the dag has 4 levels, more than 3");
}

TEST(Spec, Combiner) {
  const ExpertSet experts = TestExperts();
  Json json = WithNodes(R"({"type": "mesh"})", R"([{"id": "a"}, {"id": "b"}])", "[]");
  json["combiner"] = J(R"({"type": "llm-merge", "weights": {"a": -1, "bb": 1, "b": 2e6},
                           "mode": "median"})");
  EXPECT_EQ(SpecError(json, &experts),
            "net.json: $.combiner.weights.a: -1 is not in [0, 1000000]\n"
            "net.json: $.combiner.weights.b: 2000000.0 is not in [0, 1000000]\n"
            "net.json: $.combiner.weights.bb: node 'bb' does not exist (did you mean 'b'?)\n"
            "net.json: $.combiner.expert: required for combiner llm-merge\n"
            "net.json: $.combiner.mode: 'median' is not one of mean, max (did you mean 'mean'?)");
  json["combiner"] = J(R"({"type": "llm-merge", "expert": "mergr"})");
  EXPECT_EQ(SpecError(json, &experts),
            "net.json: $.combiner.expert: expert 'mergr' does not exist (did you mean "
            "'merger'?)");
}

TEST(Spec, OutputContract) {
  Json json = Chain();
  json["output"] = J(R"({"type": "json_schema"})");
  json["nodes"][0]["output"] = J(R"({"type": "function_calls"})");
  json["nodes"][1]["output"] = J(R"({"type": "function_calls", "tools": [{"function": {}}]})");
  EXPECT_EQ(SpecError(json),
            "net.json: $.nodes[0].output.tools: required for type function_calls\n"
            "net.json: $.nodes[1].output.tools[0]: a function declaration needs a name "
            "({\"type\": \"function\", \"function\": {\"name\": ...}} or {\"name\": ...})\n"
            "net.json: $.output.schema: required for type json_schema");
  json = Chain();
  json["output"] = J(R"({"type": "function_calls", "tools": [], "schema": "x"})");
  EXPECT_EQ(SpecError(json),
            "net.json: $.output.schema: expected an object or a boolean (a JSON Schema), got a "
            "string\n"
            "net.json: $.output.tools: type function_calls needs at least one function "
            "declaration");
  json["output"] = J(R"({"type": "json_schema", "schema": true})");
  EXPECT_TRUE(ParseNetworkSpec(json, "net.json", nullptr).ok());
  json["output"] = J(R"({"type": "function_calls", "tools": [{"name": "f"}]})");
  EXPECT_TRUE(ParseNetworkSpec(json, "net.json", nullptr).ok());
}

TEST(Spec, Handoff) {
  const ExpertSet experts = TestExperts();
  Json json = Chain();
  json["handoff"] = J(R"({"summarizer": "sumarizer", "max_summary_tokens": 0,
                          "max_input_chars": 0})");
  EXPECT_EQ(SpecError(json, &experts),
            "net.json: $.handoff.summarizer: expert 'sumarizer' does not exist (did you mean "
            "'summarizer'?)\n"
            "net.json: $.handoff.max_summary_tokens: 0 is not >= 1\n"
            "net.json: $.handoff.max_input_chars: 0 is not >= 1");
}

TEST(Spec, ManyProblemsTogether) {
  const ExpertSet experts = TestExperts();
  const std::string message = SpecError(J(R"({"version": 1, "topology": {"type": "dag"},
      "nodes": [{"id": "a", "expert": "nope", "top_k": -1}, {"id": "a"}],
      "edges": [{"from": "a", "to": "zz"}], "ring": {"rounds": 0}, "max_tokens": 0})"),
                                        &experts);
  int lines = 1;
  for (char c : message) lines += c == '\n';
  EXPECT_EQ(lines, 6) << message;
  EXPECT_NE(message.find("$.nodes[0].expert"), std::string::npos);
  EXPECT_NE(message.find("$.nodes[0].top_k"), std::string::npos);
  EXPECT_NE(message.find("$.nodes[1].id"), std::string::npos);
  EXPECT_NE(message.find("$.edges[0].to"), std::string::npos);
  EXPECT_NE(message.find("$.ring.rounds"), std::string::npos);
  EXPECT_NE(message.find("$.max_tokens"), std::string::npos);
}

// --- Files ---------------------------------------------------------------------------------

class SpecFiles : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("fgnet_spec_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(SpecFiles, BadJsonIsOneLineNamingTheFile) {
  const std::string path = Write("broken.json", "{\n  \"version\": 1,\n  \"nodes\": [\n");
  auto spec = LoadNetworkSpec(path, nullptr);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.error().message().rfind(path + ": ", 0), 0u) << spec.error().message();
  EXPECT_EQ(spec.error().message().find('\n'), std::string::npos) << spec.error().message();
  auto experts = LoadExperts(Write("experts.json", "{\"version\": 1,\n\"experts\": [}"));
  ASSERT_FALSE(experts.ok());
  EXPECT_NE(experts.error().message().find("experts.json: "), std::string::npos);
  EXPECT_EQ(experts.error().message().find('\n'), std::string::npos);
  auto missing = LoadExperts(dir_ + "/missing.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("missing.json"), std::string::npos);
}

TEST_F(SpecFiles, LoadResolvesAdaptersAndNamesTheFile) {
  const std::string path =
      Write("experts.json", R"({"version": 1, "experts": [{"id": "a", "adapter": "ad/a"},
                                                           {"id": "b", "domain": "x"}]})");
  auto bad = LoadExperts(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(),
            path + ": $.experts[1].domain: domain 'x' is not a key of $.domains");
  Write("experts.json", R"({"version": 1, "experts": [{"id": "a", "adapter": "ad/a"}]})");
  auto set = LoadExperts(path);
  ASSERT_TRUE(set.ok()) << set.error().message();
  EXPECT_EQ(set->source, path);
  EXPECT_EQ(set->experts[0].adapters[0].path, dir_ + "/ad/a");
}

}  // namespace
}  // namespace fgnet::network
