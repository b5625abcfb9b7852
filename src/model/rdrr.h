// RDRR packages: a directory holding manifest.json and shard files (shard_00000.bin, ...) of at
// most max_shard_bytes each, into which tensors are packed at 4096-byte-aligned offsets. A package
// holds either a base model (modelType "base") or a LoRA adapter (modelType "lora").
//
// manifest.json (keys camelCase):
//   version "1.0", modelId, modelType "base" | "lora", architecture "gemma3", quantization
//   ("none" or the checkpoint's quantization, e.g. "q8_0"), hashAlgorithm "sha256",
//   shards [{index, fileName, size, hash}] (hash: SHA-256 hex of the whole file),
//   tensors {name: {shard, offset, size, shape, dtype, role[, spans]}}:
//     dtype as DTypeName() ("F32", "BF16", "Q8_0", ...); size = the bytes shape and dtype imply;
//     role one of "embedding", "norm", "attention", "mlp", "lm_head", "other" (base) or
//     "lora_a", "lora_b" (adapter). A tensor larger than a shard is split over consecutive
//     shards: "spans" [{shard, offset, size}, ...] lists its pieces in order (the first piece is
//     also given by shard/offset); every piece but the last fills its shard to the limit, so
//     every piece is a whole number of 4096-byte pages and the pieces are mapped back to back
//     into one contiguous view (copied instead where the system's pages are larger).
//   base only: eosTokenIds (the config's), config (Gemma3ConfigToJson), contentHash
//     (Checkpoint::content_hash() of the source), files [{fileName, size, hash}] for the copied
//     side files (tokenizer.json, tokenizer_config.json, generation_config.json), and
//     normsIncludeOne (true only for weights whose norms store 1 + w, as GGUF does).
//   lora only: adapterType "lora", baseModel (an id), baseModelHash (the base's content hash),
//     contentHash (LoraContentHash), loraConfig {rank, alpha, targetModules, useRslora,
//     numLayers[, invocationTokens]} and loraModules {"layers.N.q_proj": {rank, scale}} (each
//     adapted module's own rank and folded scale, so rank_pattern / alpha_pattern adapters keep
//     their values exactly). Tensors are "layers.N.<module>.lora_A" [rank, in] and
//     "layers.N.<module>.lora_B" [out, rank].
//
// Opening checks every field's type and value (errors are one line naming manifest.json and the
// JSON path: `manifest.json: tensors."model.norm.weight".offset: 4097 is not 4096-aligned`), each
// shard's and side file's size and SHA-256, that every tensor lies inside its shard without
// overlapping another and that its size matches its shape and dtype. Unknown keys are ignored.
// Thread-safety: the functions are reentrant; what they return is immutable.
#pragma once

#include <cstdint>
#include <string>

#include "model/checkpoint.h"
#include "model/config.h"
#include "model/lora.h"
#include "util/status.h"

namespace fgnet {

struct RdrrWriteOptions {
  // The package's modelId; empty: the last component of the directory path.
  std::string model_id;
  // The largest shard file; a positive multiple of 4096.
  std::uint64_t max_shard_bytes = std::uint64_t{64} << 20;
};

// Writes every tensor of ck.tensors() (float or quantized) under its Hugging Face name, plus the
// checkpoint's side files, as an RDRR package at `dir`. The package is assembled under a
// temporary name next to `dir` and renamed into place at the end, so a failed write leaves no
// half package (and an existing package at `dir` stays intact). `dir` may be absent, an empty
// directory or an RDRR package (which is replaced); any other existing path is refused. The
// output is deterministic: the same checkpoint and options give the same bytes.
Status WriteRdrrModel(const Checkpoint& ck, const std::string& dir,
                      const RdrrWriteOptions& options = {});

// Opens a base-model package: verifies the manifest, the shards and the side files (see the top
// comment), maps the shards (zero-copy) and binds the tensors with Checkpoint::FromTensors
// (format kRdrr; content_hash and quantization from the manifest; side files looked up in
// `dir`). A "lora" package is refused.
Result<Checkpoint> OpenRdrrCheckpoint(const std::string& dir);

struct RdrrAdapterInfo {
  std::string model_id;         // empty: the adapter's name
  std::string base_model_id;    // empty: the adapter's config.base_model_name_or_path
  std::string base_model_hash;  // the base's Checkpoint::content_hash(); required
};

// Writes an adapter as a "lora" package at `dir` (F32 tensors, default shard size), with the
// same replacement rules as WriteRdrrModel. Errors: a module whose A or B size is not a multiple
// of its rank, a base_model_hash that is not 64 hex digits, I/O failures.
Status WriteRdrrAdapter(const LoraAdapter& adapter, const std::string& dir,
                        const RdrrAdapterInfo& info);

// Loads a "lora" package for a base with config `base`: the same verification as
// OpenRdrrCheckpoint, then refuses a "base" package, an adapter whose baseModelHash differs from
// `base_content_hash` ("built for base <hash> but the model is <hash>"; an empty
// `base_content_hash` skips this check), tensors whose shapes do not fit the base, and a
// contentHash that differs from the LoraContentHash of the values read. The adapter has format
// "rdrr", name = modelId, path = `dir` and base_model_hash from the manifest, and passes
// ValidateLoraAdapter. F16 and BF16 tensors are widened exactly to f32.
Result<LoraAdapter> LoadRdrrAdapter(const std::string& dir, const Gemma3Config& base,
                                    const std::string& base_content_hash);

// Whether `path` is a directory holding manifest.json (nothing else is checked).
bool IsRdrrPackage(const std::string& path);

}  // namespace fgnet
