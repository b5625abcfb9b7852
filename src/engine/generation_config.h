// generation_config.json, the sampling defaults a Hugging Face checkpoint ships with.
// Keys read (others are ignored), with the defaults of transformers' GenerationConfig when a key
// is absent or null, or when the file does not exist:
//   do_sample            bool                      false
//   temperature          number >= 0               1.0
//   top_k                integer >= 0              50    (0 disables)
//   top_p                number in (0, 1]          1.0
//   min_p                number in [0, 1]          0     (disabled)
//   repetition_penalty   number > 0                1.0
//   max_new_tokens       integer >= 0              unset
//   max_length           integer >= 0              20    (prompt + new tokens; used when
//                                                          max_new_tokens is unset)
//   eos_token_id         integer or list of them   none
//   bos_token_id         integer                   none
//   pad_token_id         integer                   none
// FunctionGemma-270M-it ships do_sample true, top_k 64, top_p 0.95, eos [1, 106], bos 2, pad 0.
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet {

struct GenerationConfig {
  bool do_sample = false;
  float temperature = 1.0f;
  std::int32_t top_k = 50;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  std::optional<std::int64_t> max_new_tokens;
  std::int64_t max_length = 20;
  std::vector<std::int32_t> eos_token_ids;
  std::optional<std::int32_t> bos_token_id;
  std::optional<std::int32_t> pad_token_id;
  bool from_file = false;  // false when built from defaults because the file was missing

  // The sampling parameters of this config with a per-request seed.
  SamplingParams ToSamplingParams(std::uint64_t seed) const;
  // max_new_tokens if set, else max(0, max_length - prompt_length).
  std::int64_t MaxNewTokens(std::int64_t prompt_length) const;
};

// Reads the config from parsed JSON; `source` names the file in errors, e.g.
// "generation_config.json: key 'top_p': expected a number in (0, 1], got 1.5".
Result<GenerationConfig> ParseGenerationConfig(const Json& json, std::string_view source);

// `path` is a generation_config.json or a directory holding one. A missing file gives the
// defaults (from_file false); an unreadable or invalid one is an error naming it.
Result<GenerationConfig> LoadGenerationConfig(const std::string& path);

}  // namespace fgnet
