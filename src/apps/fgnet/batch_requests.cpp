#include "apps/fgnet/batch_requests.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "apps/fgnet/cli_args.h"
#include "tokenizer/function_call.h"

namespace fgnet::cli {
namespace {

std::string Describe(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

Error FieldError(std::string_view field, std::string_view expected, const Json& got) {
  return MakeError("field '", field, "': expected ", expected, ", got ", Describe(got));
}

Result<std::int64_t> GetInt(const Json& v, std::string_view field, std::int64_t min,
                            std::int64_t max, std::string_view expected) {
  if (!v.is_number_integer()) return FieldError(field, expected, v);
  if (v.is_number_unsigned() &&
      v.get<std::uint64_t>() >
          static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return FieldError(field, expected, v);
  }
  const auto n = v.get<std::int64_t>();
  if (n < min || n > max) return FieldError(field, expected, v);
  return n;
}

// A number (integer or float) within [min, max], optionally excluding min.
Result<float> GetFloat(const Json& v, std::string_view field, double min, double max,
                       bool min_exclusive, std::string_view expected) {
  if (!v.is_number()) return FieldError(field, expected, v);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < min || (min_exclusive && x == min) || x > max) {
    return FieldError(field, expected, v);
  }
  return static_cast<float>(x);
}

Result<std::vector<std::string>> GetStop(const Json& v) {
  std::vector<std::string> stops;
  if (v.is_string()) {
    stops.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    for (const Json& s : v) {
      if (!s.is_string()) return FieldError("stop", "a string or a list of strings", v);
      stops.push_back(s.get<std::string>());
    }
  } else {
    return FieldError("stop", "a string or a list of strings", v);
  }
  for (const std::string& s : stops) {
    if (s.empty()) return Error("field 'stop': a stop string is empty");
  }
  return stops;
}

Result<std::vector<AdapterSpec>> GetAdapters(const Json& v, const BatchDefaults& defaults) {
  if (!v.is_array()) return FieldError("adapters", "a list of {\"name\", \"scale\"}", v);
  std::vector<AdapterSpec> out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const Json& a = v[i];
    const std::string field = "adapters[" + std::to_string(i) + "]";
    AdapterSpec spec;
    std::optional<float> scale;
    if (a.is_string()) {
      spec.name = a.get<std::string>();
    } else if (a.is_object()) {
      for (auto it = a.begin(); it != a.end(); ++it) {
        if (it.key() == "name") {
          if (!it->is_string()) return FieldError(field + ".name", "a string", *it);
          spec.name = it->get<std::string>();
        } else if (it.key() == "scale") {
          FGNET_ASSIGN_OR_RETURN(
              scale, GetFloat(*it, field + ".scale", -std::numeric_limits<double>::max(),
                              std::numeric_limits<double>::max(), false, "a finite number"));
        } else {
          return MakeError("field '", field, "': unknown field '", it.key(),
                           "' (expected name and scale)");
        }
      }
    } else {
      return FieldError(field, "{\"name\", \"scale\"} or a name", a);
    }
    if (spec.name.empty()) return MakeError("field '", field, ".name': missing or empty");
    if (scale) {
      spec.scale = *scale;
    } else if (auto it = defaults.adapter_scales.find(spec.name);
               it != defaults.adapter_scales.end()) {
      spec.scale = it->second;
    }
    out.push_back(std::move(spec));
  }
  return out;
}

bool MessagesCallTools(const Json& messages) {
  for (const Json& m : messages) {
    if (!m.is_object()) continue;
    if (m.contains("tool_calls") || m.value("role", "") == "tool") return true;
  }
  return false;
}

// Fills line->request from the object `j`; errors name the field (without the line number).
Status FillRequest(const Json& j, const BatchDefaults& defaults, BatchLine* line) {
  const std::vector<std::string>& fields = BatchRequestFields();
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(fields.begin(), fields.end(), it.key()) != fields.end()) continue;
    std::string message = "unknown field '" + it.key() + "'";
    if (auto hint = SuggestClosest(it.key(), fields)) message += " (did you mean '" + *hint + "'?)";
    return Error(message);
  }
  Request& r = line->request;
  int prompts = 0;
  for (const char* key : {"prompt", "messages", "prompt_ids"}) prompts += j.contains(key) ? 1 : 0;
  if (prompts == 0) return Error("no prompt: give one of prompt, messages or prompt_ids");
  if (prompts > 1)
    return Error("more than one prompt: give only one of prompt, messages or prompt_ids");

  if (auto it = j.find("prompt"); it != j.end()) {
    if (!it->is_string()) return FieldError("prompt", "a string", *it);
    r.prompt = it->get<std::string>();
    if (r.prompt.empty()) return Error("field 'prompt': empty");
  }
  if (auto it = j.find("messages"); it != j.end()) {
    if (!it->is_array() || it->empty()) {
      return FieldError("messages", "a non-empty list of chat messages", *it);
    }
    for (const Json& m : *it) {
      if (!m.is_object()) return FieldError("messages", "a list of message objects", *it);
    }
    r.messages = *it;
    // Tool calls in the history need FunctionGemma's template, which the engine picks by tools.
    line->function_calling = MessagesCallTools(r.messages);
    if (line->function_calling) r.tools = Json::array();
  }
  if (auto it = j.find("prompt_ids"); it != j.end()) {
    if (!it->is_array() || it->empty()) {
      return FieldError("prompt_ids", "a non-empty list of token ids", *it);
    }
    const std::int64_t limit = defaults.vocab_size > 0 ? defaults.vocab_size - 1
                                                       : std::numeric_limits<std::int32_t>::max();
    for (std::size_t i = 0; i < it->size(); ++i) {
      FGNET_ASSIGN_OR_RETURN(const std::int64_t id,
                             GetInt((*it)[i], "prompt_ids[" + std::to_string(i) + "]", 0, limit,
                                    "a token id in [0, " + std::to_string(limit) + "]"));
      r.prompt_ids.push_back(static_cast<std::int32_t>(id));
    }
  }
  if (auto it = j.find("tools"); it != j.end()) {
    if (!j.contains("messages")) return Error("field 'tools': needs 'messages' (a chat)");
    if (!it->is_array()) return FieldError("tools", "a list of tools", *it);
    for (const Json& t : *it) {
      if (!t.is_object()) return FieldError("tools", "a list of tool objects", *it);
    }
    r.tools = *it;
    if (!it->empty()) line->function_calling = true;
  }
  if (auto it = j.find("adapters"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(r.adapters, GetAdapters(*it, defaults));
  }

  std::uint64_t seed = 0;
  if (auto it = j.find("seed"); it != j.end()) {
    if (!it->is_number_integer() || (!it->is_number_unsigned() && it->get<std::int64_t>() < 0)) {
      return FieldError("seed", "an integer >= 0", *it);
    }
    seed = it->get<std::uint64_t>();
  }
  r.sampling = defaults.generation.ToSamplingParams(seed);
  if (auto it = j.find("temperature"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(r.sampling.temperature,
                           GetFloat(*it, "temperature", 0, 1e6, false, "a number >= 0"));
    r.sampling.do_sample = r.sampling.temperature > 0;
  }
  if (auto it = j.find("top_p"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(r.sampling.top_p,
                           GetFloat(*it, "top_p", 0, 1, true, "a number in (0, 1]"));
  }
  if (auto it = j.find("top_k"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(
        const std::int64_t k,
        GetInt(*it, "top_k", 0, std::numeric_limits<std::int32_t>::max(), "an integer >= 0"));
    r.sampling.top_k = static_cast<std::int32_t>(k);
  }
  if (auto it = j.find("min_p"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(r.sampling.min_p,
                           GetFloat(*it, "min_p", 0, 1, false, "a number in [0, 1]"));
  }
  if (auto it = j.find("repetition_penalty"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(r.sampling.repetition_penalty,
                           GetFloat(*it, "repetition_penalty", 0, 1e6, true, "a number > 0"));
  }
  if (Status s = r.sampling.Validate(); !s.ok()) {
    return s.error().WithContext("sampling settings (with generation_config.json's defaults)");
  }

  r.max_tokens = defaults.generation.max_new_tokens.value_or(kBatchDefaultMaxTokens);
  if (auto it = j.find("max_tokens"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(
        r.max_tokens,
        GetInt(*it, "max_tokens", 1, std::numeric_limits<std::int32_t>::max(), "an integer >= 1"));
  }
  if (auto it = j.find("stop"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(r.stop, GetStop(*it));
  }
  if (line->function_calling) r.stop_ids = defaults.function_stop_ids;

  int constraints = 0;
  if (auto it = j.find("json_schema"); it != j.end()) {
    if (!it->is_object() && !it->is_boolean()) {
      return FieldError("json_schema", "a JSON Schema (an object or a boolean)", *it);
    }
    r.json_schema = *it;
    ++constraints;
  }
  if (auto it = j.find("regex"); it != j.end()) {
    if (!it->is_string()) return FieldError("regex", "a string", *it);
    r.regex = it->get<std::string>();
    if (r.regex.empty()) return Error("field 'regex': empty");
    ++constraints;
  }
  if (auto it = j.find("constrain_tools"); it != j.end()) {
    if (!it->is_boolean()) return FieldError("constrain_tools", "a boolean", *it);
    r.constrain_tools = it->get<bool>();
    if (r.constrain_tools) {
      if (r.tools.empty()) return Error("field 'constrain_tools': needs 'tools'");
      ++constraints;
    }
  }
  if (constraints > 1) {
    return Error(
        "more than one constraint: give at most one of json_schema, regex and "
        "constrain_tools");
  }
  if (auto it = j.find("priority"); it != j.end()) {
    FGNET_ASSIGN_OR_RETURN(const std::int64_t p,
                           GetInt(*it, "priority", std::numeric_limits<std::int32_t>::min(),
                                  std::numeric_limits<std::int32_t>::max(), "a 32-bit integer"));
    r.priority = static_cast<std::int32_t>(p);
  }
  return Ok();
}

// The line's id as it was given (a string or an integer).
OrderedJson IdJson(const Json& id) {
  if (id.is_string()) return id.get<std::string>();
  if (id.is_number_unsigned()) return id.get<std::uint64_t>();
  return id.get<std::int64_t>();
}

std::string LinePrefix(std::int64_t line_number) { return "line " + std::to_string(line_number); }

}  // namespace

const std::vector<std::string>& BatchRequestFields() {
  static const std::vector<std::string> fields = {"id",
                                                  "prompt",
                                                  "messages",
                                                  "prompt_ids",
                                                  "tools",
                                                  "adapters",
                                                  "max_tokens",
                                                  "temperature",
                                                  "top_p",
                                                  "top_k",
                                                  "min_p",
                                                  "repetition_penalty",
                                                  "seed",
                                                  "stop",
                                                  "json_schema",
                                                  "regex",
                                                  "constrain_tools",
                                                  "priority"};
  return fields;
}

BatchLine ParseBatchLine(std::string_view text, std::int64_t line_number,
                         const BatchDefaults& defaults) {
  BatchLine line;
  line.line_number = line_number;
  const std::string where = LinePrefix(line_number);
  auto parsed = ParseJson(text, where);
  if (!parsed.ok()) {
    line.error = parsed.error();
    return line;
  }
  const Json& j = *parsed;
  if (!j.is_object()) {
    line.error = MakeError(where, ": expected a JSON object, got ", Describe(j));
    return line;
  }
  if (auto it = j.find("id"); it != j.end()) {
    if (it->is_string() || it->is_number_integer()) {
      line.id = *it;
    } else {
      line.error = FieldError("id", "a string or an integer", *it).WithContext(where);
      return line;
    }
  }
  if (Status s = FillRequest(j, defaults, &line); !s.ok()) {
    line.error = s.error().WithContext(where);
    line.request = Request{};
  }
  return line;
}

std::vector<BatchLine> ParseBatchRequests(std::istream& in, const BatchDefaults& defaults) {
  std::vector<BatchLine> lines;
  std::int64_t number = 0;
  for (std::string text; std::getline(in, text);) {
    ++number;
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    lines.push_back(ParseBatchLine(text, number, defaults));
  }
  return lines;
}

OrderedJson BatchErrorJson(const BatchLine& line) {
  OrderedJson out = OrderedJson::object();
  if (line.id) out["id"] = IdJson(*line.id);
  out["error"] = line.error ? line.error->message() : std::string("unknown error");
  return out;
}

OrderedJson BatchResultJson(const BatchLine& line, const Completion& c) {
  OrderedJson out = OrderedJson::object();
  if (line.id) out["id"] = IdJson(*line.id);
  if (!c.status.ok() || c.finish_reason == "error") {
    const std::string message =
        c.status.ok() ? std::string("the request failed") : c.status.error().message();
    out["error"] = LinePrefix(line.line_number) + ": " + message;
    return out;
  }
  out["ids"] = c.ids;
  out["text"] = c.text;
  out["finish_reason"] = c.finish_reason;
  out["usage"] = {{"prompt_tokens", c.usage.prompt_tokens},
                  {"completion_tokens", c.usage.completion_tokens},
                  {"cached_tokens", c.usage.cached_tokens}};
  out["timings"] = {{"queue_ms", c.timings.queue_ms},
                    {"time_to_first_token_ms", c.timings.time_to_first_token_ms},
                    {"total_ms", c.timings.total_ms},
                    {"time_per_output_token_ms", c.timings.time_per_output_token_ms}};
  if (c.preemptions > 0) out["preemptions"] = c.preemptions;
  if (c.prefix_approximate) out["prefix_approximate"] = true;
  if (line.function_calling) {
    auto parsed = ParseModelOutput(c.text);
    if (parsed.ok()) {
      out["function_calls"] = OrderedJson::parse(FunctionCallsToJson(parsed->calls).dump());
    } else {
      out["function_call_error"] = parsed.error().message();
    }
  }
  return out;
}

}  // namespace fgnet::cli
