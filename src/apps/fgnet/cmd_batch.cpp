// `fgnet batch`: a JSON Lines file of requests run concurrently through one serving engine
// (continuous batching over paged KV, each request with its own adapters), results written in
// input order. The line formats are in batch_requests.h.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "apps/fgnet/batch_requests.h"
#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_loading.h"
#include "engine/engine.h"
#include "tokenizer/function_call.h"
#include "util/mapped_file.h"

namespace fgnet::cli {
namespace {

using Clock = std::chrono::steady_clock;

std::string Dump(const OrderedJson& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// An output file opened before the model loads, so that a bad path fails at once.
class OutputFile {
 public:
  Status Open(const std::string& path, std::ostream& stdout_stream) {
    path_ = path;
    if (path == "-") {
      stream_ = &stdout_stream;
      return Ok();
    }
    file_.open(path, std::ios::binary | std::ios::trunc);
    if (!file_) return MakeError(path, ": cannot open for writing: ", std::strerror(errno));
    stream_ = &file_;
    return Ok();
  }
  std::ostream& stream() { return *stream_; }
  Status Close() {
    stream_->flush();
    if (file_.is_open()) file_.close();
    if (!*stream_ || (path_ != "-" && file_.fail())) return MakeError(path_, ": write failed");
    return Ok();
  }

 private:
  std::string path_;
  std::ofstream file_;
  std::ostream* stream_ = nullptr;
};

Status RunBatch(const ParsedArgs& args, CommandIo& io) {
  const std::string& requests_path = args.String("requests");
  FGNET_ASSIGN_OR_RETURN(const std::string requests_text, ReadFileToString(requests_path));
  OutputFile out;
  FGNET_TRY(out.Open(args.String("out"), io.out));
  std::optional<OutputFile> metrics_file;
  if (auto path = args.OptString("metrics")) {
    metrics_file.emplace();
    FGNET_TRY(metrics_file->Open(*path, io.out));
  }

  FGNET_ASSIGN_OR_RETURN(const std::vector<AdapterArg> adapter_args, AdapterArgs(args));
  FGNET_ASSIGN_OR_RETURN(const Device device, DeviceOption(args));
  FGNET_ASSIGN_OR_RETURN(
      auto loaded, LoadModel(args.String("model"),
                             {.tokenizer = true, .adapters = adapter_args, .device = device}));
  const Tokenizer& tokenizer = *loaded->tokenizer;

  BatchDefaults defaults;
  defaults.generation = loaded->generation;
  defaults.vocab_size = loaded->checkpoint->config().vocab_size;
  for (std::size_t i = 0; i < adapter_args.size(); ++i) {
    const AdapterUse& use = loaded->adapter_set[i];
    const std::string name =
        adapter_args[i].name.empty() ? use.adapter->name : adapter_args[i].name;
    defaults.adapter_scales[name] = adapter_args[i].scale;
  }
  if (auto id = tokenizer.TokenId(kStartFunctionResponse)) defaults.function_stop_ids = {*id};
  std::istringstream requests_stream(requests_text);
  std::vector<BatchLine> lines = ParseBatchRequests(requests_stream, defaults);

  EngineOptions options;
  options.kv_memory_mib = args.OptInt("kv-mib").value_or(0);
  options.max_batch_tokens = args.Int("max-batch-tokens");
  options.kv_dtype = KVTypeOption(args);
  options.block_size = args.Int("block-size");
  options.max_running = args.Int("max-running");
  options.max_queue =
      std::max<std::int64_t>(options.max_queue, static_cast<std::int64_t>(lines.size()));
  options.threads = ThreadsOption(args);
  options.stop_ids = EngineStopIds(*loaded);
  FGNET_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                         Engine::Create(loaded->engine_model(), loaded->checkpoint->content_hash(),
                                        &tokenizer, loaded->registry.get(), options));

  // Everything is submitted at once; the scheduler interleaves the requests.
  const Clock::time_point start = Clock::now();
  std::vector<std::optional<RequestHandle>> handles(lines.size());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].error) handles[i] = engine->Submit(std::move(lines[i].request));
  }
  io.err << "running " << lines.size() << " requests on " << loaded->engine_model().device_name();
  if (device.is_cpu()) io.err << " (" << options.threads << " threads)";
  io.err << "\n";

  std::int64_t failed = 0, generated = 0, prompt_tokens = 0, cached = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    OrderedJson result;
    if (lines[i].error) {
      result = BatchErrorJson(lines[i]);
      ++failed;
    } else {
      const Completion& completion = handles[i]->Wait();
      result = BatchResultJson(lines[i], completion);
      if (result.contains("error")) {
        ++failed;
      } else {
        generated += completion.usage.completion_tokens;
        prompt_tokens += completion.usage.prompt_tokens;
        cached += completion.usage.cached_tokens;
      }
    }
    out.stream() << Dump(result) << '\n' << std::flush;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  FGNET_TRY(out.Close());
  if (metrics_file) {
    // The engine updates its gauges just after a request's last token is handed out: give it a
    // moment to count the last requests as finished.
    EngineMetrics metrics = engine->Metrics();
    for (int i = 0; i < 1000 && (metrics.running > 0 || metrics.queue_depth > 0); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      metrics = engine->Metrics();
    }
    metrics_file->stream() << metrics.ToJson().dump(2) << '\n';
    FGNET_TRY(metrics_file->Close());
  }
  io.err << "[" << lines.size() << " requests, " << failed << " failed; " << prompt_tokens
         << " prompt tokens (" << cached << " cached), " << generated << " generated in " << seconds
         << " s";
  if (seconds > 0) io.err << ", " << static_cast<double>(generated) / seconds << " tok/s";
  io.err << "]\n";
  return Ok();
}

}  // namespace

void AddBatchCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "batch", "Run a JSON Lines file of requests concurrently through the serving engine.",
      RunBatch);
  c.Description(
      "Every request of --requests is submitted at once to one engine, which batches them "
      "continuously (each step decodes every running request and prefills others, whatever "
      "their adapters) over a paged KV pool with a prefix cache; results are written to --out "
      "in input order, one line per request line.\n"
      "Request line: {\"id\", \"prompt\" | \"messages\" (+ \"tools\") | \"prompt_ids\", "
      "\"adapters\": [{\"name\", \"scale\"}], \"max_tokens\", \"temperature\", \"top_p\", "
      "\"top_k\", \"min_p\", \"repetition_penalty\", \"seed\", \"stop\" (a string or a list), "
      "\"json_schema\", \"regex\", \"constrain_tools\", \"priority\"}; all but the prompt are "
      "optional. \"prompt\" is encoded as is (write <bos> and the turns yourself); \"messages\" "
      "get the chat template (FunctionGemma's with \"tools\"). Adapters are named as loaded "
      "with --adapter (or by content hash); a request without \"adapters\" runs on the base "
      "model. Sampling defaults come from generation_config.json (\"temperature\": 0 is greedy), "
      "max_tokens from its max_new_tokens, else 256. Requests stop at <eos>, <end_of_turn>, the "
      "checkpoint's eos ids and, with tools, <start_function_response>.\n"
      "Result line: {\"id\", \"ids\", \"text\", \"finish_reason\", \"usage\": {\"prompt_tokens\", "
      "\"completion_tokens\", \"cached_tokens\"}, \"timings\": {\"queue_ms\", "
      "\"time_to_first_token_ms\", \"total_ms\", \"time_per_output_token_ms\"}} (+ "
      "\"preemptions\" when > 0, \"function_calls\" with tools). A line that is not a valid "
      "request (bad JSON, no prompt or two, a wrong type, an unknown field), or a request the "
      "engine refuses (an unknown adapter, a prompt longer than the context, ...), gets "
      "{\"id\", \"error\": \"line N: ...\"} and the other requests still run.\n"
      "Exit status: 0 when the file was processed, even if some lines failed; 1 when a file "
      "cannot be read or written or the model cannot be loaded.");
  AddModelOption(c,
                 "The model; tokenizer.json (and optionally generation_config.json) are read "
                 "from its directory.")
      .Required();
  AddAdapterOption(c);
  c.AddString("requests", "FILE.jsonl", "The requests, one JSON object per line.").Required();
  c.AddString("out", "FILE.jsonl", "Where the results go, one line per request; - for stdout.")
      .Required();
  c.AddString("metrics", "FILE.json",
              "Also write the engine's metrics at the end (counters, KV blocks, prefix-cache "
              "hits, latency histograms).");
  c.AddInt("kv-mib", "N", "Memory of the paged KV pool in MiB.")
      .IntRange(1)
      .DefaultNote("room for 8 sequences of the full context, at most 512 MiB");
  c.AddInt("max-batch-tokens", "N", "Tokens per forward step (decodes plus prefill chunks).")
      .IntRange(1)
      .Default("512");
  c.AddInt("block-size", "N", "Positions per KV block.").IntRange(1, 4096).Default("16");
  c.AddInt("max-running", "N", "Most requests decoding at once.").IntRange(1).Default("256");
  AddThreadsOption(c);
  AddDeviceOption(c);
  AddKVTypeOption(c);
  c.Example("--model functiongemma-270m-it --requests requests.jsonl --out results.jsonl");
  c.Example(
      "--model gemma-3-270m-it --adapter weather=experts/weather --adapter "
      "calendar=experts/calendar.gguf:0.5 --requests r.jsonl --out - --metrics metrics.json");
}

}  // namespace fgnet::cli
