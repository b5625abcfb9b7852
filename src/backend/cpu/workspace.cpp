#include "backend/cpu/workspace.h"

#include "util/status.h"

namespace fgnet::cpu {

void Workspace::Reserve(std::size_t num_threads) {
  if (per_thread_.size() < num_threads) per_thread_.resize(num_threads);
}

float* Workspace::ForThread(std::size_t t, std::size_t floats) {
  FGNET_CHECK_LT(t, per_thread_.size());
  AlignedVector<float>& buffer = per_thread_[t];
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

float* Workspace::Shared(std::size_t floats) {
  if (shared_.size() < floats) shared_.resize(floats);
  return shared_.data();
}

std::size_t Workspace::memory_bytes() const {
  std::size_t bytes = shared_.capacity() * sizeof(float);
  for (const auto& b : per_thread_) bytes += b.capacity() * sizeof(float);
  return bytes;
}

}  // namespace fgnet::cpu
