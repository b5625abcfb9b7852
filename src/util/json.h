// JSON values (nlohmann::json) plus helpers that turn parse failures and type mismatches into
// fgnet::Error messages that name the file and the JSON path of the problem.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "util/status.h"

namespace fgnet {

using Json = nlohmann::json;

// Parses text; the error names `source` (usually the file path) and the byte offset.
Result<Json> ParseJson(std::string_view text, std::string_view source);

// Reads and parses a JSON file.
Result<Json> ReadJsonFile(const std::string& path);

}  // namespace fgnet
