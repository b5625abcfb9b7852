#include "model/lora_apply.h"

#include <algorithm>
#include <cstring>

#include "backend/cpu/matmul.h"
#include "util/status.h"

namespace fgnet {
namespace {

// Rows per work item: at least enough to keep the micro-kernel busy, at most what spreads one
// adapter's prefill over the threads (each item packs the adapter's A and B once).
constexpr std::uint32_t kMinRowsPerItem = 32;
constexpr std::uint32_t kMaxRowsPerItem = 128;

// Floats rounded up to whole cache lines: the packed panel must stay aligned for the kernel.
std::size_t CacheLines(std::size_t floats) { return (floats + 15) / 16 * 16; }

}  // namespace

void LoraPlan::Add(const LoraAdapter* adapter, std::size_t begin, std::size_t end, float scale) {
  if (begin >= end || scale == 0.0f) return;
  Group* group = nullptr;
  for (std::size_t g = 0; g < num_groups_; ++g) {
    if (groups_[g].adapter == adapter) group = &groups_[g];
  }
  if (group == nullptr) {
    if (num_groups_ == groups_.size()) groups_.emplace_back();
    group = &groups_[num_groups_++];
    group->adapter = adapter;
    group->rows.clear();
    group->scales.clear();
  }
  if (covered_.size() < end) covered_.resize(end, 0);
  for (std::size_t r = begin; r < end; ++r) {
    group->rows.push_back(static_cast<std::uint32_t>(r));
    group->scales.push_back(scale);
    overlapping_ = overlapping_ || covered_[r] != 0;
    covered_[r] = 1;
  }
}

void LoraPlan::Clear() {
  num_groups_ = 0;
  overlapping_ = false;
  std::fill(covered_.begin(), covered_.end(), 0);
}

void LoraPlan::Apply(std::size_t layer, std::span<const Site> sites, ThreadPool& pool,
                     cpu::Workspace& ws) {
  items_.clear();
  item_rows_ = 0;
  const auto threads = static_cast<std::uint32_t>(pool.num_threads());
  std::size_t max_in = 0, max_out = 0, max_rank = 0;
  for (std::size_t s = 0; s < sites.size(); ++s) {
    for (std::size_t g = 0; g < num_groups_; ++g) {
      const LoraLayer& m = groups_[g].adapter->at(layer, sites[s].module);
      if (!m.active()) continue;
      const std::size_t rank = m.rank;
      max_rank = std::max(max_rank, rank);
      max_in = std::max(max_in, m.a.size() / rank);
      max_out = std::max(max_out, m.b.size() / rank);
      const auto rows = static_cast<std::uint32_t>(groups_[g].rows.size());
      const std::uint32_t per_item =
          std::clamp((rows + 2 * threads - 1) / (2 * threads), kMinRowsPerItem, kMaxRowsPerItem);
      for (std::uint32_t first = 0; first < rows; first += per_item) {
        const std::uint32_t count = std::min(per_item, rows - first);
        items_.push_back(
            {static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(g), first, count});
        item_rows_ = std::max<std::size_t>(item_rows_, count);
      }
    }
  }
  if (items_.empty()) return;
  // Per thread: the gathered inputs, A x, B (A x), and packing space for the larger product.
  const std::size_t per_thread =
      CacheLines(item_rows_ * max_in) + CacheLines(item_rows_ * max_rank) +
      CacheLines(item_rows_ * max_out) +
      std::max(cpu::GemmPanelFloats(max_in), cpu::GemmPanelFloats(max_rank));
  ws.Reserve(pool.num_threads());
  for (std::size_t t = 0; t < pool.num_threads(); ++t) ws.ForThread(t, per_thread);

  // The closures hold one reference each, so std::function stores them without allocating.
  struct Job {
    LoraPlan* plan;
    std::size_t layer;
    std::span<const Site> sites;
    std::size_t per_thread;
    cpu::Workspace* ws;
    std::size_t offset;
  } job{this, layer, sites, per_thread, &ws, 0};
  const auto run = [&job](std::size_t begin, std::size_t end, std::size_t thread) {
    job.plan->RunItems(job.layer, job.sites, job.offset + begin, job.offset + end, job.per_thread,
                       thread, *job.ws);
  };
  if (pool.num_threads() == 1 || items_.size() == 1) {
    run(0, items_.size(), 0);
    return;
  }
  if (!overlapping_) {
    pool.ParallelFor(items_.size(), 1, run);
    return;
  }
  // Items are ordered by site, then group: run each (site, group) run of items on its own.
  for (std::size_t begin = 0; begin < items_.size();) {
    std::size_t end = begin + 1;
    while (end < items_.size() && items_[end].site == items_[begin].site &&
           items_[end].group == items_[begin].group) {
      ++end;
    }
    job.offset = begin;
    pool.ParallelFor(end - begin, 1, run);
    begin = end;
  }
}

void LoraPlan::RunItems(std::size_t layer, std::span<const Site> sites, std::size_t begin,
                        std::size_t end, std::size_t per_thread, std::size_t thread,
                        cpu::Workspace& ws) {
  float* x = ws.ForThread(thread, per_thread);
  for (std::size_t i = begin; i < end; ++i) {
    const Item& item = items_[i];
    const Site& site = sites[item.site];
    const Group& group = groups_[item.group];
    const LoraLayer& m = group.adapter->at(layer, site.module);
    const std::size_t rank = m.rank;
    const std::size_t in = m.a.size() / rank;
    const std::size_t out = m.b.size() / rank;
    const std::uint32_t* rows = group.rows.data() + item.first;
    const float* scales = group.scales.data() + item.first;
    const std::size_t n = item.count;
    float* t = x + CacheLines(item_rows_ * in);
    float* d = t + CacheLines(item_rows_ * rank);
    float* pack = d + CacheLines(item_rows_ * out);
    for (std::size_t r = 0; r < n; ++r) {
      std::memcpy(x + r * in, site.x + rows[r] * site.ldx, in * sizeof(float));
    }
    // Shrink: t = x A^T [n, rank]; scale each row; expand: d = t B^T [n, out].
    cpu::MatMulF32OnThread(x, n, in, m.a.data(), rank, in, t, rank, pack);
    for (std::size_t r = 0; r < n; ++r) {
      const float s = scales[r] * m.scale;
      for (std::size_t k = 0; k < rank; ++k) t[r * rank + k] *= s;
    }
    cpu::MatMulF32OnThread(t, n, rank, m.b.data(), out, rank, d, out, pack);
    for (std::size_t r = 0; r < n; ++r) {
      float* y = site.y + rows[r] * site.ldy;
      const float* dr = d + r * out;
      for (std::size_t j = 0; j < out; ++j) y[j] += dr[j];
    }
  }
}

}  // namespace fgnet
