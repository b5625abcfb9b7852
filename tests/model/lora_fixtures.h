// Test helpers for the LoRA fixtures made by tools/make_lora_fixtures.py (tests/fixtures/lora/):
// each <name>/fixture.json names its base (relative to tests/fixtures), the prompt ids and the
// reference logits files; see tools/README.md.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "util/json.h"
#include "util/npy.h"
#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet::testing {

inline std::string LoraFixtureDir(const std::string& name) {
  return std::string(FGNET_TEST_DATA_DIR) + "/lora/" + name;
}

inline std::string TestDataPath(const std::string& relative) {
  return std::string(FGNET_TEST_DATA_DIR) + "/" + relative;
}

inline Json LoadFixtureJson(const std::string& name) {
  auto json = ReadJsonFile(LoraFixtureDir(name) + "/fixture.json");
  FGNET_CHECK(json.ok());
  return std::move(json).value();
}

inline std::vector<std::int32_t> Ids(const Json& array) {
  std::vector<std::int32_t> ids;
  for (const Json& v : array) ids.push_back(v.get<std::int32_t>());
  return ids;
}

// A [rows, cols] float32 .npy file.
inline std::vector<float> ReadLogits(const std::string& path, std::int64_t rows,
                                     std::int64_t cols) {
  auto array = ReadNpy(path);
  FGNET_CHECK(array.ok());
  FGNET_CHECK(array->shape == (std::vector<std::int64_t>{rows, cols}));
  auto values = array->AsFloat32();
  FGNET_CHECK(values.ok());
  return std::move(values).value();
}

inline double MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  FGNET_CHECK_EQ(a.size(), b.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!(d <= worst)) worst = d;  // NaN wins
  }
  return worst;
}

// Logits at every position of `ids` from the checkpoint in `dir`.
inline Result<std::vector<float>> CheckpointLogits(const std::string& dir,
                                                   std::span<const std::int32_t> ids) {
  FGNET_ASSIGN_OR_RETURN(const Checkpoint checkpoint, Checkpoint::Open(dir));
  FGNET_ASSIGN_OR_RETURN(const Gemma3Model model,
                         Gemma3Model::Create(checkpoint.config(), checkpoint.weights()));
  KVCache kv = model.NewKVCache(static_cast<std::int64_t>(ids.size()));
  ThreadPool pool(2);
  std::vector<float> logits;
  FGNET_TRY(model.Forward(ids, kv, pool, LogitsMode::kAll, &logits));
  return logits;
}

}  // namespace fgnet::testing
