// Published model shapes, and random-weight checkpoints of those shapes for benchmarks and tests
// (`fgnet synth`). No real weights are needed to measure speed: the cost of a forward pass depends
// only on the shapes and dtypes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "model/config.h"
#include "model/lora.h"
#include "tensor/dtype.h"
#include "util/status.h"

namespace fgnet {

// The config of Gemma 3 270M (and FunctionGemma 270M, which shares its architecture), as published
// in its config.json. See shared reference: hidden 640, 18 layers, 4 heads / 1 kv head of 256,
// vocab 262144, window 512, every 6th layer global.
Gemma3Config Gemma3_270MConfig();

// Looks up a preset by name: "gemma-3-270m" or "functiongemma-270m".
std::optional<Gemma3Config> FindPresetConfig(std::string_view name);

struct SynthOptions {
  DType dtype = DType::kBF16;
  std::uint64_t seed = 0;
  // Standard deviation of the linear and embedding weights; norm weights are drawn with
  // norm_stddev around 0 so that (1 + w) is exercised.
  float weight_stddev = 0.02f;
  float norm_stddev = 0.1f;
};

// Writes config.json and model.safetensors of random weights for `config` into `dir` (created if
// needed). The same options give the same bytes. Returns the number of bytes of weights written.
Result<std::uint64_t> WriteRandomCheckpoint(const Gemma3Config& config, const SynthOptions& options,
                                            const std::string& dir);

// A random LoRA adapter of rank `rank` on all seven projections of every layer (A and B drawn
// with `stddev`, scale 1), named `name`: for benchmarks of run-time adapters.
LoraAdapter RandomLoraAdapter(const Gemma3Config& config, std::size_t rank, std::uint64_t seed,
                              std::string name, float stddev = 0.02f);

}  // namespace fgnet
