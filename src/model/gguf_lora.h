// LoRA adapters in GGUF files, as llama.cpp writes them (convert_lora_to_gguf.py) and reads them
// (llama-adapter.cpp):
//   general.architecture  "gemma3" (the base model's architecture)
//   general.type          "adapter"
//   adapter.type          "lora"
//   adapter.lora.alpha    f32; the scale of every module is alpha / rank, with rank the
//                         module's own (from its tensors); alpha 0 or absent means scale 1
//   adapter.alora.invocation_tokens   optional u32 array: an activated LoRA
// and per adapted module a pair of tensors named after the base tensor:
//   blk.N.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down>.weight.lora_a
//       ggml dims [in, rank] -> A [rank, in] (outermost first)
//   blk.N.<...>.weight.lora_b
//       ggml dims [rank, out] -> B [out, rank]
// so that delta(x) = alpha / rank * B (A x), as PEFT computes it. Tensors may be of any type
// GgufFile reads (F32, F16, BF16, and Q8_0 as convert_lora_to_gguf.py --outtype q8_0 writes, or
// another quantized type), and are held as f32 (quantized blocks dequantized). Tensors ending in
// "_norm.weight" are skipped, as llama.cpp does; any other tensor, or one adapting something other
// than the seven linear projections of a layer (token_embd, output), is an error. fgnet also writes
// and reads fgnet.lora.base_model_hash (the base's content hash, when known). Thread-safety: pure
// functions.
#pragma once

#include <string>

#include "model/config.h"
#include "model/lora.h"
#include "util/status.h"

namespace fgnet {

// Loads a GGUF LoRA adapter for `base`: format "gguf", path, name = the file name without its
// extension, content_hash = LoraContentHash; its config records r (the largest rank), lora_alpha
// (GGUF's alpha; use_rslora stays false, GGUF having no such flag: the scales say it all), the
// adapted modules and the invocation tokens. Errors (naming the file, and the tensor or key):
// not an adapter, another architecture or adapter type, an unpaired lora_a or lora_b, an
// unexpected tensor, ranks or shapes that disagree with each other or with the base, a layer
// past the base's last, and ValidateLoraAdapter's.
Result<LoraAdapter> LoadGgufAdapter(const std::string& path, const Gemma3Config& base);

// Writes `adapter` as llama.cpp reads it, with f32 tensors (and general.name = adapter.name).
// GGUF holds a single alpha, from which llama.cpp derives each module's scale as alpha / rank:
// alpha is chosen to give as many modules as possible exactly their scale, and for every other
// module (rsLoRA adapters with several ranks, per-module scales) the ratio of its scale to
// alpha / rank is folded into B, so that scale * B is kept to f32 rounding though B itself
// changes. An adapter whose modules all share one scale * rank (plain LoRA, or rsLoRA with one
// rank) round-trips bit for bit, content hash included, whenever an f32 alpha gives
// alpha / rank == scale exactly (as it does for the usual alphas and ranks). Errors: negative
// invocation tokens, non-finite scales, a scale that folding would overflow, I/O (naming
// `path`).
Status WriteGgufAdapter(const LoraAdapter& adapter, const std::string& path);

}  // namespace fgnet
