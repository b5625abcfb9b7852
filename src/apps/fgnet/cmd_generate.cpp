// `fgnet generate`: chat or raw-prompt generation (CPU or --device), with FunctionGemma function
// calling: tools are declared in the prompt, text streams to stdout as it is generated, and the
// calls the model makes are parsed back to JSON.
#include <chrono>
#include <iostream>

#include "apps/fgnet/commands.h"
#include "apps/fgnet/model_loading.h"
#include "engine/generator.h"
#include "engine/model_session.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/function_call.h"
#include "util/json.h"
#include "util/mapped_file.h"
#include "util/thread_pool.h"

namespace fgnet::cli {
namespace {

constexpr std::int64_t kDefaultMaxTokens = 256;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Tools from every --tools file: each holds one tool object or an array of them.
Result<Json> ReadTools(const std::vector<std::string>& paths) {
  Json tools = Json::array();
  for (const std::string& path : paths) {
    FGNET_ASSIGN_OR_RETURN(Json json, ReadJsonFile(path));
    if (json.is_object()) json = Json::array({json});
    if (!json.is_array()) return MakeError(path, ": expected a tool object or an array of tools");
    for (Json& tool : json) tools.push_back(std::move(tool));
  }
  return tools;
}

Result<Json> ReadMessages(const std::string& path) {
  FGNET_ASSIGN_OR_RETURN(Json json, ReadJsonFile(path));
  if (json.is_object() && json.contains("messages")) json = json["messages"];
  if (!json.is_array()) return MakeError(path, ": expected an array of chat messages");
  return json;
}

bool UsesFunctionCalling(const Json& messages, const Json& tools) {
  if (!tools.empty()) return true;
  for (const Json& m : messages) {
    if (!m.is_object()) continue;
    if (m.contains("tool_calls") || m.value("role", "") == "tool") return true;
  }
  return false;
}

// The prompt as text (chat template applied unless --raw).
Result<std::string> RenderPrompt(const ParsedArgs& args, const Tokenizer& tokenizer) {
  if (args.Switch("raw")) return "<bos>" + args.String("prompt");
  Json messages;
  if (auto path = args.OptString("messages")) {
    FGNET_ASSIGN_OR_RETURN(messages, ReadMessages(*path));
  } else {
    messages = Json::array({{{"role", "user"}, {"content", args.String("prompt")}}});
  }
  FGNET_ASSIGN_OR_RETURN(const Json tools, ReadTools(args.Strings("tools")));
  if (!UsesFunctionCalling(messages, tools)) return RenderGemma3Prompt(messages);
  if (!tokenizer.TokenId(kStartFunctionCall)) {
    return Error(
        "function calling needs FunctionGemma's control tokens, which this checkpoint's "
        "tokenizer does not have (is it a FunctionGemma checkpoint?)");
  }
  return RenderFunctionGemmaPrompt(messages, tools);
}

Result<SamplingParams> Sampling(const ParsedArgs& args, const GenerationConfig& generation) {
  SamplingParams p = generation.ToSamplingParams(static_cast<std::uint64_t>(args.Int("seed")));
  if (auto v = args.OptFloat("temperature")) {
    p.temperature = static_cast<float>(*v);
    p.do_sample = *v > 0;
  }
  if (auto v = args.OptInt("top-k")) p.top_k = static_cast<std::int32_t>(*v);
  if (auto v = args.OptFloat("top-p")) p.top_p = static_cast<float>(*v);
  if (auto v = args.OptFloat("min-p")) p.min_p = static_cast<float>(*v);
  if (auto v = args.OptFloat("repetition-penalty")) p.repetition_penalty = static_cast<float>(*v);
  FGNET_TRY(p.Validate());
  return p;
}

// generation_config.json's eos ids, plus the turn and function-response stops the chat formats
// rely on.
std::vector<std::int32_t> StopIds(const Tokenizer& tokenizer, const LoadedModel& loaded) {
  std::vector<std::int32_t> stops = loaded.generation.eos_token_ids;
  for (std::int64_t id : loaded.checkpoint->config().eos_token_ids) {
    stops.push_back(static_cast<std::int32_t>(id));
  }
  for (std::string_view token : {kEosToken, kEndOfTurn, kStartFunctionResponse}) {
    if (auto id = tokenizer.TokenId(token)) stops.push_back(*id);
  }
  std::sort(stops.begin(), stops.end());
  stops.erase(std::unique(stops.begin(), stops.end()), stops.end());
  return stops;
}

Status RunGenerate(const ParsedArgs& args, CommandIo& io) {
  FGNET_ASSIGN_OR_RETURN(const std::vector<AdapterArg> adapters, AdapterArgs(args));
  FGNET_ASSIGN_OR_RETURN(const Device device, DeviceOption(args));
  FGNET_ASSIGN_OR_RETURN(
      auto loaded,
      LoadModel(args.String("model"), {.tokenizer = true, .adapters = adapters, .device = device}));
  const Tokenizer& tokenizer = *loaded->tokenizer;
  FGNET_ASSIGN_OR_RETURN(const std::string prompt_text, RenderPrompt(args, tokenizer));
  const std::vector<std::int32_t> prompt = tokenizer.Encode(prompt_text);
  FGNET_ASSIGN_OR_RETURN(const SamplingParams params, Sampling(args, loaded->generation));
  const std::int64_t max_new =
      args.OptInt("max-tokens")
          .value_or(loaded->generation.max_new_tokens.value_or(kDefaultMaxTokens));
  const std::int64_t context = loaded->checkpoint->config().max_position_embeddings;
  if (static_cast<std::int64_t>(prompt.size()) + max_new > context) {
    return MakeError("the prompt (", prompt.size(), " tokens) plus --max-tokens ", max_new,
                     " exceeds the model's context of ", context, " tokens");
  }
  const std::vector<std::int32_t> stops = StopIds(tokenizer, *loaded);

  ThreadPool pool(ThreadsOption(args));
  ModelSession session(loaded->engine_model(), pool,
                       static_cast<std::int64_t>(prompt.size()) + max_new, loaded->adapter_set,
                       KVTypeOption(args));
  const bool json = args.Switch("json");
  StreamDecoder stream(tokenizer);
  std::string text;
  const Clock::time_point start = Clock::now();
  Clock::time_point first_token;
  std::int64_t generated = 0;
  GenerateRequest request;
  request.prompt = prompt;
  request.params = params;
  request.stop_ids = stops;
  request.max_new_tokens = max_new;
  request.on_token = [&](std::int32_t id) {
    if (generated++ == 0) first_token = Clock::now();
    const std::string piece = stream.Push(id);
    text += piece;
    if (!json) io.out << piece << std::flush;
    return true;
  };
  FGNET_ASSIGN_OR_RETURN(const GenerationResult result, Generate(session, request));
  WarnInactiveAdapters(session.inactive_adapters(), io.err);
  const Clock::time_point end = Clock::now();
  const std::string rest = stream.Flush();
  text += rest;
  if (!json) io.out << rest << "\n";

  auto parsed = ParseModelOutput(text);
  Json calls = parsed.ok() ? FunctionCallsToJson(parsed->calls) : Json::array();
  const double prefill_s = generated ? Seconds(first_token - start) : Seconds(end - start);
  const double decode_s = generated > 1 ? Seconds(end - first_token) : 0.0;
  if (json) {
    Json out = {{"text", text},
                {"function_calls", calls},
                {"finish_reason", std::string(FinishReasonName(result.finish_reason))},
                {"usage", {{"prompt_tokens", prompt.size()}, {"completion_tokens", generated}}},
                {"timings", {{"prefill_seconds", prefill_s}, {"decode_seconds", decode_s}}}};
    if (result.stop_id) out["stop_token"] = std::string(tokenizer.IdToToken(*result.stop_id));
    if (!parsed.ok()) out["function_call_error"] = parsed.error().message();
    io.out << out.dump(2) << "\n";
  } else {
    if (!calls.empty()) io.out << "function_calls: " << calls.dump() << "\n";
    if (!parsed.ok()) io.err << "unparsable function call: " << parsed.error().message() << "\n";
  }
  io.err << "[" << prompt.size() << " prompt tokens in " << prefill_s << " s; " << generated
         << " generated";
  if (decode_s > 0) io.err << ", " << static_cast<double>(generated - 1) / decode_s << " tok/s";
  io.err << "; finish: " << FinishReasonName(result.finish_reason);
  if (result.stop_id) io.err << " (" << tokenizer.IdToToken(*result.stop_id) << ")";
  io.err << "]\n";
  return Ok();
}

}  // namespace

void AddGenerateCommand(App& app) {
  CommandSpec& c = app.AddCommand(
      "generate", "Generate a reply to a prompt or a chat, with optional function calling.",
      RunGenerate);
  c.Description(
      "The prompt is formatted with the Gemma chat template (with --tools, or tool calls in "
      "--messages, FunctionGemma's template with the function declarations in the developer "
      "turn), then up to --max-tokens tokens are sampled and streamed to standard output. "
      "Generation stops at <end_of_turn>, <eos>, the checkpoint's eos ids, or "
      "<start_function_response> (where the application would run the function). Function "
      "calls in the reply are printed as JSON. Sampling settings that are not given come from "
      "the checkpoint's generation_config.json.");
  AddModelOption(c,
                 "The model; tokenizer.json (and optionally generation_config.json) are read "
                 "from its directory.")
      .Required();
  AddAdapterOption(c);
  c.AddString("prompt", "TEXT", "The user message (or, with --raw, the text to continue).")
      .AllowFile();
  c.AddString("messages", "FILE.json",
              "Chat messages in OpenAI form: [{\"role\": \"user\", \"content\": \"...\"}, ...] "
              "with roles system, user, assistant and tool.");
  c.AddString("tools", "FILE.json",
              "Function declarations offered to the model, in OpenAI tools form: [{\"type\": "
              "\"function\", \"function\": {\"name\", \"description\", \"parameters\"}}, ...].")
      .Repeatable();
  c.AddInt("max-tokens", "N", "Most tokens to generate.")
      .IntRange(1)
      .DefaultNote("max_new_tokens of generation_config.json, else 256");
  c.AddFloat("temperature", "X", "Sampling temperature; 0 always picks the most likely token.")
      .FloatRange(0)
      .DefaultNote("from generation_config.json");
  c.AddInt("top-k", "K", "Sample among the K most likely tokens; 0 disables the limit.")
      .IntRange(0)
      .DefaultNote("from generation_config.json");
  c.AddFloat("top-p", "P",
             "Sample among the most likely tokens whose probabilities add up to P; 1 disables.")
      .FloatRange(0, 1)
      .DefaultNote("from generation_config.json");
  c.AddFloat("min-p", "P",
             "Drop tokens less likely than P times the most likely token; 0 disables.")
      .FloatRange(0, 1)
      .DefaultNote("from generation_config.json");
  c.AddFloat("repetition-penalty", "X",
             "Divide the logits of tokens already in the context by X (> 0); 1 disables.")
      .FloatRange(0)
      .DefaultNote("from generation_config.json");
  c.AddInt("seed", "N", "Seed of the sampling stream; the same seed gives the same output.")
      .IntRange(0)
      .Default("0");
  AddThreadsOption(c);
  AddDeviceOption(c);
  AddKVTypeOption(c);
  c.AddSwitch("raw", "Continue --prompt as plain text (after <bos>), without the chat template.");
  c.AddSwitch("json",
              "Print the reply as JSON at the end instead of streaming: {\"text\", "
              "\"function_calls\": [{\"name\", \"arguments\"}], \"finish_reason\", \"usage\", "
              "\"timings\"}.");
  c.ExactlyOneOf({"prompt", "messages"});
  c.AtMostOneOf({"raw", "messages"});
  c.AtMostOneOf({"raw", "tools"});
  c.Validate([](const ParsedArgs& args) -> Status {
    if (auto penalty = args.OptFloat("repetition-penalty"); penalty && *penalty <= 0) {
      return MakeError("--repetition-penalty must be greater than 0, got ", *penalty);
    }
    return Ok();
  });
  c.Example(
      "--model functiongemma-270m-it --prompt 'What is the weather in Paris?' "
      "--tools tools.json --json");
  c.Example("--model gemma-3-270m --prompt 'Once upon a time' --raw --temperature 0");
}

}  // namespace fgnet::cli
