// `fgnet bench-network`: the same task through a single expert and through each given network,
// measured on this machine: latency (cold: empty prefix cache; warm: the median of repeated runs
// with the shared prompt parts cached), nodes run, tokens, the memory each configuration needs
// (base weights + the adapters of its experts + the peak of KV blocks in use) and whether the
// output passed validation. The table has the columns of the design's benchmark table.
#include <algorithm>
#include <chrono>
#include <iomanip>
#include <set>
#include <sstream>

#include "apps/fgnet/bench_report.h"
#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_bench.h"
#include "apps/fgnet/network_runtime.h"

namespace fgnet::cli {
namespace {

struct ConfigFigures {
  std::string name;
  std::string topology;
  std::int64_t nodes_run = 0;  // node attempts of one run
  double cold_ms = 0;
  double warm_p50_ms = 0;
  std::int64_t prompt_tokens = 0;
  std::int64_t cached_tokens = 0;  // of a warm run
  std::int64_t generated_tokens = 0;
  double adapter_mib = 0;
  double kv_peak_mib = 0;
  double memory_mib = 0;  // base + adapters + KV peak
  bool valid = false;
  std::string status;
};

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

constexpr double kMiB = 1024.0 * 1024.0;

// Bytes of the adapters the network's experts use.
double AdapterMiB(const network::NetworkSpec& spec, const network::ExpertSet& experts,
                  const AdapterRegistry& registry) {
  std::set<std::string> paths;
  for (const network::NodeSpec& node : spec.nodes) {
    for (const network::ExpertAdapter& a : experts.Find(node.expert)->adapters) {
      paths.insert(a.path);
    }
  }
  std::uint64_t bytes = 0;
  for (const AdapterRegistry::Entry& entry : registry.List()) {
    for (const std::string& name : entry.names) {
      if (paths.count(name) != 0) {
        bytes += entry.bytes;
        break;
      }
    }
  }
  return static_cast<double>(bytes) / kMiB;
}

// A chain of one node: `expert` on the task with the first network's contract and budget.
network::NetworkSpec SingleExpertSpec(const std::string& expert, const network::NetworkSpec& like) {
  network::NetworkSpec spec;
  spec.name = "single:" + expert;
  spec.topology = network::Topology::kChain;
  network::NodeSpec node;
  node.id = expert;
  node.expert = expert;
  spec.nodes.push_back(node);
  spec.output = like.output;
  spec.max_tokens = like.max_tokens;
  spec.node_timeout_ms = like.node_timeout_ms;
  spec.handoff = like.handoff;
  return spec;
}

Result<ConfigFigures> Measure(NetworkRuntime& runtime, const network::NetworkSpec& spec,
                              const network::ExpertSet& experts, const std::string& task,
                              int repeat, std::ostream& err) {
  FGNET_TRY(runtime.RestartEngine());
  ConfigFigures f;
  f.name = spec.name;
  f.topology = std::string(network::TopologyName(spec.topology));
  std::vector<double> warm;
  for (int i = 0; i <= repeat; ++i) {
    network::NetworkResult result = runtime.Run(spec, task, nullptr);
    if (!result.status.ok()) {
      return MakeError(spec.source.empty() ? spec.name : spec.source, ": ",
                       result.status.error().message());
    }
    const network::NetworkTrace& t = result.trace;
    if (i == 0) {
      f.cold_ms = t.latency_ms;
      f.nodes_run = static_cast<std::int64_t>(t.nodes.size());
      f.prompt_tokens = t.prompt_tokens;
      f.generated_tokens = t.completion_tokens;
      f.valid = result.validation.ok;
      f.status = t.status;
    } else {
      warm.push_back(t.latency_ms);
      f.cached_tokens = t.cached_tokens;
    }
  }
  f.warm_p50_ms = Median(warm);
  const EngineMetrics metrics = runtime.engine().Metrics();
  f.kv_peak_mib = static_cast<double>(metrics.kv_blocks_peak * metrics.kv_block_bytes) / kMiB;
  f.adapter_mib = AdapterMiB(spec, experts, *runtime.model().registry);
  const LoadedModel& m = runtime.model();
  const double base_mib =
      static_cast<double>(ModelWeightBytes(m.checkpoint->config(), m.checkpoint->weights())) / kMiB;
  f.memory_mib = base_mib + f.adapter_mib + f.kv_peak_mib;
  err << "  " << f.name << ": cold " << std::fixed << std::setprecision(0) << f.cold_ms
      << " ms, warm p50 " << f.warm_p50_ms << " ms\n";
  return f;
}

std::string Fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

Status RunBenchNetwork(const ParsedArgs& args, CommandIo& io) {
  FGNET_ASSIGN_OR_RETURN(const network::ExpertSet experts,
                         network::LoadExperts(args.String("experts")));
  std::vector<network::NetworkSpec> specs;
  for (const std::string& path : args.Strings("network")) {
    FGNET_ASSIGN_OR_RETURN(network::NetworkSpec spec, network::LoadNetworkSpec(path, &experts));
    if (spec.name.empty()) spec.name = path;
    specs.push_back(std::move(spec));
  }
  FGNET_ASSIGN_OR_RETURN(const NetworkTask task, ReadNetworkTask(args));
  const std::string& single = args.String("single");
  if (experts.Find(single) == nullptr) {
    return MakeError("--single: no expert '", single, "' in ", args.String("experts"));
  }
  const int repeat = static_cast<int>(args.Int("repeat"));

  FGNET_ASSIGN_OR_RETURN(std::unique_ptr<NetworkRuntime> runtime,
                         NetworkRuntime::Create(args, experts, io.err));
  io.err << "measuring " << specs.size() + 1 << " configurations (1 cold + " << repeat
         << " warm runs each)\n";
  std::vector<ConfigFigures> rows;
  FGNET_ASSIGN_OR_RETURN(ConfigFigures base,
                         Measure(*runtime, SingleExpertSpec(single, specs.front()), experts,
                                 task.text, repeat, io.err));
  rows.push_back(base);
  for (const network::NetworkSpec& spec : specs) {
    FGNET_ASSIGN_OR_RETURN(ConfigFigures f,
                           Measure(*runtime, spec, experts, task.text, repeat, io.err));
    rows.push_back(f);
  }

  BenchReport report = StartBenchReport();
  report.settings = {{"model", args.String("model")},
                     {"experts", args.String("experts")},
                     {"single", single},
                     {"task", task.id},
                     {"repeat", repeat},
                     {"threads", ThreadsOption(args)}};
  std::ostream& out = io.out;
  out << BenchContextToMarkdown(report) << '\n';
  out << "| Configuration | Nodes run | Memory (MiB) | KV peak (MiB) | Latency p50 warm (ms) | "
         "Latency cold (ms) | Throughput | Tokens generated | Prompt tokens (cached warm) | "
         "Valid |\n";
  out << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  Json json_rows = Json::array();
  for (const ConfigFigures& f : rows) {
    const double throughput = f.warm_p50_ms > 0 ? base.warm_p50_ms / f.warm_p50_ms : 0;
    out << "| " << f.name << " (" << f.topology << ") | " << f.nodes_run << " | "
        << Fixed(f.memory_mib, 0) << " | " << Fixed(f.kv_peak_mib, 1) << " | "
        << Fixed(f.warm_p50_ms, 0) << " | " << Fixed(f.cold_ms, 0) << " | " << Fixed(throughput, 2)
        << "x | " << f.generated_tokens << " | " << f.prompt_tokens << " (" << f.cached_tokens
        << ") | " << (f.valid ? "yes" : "no") << " |\n";
    json_rows.push_back({{"configuration", f.name},
                         {"topology", f.topology},
                         {"nodes_run", f.nodes_run},
                         {"memory_mib", f.memory_mib},
                         {"adapter_mib", f.adapter_mib},
                         {"kv_peak_mib", f.kv_peak_mib},
                         {"latency_warm_p50_ms", f.warm_p50_ms},
                         {"latency_cold_ms", f.cold_ms},
                         {"throughput_vs_single", throughput},
                         {"generated_tokens", f.generated_tokens},
                         {"prompt_tokens", f.prompt_tokens},
                         {"cached_tokens_warm", f.cached_tokens},
                         {"valid", f.valid},
                         {"status", f.status}});
  }
  if (auto path = args.OptString("json")) {
    Json json = BenchReportToJson(report);
    json["task"] = task.id;
    json["repeat"] = repeat;
    json["rows"] = std::move(json_rows);
    FGNET_TRY(WriteJsonFile(json, *path));
  }
  return Ok();
}

}  // namespace

void AddBenchNetworkCommand(App& app) {
  CommandSpec& c =
      app.AddCommand("bench-network",
                     "Latency, tokens and memory of a single expert against networks, on one task.",
                     RunBenchNetwork);
  c.Description(
      "Runs the task through one expert alone (--single, a one-node chain with the first "
      "network's output contract and token budget) and through every --network, each on a "
      "fresh engine: one cold run (empty prefix cache), then --repeat warm runs. Prints a "
      "Markdown table: nodes run, memory (base weights + the adapters of the configuration's "
      "experts + the peak of KV blocks holding data), warm median and cold latency, throughput "
      "relative to the single expert (tasks per second), tokens generated, prompt tokens (with "
      "those served from the prefix cache in a warm run) and whether the output passed "
      "validation.");
  AddModelOption(c, "The base model; tokenizer.json is read from its directory.").Required();
  c.AddString("experts", "FILE", "The experts file.").Required();
  c.AddString("network", "FILE", "A network spec to measure (repeatable).").Repeatable().Required();
  c.AddString("task", "FILE", "The task: {\"prompt\", \"id\"?, \"context\"?}.");
  c.AddString("prompt", "TEXT", "The task as text.");
  c.ExactlyOneOf({"task", "prompt"});
  c.AddString("single", "EXPERT", "The expert of the single-expert baseline.").Required();
  c.AddInt("repeat", "N", "Warm runs per configuration.").IntRange(1, 1000).Default("3");
  c.AddString("json", "FILE", "Also write the figures as JSON.");
  AddNetworkRuntimeOptions(c);
  c.Example(
      "--model functiongemma-270m --experts examples/networks/experts.json --single react "
      "--network examples/networks/ring4.json --network examples/networks/tree.json --network "
      "examples/networks/mesh4.json --network examples/networks/dag-react.json --task "
      "examples/networks/task.json");
}

}  // namespace fgnet::cli
