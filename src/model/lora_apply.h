// Run-time (unmerged) LoRA over the rows of one forward pass: y[row] += s_row * B (A x[row]).
//
// A pass holds rows of several sequences, each with its own adapter set (none, one, or a
// weighted mix), and an activated adapter covers only the rows from its invocation onward. The
// plan groups rows by adapter, so each adapter's A and B are read once per pass for all the rows
// that use it (the grouped "shrink" and "expand" of multi-adapter serving), whichever sequences
// they come from; the groups' row blocks run in parallel.
// Thread-safety: a LoraPlan is built and used by one forward pass at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backend/cpu/workspace.h"
#include "model/lora.h"
#include "util/thread_pool.h"

namespace fgnet {

class LoraPlan {
 public:
  // Rows [begin, end) of the pass use `adapter` with user scale `scale` (the adapter's own
  // per-module scales multiply it).
  void Add(const LoraAdapter* adapter, std::size_t begin, std::size_t end, float scale);
  // Forgets the rows but keeps the memory (steady-state decoding allocates nothing).
  void Clear();
  bool empty() const { return num_groups_ == 0; }

  // One linear layer of a pass: x [rows, ldx] its input, y [rows, ldy] its output.
  struct Site {
    LoraModule module;
    const float* x;
    std::size_t ldx;
    float* y;
    std::size_t ldy;
  };
  // Adds the updates of layer `layer` at every site, in one parallel loop over (site, adapter,
  // block of rows).
  void Apply(std::size_t layer, std::span<const Site> sites, ThreadPool& pool, cpu::Workspace& ws);

 private:
  struct Group {
    const LoraAdapter* adapter = nullptr;
    std::vector<std::uint32_t> rows;
    std::vector<float> scales;
  };
  struct Item {
    std::uint32_t site, group, first, count;  // rows [first, first + count) of the group
  };

  void RunItems(std::size_t layer, std::span<const Site> sites, std::size_t begin, std::size_t end,
                std::size_t per_thread, std::size_t thread, cpu::Workspace& ws);

  std::vector<Group> groups_;  // the first num_groups_ are in use
  std::size_t num_groups_ = 0;
  std::vector<Item> items_;
  std::size_t item_rows_ = 0;  // the most rows of any item
  // Rows already claimed by a group: a row in two groups (a mix of adapters) means the groups'
  // items must not run at the same time, as they add to the same outputs.
  std::vector<std::uint8_t> covered_;
  bool overlapping_ = false;
};

}  // namespace fgnet
