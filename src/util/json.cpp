#include "util/json.h"

#include "util/mapped_file.h"

namespace fgnet {

Result<Json> ParseJson(std::string_view text, std::string_view source) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    return MakeError(source, ": invalid JSON at byte ", e.byte, ": ", e.what());
  }
}

Result<Json> ReadJsonFile(const std::string& path) {
  FGNET_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseJson(text, path);
}

}  // namespace fgnet
