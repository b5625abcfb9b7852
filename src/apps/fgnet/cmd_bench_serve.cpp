// `fgnet bench-serve`: serving figures through the Engine (continuous batching, paged KV, the
// prefix cache, one adapter per sequence), as the same markdown / JSON report as `fgnet bench`.
// A command of its own rather than a mode of `bench`: its sizes (concurrency, prefix, context)
// and engine options have nothing in common with the single-sequence measurements.
#include <optional>

#include "apps/fgnet/bench_report.h"
#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_bench.h"
#include "apps/fgnet/model_loading.h"
#include "apps/fgnet/serve_bench.h"
#include "engine/engine.h"

namespace fgnet::cli {
namespace {

Status RunBenchServe(const ParsedArgs& args, CommandIo& io) {
  BenchReport report = StartBenchReport();
  if (auto path = args.OptString("json")) FGNET_TRY(WriteBenchReportJson(report, *path));

  ServeBenchOptions o;
  o.concurrency = args.IntList("concurrency");
  o.lora_rank = args.Int("lora-rank");
  o.prompt_tokens = args.Int("prompt-tokens");
  o.decode_tokens = args.Int("decode-tokens");
  o.prefix_tokens = args.Int("prefix-tokens");
  o.suffix_tokens = args.Int("suffix-tokens");
  o.context_tokens = args.Int("context-tokens");
  o.kv_sequences = args.Int("kv-sequences");
  o.grammar_sequences = args.Int("grammar-sequences");
  o.repeat = static_cast<int>(args.Int("repeat"));

  SynthesizedModel synthesized;
  FGNET_ASSIGN_OR_RETURN(const std::string dir, ModelDirOrSynthesized(args, synthesized, io.err));
  FGNET_ASSIGN_OR_RETURN(const Device device, DeviceOption(args));
  FGNET_ASSIGN_OR_RETURN(auto loaded, LoadModel(dir, {.device = device}));
  const Gemma3Config& config = loaded->checkpoint->config();
  // A tokenizer, where the model has one, enables the grammar measurement.
  std::optional<Tokenizer> tokenizer;
  if (o.grammar_sequences > 0 && !loaded->checkpoint->tokenizer_path().empty()) {
    FGNET_ASSIGN_OR_RETURN(Tokenizer t, Tokenizer::Load(loaded->checkpoint->tokenizer_path()));
    tokenizer.emplace(std::move(t));
    o.grammar = true;
  } else if (o.grammar_sequences > 0) {
    io.err << "no tokenizer.json beside the model: grammar masks are not measured\n";
  }

  EngineOptions e;
  e.kv_memory_mib = args.OptInt("kv-mib").value_or(0);
  e.max_batch_tokens = args.Int("max-batch-tokens");
  e.kv_dtype = KVTypeOption(args);
  e.block_size = args.Int("block-size");
  e.max_running = args.Int("max-running");
  e.threads = ThreadsOption(args);
  e.stop_ids.clear();  // every sequence generates exactly --decode-tokens
  if (!args.OptInt("kv-mib").has_value()) e.kv_memory_mib = ServeBenchKVMemoryMiB(config, e, o);
  io.err << "hashing the model's weights\n";
  const std::string base_hash = loaded->checkpoint->content_hash();
  FGNET_ASSIGN_OR_RETURN(
      std::unique_ptr<Engine> engine,
      Engine::Create(loaded->engine_model(), base_hash, tokenizer ? &*tokenizer : nullptr,
                     loaded->registry.get(), e));

  report.settings = {{"model", args.OptString("model").value_or("synthesized gemma-3-270m (bf16)")},
                     {"quantization", loaded->checkpoint->quantization()},
                     {"device", loaded->engine_model().device_name()},
                     {"threads", e.threads},
                     {"concurrency", o.concurrency},
                     {"lora_rank", o.lora_rank},
                     {"prompt_tokens", o.prompt_tokens},
                     {"decode_tokens", o.decode_tokens},
                     {"prefix_tokens", o.prefix_tokens},
                     {"suffix_tokens", o.suffix_tokens},
                     {"context_tokens", o.context_tokens},
                     {"kv_sequences", o.kv_sequences},
                     {"grammar_sequences", o.grammar ? o.grammar_sequences : 0},
                     {"kv_mib", engine->options().kv_memory_mib},
                     {"kv_dtype", std::string(DTypeName(e.kv_dtype))},
                     {"block_size", e.block_size},
                     {"max_batch_tokens", e.max_batch_tokens},
                     {"max_running", e.max_running},
                     {"repeat", o.repeat}};
  FGNET_ASSIGN_OR_RETURN(const ServeBenchResult result,
                         RunServeBench(*engine, config, loaded->registry.get(), o, io.err));
  report.results = ServeMeasurements(result, o, e);
  const EngineMetrics metrics = engine->Metrics();
  report.settings["engine_steps"] = metrics.steps;
  report.settings["preemptions"] = metrics.preemptions;

  io.out << BenchReportToMarkdown(report);
  if (auto path = args.OptString("json")) FGNET_TRY(WriteBenchReportJson(report, *path));
  return Ok();
}

}  // namespace

void AddBenchServeCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "bench-serve",
      "Benchmark serving through the engine: batched decode with adapters, prefix-cache time "
      "to first token, KV memory per sequence.",
      RunBenchServe);
  c.Description(
      "Runs the serving engine (continuous batching over paged KV) on random prompts and prints "
      "the machine and the figures as `fgnet bench` does (markdown; --json writes schema "
      "fgnet-bench/1):\n"
      "- decode tokens/s with each --concurrency count of sequences decoding together, each "
      "with its own random rank --lora-rank adapter on all projections, against the same batch "
      "on the base model, and the adapters' overhead. Decode throughput is the tokens generated "
      "from the moment every sequence has its first token until all finish, over that time "
      "(prefill excluded); greedy, without stop ids, so each sequence generates exactly "
      "--decode-tokens;\n"
      "- time to first token of a --prefix-tokens prefix plus a --suffix-tokens suffix: cold, "
      "with the prefix in the prefix cache, and after a pinned prefix;\n"
      "- KV memory per sequence at --context-tokens (blocks held x block bytes), against the "
      "bytes of exactly the positions attention reaches;\n"
      "- with tokenizer.json beside the model, the time to mask one token's logits under a JSON "
      "Schema (constrained decoding), with a fresh grammar and a warm one.\n"
      "A size of 0 skips a measurement (--prefix-tokens 0, --context-tokens 0, --grammar-sequences "
      "0; --lora-rank 0 "
      "runs only the base model).");
  AddModelOption(c, "The model to benchmark.")
      .DefaultNote("a random checkpoint of the gemma-3-270m shapes, made for the run");
  c.AddIntList("concurrency", "N,N,...", "Sequences decoding at once, one run per count.")
      .IntRange(1, 4096)
      .Default("1,4,16,64");
  c.AddInt("lora-rank", "R", "Rank of the random adapters (one per sequence); 0: none.")
      .IntRange(0, 1024)
      .Default("16");
  c.AddInt("prompt-tokens", "N", "Prompt of each sequence of the decode runs.")
      .IntRange(1)
      .Default("16");
  c.AddInt("decode-tokens", "N", "Tokens each sequence generates in the decode runs.")
      .IntRange(2)
      .Default("64");
  c.AddInt("prefix-tokens", "N", "Shared prefix of the time-to-first-token runs; 0: skip them.")
      .IntRange(0)
      .Default("2048");
  c.AddInt("suffix-tokens", "N", "Suffix after the shared prefix.").IntRange(1).Default("16");
  c.AddInt("context-tokens", "N", "Context length of the KV memory measurement; 0: skip it.")
      .IntRange(0)
      .Default("1024");
  c.AddInt("kv-sequences", "N", "Sequences running during the KV memory measurement.")
      .IntRange(1)
      .Default("4");
  c.AddInt("grammar-sequences", "N",
           "Sequences of the grammar measurement (needs tokenizer.json beside the model); 0: "
           "skip it.")
      .IntRange(0)
      .Default("4");
  c.AddInt("kv-mib", "N", "Memory of the paged KV pool in MiB.")
      .IntRange(1)
      .DefaultNote(
          "the engine's (room for 8 sequences of the full context, at most 512 MiB), or room for "
          "the largest --concurrency's prompts and new tokens where that is more");
  c.AddInt("max-batch-tokens", "N", "Tokens per forward step.").IntRange(1).Default("512");
  c.AddInt("block-size", "N", "Positions per KV block.").IntRange(1, 4096).Default("16");
  c.AddInt("max-running", "N", "Most sequences decoding at once.").IntRange(1).Default("256");
  AddThreadsOption(c);
  AddDeviceOption(c);
  AddKVTypeOption(c);
  c.AddInt("repeat", "N", "Runs of each measurement; the best one is reported.")
      .IntRange(1, 100)
      .Default("1");
  c.AddString("json", "FILE", "Also write the report as JSON to FILE.");
  c.Example("--model m270 --json serve.json");
  c.Example("--concurrency 1,8 --decode-tokens 32 --prefix-tokens 1024 --context-tokens 512");
}

}  // namespace fgnet::cli
