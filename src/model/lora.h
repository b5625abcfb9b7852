// LoRA adapters on a Gemma 3 base: low-rank updates of the seven linear projections of each
// layer, applied unmerged at run time as y = W x + s * B (A x) (see Gemma3Model::Forward) or
// merged into the weights (model/merge.h). Whatever format an adapter is read from (PEFT, GGUF,
// RDRR), it is held in this one form: f32 A and B per adapted module, with the module's own
// scale (lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA) folded in from the config.
//
// Activated LoRA (aLoRA): an adapter with invocation tokens applies only from the last
// occurrence of that token sequence onward (AloraStart); earlier positions compute exactly as
// the base model.
//
// Identity: an adapter is known internally by its content hash (LoraContentHash), never only by
// the name a user gave it.
// Thread-safety: a LoraAdapter is immutable once loaded and may be shared.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/config.h"
#include "util/status.h"

namespace fgnet {

enum class LoraModule : std::uint8_t { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr std::size_t kNumLoraModules = 7;
inline constexpr std::array<LoraModule, kNumLoraModules> kAllLoraModules = {
    LoraModule::kQ,    LoraModule::kK,  LoraModule::kV,   LoraModule::kO,
    LoraModule::kGate, LoraModule::kUp, LoraModule::kDown};

// "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj".
std::string_view LoraModuleName(LoraModule m);
std::optional<LoraModule> ParseLoraModuleName(std::string_view name);
// The Hugging Face path of the module inside a layer: "self_attn.q_proj", "mlp.down_proj".
std::string_view LoraModulePath(LoraModule m);
// {out_features, in_features} of the module's weight in a model of this config.
std::pair<std::int64_t, std::int64_t> LoraModuleShape(const Gemma3Config& config, LoraModule m);

// The update of one linear layer W [out, in]: delta(x) = scale * B (A x).
struct LoraLayer {
  std::size_t rank = 0;  // 0: the module is not adapted
  float scale = 0.0f;    // lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA
  std::vector<float> a;  // [rank, in], row-major
  std::vector<float> b;  // [out, rank], row-major

  bool active() const { return rank > 0; }
};

// What the adapter's config states, kept for display and for writing it out again.
struct LoraAdapterConfig {
  std::int64_t r = 0;
  double lora_alpha = 0.0;
  bool use_rslora = false;
  std::vector<std::string> target_modules;            // as stated ("q_proj", a regex, ...)
  std::vector<std::int32_t> alora_invocation_tokens;  // non-empty: an activated LoRA
  std::string base_model_name_or_path;
};

struct LoraAdapter {
  std::string name;    // what users call it (defaults to the file or directory name)
  std::string path;    // where it was loaded from
  std::string format;  // "peft", "gguf", "rdrr", or "in-memory"
  LoraAdapterConfig config;
  // Content hash of the base model it was made for, where the format records it (RDRR);
  // empty otherwise.
  std::string base_model_hash;
  // layers[l][m]: module m of layer l (inactive where not adapted); one entry per base layer.
  std::vector<std::array<LoraLayer, kNumLoraModules>> layers;
  // LoraContentHash(*this), set by every loader.
  std::string content_hash;

  bool is_activated() const { return !config.alora_invocation_tokens.empty(); }
  const LoraLayer& at(std::size_t layer, LoraModule m) const {
    return layers[layer][static_cast<std::size_t>(m)];
  }
  std::uint64_t num_parameters() const;
  // Bytes held in memory by the A and B matrices.
  std::uint64_t num_bytes() const { return num_parameters() * sizeof(float); }
  // Names of the adapted modules ("q_proj", ...), in module order, each once.
  std::vector<std::string> adapted_modules() const;
};

// SHA-256 (hex) over the adapter's canonical content: for every active module in (layer, module)
// order its layer, module, rank, scale and the f32 bits of A and B; then the invocation tokens.
// The same adapter read from PEFT, GGUF or RDRR hashes the same when its values are equal.
std::string LoraContentHash(const LoraAdapter& adapter);

// Checks an adapter against a base: one entry per layer, every active module's A [rank, in] and
// B [out, rank] sized for the base, finite scales. Errors name the adapter's path and module.
Status ValidateLoraAdapter(const LoraAdapter& adapter, const Gemma3Config& base);

// aLoRA: the position of the first token of the last occurrence of `invocation` in `tokens`, or
// nullopt when it does not occur (the adapter then applies nowhere). Empty `invocation`: 0.
std::optional<std::int64_t> AloraStart(std::span<const std::int32_t> tokens,
                                       std::span<const std::int32_t> invocation);

}  // namespace fgnet
