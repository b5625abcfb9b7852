#include "model/tensor_index.h"

#include <set>
#include <utility>

namespace fgnet {

void TensorIndex::Add(const std::string& name, TensorView view, std::string file) {
  entries_[name] = Entry{std::move(view), std::move(file)};
}

const TensorView* TensorIndex::Find(const std::string& name) const {
  const auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second.view;
}

const std::string& TensorIndex::FileOf(const std::string& name) const {
  static const std::string kNone;
  const auto it = entries_.find(name);
  return it == entries_.end() ? kNone : it->second.file;
}

std::size_t TensorIndex::num_files() const {
  std::set<std::string> files;
  for (const auto& [name, e] : entries_) files.insert(e.file);
  return files.size();
}

std::uint64_t TensorIndex::total_bytes() const {
  std::uint64_t total = 0;
  for (const auto& [name, e] : entries_) total += e.view.num_bytes();
  return total;
}

std::uint64_t TensorIndex::total_elements() const {
  std::uint64_t total = 0;
  for (const auto& [name, e] : entries_) total += static_cast<std::uint64_t>(e.view.num_elements());
  return total;
}

std::map<DType, std::uint64_t> TensorIndex::BytesByDType() const {
  std::map<DType, std::uint64_t> bytes;
  for (const auto& [name, e] : entries_) bytes[e.view.dtype] += e.view.num_bytes();
  return bytes;
}

}  // namespace fgnet
