// Token sampling with the semantics and order of Hugging Face transformers' logits processors:
//   1. repetition penalty over every distinct id seen (prompt + generated):
//      logit < 0 ? logit * penalty : logit / penalty
//   2. greedy: argmax of the penalised logits (the first maximum wins) when do_sample is false
//      or temperature == 0; otherwise
//   3. temperature: logit / temperature
//   4. top-k: keep every token whose logit is >= the k-th largest (ties at the k-th all stay)
//   5. top-p: sort ascending, drop the tokens whose cumulative probability is <= 1 - top_p
//      (the most probable token always stays)
//   6. min-p: drop tokens whose probability is < min_p * the largest probability
//   7. draw from the softmax of what is left, with a Philox stream seeded per request.
// Disabled stages: top_k == 0, top_p == 1, min_p == 0, repetition_penalty == 1.
//
// Cost per token on a vocabulary of V: a few O(V) passes (copy, scale, selection, exp) and no
// full sort: top-k keeps a k-element heap, top-p is a quickselect on probability mass, and the
// candidates stay in id order so the draw needs no sort either.
//
// Thread-safety: a Sampler is one request's state (random stream, seen ids, scratch; move-only);
// use one per sequence. The free functions are pure.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "model/model.h"
#include "util/rng.h"
#include "util/status.h"

namespace fgnet {

// All values must be finite.
struct SamplingParams {
  bool do_sample = true;
  float temperature = 1.0f;         // 0 -> greedy; must be >= 0
  std::int32_t top_k = 0;           // 0 -> disabled; must be >= 0
  float top_p = 1.0f;               // 1 -> disabled; must be in (0, 1]
  float min_p = 0.0f;               // 0 -> disabled; must be in [0, 1]
  float repetition_penalty = 1.0f;  // 1 -> disabled; must be > 0
  std::uint64_t seed = 0;

  bool greedy() const { return !do_sample || temperature == 0.0f; }
  // Errors name the field and the bad value (e.g. "top_p 1.5 is not in (0, 1]").
  Status Validate() const;
};

// A candidate token and its (processed) logit.
struct TokenLogit {
  std::int32_t id;
  float logit;
};

// --- The stages, exposed for tests and for callers with their own loop. ---------------------

// Applies the repetition penalty in place to each distinct id of `ids` (ids outside
// [0, logits.size()) are ignored).
void ApplyRepetitionPenalty(std::span<float> logits, std::span<const std::int32_t> ids,
                            float penalty);

// Index of the largest value, the first one on ties; NaN never wins. -1 if `logits` is empty or
// has no value above -inf.
std::int64_t ArgMax(std::span<const float> logits);

// The tokens whose logit is >= the k-th largest finite logit (all of them when k <= 0 or k >=
// the number of finite logits), in id order. NaN and -inf logits are never kept.
void SelectTopK(std::span<const float> logits, std::int32_t k, std::vector<TokenLogit>* out);

// Top-p on a candidate list (transformers' rule above; among equal logits the lower id counts as
// more probable). Expected O(n): a quickselect on the probability mass, no full sort. The order
// of the survivors is preserved. top_p >= 1 keeps everything.
void KeepTopP(std::vector<TokenLogit>& candidates, float top_p);

// Min-p on a candidate list: keeps those with exp(logit - max) >= min_p, i.e. probability >=
// min_p * the top probability (tested as logit >= max + log(min_p)). Order is preserved.
void KeepMinP(std::vector<TokenLogit>& candidates, float min_p);

// Draws one candidate with probability proportional to exp(logit - max), walking the list in
// its order (the Sampler keeps it in id order). `u` is in [0, 1); `weights` is scratch.
std::int32_t DrawFromCandidates(const std::vector<TokenLogit>& candidates, double u,
                                std::vector<double>* weights);

class Sampler {
 public:
  // `params` must be valid (Validate()); checked.
  explicit Sampler(const SamplingParams& params);
  Sampler(Sampler&&) noexcept = default;
  Sampler& operator=(Sampler&&) noexcept = default;
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  const SamplingParams& params() const { return params_; }

  // Records ids already in the sequence (the prompt) for the repetition penalty.
  void AddHistory(std::span<const std::int32_t> ids);
  // Records one generated id.
  void Accept(std::int32_t id) { AddHistory(std::span<const std::int32_t>(&id, 1)); }

  // Picks the next token from `logits` ([vocab]). Consumes randomness only when sampling.
  // Error if no logit is a number above -inf.
  Result<std::int32_t> Sample(std::span<const float> logits);

  // The repetition penalty as a model applies it before selecting (LogitsFilter): the ids seen so
  // far and the penalty. Leaves filter->allowed alone.
  void FillFilter(LogitsFilter* filter) const;
  // Sample() for a row that already has the repetition penalty (a kArgmax or kTop step's row,
  // filtered by the model with FillFilter's filter).
  Result<std::int32_t> SamplePenalized(std::span<const float> logits);

  // Sample() for a row known only by its largest logits (a model's LogitsMode::kTop result, which
  // TopIsComplete for this sampler's top_k, of the row filtered with FillFilter's filter): the
  // same candidates, the same draw, the same use of randomness. Only for params that
  // CanSampleFromTop.
  Result<std::int32_t> SampleFromTop(std::span<const TopLogit> top);
  // True when a row's kTopLogits largest logits are enough: sampling (not greedy) with top-k in
  // [1, kTopLogits).
  bool CanSampleFromTop() const;

  // The distribution Sample() draws from: the surviving candidates with their probabilities,
  // sorted by id. Greedy params give the argmax with probability 1. For tests and debugging.
  Result<std::vector<std::pair<std::int32_t, double>>> Distribution(std::span<const float> logits);

 private:
  // Runs stages 1-6 (2-6 when `penalized`) into candidates_ (or sets greedy_choice).
  Status Prepare(std::span<const float> logits, bool penalized, std::int32_t* greedy_choice);
  // Prepare, then the draw (stage 7).
  Result<std::int32_t> Draw(std::span<const float> logits, bool penalized);

  SamplingParams params_;
  Philox rng_;
  std::vector<std::int32_t> seen_ids_;  // distinct ids, in order of first appearance
  std::vector<std::uint8_t> seen_;      // seen_[id] != 0 for ids in seen_ids_
  std::vector<float> scratch_;
  std::vector<TokenLogit> candidates_;  // in id order
  std::vector<double> weights_;
};

}  // namespace fgnet
