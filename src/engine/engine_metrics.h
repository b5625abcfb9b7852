// Counters and latency histograms of an Engine (Engine::Metrics() returns a snapshot).
// Thread-safety: a snapshot is a plain value.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "util/json.h"

namespace fgnet {

// Latencies in milliseconds, in buckets with upper bounds kBoundsMs (the last one open).
struct Histogram {
  static constexpr std::array<double, 14> kBoundsMs = {1,   2,   5,    10,   20,   50,    100,
                                                       200, 500, 1000, 2000, 5000, 10000, 1e300};
  std::array<std::uint64_t, kBoundsMs.size()> counts{};
  std::uint64_t count = 0;
  double sum_ms = 0;

  void Add(double ms);
  double mean_ms() const { return count == 0 ? 0.0 : sum_ms / static_cast<double>(count); }
  // The bucket bound below which `q` (in [0, 1]) of the values fall.
  double Quantile(double q) const;
  Json ToJson() const;
};

struct AdapterMetrics {
  std::uint64_t requests = 0;
  std::uint64_t prompt_tokens = 0;
  std::uint64_t generated_tokens = 0;
};

struct EngineMetrics {
  // Keyed by adapter set: "base", or the adapters' names joined with '+'.
  std::map<std::string, AdapterMetrics> per_adapter;
  std::uint64_t requests_submitted = 0, requests_finished = 0, requests_failed = 0;
  std::uint64_t requests_rejected = 0;  // refused by back-pressure
  std::uint64_t preemptions = 0;
  std::int64_t queue_depth = 0;  // waiting to be scheduled
  std::int64_t running = 0;
  std::int64_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_free = 0;
  std::int64_t kv_blocks_cached = 0;  // held only by the prefix cache (evictable)
  std::int64_t kv_blocks_peak = 0;    // most blocks ever holding data (used + cached) at once
  std::int64_t kv_block_bytes = 0;    // bytes of one block (keys and values of every layer)
  std::uint64_t prompt_tokens = 0, cached_prompt_tokens = 0;  // hit rate = cached / prompt
  std::uint64_t generated_tokens = 0;
  std::uint64_t steps = 0, step_tokens = 0;
  // Wall time of the scheduler's steps that ran a forward pass (from picking the batch to
  // streaming its tokens), and of it the model's forward passes: their difference is the
  // scheduler's own time. Both are added as a step ends, after `steps` counts it (a snapshot
  // taken meanwhile lacks that step's times).
  double step_ms = 0, forward_ms = 0;
  // Constrained decoding: token masks applied (or handed to the model as a bitset), and the time
  // spent computing and applying them.
  std::uint64_t grammar_masks = 0;
  double grammar_mask_ms = 0;
  Histogram time_to_first_token, time_per_output_token;

  double prefix_hit_rate() const {
    return prompt_tokens == 0
               ? 0.0
               : static_cast<double>(cached_prompt_tokens) / static_cast<double>(prompt_tokens);
  }
  Json ToJson() const;
};

}  // namespace fgnet
