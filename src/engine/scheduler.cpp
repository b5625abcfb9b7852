#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fgnet {
namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The adapters acting on positions before `end`, as comparable entries.
std::vector<std::tuple<std::string, float, std::int64_t>> ContextOf(
    std::span<const AdapterUse> adapters, std::int64_t end) {
  std::vector<std::tuple<std::string, float, std::int64_t>> out;
  for (const AdapterUse& use : adapters) {
    if (use.start < end) out.emplace_back(use.adapter->content_hash, use.scale, use.start);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool Before(const Group* a, const Group* b) {
  if (a->priority != b->priority) return a->priority > b->priority;
  return a->seq_no < b->seq_no;
}

std::int64_t Pending(const Group& g, const Member& m) {
  return static_cast<std::int64_t>(g.tokens.size()) - m.kv->length();
}

}  // namespace

Scheduler::Scheduler(const Model& model, const std::string& base_hash,
                     std::shared_ptr<kv::BlockPool> pool, std::shared_ptr<Inbox> inbox,
                     const EngineOptions& options, const Tokenizer* tokenizer)
    : model_(model),
      pool_(std::move(pool)),
      inbox_(std::move(inbox)),
      options_(options),
      tokenizer_(tokenizer),
      tree_(*pool_, base_hash),
      threads_(options.threads) {
  metrics_.kv_blocks_total = pool_->num_blocks();
  metrics_.kv_block_bytes = static_cast<std::int64_t>(pool_->layout().block_bytes());
  metrics_.kv_blocks_free = pool_->num_free();
}

Scheduler::~Scheduler() {
  std::vector<std::unique_ptr<Group>> left;
  {
    std::lock_guard lock(inbox_->mu);
    left = std::move(inbox_->submitted);
    inbox_->graveyard.clear();
  }
  for (auto* list : {&left, &waiting_, &running_}) {
    for (auto& g : *list) {
      if (g != nullptr)
        Finish(*g, "cancelled", MakeError("engine: shut down before the request finished"));
    }
    list->clear();
  }
}

void Scheduler::CountFailed() {
  std::lock_guard lock(metrics_mu_);
  ++metrics_.requests_submitted;
  ++metrics_.requests_failed;
}

void Scheduler::CountRejected() {
  std::lock_guard lock(metrics_mu_);
  ++metrics_.requests_submitted;
  ++metrics_.requests_rejected;
}

EngineMetrics Scheduler::Metrics() const {
  std::lock_guard lock(metrics_mu_);
  return metrics_;
}

void Scheduler::Run() {
  bool progressed = true;
  while (true) {
    std::vector<std::unique_ptr<Group>> fresh;
    std::vector<kv::PagedSequence> dead;
    bool flush = false;
    {
      std::unique_lock lock(inbox_->mu);
      const auto ready = [&] {
        return inbox_->stopped || !inbox_->submitted.empty() || !inbox_->graveyard.empty() ||
               inbox_->flush;
      };
      const bool busy = !running_.empty() || !waiting_.empty();
      if (!busy) {
        inbox_->cv.wait(lock, ready);
      } else if (!progressed) {
        // Nothing could run (e.g. every block is pinned): wait a little for a change.
        inbox_->cv.wait_for(lock, std::chrono::milliseconds(2), ready);
      }
      if (inbox_->stopped) return;
      fresh = std::move(inbox_->submitted);
      inbox_->submitted.clear();
      dead = std::move(inbox_->graveyard);
      inbox_->graveyard.clear();
      flush = inbox_->flush;
    }
    dead.clear();  // releases the blocks of prefixes nobody holds any more
    {
      std::lock_guard lock(metrics_mu_);
      for (const auto& g : fresh) {
        ++metrics_.requests_submitted;
        AdapterMetrics& a = metrics_.per_adapter[g->metrics_key];
        ++a.requests;
        a.prompt_tokens += static_cast<std::uint64_t>(g->prompt_len);
      }
    }
    for (auto& g : fresh) {
      if (g->max_tokens == 0 && g->pin_into == nullptr) {
        Finish(*g, "length");
        continue;
      }
      waiting_.push_back(std::move(g));
    }
    if (flush) {
      tree_.EvictAll();
      UpdateGauges();
      std::lock_guard lock(inbox_->mu);
      inbox_->flush = false;
      ++inbox_->flushes_done;
      inbox_->cv.notify_all();
    }
    progressed = Step();
    Reap();
    UpdateGauges();
  }
}

bool Scheduler::ReserveFor(Group& group, std::int64_t tokens, std::size_t order_index) {
  for (Member& m : group.members) {
    const std::int64_t take = std::min(tokens, Pending(group, m));
    while (!m.kv->Reserve(take)) {
      // Preempt the last running request after this one that is not in this step.
      Group* victim = nullptr;
      for (std::size_t j = order_.size(); j-- > order_index + 1;) {
        Group* g = order_[j];
        if (g->running && !g->in_step && !g->finished && g != &group) {
          victim = g;
          break;
        }
      }
      if (victim == nullptr) return false;
      Preempt(*victim);
    }
  }
  return true;
}

void Scheduler::Preempt(Group& group) {
  ReleaseMembers(group);
  group.running = false;
  ++group.preemptions;
  std::lock_guard lock(metrics_mu_);
  ++metrics_.preemptions;
}

bool Scheduler::Admit(Group& group) {
  std::int64_t cached = 0;
  for (std::size_t i = 0; i < group.members.size(); ++i) {
    Member& m = group.members[i];
    m.kv.emplace(*pool_);
    m.has_logits = false;
    m.cacheable = options_.prefix_cache;
    std::int64_t hit = 0;
    if (group.prefix != nullptr) {
      const PrefixState& prefix = *group.prefix;
      const auto length = static_cast<std::int64_t>(prefix.tokens.size());
      const bool exact = ContextOf(prefix.adapters, length) == ContextOf(m.adapters, length);
      if (!exact && !group.approximate_prefix) {
        Finish(group, "error",
               MakeError("request: the prefix was computed under other adapters than ",
                         group.members.size() > 1 ? "an ensemble member's" : "the request's",
                         "; set approximate_prefix to reuse it anyway"));
        return false;
      }
      FGNET_CHECK(prefix.kv.has_value());
      *m.kv = prefix.kv->Fork();
      if (!exact) {
        m.cacheable = false;
        group.prefix_approximate_used = true;
      }
      hit = length;
    } else if (options_.prefix_cache) {
      hit = tree_.Match(group.tokens, m.adapters,
                        static_cast<std::int64_t>(group.tokens.size()) - 1, *m.kv, m.cursor);
    }
    if (i == 0) cached = hit;
  }
  group.running = true;
  if (!group.scheduled_once) {
    group.scheduled_once = true;
    group.scheduled_at = Clock::now();
    group.cached_tokens = std::min(cached, group.prompt_len);
    {
      std::lock_guard lock(metrics_mu_);
      metrics_.prompt_tokens += static_cast<std::uint64_t>(group.prompt_len);
      metrics_.cached_prompt_tokens += static_cast<std::uint64_t>(group.cached_tokens);
    }
    std::lock_guard lock(inbox_->mu);
    --inbox_->waiting;
  }
  return true;
}

bool Scheduler::Step() {
  const Clock::time_point now = Clock::now();
  // Cancellations and deadlines.
  for (auto* list : {&waiting_, &running_}) {
    for (auto& g : *list) {
      bool cancel;
      {
        std::lock_guard lock(g->state->mu);
        cancel = g->state->cancel;
      }
      if (cancel) {
        Finish(*g, "cancelled");
      } else if (g->deadline.has_value() && now >= *g->deadline) {
        Finish(*g, "deadline");
      }
    }
  }
  Reap();

  order_.clear();
  for (auto& g : running_) {
    g->in_step = false;
    order_.push_back(g.get());
  }
  std::sort(order_.begin(), order_.end(), Before);
  std::int64_t budget = options_.max_batch_tokens;
  steps_.clear();
  step_members_.clear();
  const auto add = [&](Group& g, std::int64_t tokens) {
    g.in_step = true;
    for (Member& m : g.members) {
      const std::int64_t take = std::min(tokens, Pending(g, m));
      if (take == 0) continue;
      const auto from = static_cast<std::size_t>(m.kv->length());
      const bool last = from + static_cast<std::size_t>(take) == g.tokens.size();
      const bool logits = last && g.pin_into == nullptr;
      LogitsFilter filter;
      const LogitsMode mode = logits ? SelectionMode(g, m, &filter) : LogitsMode::kNone;
      m.mode = mode;
      SequenceStep step{
          std::span<const std::int32_t>(g.tokens).subspan(from, static_cast<std::size_t>(take)),
          &*m.kv,
          mode,
          mode == LogitsMode::kLast || mode == LogitsMode::kTop ? &m.logits : nullptr,
          m.adapters,
          &m.argmax};
      step.filter = filter;
      if (mode == LogitsMode::kTop) {
        step.top = &m.top;
        step.top_k = g.sampler->params().top_k;
        step.top_temperature = g.sampler->params().temperature;
      }
      steps_.push_back(step);
      step_members_.emplace_back(&g, &m);
      budget -= take;
    }
  };
  const auto max_pending = [](const Group& g) {
    std::int64_t p = 0;
    for (const Member& m : g.members) p = std::max(p, Pending(g, m));
    return p;
  };

  // 1. Every running sequence that is decoding advances by one token. If the budget is smaller
  // than their number, those served longest ago go first (within a priority).
  std::vector<std::size_t> decoding;
  for (std::size_t i = 0; i < order_.size(); ++i) {
    if (max_pending(*order_[i]) == 1) decoding.push_back(i);
  }
  std::stable_sort(decoding.begin(), decoding.end(), [&](std::size_t a, std::size_t b) {
    const Group& x = *order_[a];
    const Group& y = *order_[b];
    if (x.priority != y.priority) return x.priority > y.priority;
    return x.last_decode_step < y.last_decode_step;
  });
  for (std::size_t i : decoding) {
    Group& g = *order_[i];
    if (!g.running || g.finished) continue;
    if (budget < static_cast<std::int64_t>(g.members.size())) break;
    if (!ReserveFor(g, 1, i)) {
      Preempt(g);
      continue;
    }
    g.last_decode_step = step_count_;
    add(g, 1);
  }
  // 2. Prefill chunks of admitted requests, in order.
  for (std::size_t i = 0; i < order_.size() && budget > 0; ++i) {
    Group& g = *order_[i];
    if (!g.running || g.finished || g.in_step) continue;
    const std::int64_t chunk =
        std::min(max_pending(g), budget / static_cast<std::int64_t>(g.members.size()));
    if (chunk <= 0) break;
    if (!ReserveFor(g, chunk, i)) continue;
    add(g, chunk);
  }
  // 3. Admit waiting requests while budget and room remain.
  std::stable_sort(waiting_.begin(), waiting_.end(),
                   [](const auto& a, const auto& b) { return Before(a.get(), b.get()); });
  std::size_t admitted_running = 0;
  for (const auto& g : running_) admitted_running += g->running ? 1 : 0;
  for (auto& slot : waiting_) {
    if (budget <= 0 || static_cast<std::int64_t>(admitted_running) >= options_.max_running) break;
    Group& g = *slot;
    if (g.finished || g.running) continue;
    if (!Admit(g)) continue;  // failed with an error
    const std::int64_t chunk =
        std::min(max_pending(g), budget / static_cast<std::int64_t>(g.members.size()));
    bool reserved = chunk > 0;
    for (Member& m : g.members)
      reserved = reserved && m.kv->Reserve(std::min(chunk, Pending(g, m)));
    if (!reserved) {  // no room now: back to waiting, as it was
      ReleaseMembers(g);
      g.running = false;
      break;
    }
    add(g, chunk);
    ++admitted_running;
    running_.push_back(std::move(slot));  // leaves a null in waiting_, removed by Reap
  }
  if (steps_.empty()) return false;
  ++step_count_;

  const Clock::time_point forward_start = Clock::now();
  const Status status = model_.ForwardBatch(steps_, threads_, scratch_);
  const double forward_ms = Ms(Clock::now() - forward_start);
  {
    std::lock_guard lock(metrics_mu_);
    ++metrics_.steps;
    for (const SequenceStep& s : steps_) metrics_.step_tokens += s.tokens.size();
  }
  // The step's wall time and its forward pass's, counted together once its tokens are streamed,
  // so that a snapshot holds both or neither.
  const auto count_step = [this, now, forward_ms] {
    std::lock_guard lock(metrics_mu_);
    metrics_.step_ms += Ms(Clock::now() - now);
    metrics_.forward_ms += forward_ms;
  };
  if (!status.ok()) {
    for (auto& [g, m] : step_members_) Finish(*g, "error", status.error());
    count_step();
    return true;
  }
  for (std::size_t i = 0; i < step_members_.size(); ++i) {
    auto [g, m] = step_members_[i];
    if (m->cacheable) tree_.Insert(g->tokens, m->adapters, *m->kv, m->cursor);
    m->kv->Trim();
    if (steps_[i].mode != LogitsMode::kNone) m->has_logits = true;
  }
  for (auto& [g, m] : step_members_) {
    if (g->finished || !g->in_step) continue;
    g->in_step = false;  // handle each group once
    bool complete = true;
    for (const Member& mm : g->members)
      complete = complete && Pending(*g, mm) == 0 && (mm.has_logits || g->pin_into != nullptr);
    if (!complete) continue;
    if (g->pin_into != nullptr) {
      g->pin_into->kv = std::move(*g->members[0].kv);
      g->members[0].kv.reset();
      Finish(*g, "length");
    } else {
      Sample(*g);
    }
  }
  count_step();
  return true;
}

LogitsMode Scheduler::SelectionMode(Group& g, Member& m, LogitsFilter* filter) {
  if (g.members.size() != 1 || g.return_logits || !g.sampler.has_value()) return LogitsMode::kLast;
  const Sampler& sampler = *g.sampler;
  const bool greedy = sampler.params().greedy();
  if (!greedy && !sampler.CanSampleFromTop()) return LogitsMode::kLast;
  if (g.matcher != nullptr) {
    const Clock::time_point start = Clock::now();
    const std::shared_ptr<const TokenMask> mask = g.matcher->StepMask(g.max_tokens - g.generated());
    if (mask == nullptr) return LogitsMode::kLast;
    m.allowed.resize(LogitsFilterWords(model_.config().vocab_size));
    mask->FillBits(m.allowed);
    filter->allowed = m.allowed;
    const double ms = Ms(Clock::now() - start);
    std::lock_guard lock(metrics_mu_);
    ++metrics_.grammar_masks;
    metrics_.grammar_mask_ms += ms;
  }
  sampler.FillFilter(filter);
  return greedy ? LogitsMode::kArgmax : LogitsMode::kTop;
}

void Scheduler::Sample(Group& g) {
  for (Member& m : g.members) m.has_logits = false;
  const Member& first = g.members[0];
  Result<std::int32_t> token = first.argmax;
  if (first.mode == LogitsMode::kArgmax) {
    if (first.argmax < 0) {
      token = MakeError("no logit is a number above -inf (vocab ", model_.config().vocab_size, ")");
    }
  } else if (first.mode == LogitsMode::kTop && !first.top.empty()) {
    token = g.sampler->SampleFromTop(first.top);
  } else {
    token = SampleFromLogits(g, /*filtered=*/first.mode == LogitsMode::kTop);
  }
  if (!token.ok()) {
    Finish(g, "error", Error("sampling: " + token.error().message()));
    return;
  }
  Commit(g, *token);
}

Result<std::int32_t> Scheduler::SampleFromLogits(Group& g, bool filtered) {
  std::span<float> logits(g.members[0].logits);
  if (filtered) return g.sampler->SamplePenalized(logits);
  if (g.members.size() > 1) {
    const std::size_t vocab = g.members[0].logits.size();
    g.combined.assign(
        vocab, g.mode == EnsembleMode::kMax ? -std::numeric_limits<float>::infinity() : 0.0f);
    float total = 0.0f;
    for (const Member& m : g.members) {
      if (m.weight == 0.0f) continue;
      total += m.weight;
      for (std::size_t i = 0; i < vocab; ++i) {
        const float v = m.weight * m.logits[i];
        g.combined[i] =
            g.mode == EnsembleMode::kMax ? std::max(g.combined[i], v) : g.combined[i] + v;
      }
    }
    if (g.mode == EnsembleMode::kWeightedMean && total > 0.0f) {
      for (float& v : g.combined) v /= total;
    }
    logits = g.combined;
  }
  if (g.return_logits) g.logits_out.insert(g.logits_out.end(), logits.begin(), logits.end());
  if (g.matcher != nullptr) {
    const Clock::time_point start = Clock::now();
    g.matcher->MaskLogits(logits, g.max_tokens - g.generated());
    const double ms = Ms(Clock::now() - start);
    std::lock_guard lock(metrics_mu_);
    ++metrics_.grammar_masks;
    metrics_.grammar_mask_ms += ms;
  }
  return g.sampler->Sample(logits);
}

void Scheduler::Commit(Group& g, std::int32_t id) {
  const Clock::time_point now = Clock::now();
  {
    std::lock_guard lock(metrics_mu_);
    if (g.generated() == 0) {
      g.first_token_at = now;
      metrics_.time_to_first_token.Add(Ms(now - g.submitted_at));
    } else {
      metrics_.time_per_output_token.Add(Ms(now - g.last_token_at));
    }
  }
  g.last_token_at = now;
  if (std::find(g.stop_ids.begin(), g.stop_ids.end(), id) != g.stop_ids.end()) {
    Finish(g, "stop");
    return;
  }
  if (g.matcher != nullptr) {
    const Status accepted = g.matcher->Accept(id);
    if (!accepted.ok()) {
      Finish(g, "error", Error("grammar: " + accepted.error().message()));
      return;
    }
  }
  g.tokens.push_back(id);
  g.sampler->Accept(id);
  {
    std::lock_guard lock(metrics_mu_);
    ++metrics_.generated_tokens;
    ++metrics_.per_adapter[g.metrics_key].generated_tokens;
  }
  StreamEvent event{id, {}};
  bool stopped = false;
  if (g.stops.has_value()) {
    StopStringMatcher::Piece piece = g.stops->Push(id);
    event.text = std::move(piece.text);
    stopped = piece.stopped;
  }
  Emit(g, std::move(event));
  if (stopped || (g.matcher != nullptr && g.matcher->IsTerminal())) {
    Finish(g, "stop");
  } else if (g.generated() >= g.max_tokens) {
    Finish(g, "length");
  }
}

void Scheduler::Emit(Group& group, StreamEvent event) {
  std::lock_guard lock(group.state->mu);
  group.state->events.push_back(std::move(event));
  group.state->cv.notify_all();
}

void Scheduler::ReleaseMembers(Group& group) {
  for (Member& m : group.members) {
    m.cursor.Release();
    m.kv.reset();
    m.has_logits = false;
  }
}

void Scheduler::Finish(Group& g, const std::string& reason, Status status) {
  if (g.finished) return;
  g.finished = true;
  ReleaseMembers(g);
  const Clock::time_point now = Clock::now();
  Completion c;
  c.status = std::move(status);
  c.finish_reason = c.status.ok() ? reason : (reason == "cancelled" ? reason : "error");
  c.ids.assign(g.tokens.begin() + g.prompt_len, g.tokens.end());
  std::string rest;
  if (g.stops.has_value()) {
    rest = g.stops->Finish();
    c.text = g.stops->text();
  }
  c.usage = {g.prompt_len, g.generated(), g.cached_tokens};
  c.timings.total_ms = Ms(now - g.submitted_at);
  if (g.scheduled_once) c.timings.queue_ms = Ms(g.scheduled_at - g.submitted_at);
  if (g.generated() > 0 || reason == "stop") {
    if (g.first_token_at != Clock::time_point{})
      c.timings.time_to_first_token_ms = Ms(g.first_token_at - g.submitted_at);
  }
  if (g.generated() > 1) {
    c.timings.time_per_output_token_ms =
        Ms(g.last_token_at - g.first_token_at) / static_cast<double>(g.generated() - 1);
  }
  c.preemptions = g.preemptions;
  c.prefix_approximate = g.prefix_approximate_used;
  c.logits = std::move(g.logits_out);
  {
    std::lock_guard lock(metrics_mu_);
    if (c.status.ok()) {
      ++metrics_.requests_finished;
    } else {
      ++metrics_.requests_failed;
    }
  }
  if (!g.scheduled_once) {
    std::lock_guard lock(inbox_->mu);
    --inbox_->waiting;
  }
  // The gauges reflect the release before anyone waiting on the request wakes up.
  UpdateGauges();
  std::lock_guard lock(g.state->mu);
  if (!rest.empty()) g.state->events.push_back({-1, std::move(rest)});
  g.state->completion = std::move(c);
  g.state->finished = true;
  g.state->cv.notify_all();
}

void Scheduler::Reap() {
  // Finished requests go; preempted ones return to waiting; admitted ones left waiting_ already.
  std::vector<std::unique_ptr<Group>> keep;
  for (auto& g : running_) {
    if (g->finished) continue;
    if (!g->running) {
      waiting_.push_back(std::move(g));
      continue;
    }
    keep.push_back(std::move(g));
  }
  running_ = std::move(keep);
  std::erase_if(waiting_, [](const auto& g) { return g == nullptr || g->finished; });
}

void Scheduler::UpdateGauges() {
  const std::int64_t cached = tree_.blocks_cached_only();
  std::int64_t running = 0;
  for (const auto& g : running_) running += g->running && !g->finished ? 1 : 0;
  std::int64_t queued = 0;
  for (const auto& g : waiting_) queued += g != nullptr && !g->finished && !g->running ? 1 : 0;
  std::lock_guard lock(metrics_mu_);
  metrics_.queue_depth = queued;
  metrics_.running = running;
  metrics_.kv_blocks_free = pool_->num_free();
  metrics_.kv_blocks_cached = cached;
  metrics_.kv_blocks_used = pool_->num_blocks() - pool_->num_free() - cached;
  metrics_.kv_blocks_peak =
      std::max(metrics_.kv_blocks_peak, pool_->num_blocks() - pool_->num_free());
}

}  // namespace fgnet
