// The RDRR manifest (see model/rdrr.h for the format) as the reader and the writer of packages
// share it: its constants, its parsed and checked form, and helpers for names and JSON paths.
// Internal to the model layer. Thread-safety: pure functions and plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/lora.h"
#include "tensor/dtype.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::rdrr {

inline constexpr std::uint64_t kAlignment = 4096;
inline constexpr std::string_view kManifestName = "manifest.json";
inline constexpr std::string_view kVersion = "1.0";
inline constexpr std::string_view kArchitecture = "gemma3";
inline constexpr std::string_view kHashAlgorithm = "sha256";
// Manifests past this size are refused as corrupt (a real model's is well under 1 MiB).
inline constexpr std::uint64_t kMaxManifestBytes = std::uint64_t{64} << 20;

// One contiguous piece of a tensor's bytes inside a shard.
struct Span {
  std::size_t shard = 0;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

struct TensorEntry {
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::uint64_t size = 0;  // bytes, as shape and dtype imply
  std::string role;
  std::vector<Span> spans;  // at least one; in order, summing to `size`
};

// A shard or a side file.
struct FileEntry {
  std::string file_name;
  std::uint64_t size = 0;
  std::string hash;  // SHA-256, 64 lowercase hex digits
};

// Which module an adapter tensor ("layers.N.<module>.lora_A" / "lora_B") belongs to.
struct AdapterTensorName {
  std::size_t layer = 0;
  LoraModule module = LoraModule::kQ;
  bool is_b = false;
};

struct ModuleEntry {
  std::size_t rank = 0;
  float scale = 0.0f;
};

struct Manifest {
  std::string model_id;
  bool is_lora = false;
  std::string quantization;
  std::vector<FileEntry> shards;
  std::map<std::string, TensorEntry> tensors;
  std::string content_hash;
  // modelType "base"
  Gemma3Config config;
  std::vector<FileEntry> files;
  bool norms_include_one = false;
  // modelType "lora"
  LoraAdapterConfig lora_config;  // base_model_name_or_path = baseModel
  std::size_t num_layers = 0;
  std::string base_model_hash;
  std::map<std::pair<std::size_t, LoraModule>, ModuleEntry> modules;
};

// Checks every field of a parsed manifest.json (types, values, names, that tensor sizes match
// their shapes and dtypes and that tensors lie inside the shard sizes the manifest states without
// overlapping). `source` names the manifest in messages: "<source>: <json path>: <problem>".
// Nothing on disk is read.
Result<Manifest> ParseManifest(const Json& json, const std::string& source);

// The bytes a tensor of this dtype and shape holds (as TensorView::num_bytes()); an error
// message (without source or path) when the shape does not suit the dtype or is too large.
Result<std::uint64_t> TensorBytes(DType dtype, const std::vector<std::int64_t>& shape);

// The role of a base-model tensor, from its Hugging Face name.
std::string_view BaseTensorRole(std::string_view name);

// "layers.3.q_proj.lora_A" and back; "layers.3.q_proj" for the loraModules key.
std::string AdapterTensorKey(std::size_t layer, LoraModule module, bool is_b);
std::optional<AdapterTensorName> ParseAdapterTensorKey(std::string_view name);
std::string AdapterModuleKey(std::size_t layer, LoraModule module);

// "shard_00003.bin".
std::string ShardFileName(std::size_t index);

// A JSON path component: `key` as it is when it is an identifier, else JSON-quoted
// ("model.norm.weight" -> "\"model.norm.weight\""); cut with "..." past 200 bytes.
std::string JsonPathChild(const std::string& path, std::string_view key);

bool IsHexDigest(std::string_view text);
// A name without directory parts or control characters, other than "." and "..".
bool IsPlainFileName(std::string_view name);

}  // namespace fgnet::rdrr
