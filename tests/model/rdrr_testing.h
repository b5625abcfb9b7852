// Helpers of the RDRR tests: fixture paths and editing a package's manifest.json in place.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "tiny_checkpoint.h"
#include "util/json.h"

namespace fgnet::testing {

inline std::string ParityFixture(const std::string& name) {
  return std::string(FGNET_TEST_DATA_DIR) + "/parity/" + name;
}

inline Json ReadManifestJson(const std::string& package) {
  Result<Json> json = ReadJsonFile(package + "/manifest.json");
  FGNET_CHECK(json.ok());
  return std::move(json).value();
}

inline void WriteManifestJson(const std::string& package, const Json& json) {
  WriteFile(package + "/manifest.json", json.dump(2));
}

// Applies `edit` to the package's manifest.
inline void EditManifest(const std::string& package, const std::function<void(Json&)>& edit) {
  Json json = ReadManifestJson(package);
  edit(json);
  WriteManifestJson(package, json);
}

}  // namespace fgnet::testing
