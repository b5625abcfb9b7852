// `fgnet run` and `fgnet bench-network` end to end, in process, on a tiny random model with the
// real tokenizer and three random PEFT experts: every topology runs and writes a trace whose
// nodes, statuses and prefix-cache hits follow from the spec; JSON Schema contracts give
// parseable outputs; bad inputs fail with one line naming the file and the JSON path.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"
#include "model/peft.h"
#include "model/synth.h"
#include "run_app.h"
#include "test_files.h"
#include "tokenizer/functiongemma_vocab.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace fgnet::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::NpmGemma3Tokenizer;
using testing::Outcome;
using testing::ReadFile;
using testing::RunApp;
using ::testing::StartsWith;
using testing::TempDir;
using testing::TinyFullVocabConfig;
using testing::WriteFile;
using testing::WriteTinyFunctionGemmaModel;

constexpr const char* kExperts = R"({
  "version": 1,
  "system_prompt": "You write code. Answer with JSON {code, imports, exports}.",
  "domains": {"frontend": "Frontend: React components and CSS.",
              "backend": "Backend: HTTP APIs and databases."},
  "experts": [
    {"id": "ui", "adapter": "adapters/ui", "role": "You write React components.",
     "domain": "frontend", "description": "React components, JSX, hooks and props",
     "exemplars": ["Create a React button", "Write a form component with hooks"]},
    {"id": "css", "adapter": "adapters/css", "role": "You write CSS.", "domain": "frontend",
     "description": "CSS styles and layout", "exemplars": ["Style the header with flexbox"]},
    {"id": "api", "adapter": "adapters/api", "role": "You write HTTP handlers.",
     "domain": "backend", "description": "REST endpoints and SQL queries",
     "exemplars": ["Add a /health endpoint", "Write a SQL query for users"]},
    {"id": "base", "role": "You route tasks.", "description": "the base model"}
  ]
})";

constexpr const char* kCodeContract =
    R"({"type": "json_schema", "schema": {"type": "object", "properties": {"code": {"type": "string", "maxLength": 24}}, "required": ["code"], "additionalProperties": false}, "check_code": false})";

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::ifstream(NpmGemma3Tokenizer()).good())
        << NpmGemma3Tokenizer() << " missing: run scripts/setup.sh";
    const Status written = WriteTinyFunctionGemmaModel(model());
    ASSERT_TRUE(written.ok()) << written.error().message();
    const Gemma3Config c = TinyFullVocabConfig();
    int seed = 11;
    for (const char* name : {"ui", "css", "api"}) {
      ASSERT_TRUE(WritePeftAdapter(RandomLoraAdapter(c, 2, seed++, name, 0.5f),
                                   dir_.File(std::string("net/adapters/") + name))
                      .ok());
    }
    WriteFile(experts(), kExperts);
  }
  std::string model() const { return dir_.File("model"); }
  std::string experts() const { return dir_.File("net/experts.json"); }

  // Writes a network spec; its path.
  std::string Network(const std::string& name, const std::string& json) {
    const std::string path = dir_.File("net/" + name + ".json");
    WriteFile(path, json);
    return path;
  }

  Outcome Run(const std::string& network, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        "run",       "--model",  model(),
        "--experts", experts(),  "--network",
        network,     "--prompt", "Create a React button with a counter",
        "--threads", "2",        "--kv-mib",
        "16",        "--view",   "plain",
        "--trace",   trace()};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunApp(args);
  }
  std::string trace() const { return dir_.File("trace.json"); }
  Json Trace() {
    auto json = ParseJson(ReadFile(trace()), trace());
    EXPECT_TRUE(json.ok());
    return json.ok() ? *json : Json();
  }
  static std::vector<std::string> NodeIds(const Json& trace) {
    std::vector<std::string> ids;
    for (const Json& n : trace["nodes"]) ids.push_back(n["node"].get<std::string>());
    return ids;
  }

  TempDir dir_;
};

TEST_F(RunTest, ChainHandsOnAndSharesPrefixes) {
  const std::string net = Network("chain", std::string(R"({"version": 1, "name": "chain",
    "topology": {"type": "chain"},
    "nodes": [{"id": "a", "expert": "ui"}, {"id": "b", "expert": "css"},
              {"id": "c", "expert": "ui", "prompt": "Improve: {input}"}],
    "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    "max_tokens": 12, "output": )") + kCodeContract +
                                               "}");
  const Outcome r = Run(net, {"--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto out = ParseJson(r.out, "stdout");
  ASSERT_TRUE(out.ok()) << r.out;
  EXPECT_EQ((*out)["network"], "chain");
  // The contract held: the output is a JSON object with a string "code".
  auto output = ParseJson((*out)["output"].get<std::string>(), "output");
  ASSERT_TRUE(output.ok()) << (*out)["output"];
  EXPECT_TRUE((*output)["code"].is_string());

  const Json trace = Trace();
  EXPECT_EQ(NodeIds(trace), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(trace["status"], "ok");
  for (const Json& n : trace["nodes"]) {
    EXPECT_EQ(n["status"], "ok") << n.dump();
    EXPECT_GT(n["completion_tokens"].get<int>(), 0);
  }
  // b received a's output, c received b's.
  EXPECT_EQ(trace["nodes"][1]["inputs"], Json::array({"a"}));
  EXPECT_EQ(trace["nodes"][2]["inputs"], Json::array({"b"}));
  // c runs the same expert as a: its system, domain and role parts come from pinned prefixes;
  // b shares a's system and domain prompt parts only if it ran the same adapters, which it does
  // not, so it has no hits.
  EXPECT_EQ(trace["nodes"][2]["prefix_hits"], Json::array({"system", "domain", "role"}));
  EXPECT_GT(trace["nodes"][2]["cached_tokens"].get<int>(), 0);
  EXPECT_EQ(trace["nodes"][1]["prefix_hits"], Json::array());
  // The live view printed a line per node.
  for (const char* id : {"a", "b", "c"}) EXPECT_THAT(r.err, HasSubstr(id));
}

TEST_F(RunTest, EveryTopologyRuns) {
  const std::string contract = kCodeContract;
  const std::vector<std::pair<std::string, std::string>> nets = {
      {"ring",
       R"({"version": 1, "topology": {"type": "ring"}, "ring": {"rounds": 2, "until": "rounds"},
        "nodes": [{"id": "a", "expert": "ui"}, {"id": "b", "expert": "api"}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}], "max_tokens": 8, "output": )" +
           contract + "}"},
      {"mesh", R"({"version": 1, "topology": {"type": "mesh"}, "mesh": {"exchange": true},
        "combiner": {"type": "majority"},
        "nodes": [{"id": "a", "expert": "ui"}, {"id": "b", "expert": "css"}, {"id": "c", "expert": "api"}],
        "max_tokens": 8, "output": )" +
                   contract + "}"},
      {"dag", R"({"version": 1, "topology": {"type": "dag"}, "combiner": {"type": "best"},
        "nodes": [{"id": "s", "expert": "ui"}, {"id": "x", "expert": "css"}, {"id": "y", "expert": "api"}],
        "edges": [{"from": "s", "to": "x", "weight": 0.9}, {"from": "s", "to": "y", "weight": 0.2}],
        "max_tokens": 8, "output": )" +
                  contract + "}"},
      {"tree", R"({"version": 1, "topology": {"type": "tree", "depth": 2},
        "tree": {"router": "embedding", "top_k": 1},
        "nodes": [{"id": "root", "expert": "base"}, {"id": "front", "expert": "ui"}, {"id": "back", "expert": "api"}],
        "edges": [{"from": "root", "to": "front"}, {"from": "root", "to": "back"}],
        "max_tokens": 8, "output": )" +
                   contract + "}"}};
  for (const auto& [name, json] : nets) {
    SCOPED_TRACE(name);
    const Outcome r = Run(Network(name, json));
    ASSERT_EQ(r.code, 0) << r.err;
    const Json trace = Trace();
    EXPECT_EQ(trace["topology"], name);
    EXPECT_EQ(trace["status"], "ok") << trace.dump(1);
    auto output = ParseJson(trace["output"].get<std::string>(), "output");
    EXPECT_TRUE(output.ok()) << trace["output"];
    const std::vector<std::string> ids = NodeIds(trace);
    if (name == "ring") {
      EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "a", "b"}));
      EXPECT_EQ(trace["rounds"], 2);
    } else if (name == "mesh") {
      EXPECT_EQ(ids.size(), 6u);  // three nodes, then the exchange round
      EXPECT_FALSE(trace["combiner"].empty());
    } else if (name == "dag") {
      EXPECT_EQ(ids.front(), "s");
      EXPECT_EQ(std::set<std::string>(ids.begin() + 1, ids.end()),
                (std::set<std::string>{"x", "y"}));
    } else {
      // One leaf was chosen by the embedding router, and only it ran.
      ASSERT_EQ(trace["routes"].size(), 1u);
      EXPECT_EQ(trace["routes"][0]["router"], "embedding");
      EXPECT_EQ(trace["routes"][0]["chosen"].size(), 1u);
      EXPECT_EQ(ids,
                (std::vector<std::string>{trace["routes"][0]["chosen"][0].get<std::string>()}));
    }
  }
}

TEST_F(RunTest, TreeRoutesUnderARoutingAdapter) {
  const std::string net = Network("tree", R"({"version": 1, "topology": {"type": "tree"},
    "tree": {"router": "embedding", "top_k": 2},
    "nodes": [{"id": "root", "expert": "base"}, {"id": "front", "expert": "ui"},
              {"id": "back", "expert": "api"}],
    "edges": [{"from": "root", "to": "front"}, {"from": "root", "to": "back"}],
    "max_tokens": 4})");
  const Outcome r = Run(net, {"--router-adapter", dir_.File("net/adapters/css") + ":0.5",
                              "--router-cache", dir_.File("router_cache.json")});
  ASSERT_EQ(r.code, 0) << r.err;
  const Json trace = Trace();
  ASSERT_EQ(trace["routes"].size(), 1u);
  EXPECT_EQ(trace["routes"][0]["chosen"].size(), 2u);  // top_k 2 at threshold 0
  EXPECT_EQ(trace["nodes"].size(), 2u);
  EXPECT_TRUE(std::ifstream(dir_.File("router_cache.json")).good());
  // A routing adapter that does not exist: one line naming it.
  const Outcome bad = Run(net, {"--router-adapter", dir_.File("net/adapters/nope")});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.err, HasSubstr("nope"));
}

TEST_F(RunTest, BadInputsFailWithOneLine) {
  const std::string bad_edge = Network("bad", R"({"version": 1, "topology": {"type": "chain"},
    "nodes": [{"id": "a", "expert": "ui"}], "edges": [{"from": "a", "to": "zz"}]})");
  Outcome r = Run(bad_edge);
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("$.edges[0].to"));
  EXPECT_THAT(r.err, HasSubstr("bad.json"));

  const std::string unknown_expert = Network("unknown", R"({"version": 1,
    "topology": {"type": "chain"}, "nodes": [{"id": "a", "expert": "nobody"}]})");
  r = Run(unknown_expert);
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("$.nodes[0].expert"));

  WriteFile(dir_.File("net/broken.json"), "{\"version\": 1,");
  r = Run(dir_.File("net/broken.json"));
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("broken.json"));

  // Both --prompt and --task, or neither: a usage error.
  r = RunApp({"run", "--model", model(), "--experts", experts(), "--network", bad_edge});
  EXPECT_EQ(r.code, 2);

  // A task file without a prompt.
  const std::string good = Network("good", R"({"version": 1, "topology": {"type": "chain"},
    "nodes": [{"id": "a", "expert": "ui"}]})");
  WriteFile(dir_.File("task.json"), R"({"id": "t"})");
  r = RunApp({"run", "--model", model(), "--experts", experts(), "--network", good, "--task",
              dir_.File("task.json")});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("$.prompt"));
  for (const Outcome* o : {&r}) {
    EXPECT_EQ(std::count(o->err.begin(), o->err.end(), '\n'), 1) << o->err;
  }
}

TEST_F(RunTest, AFailingNodeNamesItselfInTheError) {
  // A deadline too short to produce anything: the node fails, the run fails with its name, and
  // the trace records it.
  const std::string net = Network("slow", R"({"version": 1, "topology": {"type": "chain"},
    "nodes": [{"id": "only", "expert": "ui", "timeout_ms": 1}], "max_tokens": 200})");
  const Outcome r = Run(net);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("'only'"));
  const Json trace = Trace();
  EXPECT_EQ(trace["status"], "failed");
  EXPECT_EQ(trace["nodes"][0]["status"], "failed");
}

TEST_F(RunTest, BenchNetworkPrintsTheTable) {
  const std::string net = Network("mesh", std::string(R"({"version": 1, "name": "mesh-2",
    "topology": {"type": "mesh"}, "combiner": {"type": "weighted"},
    "nodes": [{"id": "a", "expert": "ui"}, {"id": "b", "expert": "api"}],
    "max_tokens": 6, "output": )") + kCodeContract +
                                              "}");
  const std::string json = dir_.File("bench.json");
  const Outcome r = RunApp({"bench-network", "--model", model(), "--experts", experts(),
                            "--network", net, "--single", "ui", "--prompt", "Make a button",
                            "--repeat", "1", "--threads", "2", "--kv-mib", "16", "--json", json});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| Configuration |"));
  EXPECT_THAT(r.out, HasSubstr("single:ui (chain)"));
  EXPECT_THAT(r.out, HasSubstr("mesh-2 (mesh)"));
  auto figures = ParseJson(ReadFile(json), json);
  ASSERT_TRUE(figures.ok());
  ASSERT_EQ((*figures)["rows"].size(), 2u);
  const Json& single = (*figures)["rows"][0];
  const Json& mesh = (*figures)["rows"][1];
  EXPECT_EQ(single["nodes_run"], 1);
  EXPECT_EQ(mesh["nodes_run"], 2);
  EXPECT_GT(mesh["memory_mib"].get<double>(), 0);
  EXPECT_GT(mesh["kv_peak_mib"].get<double>(), 0);
  EXPECT_GT(mesh["adapter_mib"].get<double>(), single["adapter_mib"].get<double>());
}

}  // namespace
}  // namespace fgnet::cli
