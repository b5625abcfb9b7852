#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace fgnet {
namespace {

Status ValidateStep(const Gemma3Config& c, Device device, const SequenceStep& step,
                    std::size_t index) {
  const std::string where =
      index == 0 ? "Forward: " : "Forward: sequence " + std::to_string(index) + ": ";
  if (step.kv == nullptr) return MakeError(where, "no KV cache given");
  const SequenceKV& kv = *step.kv;
  if (!kv.Fits(c))
    return MakeError(where, "the KV cache was made for a different model configuration");
  if (kv.device() != device) {
    return MakeError(where, "the KV cache is in ", kv.device().ToString(),
                     " memory but the model runs on ", device.ToString());
  }
  if (kv.element_type() != DType::kF32 && device.is_cpu()) {
    return MakeError(where, "the KV cache holds ", DTypeName(kv.element_type()),
                     " keys and values; the CPU backend keeps them in F32");
  }
  for (std::size_t i = 0; i < step.tokens.size(); ++i) {
    if (step.tokens[i] < 0 || step.tokens[i] >= c.vocab_size) {
      return MakeError(where, "token id ", step.tokens[i], " at index ", i, " is out of range [0, ",
                       c.vocab_size, ")");
    }
  }
  const auto n = static_cast<std::int64_t>(step.tokens.size());
  if (n > kv.capacity() - kv.length()) {
    return MakeError(where, "KV cache full: ", kv.length(), " cached positions + ", n,
                     " tokens exceed its capacity of ", kv.capacity());
  }
  if ((step.mode == LogitsMode::kLast || step.mode == LogitsMode::kArgmax ||
       step.mode == LogitsMode::kTop) &&
      n == 0)
    return MakeError(where, "no tokens to compute logits for");
  if (step.mode == LogitsMode::kArgmax) {
    if (step.token == nullptr) return MakeError(where, "no token output given");
  } else if (step.mode == LogitsMode::kTop &&
             (step.top == nullptr || step.logits == nullptr || step.top_k < 1 ||
              static_cast<std::size_t>(step.top_k) >= kTopLogits ||
              !(step.top_temperature > 0.0f))) {
    return MakeError(where, "a top-logits step needs its outputs and a top_k in [1, ", kTopLogits,
                     ")");
  } else if (step.mode != LogitsMode::kNone && step.logits == nullptr) {
    return MakeError(where, "no logits buffer given");
  }
  if (!step.filter.empty()) {
    if (step.mode != LogitsMode::kArgmax && step.mode != LogitsMode::kTop)
      return MakeError(where, "a logits filter needs an argmax or top-logits step");
    if (!step.filter.allowed.empty() &&
        step.filter.allowed.size() != LogitsFilterWords(c.vocab_size)) {
      return MakeError(where, "the allowed-token bitset has ", step.filter.allowed.size(),
                       " words but the vocabulary of ", c.vocab_size, " tokens needs ",
                       LogitsFilterWords(c.vocab_size));
    }
    if (!std::isfinite(step.filter.repetition_penalty) || step.filter.repetition_penalty <= 0.0f) {
      return MakeError(where, "repetition penalty ", step.filter.repetition_penalty,
                       " must be a finite number > 0");
    }
  }
  for (std::size_t i = 0; i < step.adapters.size(); ++i) {
    const AdapterUse& use = step.adapters[i];
    if (use.adapter == nullptr) return MakeError(where, "adapter ", i, " is null");
    if (static_cast<std::int64_t>(use.adapter->layers.size()) != c.num_hidden_layers) {
      return MakeError(where, "adapter '", use.adapter->name, "' has ", use.adapter->layers.size(),
                       " layers but the model has ", c.num_hidden_layers);
    }
    if (!std::isfinite(use.scale))
      return MakeError(where, "adapter '", use.adapter->name, "' has a non-finite scale");
    if (use.start < 0)
      return MakeError(where, "adapter '", use.adapter->name, "' starts at a negative position");
  }
  return Ok();
}

}  // namespace

ForwardDims ForwardDims::Of(const Gemma3Config& c) {
  ForwardDims d;
  d.hidden = static_cast<std::size_t>(c.hidden_size);
  d.intermediate = static_cast<std::size_t>(c.intermediate_size);
  d.heads = static_cast<std::size_t>(c.num_attention_heads);
  d.kv_heads = static_cast<std::size_t>(c.num_key_value_heads);
  d.head_dim = static_cast<std::size_t>(c.head_dim);
  d.q_dim = d.heads * d.head_dim;
  d.kv_dim = d.kv_heads * d.head_dim;
  d.vocab = static_cast<std::size_t>(c.vocab_size);
  d.eps = static_cast<float>(c.rms_norm_eps);
  d.embed_scale = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size)));
  d.final_softcap =
      c.final_logit_softcapping ? static_cast<float>(*c.final_logit_softcapping) : 0.0f;
  return d;
}

void ApplyLogitsFilter(std::span<float> logits, const LogitsFilter& filter) {
  if (!filter.allowed.empty()) {
    for (std::size_t t = 0; t < logits.size(); ++t) {
      if ((filter.allowed[t / 64] >> (t % 64) & 1) == 0)
        logits[t] = -std::numeric_limits<float>::infinity();
    }
  }
  const float penalty = filter.repetition_penalty;
  if (penalty == 1.0f) return;
  for (const std::int32_t id : filter.penalized) {
    if (id < 0 || static_cast<std::size_t>(id) >= logits.size()) continue;
    float& v = logits[static_cast<std::size_t>(id)];
    v = RepetitionPenalized(v, penalty);
  }
}

bool TopIsComplete(std::span<const TopLogit> top, std::int32_t k, float temperature) {
  const auto alive = [](float v) { return v > -std::numeric_limits<float>::infinity(); };
  std::size_t n_alive = 0;
  while (n_alive < top.size() && alive(top[n_alive].logit)) ++n_alive;
  if (n_alive < kTopLogits) return true;  // every alive logit of the row is there
  // The k-th largest is top[k - 1]; its ties all fit if the last entry is strictly smaller after
  // the division by the temperature (which is monotone but may merge neighbouring values). Every
  // logit outside `top` is at most the last entry.
  return top[kTopLogits - 1].logit / temperature <
         top[static_cast<std::size_t>(k) - 1].logit / temperature;
}

void SelectTopLogits(std::span<const float> logits, std::vector<TopLogit>* top) {
  const auto key = [](float v) {
    return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
  };
  const auto before = [&](const TopLogit& a, const TopLogit& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  top->clear();
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const TopLogit t{static_cast<std::int32_t>(i), key(logits[i])};
    if (top->size() < kTopLogits) {
      top->push_back(t);
      std::push_heap(top->begin(), top->end(), before);  // the last kept on top
    } else if (before(t, top->front())) {
      std::pop_heap(top->begin(), top->end(), before);
      top->back() = t;
      std::push_heap(top->begin(), top->end(), before);
    }
  }
  std::sort_heap(top->begin(), top->end(), before);
}

Status ValidateSteps(const Gemma3Config& config, Device device,
                     std::span<const SequenceStep> steps) {
  for (std::size_t i = 0; i < steps.size(); ++i) {
    FGNET_TRY(ValidateStep(config, device, steps[i], steps.size() == 1 ? 0 : i));
    for (std::size_t j = 0; j < i; ++j) {
      if (steps[j].kv == steps[i].kv)
        return MakeError("Forward: sequences ", j, " and ", i, " share one KV cache");
    }
  }
  return Ok();
}

Status RunInPasses(std::int64_t vocab_size, std::span<const SequenceStep> steps,
                   std::size_t max_rows, ForwardScratch& scratch, bool host_select,
                   const std::function<Status(std::span<const PassSegment>)>& run) {
  const auto vocab = static_cast<std::size_t>(vocab_size);
  // Size the outputs; the first token of each step whose logits are wanted.
  std::vector<std::size_t>& logits_from = scratch.logits_from;
  logits_from.assign(steps.size(), 0);
  if (scratch.argmax_logits.size() < steps.size()) scratch.argmax_logits.resize(steps.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const SequenceStep& step = steps[i];
    const std::size_t n = step.tokens.size();
    if (step.mode == LogitsMode::kArgmax) {
      if (host_select) scratch.argmax_logits[i].resize(vocab);
      logits_from[i] = n - 1;
    } else if (step.mode == LogitsMode::kTop) {
      step.logits->resize(vocab);
      step.top->clear();
      logits_from[i] = n - 1;
    } else if (step.mode == LogitsMode::kLast) {
      step.logits->resize(vocab);
      logits_from[i] = n - 1;
    } else if (step.mode == LogitsMode::kAll) {
      step.logits->resize(n * vocab);
    } else {
      if (step.logits != nullptr) step.logits->clear();
      logits_from[i] = n;
    }
  }
  std::vector<PassSegment>& segments = scratch.segments;
  std::size_t step = 0, done = 0;  // the next token to place: steps[step].tokens[done]
  while (step < steps.size()) {
    segments.clear();
    std::size_t rows = 0;
    while (step < steps.size() && rows < max_rows) {
      const SequenceStep& s = steps[step];
      const std::size_t count = std::min(max_rows - rows, s.tokens.size() - done);
      if (count > 0) {
        PassSegment seg{&s, done, count, rows, s.kv->length(), count, nullptr};
        const std::size_t first_logit = std::max(logits_from[step], done);
        if (first_logit < done + count) {
          seg.logits_begin = first_logit - done;
          if (s.mode == LogitsMode::kArgmax) {
            seg.token = s.token;
            if (host_select) seg.logits = scratch.argmax_logits[step].data();
          } else if (s.mode == LogitsMode::kTop) {
            if (host_select) {
              seg.logits = s.logits->data();
            } else {
              seg.select = &s;
            }
          } else {
            seg.logits = s.logits->data() +
                         (s.mode == LogitsMode::kAll ? first_logit * vocab : std::size_t{0});
          }
        }
        segments.push_back(seg);
        rows += count;
        done += count;
      }
      if (done == s.tokens.size()) {
        ++step;
        done = 0;
      }
    }
    if (!segments.empty()) FGNET_TRY(run(segments));
  }
  if (host_select) {
    for (std::size_t i = 0; i < steps.size(); ++i) {
      if (steps[i].mode == LogitsMode::kTop) {
        ApplyLogitsFilter(*steps[i].logits, steps[i].filter);
        // The full row stays in *logits when the top might not hold the sampler's candidates.
        SelectTopLogits(*steps[i].logits, steps[i].top);
        if (!TopIsComplete(*steps[i].top, steps[i].top_k, steps[i].top_temperature))
          steps[i].top->clear();
        continue;
      }
      if (steps[i].mode != LogitsMode::kArgmax) continue;
      std::vector<float>& row = scratch.argmax_logits[i];
      ApplyLogitsFilter(row, steps[i].filter);
      std::int32_t best = -1;
      float best_value = -std::numeric_limits<float>::infinity();
      for (std::size_t v = 0; v < vocab; ++v) {
        if (row[v] > best_value) {  // NaN compares false
          best_value = row[v];
          best = static_cast<std::int32_t>(v);
        }
      }
      *steps[i].token = best;
    }
  }
  return Ok();
}

}  // namespace fgnet
