// The stored tensors of a checkpoint or adapter, whatever its format (safetensors, GGUF, RDRR):
// name -> view, and the file each lives in. Views point into storage that the owner of the index
// keeps alive (mmapped files or owned buffers).
// Thread-safety: immutable once built.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "tensor/tensor.h"

namespace fgnet {

class TensorIndex {
 public:
  struct Entry {
    TensorView view;
    std::string file;
  };

  // `source`: what the index was read from, for error messages (a file or directory).
  explicit TensorIndex(std::string source = {}) : source_(std::move(source)) {}

  // Replaces an entry of the same name.
  void Add(const std::string& name, TensorView view, std::string file);

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  // The file a tensor lives in; empty when absent.
  const std::string& FileOf(const std::string& name) const;
  const std::string& source() const { return source_; }
  const std::map<std::string, Entry>& all() const { return entries_; }
  std::size_t size() const { return entries_.size(); }

  // Distinct files, bytes and elements of tensor data, and bytes per dtype.
  std::size_t num_files() const;
  std::uint64_t total_bytes() const;
  std::uint64_t total_elements() const;
  std::map<DType, std::uint64_t> BytesByDType() const;

 private:
  std::string source_;
  std::map<std::string, Entry> entries_;
};

}  // namespace fgnet
