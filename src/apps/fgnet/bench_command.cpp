// `fgnet bench`: the machine report and memory bandwidth; model throughput once the model
// library is part of the build.
#include <algorithm>
#include <cstdint>

#include "apps/fgnet/bench_report.h"
#include "apps/fgnet/commands.h"
#include "apps/fgnet/mem_bandwidth.h"
#include "util/thread_pool.h"

namespace fgnet::cli {
namespace {

Status RunBench(const ParsedArgs& args, CommandIo& io) {
  if (args.Given("model")) {
    return Error(
        "--model: model benchmarks are not built yet (this build has no model library); run "
        "without --model for the machine report");
  }
  BenchReport report = StartBenchReport();
  // By default one thread per CPU this process may run on (which may be fewer than the machine's).
  const auto threads = static_cast<std::size_t>(
      args.OptInt("threads").value_or(std::max(1, report.machine.available_cores)));
  const std::int64_t repeat = args.Int("repeat");
  const std::int64_t mib = args.Int("bandwidth-mib");
  ThreadPool pool(threads);
  report.settings = {{"threads", pool.num_threads()}, {"repeat", repeat}};
  if (!args.Switch("skip-bandwidth")) {
    report.settings["bandwidth_buffer_mib"] = mib;
    io.err << "measuring memory bandwidth: " << mib << " MiB buffer, " << pool.num_threads()
           << " threads, best of " << repeat << "\n";
    BandwidthOptions options;
    options.buffer_bytes = static_cast<std::size_t>(mib) << 20;
    options.runs = static_cast<int>(repeat);
    FGNET_ASSIGN_OR_RETURN(const BandwidthResult bandwidth, MeasureMemoryBandwidth(pool, options));
    for (Measurement& m : BandwidthMeasurements(bandwidth)) report.results.push_back(std::move(m));
  }

  io.out << BenchReportToMarkdown(report);
  if (auto path = args.OptString("json")) FGNET_TRY(WriteBenchReportJson(report, *path));
  return Ok();
}

}  // namespace

void AddBenchCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "bench", "Benchmark this machine (and a model): report as markdown and JSON.", RunBench);
  c.Description(
      "Prints a markdown table with the machine (CPU, cores, SIMD, memory, OS), the commit and "
      "build, and the measurements: memory read and copy bandwidth, and with --model the prefill "
      "and decode throughput. --json writes the same report as JSON (schema fgnet-bench/1).");
  c.AddString("model", "DIR", "Checkpoint to benchmark (prefill and decode throughput).");
  c.AddInt("threads", "N", "Worker threads.").IntRange(1, 1024).DefaultNote("all available cores");
  c.AddInt("prompt-tokens", "N", "Prompt length of the prefill measurement.")
      .IntRange(1)
      .Default("512");
  c.AddInt("decode-tokens", "N", "Tokens generated in the decode measurement.")
      .IntRange(1)
      .Default("128");
  c.AddString("json", "FILE", "Also write the report as JSON to FILE.");
  c.AddInt("repeat", "N", "Runs of each measurement; the best one is reported.")
      .IntRange(1, 1000)
      .Default("5");
  c.AddInt("bandwidth-mib", "N",
           "Buffer of the memory bandwidth measurement in MiB; keep it far above the caches.")
      .IntRange(1, std::int64_t{1} << 20)
      .Default("1024");
  c.AddSwitch("skip-bandwidth", "Do not measure memory bandwidth.");
  c.Validate([](const ParsedArgs& args) -> Status {
    for (const char* name : {"prompt-tokens", "decode-tokens"}) {
      if (args.Given(name) && !args.Given("model")) {
        return MakeError("--", name, " needs --model");
      }
    }
    return Ok();
  });
  c.Example("--json bench.json");
  c.Example("--threads 1 --bandwidth-mib 256 --repeat 3");
}

}  // namespace fgnet::cli
