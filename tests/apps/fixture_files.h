// Reading the committed LoRA fixtures from the apps tests: a fixture's prompt ids as a --ids
// argument, .npy logits, and the largest difference between two sets of logits.
#pragma once

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "util/json.h"
#include "util/npy.h"
#include "util/status.h"

namespace fgnet::cli::testing {

// The ids under `key` of a fixture.json, comma-separated.
inline std::string PromptIds(const std::string& fixture_json, const char* key = "prompt_ids") {
  auto json = ReadJsonFile(fixture_json);
  FGNET_CHECK(json.ok());
  std::ostringstream ids;
  for (const Json& id : (*json)[key]) {
    if (ids.tellp() > 0) ids << ',';
    ids << id.get<int>();
  }
  return ids.str();
}

// The values of a float32 .npy file.
inline std::vector<float> ReadFloats(const std::string& npy_path) {
  auto npy = ReadNpy(npy_path);
  FGNET_CHECK(npy.ok());
  auto values = npy->AsFloat32();
  FGNET_CHECK(values.ok());
  return *values;
}

// max |a - b|; infinity when the sizes differ.
inline double MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return worst;
}

inline double MaxDiff(const std::string& a_npy, const std::string& b_npy) {
  return MaxDiff(ReadFloats(a_npy), ReadFloats(b_npy));
}

}  // namespace fgnet::cli::testing
