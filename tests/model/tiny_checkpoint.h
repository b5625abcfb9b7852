// Test utilities: temporary directories, raw safetensors bytes, and tiny Gemma 3 checkpoints
// written with WriteSafetensors. Tensor values are deterministic (TinyValue) and exact in every
// dtype, so tests can check what the reader hands back.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/safetensors.h"
#include "tensor/tensor.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& bytes);
std::string ReadFile(const std::string& path);

// The 8-byte little-endian length `declared_length` (default: header.size()), then `header`,
// then `data`.
std::string RawSafetensors(const std::string& header, const std::string& data,
                           std::optional<std::uint64_t> declared_length = std::nullopt);

// Element i of a tensor as a float, widening BF16 / F16 exactly.
float ValueAt(const TensorView& view, std::int64_t i);

// The deterministic value of element i of tensor `name`: a multiple of 1/8 in [-4, 4), exact in
// F32, BF16 and F16.
float TinyValue(const std::string& name, std::int64_t i);

// Owned tensor data for WriteSafetensors.
class TensorStore {
 public:
  // Adds `name` with `shape`, filled with TinyValue(name, i) stored as `dtype`.
  void Add(const std::string& name, const std::vector<std::int64_t>& shape, DType dtype);
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // Entries whose names are in `names`.
  std::vector<SafetensorsEntry> Subset(const std::set<std::string>& names) const;

 private:
  std::vector<std::vector<std::uint8_t>> buffers_;
  std::vector<SafetensorsEntry> entries_;
};

// vocab 32, hidden 8, intermediate 16, 3 layers (sliding, sliding, full), 2 heads, 1 kv head,
// head_dim 4, sliding_window 4, query_pre_attn_scalar 4, tied embeddings.
Gemma3Config TinyConfig();

// Every tensor name (without prefix) and shape of a Gemma 3 text model with config `c`,
// including lm_head.weight when the embeddings are untied.
std::map<std::string, std::vector<std::int64_t>> TinyTensorShapes(const Gemma3Config& c);

struct TinyOptions {
  DType dtype = DType::kF32;
  // Prefix of the text model's tensors, and the name of the untied output matrix.
  std::string prefix = "model.";
  std::string lm_head = "lm_head.weight";
  // Write lm_head even when tied.
  bool force_lm_head = false;
  // Shards: 1 writes model.safetensors; more split the tensors round-robin and write an index.
  int num_shards = 1;
  // Tensor names (without prefix) to leave out, and shapes to override.
  std::set<std::string> omit;
  std::map<std::string, std::vector<std::int64_t>> shapes;
  // Further tensors (full names), e.g. a vision tower.
  std::map<std::string, std::vector<std::int64_t>> extra;
  // Written as config.json instead of Gemma3ConfigToJson(weights_config).
  std::optional<Json> config_json;
};

// Writes config.json and the weights of `weights_config` into `dir`.
Status WriteTinyCheckpoint(const std::string& dir, const Gemma3Config& weights_config,
                           const TinyOptions& options = {});

}  // namespace fgnet::testing
