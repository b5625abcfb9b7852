// Chat prompts as text, for Gemma 3 instruction-tuned models and for FunctionGemma. The text
// spells control tokens out (<bos>, <start_of_turn>, <escape>, ...); the tokenizer matches them
// atomically, so Encode(RenderX(...)) gives the ids the model was trained on. The renderers
// reproduce the models' Hugging Face chat templates byte for byte for the inputs they accept;
// inputs a template would render into a broken prompt are errors instead.
//
// Messages are JSON: [{"role": ROLE, "content": CONTENT, ...}] where CONTENT is a string or a
// list of parts [{"type": "text", "text": "..."}] (text only). Roles: system, developer, user,
// assistant (alias model), tool. Errors name the JSON path, e.g. "messages[3].content: ...".
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "tokenizer/function_call.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet {

// The sentence FunctionGemma expects before its declarations (no colon, no full stop).
inline constexpr std::string_view kFunctionCallingPreamble =
    "You are a model that can do function calling with the following functions";

struct ChatOptions {
  bool add_bos = true;                // start with <bos> (the templates do; never add another)
  bool add_generation_prompt = true;  // end with "<start_of_turn>model\n" where a turn opens
};

// Gemma 3's template: "<bos>", then per message "<start_of_turn>ROLE\n" + content (stripped of
// surrounding whitespace) + "<end_of_turn>\n", assistant/model -> "model". A leading system (or
// developer) message is not a turn: its content, unstripped, plus "\n\n" starts the first user
// turn. After that, roles must alternate user, model, user, ... starting with user. The tool
// role is not supported (error).
Result<std::string> RenderGemma3Prompt(const Json& messages, const ChatOptions& options = {});

// FunctionGemma's template.
//  - Developer turn, present when there are tools or the first message is system/developer:
//    "<start_of_turn>developer\n" + (that message's stripped content, or
//    kFunctionCallingPreamble when there is none) + one
//    "<start_function_declaration>" RenderFunctionDeclaration(tool) "<end_function_declaration>"
//    per tool, no separators + "<end_of_turn>\n".
//  - user/model turns as in Gemma 3 (roles need not alternate; a later system or developer
//    message becomes a turn of that role).
//  - assistant "tool_calls": [{"function": {"name", "arguments"}}] (or {"name", "arguments"})
//    are written after the content as RenderFunctionCall; `arguments` is an object or a string
//    holding a JSON object. The model turn stays open; if this is the last message,
//    "<start_function_response>" follows (the model's own stop token).
//  - "tool" messages (after the calls, one per result) append
//    "<start_function_response>response:NAME{...}<end_function_response>" inside the model turn.
//    CONTENT is {"name", "response"}, or an object with the message's "name", or a string
//    (written {value:<escape>...<escape>}); NAME comes from "name" or, failing that, from the
//    "tool_call_id" of an earlier call. The next message must be the model's continuation (an
//    assistant message, which opens no new turn), or nothing.
//  - Generation prompt "<start_of_turn>model\n" only when no model turn is left open.
Result<std::string> RenderFunctionGemmaPrompt(const Json& messages, const Json& tools,
                                              const ChatOptions& options = {});

// One OpenAI-style tool, {"type": "function", "function": {"name", "description",
// "parameters": JSON Schema}} (or the inner object alone), as FunctionGemma declares it:
//   declaration:NAME{description:<escape>D<escape>,parameters:{properties:{...},
//   required:[<escape>a<escape>,...],type:<escape>OBJECT<escape>}}
// Properties: keys in dictsort order (keys named description, type, properties, required or
// nullable are skipped, as in the template); each is
//   key:{description:<escape>D<escape>[,enum:[...]][,properties:{...}[,required:[...]]]
//        [,items:{...}],type:<escape>TYPE<escape>}
// with the description always present (empty if absent), enum only for STRING, properties and
// required only for OBJECT, items only for ARRAY (its keys in dictsort order, values written
// with FormatFunctionValue(escape_keys=true), nested properties recursively), TYPE upper-cased.
Result<std::string> RenderFunctionDeclaration(const Json& tool);

}  // namespace fgnet
