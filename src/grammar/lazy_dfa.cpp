#include "grammar/lazy_dfa.h"

#include <algorithm>

namespace fgnet::grammar_detail {

std::size_t LazyDfa::SetHash::operator()(const std::vector<std::int32_t>& v) const {
  std::uint64_t h = 0x9E3779B97F4A7C15ull ^ v.size();
  for (const std::int32_t x : v) {
    h ^= static_cast<std::uint32_t>(x);
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
  }
  return static_cast<std::size_t>(h);
}

LazyDfa::LazyDfa(std::shared_ptr<const Nfa> nfa, std::int32_t max_states)
    : nfa_(std::move(nfa)), max_states_(std::max(max_states, 1)) {
  const std::int32_t num_chunks = (max_states_ + kChunkSize - 1) / kChunkSize;
  chunks_ = std::make_unique<std::atomic<State*>[]>(num_chunks);
  for (std::int32_t i = 0; i < num_chunks; ++i) chunks_[i].store(nullptr);
  mark_.assign(nfa_->num_states(), 0);
  if (nfa_->distance(nfa_->start()) == kInfiniteDistance) return;
  std::lock_guard<std::mutex> lock(mu_);
  seeds_.assign(1, nfa_->start());
  Close(seeds_);
  start_ = Intern();
}

void LazyDfa::Close(const std::vector<std::int32_t>& seeds) const {
  if (++stamp_ == 0) {
    std::fill(mark_.begin(), mark_.end(), 0);
    stamp_ = 1;
  }
  scratch_.clear();
  stack_.clear();
  for (const std::int32_t s : seeds) {
    if (mark_[s] != stamp_) {
      mark_[s] = stamp_;
      stack_.push_back(s);
    }
  }
  while (!stack_.empty()) {
    const std::int32_t s = stack_.back();
    stack_.pop_back();
    if (nfa_->distance(s) == kInfiniteDistance) continue;
    scratch_.push_back(s);
    for (const std::int32_t t : nfa_->epsilons(s)) {
      if (mark_[t] != stamp_) {
        mark_[t] = stamp_;
        stack_.push_back(t);
      }
    }
  }
  std::sort(scratch_.begin(), scratch_.end());
}

std::int32_t LazyDfa::Intern() const {
  if (scratch_.empty()) return kDeadState;
  const auto found = index_.find(scratch_);
  if (found != index_.end()) return found->second;
  const std::int32_t id = num_states_.load(std::memory_order_relaxed);
  if (id >= max_states_) {
    full_.store(true, std::memory_order_relaxed);
    return kDeadState;
  }
  const std::int32_t chunk = id >> kChunkBits;
  if (chunks_[chunk].load(std::memory_order_relaxed) == nullptr) {
    chunk_storage_.push_back(std::make_unique<State[]>(kChunkSize));
    chunks_[chunk].store(chunk_storage_.back().get(), std::memory_order_release);
  }
  State& st = chunks_[chunk].load(std::memory_order_relaxed)[id & (kChunkSize - 1)];
  const auto inserted = index_.emplace(scratch_, id).first;
  st.nfa_states = &inserted->first;
  st.distance = kInfiniteDistance;
  bool has_edges = false;
  for (const std::int32_t s : scratch_) {
    st.distance = std::min(st.distance, nfa_->distance(s));
    if (s == nfa_->accept()) st.accepting = true;
    if (!nfa_->edges(s).empty()) has_edges = true;
  }
  st.terminal = st.accepting && !has_edges;
  const std::int32_t classes = nfa_->num_classes();
  st.next = std::make_unique<std::atomic<std::int32_t>[]>(classes);
  for (std::int32_t c = 0; c < classes; ++c) st.next[c].store(kUnknown, std::memory_order_relaxed);
  num_states_.store(id + 1, std::memory_order_release);
  return id;
}

std::int32_t LazyDfa::Compute(std::int32_t state, std::int32_t cls) const {
  std::lock_guard<std::mutex> lock(mu_);
  const State& st = At(state);
  const std::int32_t known = st.next[cls].load(std::memory_order_relaxed);
  if (known != kUnknown) return known;
  const Symbol rep = nfa_->class_first(cls);
  seeds_.clear();
  for (const std::int32_t s : *st.nfa_states) {
    for (const Nfa::Edge& e : nfa_->edges(s)) {
      if (e.lo <= rep && rep <= e.hi) seeds_.push_back(e.to);
    }
  }
  Close(seeds_);
  const std::int32_t target = Intern();
  if (target == kDeadState && !scratch_.empty()) return kDeadState;  // full: not recorded
  st.next[cls].store(target, std::memory_order_release);
  return target;
}

}  // namespace fgnet::grammar_detail
