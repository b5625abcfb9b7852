// PEFT LoRA adapters: the directories peft's save_pretrained writes (adapter_config.json and
// adapter_model.safetensors), read into a LoraAdapter and written back. The rules follow peft
// 0.21; tools/README.md records how each was verified against peft itself.
//
// adapter_config.json, the keys that matter:
//   peft_type            must be "LORA"
//   r, lora_alpha        default rank and alpha (peft's defaults 8 and 8 when absent)
//   use_rslora           scale alpha / sqrt(r) instead of alpha / r
//   target_modules       a list: a module key equal to an entry or ending in "." + entry;
//                        a string: a regex that must match the whole module key
//                        ("model.layers.3.self_attn.q_proj"); "all-linear": every projection
//   layers_to_transform  an int or a list (list targets only), the layer index found as peft
//                        finds it, with layers_pattern when given
//   exclude_modules      a regex string or a list, as targets; excluded modules win
//   rank_pattern,        per-module rank and alpha: the first key, in file order, such that
//   alpha_pattern        "(.*\.)?(KEY)" matches the whole module key (KEY is a regex)
//   alora_invocation_tokens  activated LoRA (see lora.h, AloraStart)
//   base_model_name_or_path  kept in the adapter's config
// adapter_model.safetensors: "base_model.model.<key>.lora_A.weight" [r, in] and
// "base_model.model.<key>.lora_B.weight" [out, r] in F32, BF16 or F16 (widened to f32), where
// <key> is "<prefix>layers.N.self_attn.{q,k,v,o}_proj" or
// "<prefix>layers.N.mlp.{gate,up,down}_proj" and <prefix> is "model." (Gemma3ForCausalLM),
// "model.language_model." (Gemma3ForConditionalGeneration under transformers 5.x) or
// "language_model.model." (its older layout), one prefix per adapter. LoRA tensors of a multimodal
// model's vision tower or projector
// ("model.vision_tower.", "vision_tower.", "model.multi_modal_projector.",
// "multi_modal_projector.") are skipped: fgnet runs the text model only, on which they have no
// effect.
//
// The tensors and the config must agree: every module that has tensors must be selected by
// target_modules (when it is stated) and every selected projection must have both tensors, with
// the rank the config gives it. Rejected, each with a one-line error naming the file and the key
// or tensor: adapter_model.bin only (not supported), a peft_type other than LORA, use_dora,
// use_qalora, lora_bias, fan_in_fan_out, non-empty modules_to_save or target_parameters,
// trainable_token_indices, layer_replication, other LoRA variants (use_bdlora, arrow, velora,
// kasa, monteclora), bias other than "none", LoRA on any other module (embed_tokens, lm_head,
// norms), a missing lora_A or lora_B, a shape that does not fit the base (naming the tensor, its
// shape and the base's dims), a layer index past the base's layers, a rank that disagrees with
// the config, invocation tokens outside the vocabulary, and any unknown tensor.
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "model/config.h"
#include "model/lora.h"
#include "util/status.h"

namespace fgnet {

// Reads the adapter in `dir` for a model of config `base`. The result has name = the
// directory's name, path = dir, format "peft", its config, content_hash set, and has passed
// ValidateLoraAdapter.
Result<LoraAdapter> LoadPeftAdapter(const std::string& dir, const Gemma3Config& base);

// Writes `adapter` into `dir` (created if needed) as a PEFT adapter that peft loads onto a
// Gemma3ForCausalLM base: f32 tensors named "base_model.model.model.layers.N...", and an
// adapter_config.json with the most common rank and alpha as r / lora_alpha (alpha = scale * rank,
// use_rslora false), rank_pattern / alpha_pattern entries "layers.N.self_attn.q_proj" for the
// other modules, and target_modules naming exactly the adapted modules (a list of names when
// every layer adapts the same ones, otherwise a regex). Errors: an adapter with no active module,
// I/O failures naming the path.
Status WritePeftAdapter(const LoraAdapter& adapter, const std::string& dir);

// peft's rank_pattern / alpha_pattern rule for one key: whether "(.*\.)?(pattern_key)" matches
// all of `module_key`. Error: `pattern_key` is not a valid regex.
Result<bool> PeftPatternKeyMatches(const std::string& pattern_key, const std::string& module_key);

// Whether an adapter_config.json (its text) selects the module `module_key`
// ("model.layers.3.self_attn.q_proj") through target_modules, layers_to_transform /
// layers_pattern and exclude_modules, as peft's check_target_module_exists decides; true when
// target_modules is absent. Errors: the config's (as LoadPeftAdapter reports them).
Result<bool> PeftConfigSelects(const std::string& adapter_config_json,
                               const std::string& module_key);

}  // namespace fgnet
