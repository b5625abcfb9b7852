#include "grammar/nfa.h"

#include <algorithm>
#include <deque>
#include <utility>

namespace fgnet::grammar_detail {

NfaBuilder::NfaBuilder(std::int32_t alphabet_size, std::int32_t max_states)
    : alphabet_size_(alphabet_size), max_states_(max_states) {
  FGNET_CHECK_GE(alphabet_size, kFirstSpecialSymbol);
  FGNET_CHECK_GT(max_states, 0);
}

std::int32_t NfaBuilder::NewState() {
  if (num_states_ >= max_states_) {
    overflowed_ = true;
    return 0;
  }
  return num_states_++;
}

void NfaBuilder::AddEdge(std::int32_t from, Symbol lo, Symbol hi, std::int32_t to) {
  if (overflowed_) return;
  FGNET_CHECK(lo >= 0 && lo <= hi && hi < alphabet_size_);
  FGNET_CHECK(from >= 0 && from < num_states_ && to >= 0 && to < num_states_);
  edges_.push_back({from, to, lo, hi});
}

void NfaBuilder::AddEpsilon(std::int32_t from, std::int32_t to) {
  if (overflowed_) return;
  FGNET_CHECK(from >= 0 && from < num_states_ && to >= 0 && to < num_states_);
  epsilons_.push_back({from, to});
}

Fragment NfaBuilder::Empty() {
  const std::int32_t s = NewState();
  const std::int32_t e = NewState();
  AddEpsilon(s, e);
  return {s, e};
}

Fragment NfaBuilder::Nothing() {
  const std::int32_t s = NewState();
  return {s, NewState()};
}

Fragment NfaBuilder::Literal(std::string_view bytes) {
  const std::int32_t start = NewState();
  std::int32_t cur = start;
  for (const char c : bytes) {
    const std::int32_t next = NewState();
    const Symbol b = static_cast<unsigned char>(c);
    AddEdge(cur, b, b, next);
    cur = next;
  }
  if (cur == start) {
    cur = NewState();
    AddEpsilon(start, cur);
  }
  return {start, cur};
}

Fragment NfaBuilder::SymbolRange(Symbol lo, Symbol hi) {
  const std::int32_t s = NewState();
  const std::int32_t e = NewState();
  AddEdge(s, lo, hi, e);
  return {s, e};
}

Fragment NfaBuilder::Concat(Fragment a, Fragment b) {
  AddEpsilon(a.end, b.start);
  return {a.start, b.end};
}

Fragment NfaBuilder::Concat(std::span<const Fragment> parts) {
  if (parts.empty()) return Empty();
  Fragment out = parts[0];
  for (std::size_t i = 1; i < parts.size(); ++i) out = Concat(out, parts[i]);
  return out;
}

Fragment NfaBuilder::Alternate(std::span<const Fragment> options) {
  if (options.size() == 1) return options[0];
  const std::int32_t s = NewState();
  const std::int32_t e = NewState();
  for (const Fragment& f : options) {
    AddEpsilon(s, f.start);
    AddEpsilon(f.end, e);
  }
  return {s, e};
}

Fragment NfaBuilder::Optional(Fragment f) {
  const std::int32_t s = NewState();
  const std::int32_t e = NewState();
  AddEpsilon(s, f.start);
  AddEpsilon(s, e);
  AddEpsilon(f.end, e);
  return {s, e};
}

Fragment NfaBuilder::Star(Fragment f) {
  const std::int32_t s = NewState();
  const std::int32_t e = NewState();
  AddEpsilon(s, f.start);
  AddEpsilon(s, e);
  AddEpsilon(f.end, f.start);
  AddEpsilon(f.end, e);
  return {s, e};
}

Fragment NfaBuilder::Plus(Fragment f) {
  const std::int32_t e = NewState();
  AddEpsilon(f.end, f.start);
  AddEpsilon(f.end, e);
  return {f.start, e};
}

Fragment NfaBuilder::Copy(const Piece& piece) {
  if (overflowed_) return {0, 0};
  const std::int32_t first = piece.begin.states;
  const std::int32_t count = piece.end.states - piece.begin.states;
  if (num_states_ + static_cast<std::int64_t>(count) > max_states_) {
    overflowed_ = true;
    return {0, 0};
  }
  const std::int32_t base = num_states_;
  num_states_ += count;
  const auto map = [&](std::int32_t s) {
    FGNET_CHECK(s >= first && s < first + count);
    return s - first + base;
  };
  for (std::size_t i = piece.begin.edges; i < piece.end.edges; ++i) {
    const Edge e = edges_[i];
    edges_.push_back({map(e.from), map(e.to), e.lo, e.hi});
  }
  for (std::size_t i = piece.begin.epsilons; i < piece.end.epsilons; ++i) {
    const Epsilon e = epsilons_[i];
    epsilons_.push_back({map(e.from), map(e.to)});
  }
  return {map(piece.fragment.start), map(piece.fragment.end)};
}

Fragment NfaBuilder::Repeat(const Piece& piece, std::int64_t min, std::int64_t max) {
  FGNET_CHECK_GE(min, 0);
  if (max >= 0 && max < min) return Nothing();
  if (max == 0) return Empty();
  // Copies first, from the pristine piece, then the wiring.
  const std::int64_t copies = max >= 0 ? max : std::max<std::int64_t>(min, 1);
  std::vector<Fragment> parts;
  parts.push_back(piece.fragment);
  for (std::int64_t i = 1; i < copies && !overflowed_; ++i) parts.push_back(Copy(piece));
  if (overflowed_) return {0, 0};
  if (max < 0) {
    // min-1 mandatory copies then one-or-more (or zero-or-more when min is 0).
    if (min == 0) return Star(parts[0]);
    parts.back() = Plus(parts.back());
    return Concat(parts);
  }
  const std::int32_t start = NewState();
  const std::int32_t end = NewState();
  std::int32_t cur = start;
  for (std::int64_t i = 0; i < max; ++i) {
    if (i >= min) AddEpsilon(cur, end);
    AddEpsilon(cur, parts[i].start);
    cur = parts[i].end;
  }
  AddEpsilon(cur, end);
  return {start, end};
}

Result<Nfa> Nfa::Build(NfaBuilder&& builder, Fragment root) {
  if (builder.overflowed()) {
    return MakeError("the grammar needs more than ", builder.max_states(),
                     " automaton states (simplify it, or lower repetition bounds)");
  }
  Nfa nfa;
  const std::int32_t n = builder.num_states();
  nfa.start_ = root.start;
  nfa.accept_ = root.end;
  nfa.alphabet_size_ = builder.alphabet_size();

  // Distances: 0-1 BFS from the accepting state over reversed edges.
  std::vector<std::int32_t> rev_begin(n + 1, 0);
  std::vector<std::pair<std::int32_t, std::int32_t>> rev;  // (from, weight) grouped by `to`
  for (const auto& e : builder.edges_) ++rev_begin[e.to + 1];
  for (const auto& e : builder.epsilons_) ++rev_begin[e.to + 1];
  for (std::int32_t i = 0; i < n; ++i) rev_begin[i + 1] += rev_begin[i];
  rev.resize(rev_begin[n]);
  {
    std::vector<std::int32_t> fill(rev_begin.begin(), rev_begin.end() - 1);
    for (const auto& e : builder.edges_) rev[fill[e.to]++] = {e.from, 1};
    for (const auto& e : builder.epsilons_) rev[fill[e.to]++] = {e.from, 0};
  }
  std::vector<std::int32_t>& dist = nfa.distance_;
  dist.assign(n, kInfiniteDistance);
  std::deque<std::int32_t> queue;
  dist[root.end] = 0;
  queue.push_back(root.end);
  while (!queue.empty()) {
    const std::int32_t s = queue.front();
    queue.pop_front();
    for (std::int32_t i = rev_begin[s]; i < rev_begin[s + 1]; ++i) {
      const auto [from, w] = rev[i];
      if (dist[s] + w < dist[from]) {
        dist[from] = dist[s] + w;
        if (w == 0) {
          queue.push_front(from);
        } else {
          queue.push_back(from);
        }
      }
    }
  }

  // Forward rows, keeping only edges between live states.
  const auto live = [&](std::int32_t s) { return dist[s] != kInfiniteDistance; };
  nfa.edge_begin_.assign(n + 1, 0);
  nfa.eps_begin_.assign(n + 1, 0);
  for (const auto& e : builder.edges_) {
    if (live(e.from) && live(e.to)) ++nfa.edge_begin_[e.from + 1];
  }
  for (const auto& e : builder.epsilons_) {
    if (live(e.from) && live(e.to)) ++nfa.eps_begin_[e.from + 1];
  }
  for (std::int32_t i = 0; i < n; ++i) {
    nfa.edge_begin_[i + 1] += nfa.edge_begin_[i];
    nfa.eps_begin_[i + 1] += nfa.eps_begin_[i];
  }
  nfa.edges_.resize(nfa.edge_begin_[n]);
  nfa.eps_.resize(nfa.eps_begin_[n]);
  {
    std::vector<std::int32_t> fill(nfa.edge_begin_.begin(), nfa.edge_begin_.end() - 1);
    for (const auto& e : builder.edges_) {
      if (live(e.from) && live(e.to)) nfa.edges_[fill[e.from]++] = {e.lo, e.hi, e.to};
    }
    std::vector<std::int32_t> fill_eps(nfa.eps_begin_.begin(), nfa.eps_begin_.end() - 1);
    for (const auto& e : builder.epsilons_) {
      if (live(e.from) && live(e.to)) nfa.eps_[fill_eps[e.from]++] = e.to;
    }
  }

  // Symbol classes: maximal intervals of the alphabet that no edge boundary splits.
  std::vector<char> boundary(nfa.alphabet_size_ + 1, 0);
  boundary[0] = 1;
  for (const Edge& e : nfa.edges_) {
    boundary[e.lo] = 1;
    boundary[e.hi + 1] = 1;
  }
  nfa.class_of_.resize(nfa.alphabet_size_);
  for (Symbol s = 0; s < nfa.alphabet_size_; ++s) {
    if (boundary[s]) nfa.class_first_.push_back(s);
    nfa.class_of_[s] = static_cast<std::int32_t>(nfa.class_first_.size()) - 1;
  }

  // The builder's memory is no longer needed.
  builder.edges_ = {};
  builder.epsilons_ = {};
  return nfa;
}

}  // namespace fgnet::grammar_detail
