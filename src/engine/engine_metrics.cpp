#include "engine/engine_metrics.h"

namespace fgnet {

void Histogram::Add(double ms) {
  std::size_t i = 0;
  while (i + 1 < kBoundsMs.size() && ms > kBoundsMs[i]) ++i;
  ++counts[i];
  ++count;
  sum_ms += ms;
}

double Histogram::Quantile(double q) const {
  if (count == 0) return 0.0;
  const double want = q * static_cast<double>(count);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    seen += counts[i];
    if (static_cast<double>(seen) >= want) return kBoundsMs[i];
  }
  return kBoundsMs.back();
}

Json Histogram::ToJson() const {
  Json buckets = Json::array();
  for (std::size_t i = 0; i < counts.size(); ++i) {
    Json b = {{"count", counts[i]}};
    b["le_ms"] = i + 1 < counts.size() ? Json(kBoundsMs[i]) : Json("inf");
    buckets.push_back(std::move(b));
  }
  return {{"count", count}, {"mean_ms", mean_ms()}, {"buckets", std::move(buckets)}};
}

Json EngineMetrics::ToJson() const {
  Json adapters = Json::object();
  for (const auto& [name, m] : per_adapter) {
    adapters[name] = {{"requests", m.requests},
                      {"prompt_tokens", m.prompt_tokens},
                      {"generated_tokens", m.generated_tokens}};
  }
  return {{"requests",
           {{"submitted", requests_submitted},
            {"finished", requests_finished},
            {"failed", requests_failed},
            {"rejected", requests_rejected}}},
          {"per_adapter", std::move(adapters)},
          {"queue_depth", queue_depth},
          {"running", running},
          {"preemptions", preemptions},
          {"kv_blocks",
           {{"total", kv_blocks_total},
            {"used", kv_blocks_used},
            {"free", kv_blocks_free},
            {"cached", kv_blocks_cached},
            {"peak", kv_blocks_peak},
            {"block_bytes", kv_block_bytes}}},
          {"prefix_cache",
           {{"prompt_tokens", prompt_tokens},
            {"cached_tokens", cached_prompt_tokens},
            {"hit_rate", prefix_hit_rate()}}},
          {"generated_tokens", generated_tokens},
          {"steps", steps},
          {"step_tokens", step_tokens},
          {"step_ms", step_ms},
          {"forward_ms", forward_ms},
          {"grammar", {{"masks", grammar_masks}, {"mask_ms", grammar_mask_ms}}},
          {"time_to_first_token", time_to_first_token.ToJson()},
          {"time_per_output_token", time_per_output_token.ToJson()}};
}

}  // namespace fgnet
