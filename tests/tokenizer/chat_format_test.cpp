#include "tokenizer/chat_format.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fgnet {
namespace {

std::string Gemma3(const char* messages_json, bool generation_prompt = true) {
  ChatOptions options;
  options.add_generation_prompt = generation_prompt;
  const Result<std::string> r = RenderGemma3Prompt(Json::parse(messages_json), options);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : std::string();
}

// Expected strings in the Gemma 3 tests were produced by Gemma 3's own chat template
// (tokenizer_config.json of gemma-3-270m-it) rendered with Jinja2 as transformers does.
TEST(Gemma3Prompt, SystemGoesIntoFirstUserTurnAndContentIsStripped) {
  EXPECT_EQ(Gemma3(R"([{"role":"system","content":"You are terse."},
                       {"role":"user","content":"  Hi there \n"},
                       {"role":"assistant","content":"Hello!\n\n"},
                       {"role":"user","content":"Bye"}])"),
            "<bos><start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n"
            "<start_of_turn>model\nHello!<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
}

TEST(Gemma3Prompt, WithoutSystemOrGenerationPrompt) {
  EXPECT_EQ(Gemma3(R"([{"role":"user","content":"Q"},{"role":"model","content":"A"}])", false),
            "<bos><start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n");
}

TEST(Gemma3Prompt, SystemTextIsNotStripped) {
  EXPECT_EQ(Gemma3(R"([{"role":"system","content":"  sys  "},{"role":"user","content":"x"}])"),
            "<bos><start_of_turn>user\n  sys  \n\nx<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(Gemma3(R"([{"role":"developer","content":[{"type":"text","text":"d"}]},
                       {"role":"user","content":"x"}])"),
            "<bos><start_of_turn>user\nd\n\nx<end_of_turn>\n<start_of_turn>model\n");
}

TEST(Gemma3Prompt, TextPartsAndUnicodeWhitespace) {
  EXPECT_EQ(Gemma3(R"([{"role":"user","content":[{"type":"text","text":" a "},
                                                  {"type":"text","text":"b\n"}]}])"),
            "<bos><start_of_turn>user\nab<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(
      Gemma3("[{\"role\":\"user\",\"content\":\"\u00a0\u3000h\u00e9llo w\u00f6rld\u2003\\n\"}]"),
      "<bos><start_of_turn>user\nh\u00e9llo w\u00f6rld<end_of_turn>\n<start_of_turn>model\n");
}

TEST(Gemma3Prompt, NoBos) {
  ChatOptions options;
  options.add_bos = false;
  const auto r = RenderGemma3Prompt(Json::parse(R"([{"role":"user","content":"x"}])"), options);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "<start_of_turn>user\nx<end_of_turn>\n<start_of_turn>model\n");
}

TEST(Gemma3Prompt, Errors) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {R"([])", "empty"},
      {R"({"role":"user"})", "expected a list"},
      {R"([{"role":"user","content":"a"},{"role":"user","content":"b"}])",
       "messages[1].role: conversation roles must alternate"},
      {R"([{"role":"assistant","content":"a"}])", "expected user, got model"},
      {R"([{"role":"user","content":"a"},{"role":"tool","content":"b"}])", "no tool role"},
      {R"([{"role":"user","content":"a"},{"role":"system","content":"b"}])", "only the first"},
      {R"([{"role":"robot","content":"a"}])", "unknown role 'robot'"},
      {R"([{"content":"a"}])", "messages[0].role: expected a string"},
      {R"([{"role":"user","content":[{"type":"image"}]}])", "messages[0].content[0]"},
      {R"([{"role":"user","content":7}])", "messages[0].content"},
  };
  for (const auto& [json, expected] : cases) {
    const auto r = RenderGemma3Prompt(Json::parse(json));
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_NE(r.error().message().find(expected), std::string::npos) << r.error().message();
  }
}

// ---------------------------------------------------------------------------------------------

const char* kWeatherTool = R"({"type":"function","function":{"name":"get_current_weather",
  "description":"Gets the current weather in a given location.",
  "parameters":{"type":"object","properties":{
    "location":{"type":"string","description":"The city and state, e.g. \"San Francisco, CA\" or \"Tokyo, JP\""},
    "unit":{"type":"string","description":"The unit to return the temperature in.",
            "enum":["celsius","fahrenheit"]}},
  "required":["location"]}}})";

std::string FunctionGemma(const char* messages_json, const char* tools_json,
                          ChatOptions options = {}) {
  const Result<std::string> r = RenderFunctionGemmaPrompt(
      Json::parse(messages_json), tools_json ? Json::parse(tools_json) : Json(), options);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : std::string();
}

// The developer turn exactly as Google's FunctionGemma formatting guide shows it.
TEST(FunctionGemmaPrompt, DocumentedDeveloperTurn) {
  const std::string tools = std::string("[") + kWeatherTool + "]";
  EXPECT_EQ(
      FunctionGemma(
          R"([{"role":"developer","content":"You are a model that can do function calling with the following functions"},
                        {"role":"user","content":"Hey, what's the weather in Tokyo right now?"}])",
          tools.c_str()),
      "<bos><start_of_turn>developer\n"
      "You are a model that can do function calling with the following functions"
      "<start_function_declaration>declaration:get_current_weather{description:<escape>Gets the "
      "current weather in a given location.<escape>,parameters:{properties:{location:{description:"
      "<escape>The city and state, e.g. \"San Francisco, CA\" or \"Tokyo, "
      "JP\"<escape>,type:<escape>"
      "STRING<escape>},unit:{description:<escape>The unit to return the temperature in.<escape>,"
      "enum:[<escape>celsius<escape>,<escape>fahrenheit<escape>],type:<escape>STRING<escape>}},"
      "required:[<escape>location<escape>],type:<escape>OBJECT<escape>}}<end_function_declaration>"
      "<end_of_turn>\n"
      "<start_of_turn>user\nHey, what's the weather in Tokyo right now?<end_of_turn>\n"
      "<start_of_turn>model\n");
}

// A full exchange; expected text as llama.cpp's server renders FunctionGemma's template (tools
// without a system message get the function-calling sentence; a string tool result becomes
// {value:...}; the answer after the response continues the model turn).
TEST(FunctionGemmaPrompt, ToolCallResponseAndAnswer) {
  const char* tools = R"([{"type":"function","function":{"name":"get_weather",
      "description":"Get weather",
      "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])";
  EXPECT_EQ(
      FunctionGemma(R"([
        {"role":"user","content":"Weather in Paris?"},
        {"role":"assistant","tool_calls":[{"id":"call00001","type":"function",
          "function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},
        {"role":"tool","name":"get_weather","tool_call_id":"call00001","content":"sunny"},
        {"role":"assistant","content":"It is sunny."},
        {"role":"user","content":"And Rome?"}])",
                    tools),
      "<bos><start_of_turn>developer\n"
      "You are a model that can do function calling with the following functions"
      "<start_function_declaration>declaration:get_weather{description:<escape>Get weather"
      "<escape>,parameters:{properties:{city:{description:<escape><escape>,type:<escape>STRING"
      "<escape>}},type:<escape>OBJECT<escape>}}<end_function_declaration><end_of_turn>\n"
      "<start_of_turn>user\nWeather in Paris?<end_of_turn>\n"
      "<start_of_turn>model\n"
      "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>"
      "<start_function_response>response:get_weather{value:<escape>sunny<escape>}"
      "<end_function_response>It is sunny.<end_of_turn>\n"
      "<start_of_turn>user\nAnd Rome?<end_of_turn>\n"
      "<start_of_turn>model\n");
}

// A system message replaces the sentence and is followed directly by the declarations (as
// printed from transformers' apply_chat_template in a published fine-tuning log).
TEST(FunctionGemmaPrompt, SystemMessageWithTwoTools) {
  const char* tools = R"([
    {"type":"function","function":{"name":"get_weather",
      "description":"Get the current weather for a given city.",
      "parameters":{"type":"object","properties":{"city":{"type":"string",
        "description":"City name, e.g. 'Tokyo'."}},"required":["city"]}}},
    {"type":"function","function":{"name":"get_amazon_product_details",
      "description":"Retrieves comprehensive product information from Amazon, including title, price, description, specifications, and availability.",
      "parameters":{"type":"object","properties":{"asin":{"type":"string",
        "description":"The Amazon ASIN of the product."}},"required":["asin"]}}}])";
  ChatOptions options;
  options.add_bos = false;
  EXPECT_EQ(
      FunctionGemma(
          R"([{"role":"system","content":"You are a shopping assistant. Use tools when you need detailed Amazon product data such as price and specifications."},
         {"role":"user","content":"Is the espresso machine with ASIN B0XYZ12345 good for home use?"}])",
          tools, options),
      "<start_of_turn>developer\nYou are a shopping assistant. Use tools when you need detailed "
      "Amazon product data such as price and specifications.<start_function_declaration>"
      "declaration:get_weather{description:<escape>Get the current weather for a given city."
      "<escape>,parameters:{properties:{city:{description:<escape>City name, e.g. 'Tokyo'.<escape>,"
      "type:<escape>STRING<escape>}},required:[<escape>city<escape>],type:<escape>OBJECT<escape>}}"
      "<end_function_declaration><start_function_declaration>declaration:"
      "get_amazon_product_details{description:<escape>Retrieves comprehensive product information"
      " from Amazon, including title, price, description, specifications, and availability."
      "<escape>,parameters:{properties:{asin:{description:<escape>The Amazon ASIN of the product."
      "<escape>,type:<escape>STRING<escape>}},required:[<escape>asin<escape>],type:<escape>OBJECT"
      "<escape>}}<end_function_declaration><end_of_turn>\n"
      "<start_of_turn>user\nIs the espresso machine with ASIN B0XYZ12345 good for home use?"
      "<end_of_turn>\n<start_of_turn>model\n");
}

TEST(FunctionGemmaPrompt, WithoutToolsOrSystem) {
  EXPECT_EQ(FunctionGemma(R"([{"role":"user","content":"hi"}])", nullptr),
            "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(FunctionGemma(R"([{"role":"user","content":"hi"}])", "[]"),
            "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(FunctionGemma(R"([{"role":"system","content":" Be brief. "},
                              {"role":"user","content":"hi"}])",
                          nullptr),
            "<bos><start_of_turn>developer\nBe brief.<end_of_turn>\n"
            "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n");
}

// The reference document's single model turn: call, response ({name, response} content),
// answer.
TEST(FunctionGemmaPrompt, ResponseContentWithNameAndResponse) {
  ChatOptions options;
  options.add_bos = false;
  EXPECT_EQ(
      FunctionGemma(R"([
        {"role":"user","content":"Weather in Tokyo?"},
        {"role":"assistant","tool_calls":[{"function":{"name":"get_weather",
           "arguments":{"city":"Tokyo","unit":"c"}}}]},
        {"role":"tool","content":{"name":"get_weather",
           "response":{"weather":"sunny","temperature":15}}},
        {"role":"assistant","content":"It is sunny and 15 degrees in Tokyo."}])",
                    nullptr, options),
      "<start_of_turn>user\nWeather in Tokyo?<end_of_turn>\n"
      "<start_of_turn>model\n<start_function_call>call:get_weather{city:<escape>Tokyo<escape>,"
      "unit:<escape>c<escape>}<end_function_call><start_function_response>response:"
      "get_weather{temperature:15,weather:<escape>sunny<escape>}<end_function_response>It is "
      "sunny and 15 degrees in Tokyo.<end_of_turn>\n<start_of_turn>model\n");
}

TEST(FunctionGemmaPrompt, TrailingCallEndsWithStartOfResponse) {
  EXPECT_EQ(FunctionGemma(R"([{"role":"user","content":"light"},
         {"role":"assistant","content":"","tool_calls":[{"function":{"name":"turn_on_flashlight"}}]}])",
                          nullptr),
            "<bos><start_of_turn>user\nlight<end_of_turn>\n<start_of_turn>model\n"
            "<start_function_call>call:turn_on_flashlight{}<end_function_call>"
            "<start_function_response>");
}

TEST(FunctionGemmaPrompt, TrailingResponseLeavesTheModelTurnOpen) {
  EXPECT_EQ(FunctionGemma(R"([{"role":"user","content":"time?"},
         {"role":"assistant","tool_calls":[{"id":"c0","function":{"name":"get_time","arguments":"{}"}}]},
         {"role":"tool","tool_call_id":"c0","content":"2026-02-12T14:47:00"}])",
                          nullptr),
            "<bos><start_of_turn>user\ntime?<end_of_turn>\n<start_of_turn>model\n"
            "<start_function_call>call:get_time{}<end_function_call>"
            "<start_function_response>response:get_time{value:<escape>2026-02-12T14:47:00<escape>}"
            "<end_function_response>");
}

TEST(FunctionGemmaPrompt, ParallelCallsAndResponses) {
  ChatOptions options;
  options.add_bos = false;
  options.add_generation_prompt = false;
  EXPECT_EQ(FunctionGemma(R"([{"role":"user","content":"go"},
         {"role":"assistant","content":"Calling.","tool_calls":[
            {"id":"1","type":"function","function":{"name":"a","arguments":"{\"z\": [1, 2.5], \"y\": \"s\"}"}},
            {"id":"2","type":"function","function":{"name":"b","arguments":{"x":1}}}]},
         {"role":"tool","tool_call_id":"1","content":"one"},
         {"role":"tool","tool_call_id":"2","content":{"ok":true,"n":null}},
         {"role":"assistant","content":"Done."}])",
                          nullptr, options),
            "<start_of_turn>user\ngo<end_of_turn>\n<start_of_turn>model\nCalling."
            "<start_function_call>call:a{y:<escape>s<escape>,z:[1,2.5]}<end_function_call>"
            "<start_function_call>call:b{x:1}<end_function_call>"
            "<start_function_response>response:a{value:<escape>one<escape>}<end_function_response>"
            "<start_function_response>response:b{n:null,ok:true}<end_function_response>"
            "Done.<end_of_turn>\n");
}

TEST(FunctionGemmaPrompt, Errors) {
  const std::vector<std::tuple<const char*, const char*, const char*>> cases = {
      {R"([{"role":"tool","name":"f","content":"x"}])", nullptr, "messages[0]: a tool message"},
      {R"([{"role":"user","content":"a"},
           {"role":"assistant","tool_calls":[{"function":{"name":"f"}}]},
           {"role":"user","content":"b"}])",
       nullptr, "messages[2]: the tool calls of messages[1]"},
      {R"([{"role":"user","content":"a"},
           {"role":"assistant","tool_calls":[{"function":{"name":"f"}}]},
           {"role":"tool","name":"f","content":"r"},
           {"role":"user","content":"b"}])",
       nullptr, "messages[3]: after tool responses"},
      {R"([{"role":"user","content":"a"},
           {"role":"assistant","tool_calls":[{"function":{"name":"f"}}]},
           {"role":"tool","content":"r"}])",
       nullptr, "messages[2]: a tool message needs a function name"},
      {R"([{"role":"user","content":"a"},
           {"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{oops"}}]}])",
       nullptr, "messages[1].tool_calls[0].function.arguments"},
      {R"([{"role":"user","content":"a"},
           {"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"[1]"}}]}])",
       nullptr, "not an object"},
      {R"([{"role":"user","content":"a","tool_calls":[{"function":{"name":"f"}}]}])", nullptr,
       "only assistant messages"},
      {R"([{"role":"user","content":"a"}])", R"({"name":"f"})", "tools: expected a list"},
      {R"([{"role":"user","content":"a"}])",
       R"([{"type":"function","function":{"description":"d"}}])",
       "tools[0].function.name: missing or empty"},
      {R"([{"role":"user","content":"a"}])",
       R"([{"function":{"name":"f","parameters":{"type":"object","properties":{"p":{"type":"string","description":5}}}}}])",
       "tools[0].function.parameters.properties.p.description: expected a string"},
      {R"([{"role":"user","content":"a"}])",
       R"([{"function":{"name":"f","parameters":{"type":"object","properties":{"p":{"type":"string","enum":["a<escape>"]}}}}}])",
       "tools[0].function.parameters.properties.p.enum"},
  };
  for (const auto& [messages, tools, expected] : cases) {
    const auto r =
        RenderFunctionGemmaPrompt(Json::parse(messages), tools ? Json::parse(tools) : Json());
    ASSERT_FALSE(r.ok()) << messages;
    EXPECT_NE(r.error().message().find(expected), std::string::npos) << r.error().message();
  }
}

// ---------------------------------------------------------------------------------------------
// Declarations for several schemas.

std::string Declaration(const char* tool_json) {
  const Result<std::string> r = RenderFunctionDeclaration(Json::parse(tool_json));
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : std::string();
}

TEST(FunctionDeclaration, NestedObjectsArraysEnumsAndRequired) {
  EXPECT_EQ(
      Declaration(R"({"type":"function","function":{"name":"create_event",
        "description":"Create a calendar event.",
        "parameters":{"type":"object","properties":{
          "title":{"type":"string"},
          "attendees":{"type":"array","description":"People to invite",
            "items":{"type":"object","properties":{"name":{"type":"string","description":"Full name"},
                                                   "email":{"type":"string"}},
                     "required":["email"]}},
          "when":{"type":"object","description":"Start and end",
            "properties":{"start":{"type":"string"},"end":{"type":"string"},
                          "all_day":{"type":"boolean"}},
            "required":["start","end"]},
          "priority":{"type":"integer","enum":[1,2,3]},
          "Tags":{"type":"array","items":{"type":"string","enum":["work","home"]}},
          "ratio":{"type":"number","description":"0..1"}},
        "required":["title","when"]}}})"),
      "declaration:create_event{description:<escape>Create a calendar event.<escape>,parameters:{"
      "properties:{attendees:{description:<escape>People to invite<escape>,items:{properties:{"
      "email:{description:<escape><escape>,type:<escape>STRING<escape>},name:{description:"
      "<escape>Full name<escape>,type:<escape>STRING<escape>}},required:[<escape>email<escape>],"
      "type:<escape>OBJECT<escape>},type:<escape>ARRAY<escape>},priority:{description:<escape>"
      "<escape>,type:<escape>INTEGER<escape>},ratio:{description:<escape>0..1<escape>,type:"
      "<escape>NUMBER<escape>},Tags:{description:<escape><escape>,items:{enum:[<escape>work"
      "<escape>,<escape>home<escape>],type:<escape>STRING<escape>},type:<escape>ARRAY<escape>},"
      "title:{description:<escape><escape>,type:<escape>STRING<escape>},when:{description:"
      "<escape>Start and end<escape>,properties:{all_day:{description:<escape><escape>,type:"
      "<escape>BOOLEAN<escape>},end:{description:<escape><escape>,type:<escape>STRING<escape>},"
      "start:{description:<escape><escape>,type:<escape>STRING<escape>}},required:[<escape>start"
      "<escape>,<escape>end<escape>],type:<escape>OBJECT<escape>}},required:[<escape>title"
      "<escape>,<escape>when<escape>],type:<escape>OBJECT<escape>}}");
}

TEST(FunctionDeclaration, EmptyAndMissingParameters) {
  EXPECT_EQ(Declaration(R"({"type":"function","function":{"name":"turn_on_flashlight",
              "description":"Turns the flashlight on.",
              "parameters":{"type":"object","properties":{}}}})"),
            "declaration:turn_on_flashlight{description:<escape>Turns the flashlight on.<escape>,"
            "parameters:{type:<escape>OBJECT<escape>}}");
  EXPECT_EQ(Declaration(R"({"name":"ping","description":"No parameters at all."})"),
            "declaration:ping{description:<escape>No parameters at all.<escape>}");
  EXPECT_EQ(Declaration(R"({"name":"bare"})"), "declaration:bare{description:<escape><escape>}");
}

// Template quirks reproduced: properties named like schema keywords are skipped, an object
// without "properties" lists its own extra keys, nested array items are written as values
// (escaped keys, lower-case type), a missing type is empty and a type list prints like Python.
TEST(FunctionDeclaration, TemplateQuirks) {
  EXPECT_EQ(
      Declaration(R"({"type":"function","function":{"name":"odd","description":"Quirks",
        "parameters":{"type":"object","properties":{
          "type":{"type":"string"},"description":{"type":"string"},
          "config":{"type":"object","additionalProperties":{"type":"string"}},
          "matrix":{"type":"array","items":{"type":"array","items":{"type":"number"}}},
          "anything":{"description":"no type"},
          "nullable_opt":{"type":["string","null"],"description":"x"}}}}})"),
      "declaration:odd{description:<escape>Quirks<escape>,parameters:{properties:{anything:{"
      "description:<escape>no type<escape>,type:<escape><escape>},config:{description:<escape>"
      "<escape>,properties:{additionalProperties:{description:<escape><escape>,type:<escape>STRING"
      "<escape>}},type:<escape>OBJECT<escape>},matrix:{description:<escape><escape>,items:{items:{"
      "<escape>type<escape>:<escape>number<escape>},type:<escape>ARRAY<escape>},type:<escape>ARRAY"
      "<escape>},nullable_opt:{description:<escape>x<escape>,type:<escape>['STRING', 'NULL']"
      "<escape>}},type:<escape>OBJECT<escape>}}");
}

}  // namespace
}  // namespace fgnet
