#include "tokenizer/chat_format.h"

#include <map>
#include <string_view>
#include <utility>

#include "tokenizer/text_util.h"

namespace fgnet {
namespace {

constexpr std::string_view kStandardSchemaKeys[] = {"description", "type", "properties", "required",
                                                    "nullable"};

bool IsStandardSchemaKey(std::string_view key) {
  for (const std::string_view k : kStandardSchemaKeys) {
    if (k == key) return true;
  }
  return false;
}

// The string member `key` of `obj`, "" when absent or null; an error when of another type.
Result<std::string> OptionalString(const Json& obj, std::string_view key, const std::string& path) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) {
    return MakeError(path, ".", key, ": expected a string, got ", it->type_name());
  }
  return it->get<std::string>();
}

// The text of a message's content: a string, or text parts each stripped and concatenated (as
// the templates do). Absent or null content is "".
Result<std::string> ContentText(const Json& message, const std::string& path, bool strip) {
  const auto it = message.find("content");
  if (it == message.end() || it->is_null()) return std::string();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    return strip ? std::string(PythonStrip(s)) : s;
  }
  if (!it->is_array()) {
    return MakeError(path, ".content: expected a string or a list of parts, got ", it->type_name());
  }
  std::string text;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& part = (*it)[i];
    const std::string part_path = path + ".content[" + std::to_string(i) + "]";
    if (!part.is_object()) return MakeError(part_path, ": expected an object");
    FGNET_ASSIGN_OR_RETURN(std::string type, OptionalString(part, "type", part_path));
    if (type != "text") {
      return MakeError(part_path, ": part type '", type, "' is not supported (text only)");
    }
    FGNET_ASSIGN_OR_RETURN(std::string t, OptionalString(part, "text", part_path));
    text += strip ? std::string(PythonStrip(t)) : t;
  }
  return text;
}

Result<std::string> MessageRole(const Json& message, const std::string& path) {
  if (!message.is_object()) return MakeError(path, ": expected an object");
  const auto it = message.find("role");
  if (it == message.end() || !it->is_string()) {
    return MakeError(path, ".role: expected a string");
  }
  const std::string& role = it->get_ref<const std::string&>();
  if (role == "assistant" || role == "model") return std::string("model");
  if (role == "user" || role == "system" || role == "developer" || role == "tool") return role;
  return MakeError(path, ".role: unknown role '", role,
                   "' (expected system, developer, user, assistant, model or tool)");
}

std::string MessagePath(std::size_t i) { return "messages[" + std::to_string(i) + "]"; }

// ---------------------------------------------------------------------------------------------
// Declarations

Status AppendRequiredList(const Json& required, const std::string& path, std::string* out) {
  if (!required.is_array()) return MakeError(path, ": expected a list of property names");
  out->append("required:[");
  for (std::size_t i = 0; i < required.size(); ++i) {
    if (!required[i].is_string()) {
      return MakeError(path, "[", i, "]: expected a string, got ", required[i].type_name());
    }
    if (i > 0) out->push_back(',');
    const Result<std::string> s = FormatFunctionValue(required[i], true);
    if (!s.ok()) return s.error().WithContext(path);
    out->append(*s);
  }
  out->push_back(']');
  return Ok();
}

Status AppendProperties(const Json& properties, const std::string& path, std::string* out);

Status AppendItems(const Json& items, const std::string& path, std::string* out) {
  out->append(",items:{");
  bool first = true;
  for (const std::string* key : DictSortedKeys(items)) {
    const Json& value = items.find(*key).value();
    if (value.is_null()) continue;
    if (!first) out->push_back(',');
    first = false;
    const std::string item_path = path + "." + *key;
    if (*key == "properties") {
      out->append("properties:{");
      if (value.is_object()) FGNET_TRY(AppendProperties(value, item_path, out));
      out->push_back('}');
    } else if (*key == "required") {
      FGNET_TRY(AppendRequiredList(value, item_path, out));
    } else if (*key == "type") {
      Json upper;
      if (value.is_string()) {
        upper = AsciiUpper(value.get_ref<const std::string&>());
      } else if (value.is_array()) {
        upper = Json::array();
        for (const Json& t : value) {
          if (!t.is_string()) return MakeError(item_path, ": expected type names");
          upper.push_back(AsciiUpper(t.get_ref<const std::string&>()));
        }
      } else {
        return MakeError(item_path, ": expected a type name or a list of them");
      }
      const Result<std::string> s = FormatFunctionValue(upper, true);
      if (!s.ok()) return s.error().WithContext(item_path);
      out->append("type:");
      out->append(*s);
    } else {
      const Result<std::string> s = FormatFunctionValue(value, true);
      if (!s.ok()) return s.error().WithContext(item_path);
      out->append(*key);
      out->push_back(':');
      out->append(*s);
    }
  }
  out->push_back('}');
  return Ok();
}

// `type | upper` as the template writes it: "STRING" for "string"; a list of type names is
// printed the way Python prints the list, upper-cased ("['STRING', 'NULL']").
Result<std::string> PropertyType(const Json& schema, const std::string& path) {
  const auto it = schema.find("type");
  if (it == schema.end() || it->is_null()) return std::string();
  if (it->is_string()) return AsciiUpper(it->get_ref<const std::string&>());
  if (it->is_array()) {
    std::string out = "[";
    for (std::size_t i = 0; i < it->size(); ++i) {
      const Json& t = (*it)[i];
      if (!t.is_string() ||
          t.get_ref<const std::string&>().find_first_of("'\\\n\r\t") != std::string::npos) {
        return MakeError(path, ".type[", i, "]: expected a plain type name");
      }
      if (i > 0) out += ", ";
      out += '\'';
      out += AsciiUpper(t.get_ref<const std::string&>());
      out += '\'';
    }
    return out + "]";
  }
  return MakeError(path, ".type: expected a type name or a list of them, got ", it->type_name());
}

// The template's format_parameters: the members of a "properties" object.
Status AppendProperties(const Json& properties, const std::string& path, std::string* out) {
  if (!properties.is_object()) return MakeError(path, ": expected an object");
  bool first = true;
  static const Json kEmpty = Json::object();
  for (const std::string* key : DictSortedKeys(properties)) {
    if (IsStandardSchemaKey(*key)) continue;
    const std::string prop_path = path + "." + *key;
    const Json& raw = properties.find(*key).value();
    const Json& schema = raw.is_object() ? raw : kEmpty;  // Jinja reads missing fields as ""
    FGNET_ASSIGN_OR_RETURN(std::string description,
                           OptionalString(schema, "description", prop_path));
    FGNET_ASSIGN_OR_RETURN(std::string type, PropertyType(schema, prop_path));
    if (!first) out->push_back(',');
    first = false;
    out->append(*key);
    out->append(":{description:");
    const Result<std::string> desc = FormatFunctionValue(Json(description), true);
    if (!desc.ok()) return desc.error().WithContext(prop_path + ".description");
    out->append(*desc);
    if (type == "STRING") {
      const auto e = schema.find("enum");
      if (e != schema.end() && IsTruthy(*e)) {
        const Result<std::string> s = FormatFunctionValue(*e, true);
        if (!s.ok()) return s.error().WithContext(prop_path + ".enum");
        out->append(",enum:");
        out->append(*s);
      }
    } else if (type == "OBJECT") {
      out->append(",properties:{");
      const auto nested = schema.find("properties");
      if (nested != schema.end() && nested->is_object()) {
        FGNET_TRY(AppendProperties(*nested, prop_path + ".properties", out));
      } else {
        // The template then lists the schema's own non-standard keys as properties.
        FGNET_TRY(AppendProperties(schema, prop_path, out));
      }
      out->push_back('}');
      const auto req = schema.find("required");
      if (req != schema.end() && IsTruthy(*req)) {
        out->push_back(',');
        FGNET_TRY(AppendRequiredList(*req, prop_path + ".required", out));
      }
    } else if (type == "ARRAY") {
      const auto items = schema.find("items");
      if (items != schema.end() && items->is_object() && !items->empty()) {
        FGNET_TRY(AppendItems(*items, prop_path + ".items", out));
      }
    }
    out->append(",type:");
    out->append(kEscape);
    out->append(type);
    out->append(kEscape);
    out->push_back('}');
  }
  return Ok();
}

Result<std::string> RenderDeclarationAt(const Json& tool, const std::string& path) {
  if (!tool.is_object()) return MakeError(path, ": expected an object");
  const auto fn_it = tool.find("function");
  const bool wrapped = fn_it != tool.end();
  if (wrapped && !fn_it->is_object()) return MakeError(path, ".function: expected an object");
  const Json& fn = wrapped ? *fn_it : tool;
  const std::string fn_path = wrapped ? path + ".function" : path;
  FGNET_ASSIGN_OR_RETURN(std::string name, OptionalString(fn, "name", fn_path));
  if (name.empty()) return MakeError(fn_path, ".name: missing or empty");
  FGNET_ASSIGN_OR_RETURN(std::string description, OptionalString(fn, "description", fn_path));

  std::string out = "declaration:";
  out += name;
  out += "{description:";
  const Result<std::string> desc = FormatFunctionValue(Json(description), true);
  if (!desc.ok()) return desc.error().WithContext(fn_path + ".description");
  out += *desc;
  const auto params_it = fn.find("parameters");
  if (params_it != fn.end() && IsTruthy(*params_it)) {
    const Json& params = *params_it;
    const std::string params_path = fn_path + ".parameters";
    if (!params.is_object()) return MakeError(params_path, ": expected a JSON Schema object");
    out += ",parameters:{";
    const auto props = params.find("properties");
    if (props != params.end() && IsTruthy(*props)) {
      out += "properties:{";
      FGNET_TRY(AppendProperties(*props, params_path + ".properties", &out));
      out += "},";
    }
    const auto req = params.find("required");
    if (req != params.end() && IsTruthy(*req)) {
      FGNET_TRY(AppendRequiredList(*req, params_path + ".required", &out));
      out += ',';
    }
    const auto type = params.find("type");
    if (type != params.end() && IsTruthy(*type)) {
      if (!type->is_string()) return MakeError(params_path, ".type: expected a string");
      out += "type:";
      out += kEscape;
      out += AsciiUpper(type->get_ref<const std::string&>());
      out += kEscape;
      out += '}';
    }
  }
  out += '}';
  return std::string(PythonStrip(out));
}

// ---------------------------------------------------------------------------------------------
// FunctionGemma conversation

enum class Pending { kNone, kToolCall, kToolResponse };

struct ToolCallParts {
  std::string id;
  FunctionCall call;
};

Result<ToolCallParts> ReadToolCall(const Json& tool_call, const std::string& path) {
  if (!tool_call.is_object()) return MakeError(path, ": expected an object");
  ToolCallParts parts;
  FGNET_ASSIGN_OR_RETURN(parts.id, OptionalString(tool_call, "id", path));
  const auto fn_it = tool_call.find("function");
  const bool wrapped = fn_it != tool_call.end();
  if (wrapped && !fn_it->is_object()) return MakeError(path, ".function: expected an object");
  const Json& fn = wrapped ? *fn_it : tool_call;
  const std::string fn_path = wrapped ? path + ".function" : path;
  FGNET_ASSIGN_OR_RETURN(parts.call.name, OptionalString(fn, "name", fn_path));
  const auto args = fn.find("arguments");
  if (args == fn.end() || args->is_null()) {
    parts.call.arguments = Json::object();
  } else if (args->is_object()) {
    parts.call.arguments = *args;
  } else if (args->is_string()) {
    const Result<Json> parsed =
        ParseJson(args->get_ref<const std::string&>(), fn_path + ".arguments");
    if (!parsed.ok()) return parsed.error();
    if (!parsed->is_object()) {
      return MakeError(fn_path, ".arguments: the JSON text is not an object");
    }
    parts.call.arguments = *parsed;
  } else {
    return MakeError(fn_path, ".arguments: expected an object or a JSON string, got ",
                     args->type_name());
  }
  return parts;
}

// "<start_function_response>response:NAME{...}<end_function_response>" for a tool message, or
// "" when its content is empty (the template writes nothing then).
Result<std::string> RenderToolMessage(const Json& message, const std::string& path,
                                      const std::map<std::string, std::string>& call_names) {
  const auto content_it = message.find("content");
  if (content_it == message.end() || !IsTruthy(*content_it)) return std::string();
  const Json& content = *content_it;
  FGNET_ASSIGN_OR_RETURN(std::string name, OptionalString(message, "name", path));
  if (name.empty()) {
    FGNET_ASSIGN_OR_RETURN(std::string id, OptionalString(message, "tool_call_id", path));
    const auto it = call_names.find(id);
    if (!id.empty() && it != call_names.end()) name = it->second;
  }
  Json response;
  if (content.is_object() && content.contains("name") && content.contains("response")) {
    FGNET_ASSIGN_OR_RETURN(name, OptionalString(content, "name", path + ".content"));
    response = content["response"];
  } else if (content.is_object()) {
    response = content;
  } else if (content.is_string() || content.is_array()) {
    FGNET_ASSIGN_OR_RETURN(std::string text, ContentText(message, path, /*strip=*/false));
    response = Json{{"value", text}};
  } else {
    response = Json{{"value", content}};
  }
  name = std::string(PythonStrip(name));
  if (name.empty()) {
    return MakeError(path,
                     ": a tool message needs a function name ('name', content "
                     "{name, response}, or a 'tool_call_id' of an earlier call)");
  }
  const Result<std::string> body = RenderFunctionResponse(name, response);
  if (!body.ok()) return body.error().WithContext(path);
  return std::string(kStartFunctionResponse) + *body;
}

}  // namespace

Result<std::string> RenderFunctionDeclaration(const Json& tool) {
  return RenderDeclarationAt(tool, "tool");
}

Result<std::string> RenderGemma3Prompt(const Json& messages, const ChatOptions& options) {
  if (!messages.is_array()) return MakeError("messages: expected a list");
  if (messages.empty()) return MakeError("messages: the conversation is empty");
  std::string out = options.add_bos ? std::string(kBosToken) : std::string();
  std::string first_user_prefix;
  std::size_t start = 0;
  FGNET_ASSIGN_OR_RETURN(std::string first_role, MessageRole(messages[0], MessagePath(0)));
  if (first_role == "system" || first_role == "developer") {
    // The template takes the system text as is (string, or the first part's text).
    const Json& content = messages[0].contains("content") ? messages[0]["content"] : Json();
    if (content.is_string()) {
      first_user_prefix = content.get<std::string>();
    } else if (content.is_array() && !content.empty() && content[0].is_object() &&
               content[0].contains("text") && content[0]["text"].is_string()) {
      first_user_prefix = content[0]["text"].get<std::string>();
    } else {
      return MakeError(MessagePath(0), ".content: expected a string or text parts");
    }
    first_user_prefix += "\n\n";
    start = 1;
  }
  for (std::size_t i = start; i < messages.size(); ++i) {
    const std::string path = MessagePath(i);
    FGNET_ASSIGN_OR_RETURN(std::string role, MessageRole(messages[i], path));
    if (role == "tool") {
      return MakeError(path, ".role: the Gemma 3 chat format has no tool role");
    }
    if (role == "system" || role == "developer") {
      return MakeError(path, ".role: only the first message may be a system message");
    }
    const bool expect_user = (i - start) % 2 == 0;
    if ((role == "user") != expect_user) {
      return MakeError(path, ".role: conversation roles must alternate user/assistant/user/... ",
                       "(expected ", expect_user ? "user" : "assistant", ", got ", role, ")");
    }
    FGNET_ASSIGN_OR_RETURN(std::string content, ContentText(messages[i], path, /*strip=*/true));
    out += kStartOfTurn;
    out += role;
    out += '\n';
    if (i == start) out += first_user_prefix;
    out += content;
    out += kEndOfTurn;
    out += '\n';
  }
  if (options.add_generation_prompt) {
    out += kStartOfTurn;
    out += "model\n";
  }
  return out;
}

Result<std::string> RenderFunctionGemmaPrompt(const Json& messages, const Json& tools,
                                              const ChatOptions& options) {
  if (!messages.is_array()) return MakeError("messages: expected a list");
  if (!tools.is_null() && !tools.is_array()) return MakeError("tools: expected a list");
  std::string out = options.add_bos ? std::string(kBosToken) : std::string();
  const bool has_tools = tools.is_array() && !tools.empty();
  std::string first_role;
  if (!messages.empty()) {
    FGNET_ASSIGN_OR_RETURN(first_role, MessageRole(messages[0], MessagePath(0)));
  }
  const bool leading_system = first_role == "system" || first_role == "developer";
  std::size_t start = 0;
  if (has_tools || leading_system) {
    out += kStartOfTurn;
    out += "developer\n";
    if (leading_system) {
      FGNET_ASSIGN_OR_RETURN(std::string content,
                             ContentText(messages[0], MessagePath(0), /*strip=*/true));
      out += content;
      start = 1;
    } else {
      out += kFunctionCallingPreamble;
    }
    if (has_tools) {
      for (std::size_t t = 0; t < tools.size(); ++t) {
        FGNET_ASSIGN_OR_RETURN(std::string decl,
                               RenderDeclarationAt(tools[t], "tools[" + std::to_string(t) + "]"));
        out += kStartFunctionDeclaration;
        out += decl;
        out += kEndFunctionDeclaration;
      }
    }
    out += kEndOfTurn;
    out += '\n';
  }

  Pending pending = Pending::kNone;
  std::size_t last_call_message = 0;
  std::map<std::string, std::string> call_names;  // tool_call_id -> function name
  for (std::size_t i = start; i < messages.size(); ++i) {
    const std::string path = MessagePath(i);
    FGNET_ASSIGN_OR_RETURN(std::string role, MessageRole(messages[i], path));
    const Json& message = messages[i];
    if (role != "tool") {
      if (pending == Pending::kToolCall) {
        return MakeError(path, ": the tool calls of ", MessagePath(last_call_message),
                         " must be followed by tool messages");
      }
      if (pending == Pending::kToolResponse && role != "model") {
        return MakeError(path,
                         ": after tool responses the model continues its turn; expected "
                         "an assistant message, got ",
                         role);
      }
      if (pending != Pending::kToolResponse) {
        out += kStartOfTurn;
        out += role;
        out += '\n';
      }
      pending = Pending::kNone;
      FGNET_ASSIGN_OR_RETURN(std::string content, ContentText(message, path, /*strip=*/true));
      out += content;
      const auto calls = message.find("tool_calls");
      if (calls != message.end() && !calls->is_null()) {
        if (!calls->is_array()) return MakeError(path, ".tool_calls: expected a list");
        if (!calls->empty() && role != "model") {
          return MakeError(path, ".tool_calls: only assistant messages can call functions");
        }
        for (std::size_t c = 0; c < calls->size(); ++c) {
          const std::string call_path = path + ".tool_calls[" + std::to_string(c) + "]";
          FGNET_ASSIGN_OR_RETURN(ToolCallParts parts, ReadToolCall((*calls)[c], call_path));
          const Result<std::string> text = RenderFunctionCall(parts.call);
          if (!text.ok()) return text.error().WithContext(call_path);
          out += *text;
          if (!parts.id.empty()) call_names[parts.id] = parts.call.name;
        }
        if (!calls->empty()) {
          if (i + 1 == messages.size()) out += kStartFunctionResponse;
          pending = Pending::kToolCall;
          last_call_message = i;
        }
      }
    } else {
      if (pending == Pending::kNone) {
        return MakeError(path,
                         ": a tool message must follow an assistant message with "
                         "tool_calls (or another tool message)");
      }
      FGNET_ASSIGN_OR_RETURN(std::string response, RenderToolMessage(message, path, call_names));
      out += response;
      pending = Pending::kToolResponse;
    }
    if (pending == Pending::kNone) {
      out += kEndOfTurn;
      out += '\n';
    }
  }
  if (options.add_generation_prompt && pending == Pending::kNone) {
    out += kStartOfTurn;
    out += "model\n";
  }
  return out;
}

}  // namespace fgnet
