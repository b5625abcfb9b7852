// The request and result lines of `fgnet batch`: parsing, defaults and error messages.
#include "apps/fgnet/batch_requests.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace fgnet::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

BatchDefaults Defaults() {
  BatchDefaults d;
  d.generation.do_sample = true;
  d.generation.temperature = 0.8f;
  d.generation.top_k = 64;
  d.generation.top_p = 0.95f;
  d.adapter_scales["weather"] = 0.7f;
  d.function_stop_ids = {49};
  d.vocab_size = 1000;
  return d;
}

std::string ErrorOf(const std::string& text, std::int64_t line_number = 1) {
  const BatchLine line = ParseBatchLine(text, line_number, Defaults());
  return line.error ? line.error->message() : "<ok>";
}

TEST(BatchRequests, PromptWithTheDefaults) {
  const BatchLine line = ParseBatchLine(R"({"prompt": "<bos>Hi"})", 1, Defaults());
  ASSERT_FALSE(line.error) << line.error->message();
  EXPECT_FALSE(line.id);
  const Request& r = line.request;
  EXPECT_EQ(r.prompt, "<bos>Hi");
  EXPECT_TRUE(r.prompt_ids.empty());
  EXPECT_TRUE(r.messages.is_null());
  // generation_config.json's sampling; max_tokens 256 without max_new_tokens.
  EXPECT_TRUE(r.sampling.do_sample);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.8f);
  EXPECT_EQ(r.sampling.top_k, 64);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.95f);
  EXPECT_EQ(r.sampling.seed, 0u);
  EXPECT_EQ(r.max_tokens, 256);
  EXPECT_TRUE(r.stop_ids.empty());
  EXPECT_TRUE(r.adapters.empty());
  EXPECT_FALSE(r.json_schema);
  EXPECT_FALSE(line.function_calling);

  BatchDefaults d = Defaults();
  d.generation.max_new_tokens = 32;
  EXPECT_EQ(ParseBatchLine(R"({"prompt": "x"})", 1, d).request.max_tokens, 32);
}

TEST(BatchRequests, TemperatureChoosesGreedyOrSampling) {
  const Request greedy =
      ParseBatchLine(R"({"prompt": "x", "temperature": 0})", 1, Defaults()).request;
  EXPECT_TRUE(greedy.sampling.greedy());
  BatchDefaults d = Defaults();
  d.generation.do_sample = false;  // greedy by default
  const Request sampled =
      ParseBatchLine(R"({"prompt": "x", "temperature": 0.5, "top_k": 0, "top_p": 1, "seed": 9})", 1,
                     d)
          .request;
  EXPECT_TRUE(sampled.sampling.do_sample);
  EXPECT_FALSE(sampled.sampling.greedy());
  EXPECT_FLOAT_EQ(sampled.sampling.temperature, 0.5f);
  EXPECT_EQ(sampled.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(sampled.sampling.top_p, 1.0f);
  EXPECT_EQ(sampled.sampling.seed, 9u);
  EXPECT_TRUE(ParseBatchLine(R"({"prompt": "x"})", 1, d).request.sampling.greedy());
}

TEST(BatchRequests, EveryField) {
  const BatchLine line = ParseBatchLine(
      R"({"id": "req-1", "messages": [{"role": "user", "content": "Weather?"}],
          "tools": [{"type": "function", "function": {"name": "get_weather"}}],
          "adapters": [{"name": "weather"}, {"name": "calendar", "scale": 0.25}, "other"],
          "max_tokens": 12, "top_p": 0.5, "top_k": 3, "min_p": 0.1, "repetition_penalty": 1.2,
          "stop": ["\n\n", "END"], "constrain_tools": true, "priority": -2})",
      4, Defaults());
  ASSERT_FALSE(line.error) << line.error->message();
  EXPECT_EQ(line.line_number, 4);
  ASSERT_TRUE(line.id);
  EXPECT_EQ(*line.id, "req-1");
  const Request& r = line.request;
  EXPECT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.tools.size(), 1u);
  ASSERT_EQ(r.adapters.size(), 3u);
  EXPECT_EQ(r.adapters[0].name, "weather");
  EXPECT_FLOAT_EQ(r.adapters[0].scale, 0.7f);  // the --adapter scale
  EXPECT_EQ(r.adapters[1].name, "calendar");
  EXPECT_FLOAT_EQ(r.adapters[1].scale, 0.25f);
  EXPECT_EQ(r.adapters[2].name, "other");
  EXPECT_FLOAT_EQ(r.adapters[2].scale, 1.0f);
  EXPECT_EQ(r.max_tokens, 12);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_FLOAT_EQ(r.sampling.repetition_penalty, 1.2f);
  EXPECT_THAT(r.stop, ElementsAre("\n\n", "END"));
  EXPECT_TRUE(r.constrain_tools);
  EXPECT_EQ(r.priority, -2);
  // Tools stop at <start_function_response> too.
  EXPECT_TRUE(line.function_calling);
  EXPECT_THAT(r.stop_ids, ElementsAre(49));
}

TEST(BatchRequests, PromptIdsSchemaRegexAndStopString) {
  const BatchLine ids = ParseBatchLine(
      R"({"id": 17, "prompt_ids": [2, 10, 999], "stop": "x", "json_schema": {"type": "object"}})",
      1, Defaults());
  ASSERT_FALSE(ids.error) << ids.error->message();
  EXPECT_EQ(*ids.id, 17);
  EXPECT_THAT(ids.request.prompt_ids, ElementsAre(2, 10, 999));
  EXPECT_THAT(ids.request.stop, ElementsAre("x"));
  ASSERT_TRUE(ids.request.json_schema);
  EXPECT_EQ((*ids.request.json_schema)["type"], "object");
  const BatchLine regex = ParseBatchLine(R"({"prompt": "x", "regex": "[0-9]+"})", 1, Defaults());
  ASSERT_FALSE(regex.error);
  EXPECT_EQ(regex.request.regex, "[0-9]+");
}

TEST(BatchRequests, MessagesThatCallToolsStopAtTheFunctionResponse) {
  const BatchLine line = ParseBatchLine(
      R"({"messages": [{"role": "user", "content": "Weather?"},
          {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
          {"role": "tool", "name": "f", "content": "sunny"}]})",
      1, Defaults());
  ASSERT_FALSE(line.error) << line.error->message();
  EXPECT_TRUE(line.function_calling);
  EXPECT_THAT(line.request.stop_ids, ElementsAre(49));
  EXPECT_EQ(line.request.tools, Json::array());  // FunctionGemma's template
}

TEST(BatchRequests, ErrorsNameTheLineAndTheField) {
  EXPECT_THAT(ErrorOf("{\"prompt\": ", 3), ::testing::StartsWith("line 3: invalid JSON at byte"));
  EXPECT_EQ(ErrorOf("[1, 2]", 2), "line 2: expected a JSON object, got [1,2]");
  EXPECT_EQ(ErrorOf(R"({"id": "a"})"),
            "line 1: no prompt: give one of prompt, messages or prompt_ids");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "prompt_ids": [1]})"),
            "line 1: more than one prompt: give only one of prompt, messages or prompt_ids");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "temprature": 0})"),
            "line 1: unknown field 'temprature' (did you mean 'temperature'?)");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "colour": 0})"), "line 1: unknown field 'colour'");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "max_tokens": "5"})"),
            "line 1: field 'max_tokens': expected an integer >= 1, got \"5\"");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "max_tokens": 0})"),
            "line 1: field 'max_tokens': expected an integer >= 1, got 0");
  EXPECT_EQ(ErrorOf(R"({"prompt": 5})"), "line 1: field 'prompt': expected a string, got 5");
  EXPECT_EQ(ErrorOf(R"({"prompt": ""})"), "line 1: field 'prompt': empty");
  EXPECT_EQ(ErrorOf(R"({"prompt_ids": [1, 1000]})"),
            "line 1: field 'prompt_ids[1]': expected a token id in [0, 999], got 1000");
  EXPECT_EQ(ErrorOf(R"({"prompt_ids": []})"),
            "line 1: field 'prompt_ids': expected a non-empty list of token ids, got []");
  EXPECT_EQ(ErrorOf(R"({"messages": {"role": "user"}})"),
            "line 1: field 'messages': expected a non-empty list of chat messages, got "
            "{\"role\":\"user\"}");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "tools": []})"),
            "line 1: field 'tools': needs 'messages' (a chat)");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "temperature": -1})"),
            "line 1: field 'temperature': expected a number >= 0, got -1");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "top_p": 0})"),
            "line 1: field 'top_p': expected a number in (0, 1], got 0");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "top_k": 1.5})"),
            "line 1: field 'top_k': expected an integer >= 0, got 1.5");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "seed": -3})"),
            "line 1: field 'seed': expected an integer >= 0, got -3");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "stop": [1]})"),
            "line 1: field 'stop': expected a string or a list of strings, got [1]");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "adapters": [{"name": "a", "scal": 1}]})"),
            "line 1: field 'adapters[0]': unknown field 'scal' (expected name and scale)");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "adapters": [{"scale": 1}]})"),
            "line 1: field 'adapters[0].name': missing or empty");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "adapters": "a"})"),
            "line 1: field 'adapters': expected a list of {\"name\", \"scale\"}, got \"a\"");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "regex": "a", "json_schema": {}})"),
            "line 1: more than one constraint: give at most one of json_schema, regex and "
            "constrain_tools");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "constrain_tools": true})"),
            "line 1: field 'constrain_tools': needs 'tools'");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "priority": 1e3})"),
            "line 1: field 'priority': expected a 32-bit integer, got 1000.0");
  EXPECT_EQ(ErrorOf(R"({"prompt": "x", "id": [1]})"),
            "line 1: field 'id': expected a string or an integer, got [1]");
}

TEST(BatchRequests, ABadLineKeepsItsId) {
  const BatchLine bad = ParseBatchLine(R"({"id": "q", "prompt": 1})", 5, Defaults());
  ASSERT_TRUE(bad.error);
  ASSERT_TRUE(bad.id);
  EXPECT_EQ(BatchErrorJson(bad).dump(),
            R"({"id":"q","error":"line 5: field 'prompt': expected a string, got 1"})");
  const BatchLine unreadable = ParseBatchLine("{", 6, Defaults());
  EXPECT_FALSE(unreadable.id);
  const OrderedJson json = BatchErrorJson(unreadable);
  EXPECT_FALSE(json.contains("id"));
  EXPECT_THAT(json["error"].get<std::string>(), ::testing::StartsWith("line 6: invalid JSON"));
}

TEST(BatchRequests, FileSkipsBlankLinesButCountsThem) {
  std::istringstream in(
      "{\"id\": 1, \"prompt\": \"a\"}\n\n   \r\n{\"id\": 2, \"prompt\": \"b\"}\r\nnope\n"
      "{\"id\": 4, \"prompt\": \"c\"}");
  const std::vector<BatchLine> lines = ParseBatchRequests(in, Defaults());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].line_number, 1);
  EXPECT_EQ(lines[1].line_number, 4);
  EXPECT_FALSE(lines[1].error);
  EXPECT_EQ(*lines[1].id, 2);
  EXPECT_EQ(lines[2].line_number, 5);
  EXPECT_TRUE(lines[2].error);
  EXPECT_EQ(lines[3].line_number, 6);
  EXPECT_EQ(lines[3].request.prompt, "c");
}

TEST(BatchRequests, ResultLines) {
  BatchLine line = ParseBatchLine(R"({"id": "r", "prompt": "x"})", 2, Defaults());
  Completion c;
  c.ids = {5, 6};
  c.text = "hi";
  c.finish_reason = "length";
  c.usage = {.prompt_tokens = 3, .completion_tokens = 2, .cached_tokens = 1};
  c.timings = {
      .queue_ms = 1, .time_to_first_token_ms = 2, .total_ms = 4, .time_per_output_token_ms = 2};
  OrderedJson json = BatchResultJson(line, c);
  // "id" first, then the output, then the accounting.
  EXPECT_THAT(json.dump(), ::testing::StartsWith(R"({"id":"r","ids":[5,6],"text":"hi",)"
                                                 R"("finish_reason":"length","usage":)"));
  EXPECT_EQ(json["id"], "r");
  EXPECT_EQ(json["ids"], OrderedJson::array({5, 6}));
  EXPECT_EQ(json["text"], "hi");
  EXPECT_EQ(json["finish_reason"], "length");
  EXPECT_EQ(json["usage"].dump(), R"({"prompt_tokens":3,"completion_tokens":2,"cached_tokens":1})");
  EXPECT_EQ(json["timings"]["time_to_first_token_ms"], 2.0);
  EXPECT_EQ(json["timings"]["time_per_output_token_ms"], 2.0);
  EXPECT_FALSE(json.contains("preemptions"));
  EXPECT_FALSE(json.contains("function_calls"));
  c.preemptions = 2;
  EXPECT_EQ(BatchResultJson(line, c)["preemptions"], 2);

  // A request the engine refused.
  Completion failed;
  failed.status = Error("unknown adapter 'nope'");
  failed.finish_reason = "error";
  EXPECT_EQ(BatchResultJson(line, failed).dump(),
            R"({"id":"r","error":"line 2: unknown adapter 'nope'"})");

  // With tools: the calls in the text, parsed.
  line = ParseBatchLine(
      R"({"messages": [{"role": "user", "content": "w"}], "tools": [{"name": "get_weather"}]})", 1,
      Defaults());
  ASSERT_FALSE(line.error) << line.error->message();
  c.text = "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>";
  json = BatchResultJson(line, c);
  EXPECT_FALSE(json.contains("id"));
  ASSERT_EQ(json["function_calls"].size(), 1u);
  EXPECT_EQ(json["function_calls"][0]["name"], "get_weather");
  EXPECT_EQ(json["function_calls"][0]["arguments"]["city"], "Paris");
}

}  // namespace
}  // namespace fgnet::cli
