// Safetensors files: an 8-byte little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets}, then the data. Files are memory-mapped and tensors are zero-copy
// views. Every header is checked: its length, its JSON, each dtype, that each shape matches its
// byte range, that ranges lie inside the file, and that no two ranges overlap. Every error is one
// line naming the file (and the tensor) and the problem.
// Thread-safety: immutable after Open(); move-only (views stay valid across moves).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"
#include "util/json.h"
#include "util/mapped_file.h"
#include "util/status.h"

namespace fgnet {

// Headers longer than this are rejected as corrupt (the reference implementation's limit).
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

class SafetensorsFile {
 public:
  // Maps and validates `path`. Supported dtypes: F32, BF16, F16; any other is an error naming the
  // tensor and the dtype. A tensor whose data is not aligned to its element size is copied into
  // owned, aligned storage (see num_realigned()); every other tensor views the mapping.
  static Result<SafetensorsFile> Open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return file_.path(); }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensors copied because their data was misaligned in the file.
  std::size_t num_realigned() const { return realigned_.size(); }

 private:
  SafetensorsFile() = default;

  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::unique_ptr<std::uint64_t[]>> realigned_;
};

// One or more safetensors files seen as one set of named tensors: a single model.safetensors, or
// the shards listed by model.safetensors.index.json (each tensor in the shard the index names).
// Thread-safety: immutable after opening; move-only.
class SafetensorsSet {
 public:
  // `dir` holds model.safetensors or model.safetensors.index.json (model.safetensors wins when
  // both exist, as in transformers). The index must be {"weight_map": {tensor: shard file}}: each
  // shard must exist in `dir`, hold exactly the tensors the index maps to it, and no tensor may
  // be in two shards.
  static Result<SafetensorsSet> OpenDirectory(const std::string& dir);
  // Opens the given files as one set; a tensor name in two files is an error.
  static Result<SafetensorsSet> OpenFiles(const std::vector<std::string>& paths);

  SafetensorsSet(SafetensorsSet&&) noexcept = default;
  SafetensorsSet& operator=(SafetensorsSet&&) noexcept = default;
  SafetensorsSet(const SafetensorsSet&) = delete;
  SafetensorsSet& operator=(const SafetensorsSet&) = delete;

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  // The file a tensor lives in (for error messages); empty when absent.
  const std::string& FileOf(const std::string& name) const;
  // What the set was opened from: model.safetensors, the index, or the first file.
  const std::string& source() const { return source_; }
  const std::map<std::string, TensorView>& all() const { return all_; }
  std::size_t num_files() const { return files_.size(); }
  const SafetensorsFile& file(std::size_t i) const { return files_[i]; }
  // Bytes of tensor data over all tensors.
  std::uint64_t total_bytes() const;
  // Elements over all tensors.
  std::uint64_t total_elements() const;
  // Bytes of tensor data per dtype.
  std::map<DType, std::uint64_t> BytesByDType() const;

 private:
  SafetensorsSet() = default;
  Status Add(SafetensorsFile file);

  std::string source_;
  std::string no_file_;  // returned by FileOf() for unknown names
  std::vector<SafetensorsFile> files_;
  std::map<std::string, TensorView> all_;
  std::map<std::string, std::size_t> file_index_;
};

struct SafetensorsEntry {
  std::string name;
  TensorView tensor;
};

// Writes a safetensors file readable by the reference implementation: the header is padded with
// spaces to a multiple of 8 bytes and the data is contiguous, F32 tensors first and then the
// 2-byte ones (each group in the given order), so every tensor is aligned to its element size.
// The file is written under a temporary name and renamed into place. Errors: duplicate or
// reserved names ("__metadata__"), a tensor without data, I/O failures (naming `path`).
Status WriteSafetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                        const std::map<std::string, std::string>& metadata = {});

// Writes model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {...}}.
Status WriteSafetensorsIndex(const std::string& path,
                             const std::map<std::string, std::string>& weight_map,
                             std::uint64_t total_size);

}  // namespace fgnet
