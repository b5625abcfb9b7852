// The deterministic automaton of an Nfa, built lazily: a DFA state is the set of live NFA states
// (epsilon-closed) reached so far, created the first time a transition leads to it, and each
// state's transitions (one per symbol class) are computed the first time they are asked for.
//
// A state's distance is the minimum of its NFA states' distances: the fewest symbols to
// acceptance. A state is terminal when it accepts and has no transition at all.
//
// Thread-safety: Next() may be called from any number of threads. Computed transitions are read
// without locking (atomics, published with release/acquire); computing a missing one takes the
// automaton's mutex. States live in fixed chunks and are never moved or freed, so a state id,
// once handed out, stays valid for the automaton's life. At most `max_states` states are created;
// past that, a transition that would need a new state reports kDead without being recorded, and
// full() turns true.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "grammar/nfa.h"

namespace fgnet::grammar_detail {

inline constexpr std::int32_t kDeadState = -1;

class LazyDfa {
 public:
  LazyDfa(std::shared_ptr<const Nfa> nfa, std::int32_t max_states);
  LazyDfa(const LazyDfa&) = delete;
  LazyDfa& operator=(const LazyDfa&) = delete;

  // kDeadState when the start state cannot reach acceptance (the grammar matches nothing).
  std::int32_t start() const { return start_; }
  const Nfa& nfa() const { return *nfa_; }

  // The state after `symbol`, or kDeadState.
  std::int32_t Next(std::int32_t state, Symbol symbol) const {
    const State& st = At(state);
    const std::int32_t v = st.next[nfa_->class_of(symbol)].load(std::memory_order_acquire);
    if (v != kUnknown) return v;
    return Compute(state, nfa_->class_of(symbol));
  }

  // The transition row of a state, for tight loops: NextInRow(state, Row(state), symbol) equals
  // Next(state, symbol).
  const std::atomic<std::int32_t>* Row(std::int32_t state) const { return At(state).next.get(); }
  std::int32_t NextInRow(std::int32_t state, const std::atomic<std::int32_t>* row,
                         Symbol symbol) const {
    const std::int32_t cls = nfa_->class_of(symbol);
    const std::int32_t v = row[cls].load(std::memory_order_acquire);
    return v != kUnknown ? v : Compute(state, cls);
  }

  std::int32_t distance(std::int32_t state) const { return At(state).distance; }
  bool accepting(std::int32_t state) const { return At(state).accepting; }
  bool terminal(std::int32_t state) const { return At(state).terminal; }
  std::int32_t num_states() const { return num_states_.load(std::memory_order_acquire); }
  bool full() const { return full_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::int32_t kUnknown = -2;
  static constexpr int kChunkBits = 10;
  static constexpr std::int32_t kChunkSize = 1 << kChunkBits;

  struct State {
    const std::vector<std::int32_t>* nfa_states = nullptr;  // key in index_
    std::int32_t distance = 0;
    bool accepting = false;
    bool terminal = false;
    std::unique_ptr<std::atomic<std::int32_t>[]> next;  // [num_classes]
  };
  struct SetHash {
    std::size_t operator()(const std::vector<std::int32_t>& v) const;
  };

  const State& At(std::int32_t state) const {
    return chunks_[state >> kChunkBits].load(std::memory_order_acquire)[state & (kChunkSize - 1)];
  }
  // Slow path of Next: computes (under the mutex) and records a transition.
  std::int32_t Compute(std::int32_t state, std::int32_t cls) const;
  // Under the mutex: the id of the DFA state for the closed set in scratch_, creating it.
  std::int32_t Intern() const;
  // Under the mutex: epsilon closure of `seeds` into scratch_, live states only, sorted.
  void Close(const std::vector<std::int32_t>& seeds) const;

  std::shared_ptr<const Nfa> nfa_;
  std::int32_t max_states_;
  std::int32_t start_ = kDeadState;

  mutable std::mutex mu_;
  mutable std::unique_ptr<std::atomic<State*>[]> chunks_;
  mutable std::vector<std::unique_ptr<State[]>> chunk_storage_;
  mutable std::unordered_map<std::vector<std::int32_t>, std::int32_t, SetHash> index_;
  mutable std::atomic<std::int32_t> num_states_{0};
  mutable std::atomic<bool> full_{false};
  // Scratch space, used under mu_.
  mutable std::vector<std::int32_t> scratch_;
  mutable std::vector<std::int32_t> seeds_;
  mutable std::vector<std::int32_t> stack_;
  mutable std::vector<std::uint32_t> mark_;
  mutable std::uint32_t stamp_ = 0;
};

}  // namespace fgnet::grammar_detail
