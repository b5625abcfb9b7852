// `fgnet run`: one task through a network of experts (chain, ring, tree, mesh or DAG) on one
// serving engine, with a live tree view of the nodes on stderr, the network's output on stdout
// and optionally the whole trace as JSON.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "apps/fgnet/bench_report.h"
#include "apps/fgnet/commands.h"
#include "apps/fgnet/network_runtime.h"
#include "network/trace.h"

namespace fgnet::cli {
namespace {

// Fails early, before the model loads, when an output path cannot be written.
Status CheckWritable(const std::optional<std::string>& path) {
  if (!path) return Ok();
  std::ofstream file(*path, std::ios::binary | std::ios::app);
  if (!file) return MakeError(*path, ": cannot open for writing: ", std::strerror(errno));
  return Ok();
}

Status RunNetworkCommand(const ParsedArgs& args, CommandIo& io) {
  FGNET_ASSIGN_OR_RETURN(const network::ExpertSet experts,
                         network::LoadExperts(args.String("experts")));
  FGNET_ASSIGN_OR_RETURN(const network::NetworkSpec spec,
                         network::LoadNetworkSpec(args.String("network"), &experts));
  FGNET_ASSIGN_OR_RETURN(const NetworkTask task, ReadNetworkTask(args));
  const std::optional<std::string> trace_path = args.OptString("trace");
  FGNET_TRY(CheckWritable(trace_path));

  FGNET_ASSIGN_OR_RETURN(std::unique_ptr<NetworkRuntime> runtime,
                         NetworkRuntime::Create(args, experts, io.err));

  const std::string& view = args.String("view");
  const bool ansi = view == "tree" || (view == "auto" && isatty(STDERR_FILENO) == 1);
  std::unique_ptr<network::TreeView> tree;
  if (view != "none") tree = std::make_unique<network::TreeView>(io.err, ansi);

  network::NetworkResult result = runtime->Run(spec, task.text, tree.get());
  if (trace_path) {
    FGNET_TRY(WriteJsonFile(result.trace.ToJson(), *trace_path));
  }
  if (!result.status.ok()) return result.status;
  if (args.Switch("json")) {
    Json out = {{"task", task.id},
                {"network", spec.name},
                {"output", result.output},
                {"status", result.trace.status},
                {"validation", result.validation.ToJson()}};
    io.out << out.dump(2, ' ', false, Json::error_handler_t::replace) << '\n';
  } else {
    io.out << result.output << '\n';
  }
  if (!result.validation.ok) {
    for (const network::ValidationIssue& issue : result.validation.issues) {
      io.err << "validation: " << issue.ToString() << '\n';
    }
    if (args.Switch("require-valid")) {
      return MakeError("the network's output failed validation (", result.validation.issues.size(),
                       " issues)");
    }
  }
  return Ok();
}

}  // namespace

void AddRunCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "run", "Run a task through a network of experts (chain, ring, tree, mesh or DAG).",
      RunNetworkCommand);
  c.Description(
      "Loads the model, every expert of --experts (their adapters are PEFT directories, GGUF "
      "files or RDRR packages) and the network spec --network (docs/network-spec.md), then runs "
      "the task: each node is one request to a shared serving engine, so the nodes that can run "
      "together are batched together, and the prompt parts experts share (system, domain, role) "
      "are pinned as nested prefixes in the engine's prefix cache. Upstream outputs are handed "
      "on as structured data when they parse (code with imports and exports, files, function "
      "calls) and summarised otherwise; outputs are combined and validated (the output "
      "contract, code syntax through node/typescript and python3, imports and exports).\n"
      "stderr shows the nodes as a live tree (redrawn in place on a terminal); stdout gets the "
      "network's output (or a JSON object with --json); --trace writes every node's adapters, "
      "token counts, prefix-cache hits, latency, validation and output.\n"
      "Exit status: 0 when the network produced an output (even one that fails validation, "
      "unless --require-valid), 1 when it failed (the message names the node and why), 2 for a "
      "usage error.");
  AddModelOption(c, "The base model; tokenizer.json is read from its directory.").Required();
  c.AddString("experts", "FILE", "The experts file (docs/network-spec.md).").Required();
  c.AddString("network", "FILE", "The network spec (genome).").Required();
  c.AddString("task", "FILE", "The task: {\"prompt\", \"id\"?, \"context\"?}.");
  c.AddString("prompt", "TEXT", "The task as text.");
  c.ExactlyOneOf({"task", "prompt"});
  c.AddString("trace", "FILE", "Write the run's trace as JSON.");
  c.AddString("view", "MODE",
              "The live view on stderr: tree (redrawn in place), plain (a line per finished "
              "node), none, or auto (tree on a terminal, else plain).")
      .Choices({"auto", "tree", "plain", "none"})
      .Default("auto");
  c.AddSwitch("json", "Print {task, network, output, status, validation} instead of the output.");
  c.AddSwitch("require-valid", "Exit 1 when the output fails validation.");
  AddNetworkRuntimeOptions(c);
  c.Example(
      "--model functiongemma-270m --experts examples/networks/experts.json --network "
      "examples/networks/ring4.json --task examples/networks/task.json --trace trace.json");
  c.Example(
      "--model functiongemma-270m --experts examples/networks/experts.json --network "
      "examples/networks/tree.json --prompt \"Add a /health endpoint to the API\"");
}

}  // namespace fgnet::cli
