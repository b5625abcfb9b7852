#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace fgnet {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

bool IsAlive(float v) { return v > kNegInf; }  // false for -inf and NaN

struct Weighted {
  float logit;
  std::int32_t id;
  double weight;  // exp(logit - max)
};

bool WeightedDescending(const Weighted& a, const Weighted& b) {
  if (a.logit != b.logit) return a.logit > b.logit;
  return a.id < b.id;
}

double MaxLogit(const std::vector<TokenLogit>& c) {
  double m = kNegInf;
  for (const TokenLogit& t : c) m = std::max<double>(m, t.logit);
  return m;
}

}  // namespace

Status SamplingParams::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return MakeError("temperature ", temperature, " must be a finite number >= 0");
  }
  if (top_k < 0) return MakeError("top_k ", top_k, " must be >= 0 (0 disables it)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return MakeError("top_p ", top_p, " is not in (0, 1]");
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return MakeError("min_p ", min_p, " is not in [0, 1]");
  }
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.0f) {
    return MakeError("repetition_penalty ", repetition_penalty, " must be a finite number > 0");
  }
  return Ok();
}

void ApplyRepetitionPenalty(std::span<float> logits, std::span<const std::int32_t> ids,
                            float penalty) {
  if (penalty == 1.0f) return;
  std::vector<std::int32_t> distinct(ids.begin(), ids.end());
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (const std::int32_t id : distinct) {
    if (id < 0 || static_cast<std::size_t>(id) >= logits.size()) continue;
    float& v = logits[static_cast<std::size_t>(id)];
    v = RepetitionPenalized(v, penalty);
  }
}

std::int64_t ArgMax(std::span<const float> logits) {
  std::int64_t best = -1;
  float best_value = kNegInf;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > best_value) {  // NaN compares false
      best_value = logits[i];
      best = static_cast<std::int64_t>(i);
    }
  }
  return best;
}

void SelectTopK(std::span<const float> logits, std::int32_t k, std::vector<TokenLogit>* out) {
  out->clear();
  float threshold = kNegInf;
  if (k > 0 && static_cast<std::size_t>(k) < logits.size()) {
    // Min-heap of the k largest finite values seen so far; its top is the k-th largest.
    std::vector<float> heap;
    heap.reserve(static_cast<std::size_t>(k));
    for (const float v : logits) {
      if (!IsAlive(v)) continue;
      if (heap.size() < static_cast<std::size_t>(k)) {
        heap.push_back(v);
        std::push_heap(heap.begin(), heap.end(), std::greater<float>());
      } else if (v > heap.front()) {
        std::pop_heap(heap.begin(), heap.end(), std::greater<float>());
        heap.back() = v;
        std::push_heap(heap.begin(), heap.end(), std::greater<float>());
      }
    }
    if (heap.size() == static_cast<std::size_t>(k)) threshold = heap.front();
  }
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (IsAlive(v) && v >= threshold) out->push_back({static_cast<std::int32_t>(i), v});
  }
}

void KeepTopP(std::vector<TokenLogit>& candidates, float top_p) {
  if (candidates.size() <= 1 || top_p >= 1.0f) return;
  const double max_logit = MaxLogit(candidates);
  std::vector<Weighted> work(candidates.size());
  double total = 0.0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const double w = std::exp(static_cast<double>(candidates[i].logit) - max_logit);
    work[i] = {candidates[i].logit, candidates[i].id, w};
    total += w;
  }
  // In descending order (ties by id), token j stays iff the mass before it is < top_p: find the
  // number kept, `keep`, by quickselect on the mass instead of a full sort. Invariant: every
  // entry of [0, lo) is larger than every entry of [lo, n), `before` is the mass of [0, lo),
  // before < target, and the cut lies in (lo, hi].
  const double target = static_cast<double>(top_p) * total;
  std::size_t lo = 0;
  std::size_t hi = work.size();
  double before = 0.0;
  while (hi - lo > 32) {
    const float a = work[lo].logit, b = work[lo + (hi - lo) / 2].logit, c = work[hi - 1].logit;
    const float pivot = std::max(std::min(a, b), std::min(std::max(a, b), c));  // median of 3
    const auto first = work.begin() + static_cast<std::ptrdiff_t>(lo);
    const auto last = work.begin() + static_cast<std::ptrdiff_t>(hi);
    const auto gt_end =
        std::partition(first, last, [&](const Weighted& w) { return w.logit > pivot; });
    const auto eq_end =
        std::partition(gt_end, last, [&](const Weighted& w) { return w.logit == pivot; });
    double mass_gt = 0.0;
    for (auto it = first; it != gt_end; ++it) mass_gt += it->weight;
    const auto gt_index = static_cast<std::size_t>(gt_end - work.begin());
    const auto eq_index = static_cast<std::size_t>(eq_end - work.begin());
    if (gt_index > lo && before + mass_gt >= target) {
      hi = gt_index;
      continue;
    }
    double mass_eq = 0.0;
    for (auto it = gt_end; it != eq_end; ++it) mass_eq += it->weight;
    if (before + mass_gt + mass_eq >= target || eq_index == hi) {
      before += mass_gt;
      lo = gt_index;
      hi = eq_index;
      break;  // the cut is among equal logits; the scan below orders them by id
    }
    before += mass_gt + mass_eq;
    lo = eq_index;
  }
  std::sort(work.begin() + static_cast<std::ptrdiff_t>(lo),
            work.begin() + static_cast<std::ptrdiff_t>(hi), WeightedDescending);
  std::size_t keep = hi;
  for (std::size_t j = lo; j < hi; ++j) {
    if (j > 0 && before >= target) {
      keep = j;
      break;
    }
    before += work[j].weight;
  }
  if (keep == 0) keep = 1;
  // The last kept entry in sorted order is the threshold; ties at it stay up to its id.
  const Weighted last = work[keep - 1];
  std::erase_if(candidates, [&](const TokenLogit& t) {
    return t.logit < last.logit || (t.logit == last.logit && t.id > last.id);
  });
}

void KeepMinP(std::vector<TokenLogit>& candidates, float min_p) {
  if (candidates.empty() || min_p <= 0.0f) return;
  // p / p_max = exp(logit - max) < min_p  <=>  logit < max + log(min_p): no exp per token.
  const double threshold = MaxLogit(candidates) + std::log(static_cast<double>(min_p));
  std::erase_if(candidates,
                [&](const TokenLogit& c) { return static_cast<double>(c.logit) < threshold; });
}

std::int32_t DrawFromCandidates(const std::vector<TokenLogit>& candidates, double u,
                                std::vector<double>* weights) {
  FGNET_CHECK(!candidates.empty());
  const double max_logit = MaxLogit(candidates);
  weights->resize(candidates.size());
  double total = 0.0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    (*weights)[i] = std::exp(static_cast<double>(candidates[i].logit) - max_logit);
    total += (*weights)[i];
  }
  const double target = u * total;
  double cumulative = 0.0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    cumulative += (*weights)[i];
    if (target < cumulative) return candidates[i].id;
  }
  // u * total rounded up to the total: the last candidate with a weight.
  for (std::size_t i = candidates.size(); i-- > 0;) {
    if ((*weights)[i] > 0.0) return candidates[i].id;
  }
  return candidates.back().id;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  const Status st = params.Validate();
  FGNET_CHECK(st.ok());
}

void Sampler::AddHistory(std::span<const std::int32_t> ids) {
  for (const std::int32_t id : ids) {
    if (id < 0) continue;
    const auto index = static_cast<std::size_t>(id);
    if (index >= seen_.size()) seen_.resize(std::max(index + 1, seen_.size() * 2), 0);
    if (seen_[index] == 0) {
      seen_[index] = 1;
      seen_ids_.push_back(id);
    }
  }
}

Status Sampler::Prepare(std::span<const float> logits, bool penalized,
                        std::int32_t* greedy_choice) {
  *greedy_choice = -1;
  const bool penalize = params_.repetition_penalty != 1.0f && !penalized;
  if (params_.greedy() && !penalize) {
    const std::int64_t best = ArgMax(logits);
    if (best < 0) return MakeError("no logit is a number above -inf (vocab ", logits.size(), ")");
    *greedy_choice = static_cast<std::int32_t>(best);
    return Ok();
  }
  scratch_.assign(logits.begin(), logits.end());
  if (penalize) {
    LogitsFilter filter;
    FillFilter(&filter);
    ApplyLogitsFilter(scratch_, filter);
  }
  if (params_.greedy()) {
    const std::int64_t best = ArgMax(scratch_);
    if (best < 0) return MakeError("no logit is a number above -inf (vocab ", logits.size(), ")");
    *greedy_choice = static_cast<std::int32_t>(best);
    return Ok();
  }
  if (params_.temperature != 1.0f) {
    const float t = params_.temperature;
    for (float& v : scratch_) v = v / t;
  }
  SelectTopK(scratch_, params_.top_k, &candidates_);
  if (candidates_.empty()) {
    return MakeError("no logit is a number above -inf (vocab ", logits.size(), ")");
  }
  if (params_.top_p < 1.0f) KeepTopP(candidates_, params_.top_p);
  if (params_.min_p > 0.0f) KeepMinP(candidates_, params_.min_p);
  return Ok();
}

bool Sampler::CanSampleFromTop() const {
  return !params_.greedy() && params_.top_k >= 1 &&
         static_cast<std::size_t>(params_.top_k) < kTopLogits;
}

void Sampler::FillFilter(LogitsFilter* filter) const {
  filter->repetition_penalty = params_.repetition_penalty;
  filter->penalized = params_.repetition_penalty != 1.0f ? std::span<const std::int32_t>(seen_ids_)
                                                         : std::span<const std::int32_t>();
}

Result<std::int32_t> Sampler::SampleFromTop(std::span<const TopLogit> top) {
  FGNET_CHECK(CanSampleFromTop());
  // As Prepare: temperature, then the top-k candidates (every alive value at least the k-th
  // largest) in id order, then top-p and min-p.
  candidates_.clear();
  const float t = params_.temperature;
  std::size_t alive = 0;
  for (const TopLogit& e : top) {
    const float v = t != 1.0f ? e.logit / t : e.logit;
    if (!IsAlive(v)) continue;
    candidates_.push_back({e.id, v});
    ++alive;
  }
  if (candidates_.empty()) return MakeError("no logit is a number above -inf");
  if (alive >= static_cast<std::size_t>(params_.top_k)) {
    // `top` is ordered by logit, so the k-th alive entry is the k-th largest.
    const float threshold = candidates_[static_cast<std::size_t>(params_.top_k) - 1].logit;
    std::erase_if(candidates_, [&](const TokenLogit& c) { return c.logit < threshold; });
  }
  std::sort(candidates_.begin(), candidates_.end(),
            [](const TokenLogit& a, const TokenLogit& b) { return a.id < b.id; });
  if (params_.top_p < 1.0f) KeepTopP(candidates_, params_.top_p);
  if (params_.min_p > 0.0f) KeepMinP(candidates_, params_.min_p);
  return DrawFromCandidates(candidates_, rng_.NextDouble(), &weights_);
}

Result<std::int32_t> Sampler::Draw(std::span<const float> logits, bool penalized) {
  std::int32_t choice = -1;
  FGNET_TRY(Prepare(logits, penalized, &choice));
  if (choice >= 0) return choice;
  return DrawFromCandidates(candidates_, rng_.NextDouble(), &weights_);
}

Result<std::int32_t> Sampler::Sample(std::span<const float> logits) {
  return Draw(logits, /*penalized=*/false);
}

Result<std::int32_t> Sampler::SamplePenalized(std::span<const float> logits) {
  return Draw(logits, /*penalized=*/true);
}

Result<std::vector<std::pair<std::int32_t, double>>> Sampler::Distribution(
    std::span<const float> logits) {
  std::int32_t choice = -1;
  FGNET_TRY(Prepare(logits, /*penalized=*/false, &choice));
  std::vector<std::pair<std::int32_t, double>> dist;
  if (choice >= 0) {
    dist.emplace_back(choice, 1.0);
    return dist;
  }
  const double max_logit = MaxLogit(candidates_);
  double total = 0.0;
  for (const TokenLogit& c : candidates_) {
    const double w = std::exp(static_cast<double>(c.logit) - max_logit);
    dist.emplace_back(c.id, w);
    total += w;
  }
  for (auto& [id, p] : dist) p /= total;
  std::sort(dist.begin(), dist.end());
  return dist;
}

}  // namespace fgnet
