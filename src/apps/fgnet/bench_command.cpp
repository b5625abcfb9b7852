// `fgnet bench`: the machine report, its memory bandwidth, and the model's prefill and decode
// throughput (on --model, or on a random checkpoint of the 270M shapes made for the run).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "apps/fgnet/bench_report.h"
#include "apps/fgnet/commands.h"
#include "apps/fgnet/device_bench.h"
#include "apps/fgnet/mem_bandwidth.h"
#include "apps/fgnet/model_bench.h"
#include "apps/fgnet/model_loading.h"
#include "device/create_model.h"
#include "model/quantize.h"
#include "model/synth.h"
#include "util/thread_pool.h"

namespace fgnet::cli {
namespace {

// The GPU benchmark (device_bench.h), printed as one table beside the --baseline report.
Status RunDeviceBenchCommand(const ParsedArgs& args, CommandIo& io, BenchReport& report,
                             Device device) {
  std::optional<Json> baseline;
  if (auto path = args.OptString("baseline")) {
    FGNET_ASSIGN_OR_RETURN(Json json, ReadJsonFile(*path));
    baseline.emplace(std::move(json));
  }
  SynthesizedModel synthesized;
  FGNET_ASSIGN_OR_RETURN(const std::string dir, ModelDirOrSynthesized(args, synthesized, io.err));
  // With --quant the checkpoint is read on the host, quantized in memory, and the quantized weights
  // go to the device.
  const std::optional<std::string> quant = args.OptString("quant");
  if (!quant) io.err << "loading the model onto " << device.ToString() << "\n";
  FGNET_ASSIGN_OR_RETURN(auto loaded, LoadModel(dir, {.device = quant ? Device::Cpu() : device}));
  const Model* model = &loaded->engine_model();
  std::unique_ptr<Checkpoint> quantized;
  std::unique_ptr<Model> quantized_model;
  if (quant) {
    FGNET_ASSIGN_OR_RETURN(const QuantScheme scheme, ParseQuantScheme(*quant));
    io.err << "quantizing the weights to " << QuantSchemeName(scheme) << "\n";
    ThreadPool pool(ThreadsOption(args));
    FGNET_ASSIGN_OR_RETURN(Checkpoint q, QuantizeCheckpoint(*loaded->checkpoint, scheme, pool));
    quantized = std::make_unique<Checkpoint>(std::move(q));
    io.err << "loading the quantized model onto " << device.ToString() << "\n";
    FGNET_ASSIGN_OR_RETURN(quantized_model,
                           CreateModel(quantized->config(), quantized->weights(), device));
    model = quantized_model.get();
  }
  DeviceBenchOptions options;
  options.repeat = static_cast<int>(std::min<std::int64_t>(args.Int("repeat"), 5));
  if (auto rank = args.OptInt("lora-rank")) options.lora_rank = *rank;
  options.kv_dtype = KVTypeOption(args);
  if (args.Switch("quick")) {
    options.decode_tokens = 32;
    options.prefill_tokens = 256;
    options.concurrency = {4};
    options.prefix_tokens = 256;
    options.expert_context = 512;
    options.repeat = 1;
  }
  report.settings["model"] = args.OptString("model").value_or("synthesized gemma-3-270m (bf16)");
  report.settings["device"] = model->device_name();
  report.settings["kv_dtype"] = std::string(DTypeName(options.kv_dtype));
  report.settings["quantization"] =
      quantized != nullptr ? quantized->quantization() : loaded->checkpoint->quantization();
  FGNET_ASSIGN_OR_RETURN(const DeviceBenchResult result,
                         RunDeviceBench(*model, *loaded->registry, options, io.err));
  for (Measurement& m : DeviceMeasurements(result, options)) report.results.push_back(std::move(m));
  io.out << BenchContextToMarkdown(report) << "\n"
         << DeviceBenchTable(result, options, baseline ? &*baseline : nullptr);
  if (auto path = args.OptString("json")) FGNET_TRY(WriteBenchReportJson(report, *path));
  return Ok();
}

Status RunBench(const ParsedArgs& args, CommandIo& io) {
  BenchReport report = StartBenchReport();
  // Fail on an unwritable --json before minutes of measuring, not after.
  if (auto path = args.OptString("json")) FGNET_TRY(WriteBenchReportJson(report, *path));
  FGNET_ASSIGN_OR_RETURN(const Device device, DeviceOption(args));
  if (!device.is_cpu()) {
    if (args.Switch("skip-model"))
      return Error("--skip-model measures the CPU only: leave out --device");
    return RunDeviceBenchCommand(args, io, report, device);
  }
  const std::int64_t repeat = args.Int("repeat");
  const std::int64_t mib = args.Int("bandwidth-mib");
  ThreadPool pool(ThreadsOption(args));
  report.settings = {{"threads", pool.num_threads()}, {"repeat", repeat}};
  const bool bandwidth = !args.Switch("skip-bandwidth");
  BandwidthOptions bandwidth_options;
  bandwidth_options.buffer_bytes = static_cast<std::size_t>(mib) << 20;
  bandwidth_options.runs = static_cast<int>(repeat);
  double read_gb_s = 0;
  if (bandwidth) {
    report.settings["bandwidth_buffer_mib"] = mib;
    io.err << "measuring memory bandwidth: " << mib << " MiB buffer, " << pool.num_threads()
           << " threads, best of " << repeat << "\n";
    FGNET_ASSIGN_OR_RETURN(const BandwidthResult result,
                           MeasureMemoryBandwidth(pool, bandwidth_options));
    read_gb_s = result.read_gb_per_s;
    for (Measurement& m : BandwidthMeasurements(result)) report.results.push_back(std::move(m));
  }

  if (!args.Switch("skip-model")) {
    SynthesizedModel synthesized;
    FGNET_ASSIGN_OR_RETURN(const std::string dir, ModelDirOrSynthesized(args, synthesized, io.err));
    FGNET_ASSIGN_OR_RETURN(const std::vector<AdapterArg> adapters, AdapterArgs(args));
    FGNET_ASSIGN_OR_RETURN(auto loaded, LoadModel(dir, {.adapters = adapters}));
    const Checkpoint* checkpoint = loaded->checkpoint.get();
    const Gemma3Model* model = &*loaded->model;
    // With --quant, the weights are quantized in memory and the quantized model is measured.
    std::unique_ptr<Checkpoint> quantized;
    std::optional<Gemma3Model> quantized_model;
    if (auto name = args.OptString("quant")) {
      FGNET_ASSIGN_OR_RETURN(const QuantScheme scheme, ParseQuantScheme(*name));
      io.err << "quantizing the weights to " << QuantSchemeName(scheme) << "\n";
      const auto t0 = std::chrono::steady_clock::now();
      FGNET_ASSIGN_OR_RETURN(Checkpoint q, QuantizeCheckpoint(*checkpoint, scheme, pool));
      report.settings["quantize_seconds"] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      quantized = std::make_unique<Checkpoint>(std::move(q));
      FGNET_ASSIGN_OR_RETURN(Gemma3Model m,
                             Gemma3Model::Create(quantized->config(), quantized->weights()));
      quantized_model.emplace(std::move(m));
      checkpoint = quantized.get();
      model = &*quantized_model;
    }
    report.settings["quantization"] = checkpoint->quantization();
    report.settings["weight_bytes"] = ModelWeightBytes(checkpoint->config(), checkpoint->weights());
    ModelBenchOptions options;
    options.adapters = loaded->adapter_set;
    if (auto rank = args.OptInt("lora-rank")) {
      FGNET_ASSIGN_OR_RETURN(
          auto synthetic, loaded->registry->Add(RandomLoraAdapter(
                              checkpoint->config(), static_cast<std::size_t>(*rank), 1, "random")));
      options.adapters.push_back({synthetic.get(), 1.0f, 0});
    }
    if (!options.adapters.empty()) {
      Json list = Json::array();
      for (const AdapterUse& use : options.adapters) {
        list.push_back({{"name", use.adapter->name},
                        {"content_hash", use.adapter->content_hash},
                        {"scale", use.scale},
                        {"bytes", use.adapter->num_bytes()}});
      }
      report.settings["adapters"] = list;
    }
    options.prompt_tokens = args.Int("prompt-tokens");
    options.decode_tokens = args.Int("decode-tokens");
    options.repeat = static_cast<int>(std::min<std::int64_t>(repeat, 3));
    report.settings["model"] = args.OptString("model").value_or("synthesized gemma-3-270m (bf16)");
    report.settings["prompt_tokens"] = options.prompt_tokens;
    report.settings["decode_tokens"] = options.decode_tokens;
    io.err << "benchmarking the model: prefill " << options.prompt_tokens << " tokens, decode "
           << options.decode_tokens << " tokens, " << pool.num_threads() << " threads\n";
    FGNET_ASSIGN_OR_RETURN(const ModelBenchResult result,
                           BenchModel(*model, checkpoint->weights(), pool, options));
    if (bandwidth) {
      // A cloud VM's memory bandwidth drifts over minutes: measure again after the model and
      // compare the decode against the better of the two, so the ratio is not flattered.
      FGNET_ASSIGN_OR_RETURN(const BandwidthResult after,
                             MeasureMemoryBandwidth(pool, bandwidth_options));
      report.results.push_back({"memory read bandwidth, after the model", after.read_gb_per_s,
                                "GB/s", "as above, measured again after the model runs"});
      read_gb_s = std::max(read_gb_s, after.read_gb_per_s);
    }
    for (Measurement& m : ModelMeasurements(result, options, read_gb_s)) {
      report.results.push_back(std::move(m));
    }
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
  AddModelOption(c, "The model to benchmark (prefill and decode throughput).")
      .DefaultNote("a random checkpoint of the gemma-3-270m shapes, made for the run");
  c.AddString("quant", "SCHEME",
              "Quantize the model's weights in memory before measuring: q8_0, q4_0 or q4_k (see "
              "model/quantize.h for the type each tensor gets).")
      .Choices({"q8_0", "q4_0", "q4_k"})
      .DefaultNote("the weights as stored");
  AddAdapterOption(c);
  c.AddInt("lora-rank", "R",
           "Also apply a random run-time LoRA adapter of rank R on all seven projections of "
           "every layer, to measure the cost of unmerged adapters.")
      .IntRange(1, 1024);
  c.AddSwitch("skip-model", "Only report the machine and its memory bandwidth.");
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
  AddDeviceOption(c);
  AddKVTypeOption(c);
  c.AddString("baseline", "FILE",
              "With --device cuda: a tools/bench_transformers.py JSON report measured on the same "
              "machine, printed beside fgnet's figures.");
  c.AddSwitch("quick", "With --device cuda: small sizes, for a smoke run.");
  c.AtMostOneOf({"model", "skip-model"});
  c.AtMostOneOf({"quant", "skip-model"});
  c.Example("--json bench.json");
  c.Example("--threads 1 --bandwidth-mib 256 --repeat 3");
  c.Example("--quant q4_k --skip-bandwidth --repeat 2");
  c.Example("--device cuda --model DIR --baseline transformers.json");
}

}  // namespace fgnet::cli
