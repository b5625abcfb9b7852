// Merging LoRA adapters, always in delta space: the update of module m of layer l by adapter i is
// delta_i = scale_i * B_i A_i ([out, in], f32), and adapters are combined through these deltas
// (never by averaging the A and B matrices separately, whose product is not the average of the
// products).
//
//   ConcatAdapters         an exact low-rank adapter whose delta is sum_i w_i * delta_i
//   WriteMergedCheckpoint  W' = W + merge(w_i, delta_i) written as a new Hugging Face checkpoint
//
// Merge methods (per module, over the adapters that adapt it; the others count as zero deltas):
//   kLinear  sum_i w_i * delta_i
//   kConcat  the same through ConcatAdapters (exact; equal to kLinear up to rounding)
//   kTies    TIES-merging as peft.utils.merge_utils.ties: trim each delta_i to its
//            k = floor(density * out * in) largest magnitudes (density >= 1: no trim; equal
//            magnitudes at the cut are kept in index order), elect per element the sign of the sum
//            of the trimmed, unweighted deltas (a sum >= 0 elects +), and take the sum of w_i * t_i
//            over the trimmed values t_i of the elected sign divided by their count (zeros never
//            count; 0 when none)
//   kDare    DARE as peft's dare_linear: keep each element of each delta_i with probability
//            `density`, divide the kept ones by `density`, and sum w_i * (the result); the draws
//            come from Philox(seed, stream = i * 2^32 + layer * 8 + module), so a seed gives the
//            same checkpoint on every run and thread count
// Activated LoRA (aLoRA) adapters are refused: merged, they would apply at every position instead
// of only from their invocation sequence on.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/checkpoint.h"
#include "model/config.h"
#include "model/lora.h"
#include "tensor/dtype.h"
#include "util/status.h"

namespace fgnet {

// (adapter, weight w_i) pairs.
using WeightedAdapters = std::span<const std::pair<const LoraAdapter*, float>>;

// The exact concatenation: per module, rank = the sum of the ranks of the adapters that adapt it,
// A = the A_i stacked ([sum r_i, in]), B = the B_i side by side ([out, sum r_i]) with each
// adapter's w_i * scale_i folded into its columns, and scale 1. name = the names joined by "+",
// format "in-memory". Errors: no adapters, a null adapter, an aLoRA adapter, an adapter that does
// not fit `base` (ValidateLoraAdapter).
Result<LoraAdapter> ConcatAdapters(WeightedAdapters weighted, const Gemma3Config& base);

struct MergeOptions {
  enum class Method : std::uint8_t { kLinear, kTies, kDare, kConcat };
  Method method = Method::kLinear;
  double density = 1.0;    // TIES / DARE: the fraction kept, in (0, 1]
  std::uint64_t seed = 0;  // DARE
  // The dtype of every written tensor; nullopt: each keeps its own (merged projections keep the
  // base weight's dtype).
  std::optional<DType> out_dtype;
};

// "linear", "ties", "dare", "concat".
std::string_view MergeMethodName(MergeOptions::Method method);
std::optional<MergeOptions::Method> ParseMergeMethod(std::string_view name);

// The merged update of module `module` of layer `layer`: [out, in] f32, row-major, as
// WriteMergedCheckpoint adds it to the base weight. Errors as WriteMergedCheckpoint's for the
// adapters and options.
Result<std::vector<float>> MergedModuleDelta(WeightedAdapters adapters, std::size_t layer,
                                             LoraModule module, const Gemma3Config& base,
                                             const MergeOptions& options);

// Writes base + merged adapters into `out_dir` (created if needed; not the base's directory):
// model.safetensors with every tensor of the base under its own name (the seven projections of
// each layer merged, in f32 then converted to the output dtype), config.json (the base's,
// with its dtype / torch_dtype keys updated when out_dtype is set), and tokenizer.json,
// tokenizer_config.json and generation_config.json copied when the base has them.
// Errors: a quantized base or one whose norms include the +1 (GGUF), no adapters, a null or aLoRA
// adapter, an adapter that does not fit the base, density outside (0, 1] for TIES / DARE, a
// quantized out_dtype, I/O failures naming the path.
Status WriteMergedCheckpoint(const Checkpoint& base, WeightedAdapters adapters,
                             const MergeOptions& options, const std::string& out_dir);

}  // namespace fgnet
