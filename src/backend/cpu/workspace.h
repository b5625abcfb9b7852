// Reusable working memory of the CPU kernels: one growable buffer per thread of a ThreadPool plus
// one shared buffer. Buffers only grow, so after the first calls of a given size the kernels
// allocate nothing.
// Thread-safety: Reserve() and Shared() from the thread that runs the parallel loop; during the
// loop, thread t may call ForThread(t) (distinct threads touch distinct buffers). One Workspace
// per concurrently running computation.
#pragma once

#include <cstddef>
#include <vector>

#include "backend/cpu/aligned.h"

namespace fgnet::cpu {

class Workspace {
 public:
  Workspace() = default;
  Workspace(Workspace&&) noexcept = default;
  Workspace& operator=(Workspace&&) noexcept = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Makes ForThread(t) valid for t < num_threads.
  void Reserve(std::size_t num_threads);
  // At least `floats` floats for thread `t` (< the reserved count); contents are unspecified.
  float* ForThread(std::size_t t, std::size_t floats);
  // At least `floats` floats shared by all threads; contents are unspecified.
  float* Shared(std::size_t floats);

  std::size_t memory_bytes() const;

 private:
  std::vector<AlignedVector<float>> per_thread_;
  AlignedVector<float> shared_;
};

}  // namespace fgnet::cpu
