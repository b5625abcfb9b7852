// Safetensors files: an 8-byte little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets}, then the data. Files are memory-mapped and tensors are zero-copy
// views. Every header is checked: its length, its JSON, each dtype, that each shape matches its
// byte range, that ranges lie inside the file, and that no two ranges overlap.
// Thread-safety: immutable after Open(); move-only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tensor/tensor.h"
#include "util/json.h"
#include "util/mapped_file.h"
#include "util/status.h"

namespace fgnet {

class SafetensorsFile {
 public:
  static Result<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One or more safetensors files seen as one set of named tensors: a single model.safetensors, or
// the shards listed by model.safetensors.index.json (each tensor in the shard the index names).
class SafetensorsSet {
 public:
  // `dir` holds model.safetensors or model.safetensors.index.json.
  static Result<SafetensorsSet> OpenDirectory(const std::string& dir);
  static Result<SafetensorsSet> OpenFiles(const std::vector<std::string>& paths);

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  // The file a tensor lives in (for error messages).
  const std::string& FileOf(const std::string& name) const;
  const std::map<std::string, TensorView>& all() const { return all_; }
  std::size_t num_files() const { return files_.size(); }
  std::uint64_t total_bytes() const;

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, TensorView> all_;
  std::map<std::string, std::size_t> file_index_;
};

struct SafetensorsEntry {
  std::string name;
  TensorView tensor;
};

// Writes a safetensors file (tensors in the given order, 8-byte aligned, optional metadata).
Status WriteSafetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace fgnet
