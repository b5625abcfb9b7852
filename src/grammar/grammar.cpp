// Grammar: the compiled automaton, token masks and their cache.
#include "grammar/grammar.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <limits>
#include <mutex>
#include <unordered_map>

#include "grammar/lazy_dfa.h"
#include "grammar/nfa.h"

namespace fgnet {

using grammar_detail::kDeadState;
using grammar_detail::kFirstSpecialSymbol;
using grammar_detail::LazyDfa;
using grammar_detail::Nfa;

struct Grammar::Impl {
  std::shared_ptr<const TokenVocabulary> vocab;
  GrammarOptions options;
  std::shared_ptr<const Nfa> nfa;
  std::unique_ptr<LazyDfa> dfa;
  std::vector<char> is_stop;  // [vocab size]

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::int32_t, std::shared_ptr<const TokenMask>> cache;
  mutable std::deque<std::int32_t> cache_order;  // oldest first
  mutable std::int64_t cache_bytes = 0;

  mutable std::atomic<std::int64_t> mask_hits{0};
  mutable std::atomic<std::int64_t> mask_misses{0};
  mutable std::atomic<std::int64_t> mask_compute_us{0};
  mutable std::atomic<std::int64_t> budget_walks{0};
  mutable std::atomic<std::int64_t> budget_walk_us{0};

  // Calls visit(token, end_state, end_distance) for every token the grammar allows in `state`,
  // stop ids included (callers handle those): text tokens through the trie, then special-symbol
  // tokens.
  //
  // The few DFA states one walk meets get walk-local dense rows (plain ints, a power-of-two
  // stride, filled from the shared DFA on first use), so the inner loop is two array reads per
  // trie node: path[depth - 1] + class -> the child's row.
  template <class Visit>
  void WalkAllowed(std::int32_t state, Visit&& visit) const {
    constexpr std::int32_t kUnknown = -2;
    const TokenTrie& trie = vocab->trie();
    const LazyDfa& d = *dfa;
    const grammar_detail::Nfa& automaton = d.nfa();
    int shift = 0;
    while ((1 << shift) < automaton.num_classes()) ++shift;
    std::int32_t byte_class[256];
    for (int b = 0; b < 256; ++b) byte_class[b] = automaton.class_of(b);

    std::vector<std::int32_t> ids;        // local index -> DFA state
    std::vector<std::int32_t> distances;  // local index -> distance
    std::vector<std::int32_t> table;      // [row + class] -> child row, kDeadState or kUnknown
    std::unordered_map<std::int32_t, std::int32_t> row_of;
    const auto row = [&](std::int32_t dfa_state) {
      const auto [it, inserted] =
          row_of.emplace(dfa_state, static_cast<std::int32_t>(ids.size()) << shift);
      if (inserted) {
        ids.push_back(dfa_state);
        distances.push_back(d.distance(dfa_state));
        table.resize(table.size() + (std::size_t{1} << shift), kUnknown);
      }
      return it->second;
    };

    std::vector<std::int32_t> path(trie.max_depth + 1);  // row per depth
    path[0] = row(state);
    std::int32_t* const path_rows = path.data();
    std::int32_t* rows = table.data();  // refreshed whenever `table` grows
    const std::int32_t* token_ids = trie.token_ids.data();
    const TokenTrie::Node* const first = trie.nodes.data();
    const TokenTrie::Node* const last = first + trie.num_nodes();
    const TokenTrie::Node* node = first;
    while (node < last) {
      const std::int32_t parent = path_rows[node->depth - 1];
      const std::int32_t slot = parent + byte_class[node->byte];
      std::int32_t s = rows[slot];
      if (__builtin_expect(s == kUnknown, 0)) {
        const std::int32_t next = d.Next(ids[parent >> shift], node->byte);
        s = next == kDeadState ? kDeadState : row(next);
        rows = table.data();
        rows[slot] = s;
      }
      if (s == kDeadState) {
        node = first + node->skip;
        continue;
      }
      path_rows[node->depth] = s;
      const std::uint32_t end = node[1].token_begin;
      for (std::uint32_t k = node->token_begin; k < end; ++k) {
        visit(token_ids[k], ids[s >> shift], distances[s >> shift]);
      }
      ++node;
    }
    for (std::int32_t sym = 0; sym < vocab->num_symbols(); ++sym) {
      const std::int32_t s = d.Next(state, kFirstSpecialSymbol + sym);
      if (s != kDeadState) visit(vocab->symbol_token(sym), s, d.distance(s));
    }
  }

  std::shared_ptr<const TokenMask> ComputeMask(std::int32_t state) const {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::int32_t> allowed;
    allowed.reserve(static_cast<std::size_t>(vocab->size()));
    std::int32_t max_end = 0;
    WalkAllowed(state, [&](std::int32_t token, std::int32_t, std::int32_t distance) {
      if (is_stop[token]) return;  // allowed exactly when the state accepts, see below
      allowed.push_back(token);
      max_end = std::max(max_end, distance);
    });
    if (dfa->accepting(state)) {
      allowed.insert(allowed.end(), options.stop_ids.begin(), options.stop_ids.end());
    }
    auto mask = std::make_shared<const TokenMask>(std::move(allowed), vocab->size(), max_end);
    const auto t1 = std::chrono::steady_clock::now();
    mask_misses.fetch_add(1, std::memory_order_relaxed);
    mask_compute_us.fetch_add(
        std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count(),
        std::memory_order_relaxed);
    return mask;
  }
};

Grammar::Grammar(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Grammar::~Grammar() = default;

Result<std::shared_ptr<const Grammar>> Grammar::Create(grammar_detail::NfaBuilder&& builder,
                                                       grammar_detail::Fragment root,
                                                       std::shared_ptr<const TokenVocabulary> vocab,
                                                       GrammarOptions options,
                                                       std::string_view context) {
  FGNET_CHECK(vocab != nullptr);
  Result<Nfa> nfa = Nfa::Build(std::move(builder), root);
  if (!nfa.ok()) return nfa.error().WithContext(context);
  auto impl = std::make_unique<Impl>();
  impl->is_stop.assign(vocab->size(), 0);
  for (const std::int32_t t : options.stop_ids) {
    if (t < 0 || t >= vocab->size()) {
      return MakeError(context, ": stop id ", t, " is outside the vocabulary of ", vocab->size(),
                       " tokens");
    }
    impl->is_stop[t] = 1;
  }
  std::sort(options.stop_ids.begin(), options.stop_ids.end());
  options.stop_ids.erase(std::unique(options.stop_ids.begin(), options.stop_ids.end()),
                         options.stop_ids.end());
  impl->nfa = std::make_shared<const Nfa>(std::move(nfa).value());
  impl->dfa = std::make_unique<LazyDfa>(impl->nfa, options.max_dfa_states);
  if (impl->dfa->start() == kDeadState) {
    return MakeError(context, ": the grammar matches no output at all");
  }
  impl->vocab = std::move(vocab);
  impl->options = std::move(options);
  return std::shared_ptr<const Grammar>(new Grammar(std::move(impl)));
}

Status Grammar::CheckOptions(const GrammarOptions& options, std::string_view context) {
  constexpr std::int32_t kMaxStates = 1 << 24;
  if (options.max_nfa_states < 1 || options.max_nfa_states > kMaxStates) {
    return MakeError(context, ": max_nfa_states ", options.max_nfa_states, " is outside [1, ",
                     kMaxStates, "]");
  }
  if (options.max_dfa_states < 1 || options.max_dfa_states > kMaxStates) {
    return MakeError(context, ": max_dfa_states ", options.max_dfa_states, " is outside [1, ",
                     kMaxStates, "]");
  }
  return Ok();
}

const TokenVocabulary& Grammar::vocab() const { return *impl_->vocab; }
const GrammarOptions& Grammar::options() const { return impl_->options; }

bool Grammar::IsStopId(std::int32_t token) const {
  return token >= 0 && token < impl_->vocab->size() && impl_->is_stop[token];
}

GrammarStats Grammar::stats() const {
  GrammarStats s;
  s.mask_hits = impl_->mask_hits.load(std::memory_order_relaxed);
  s.mask_misses = impl_->mask_misses.load(std::memory_order_relaxed);
  s.mask_compute_us = impl_->mask_compute_us.load(std::memory_order_relaxed);
  s.budget_walks = impl_->budget_walks.load(std::memory_order_relaxed);
  s.budget_walk_us = impl_->budget_walk_us.load(std::memory_order_relaxed);
  s.nfa_states = impl_->nfa->num_states();
  s.dfa_states = impl_->dfa->num_states();
  s.dfa_full = impl_->dfa->full();
  std::lock_guard<std::mutex> lock(impl_->cache_mu);
  s.cached_masks = static_cast<std::int64_t>(impl_->cache.size());
  s.cached_mask_bytes = impl_->cache_bytes;
  return s;
}

std::int32_t Grammar::start_state() const { return impl_->dfa->start(); }

std::int32_t Grammar::Advance(std::int32_t state, std::int32_t token) const {
  FGNET_CHECK(state >= 0 && state < impl_->dfa->num_states());
  const TokenVocabulary& v = *impl_->vocab;
  if (token < 0 || token >= v.size() || impl_->is_stop[token]) return kNoState;
  switch (v.kind(token)) {
    case TokenKind::kText: {
      std::int32_t s = state;
      for (const char c : v.text(token)) {
        s = impl_->dfa->Next(s, static_cast<unsigned char>(c));
        if (s == kDeadState) return kNoState;
      }
      return s;
    }
    case TokenKind::kSymbol: {
      const std::int32_t s = impl_->dfa->Next(state, kFirstSpecialSymbol + v.symbol(token));
      return s == kDeadState ? kNoState : s;
    }
    case TokenKind::kNever:
      break;
  }
  return kNoState;
}

bool Grammar::IsAccepting(std::int32_t state) const { return impl_->dfa->accepting(state); }
bool Grammar::IsTerminal(std::int32_t state) const { return impl_->dfa->terminal(state); }
std::int64_t Grammar::Distance(std::int32_t state) const { return impl_->dfa->distance(state); }

std::shared_ptr<const TokenMask> Grammar::Mask(std::int32_t state) const {
  FGNET_CHECK(state >= 0 && state < impl_->dfa->num_states());
  Impl& g = *impl_;
  {
    std::lock_guard<std::mutex> lock(g.cache_mu);
    const auto it = g.cache.find(state);
    if (it != g.cache.end()) {
      g.mask_hits.fetch_add(1, std::memory_order_relaxed);
      return it->second;
    }
  }
  std::shared_ptr<const TokenMask> mask = g.ComputeMask(state);
  // A walk that met a full DFA may have missed tokens: use it once, do not keep it.
  if (g.dfa->full() || g.options.max_cached_masks == 0) return mask;
  std::lock_guard<std::mutex> lock(g.cache_mu);
  const auto [it, inserted] = g.cache.emplace(state, mask);
  if (!inserted) return it->second;  // another thread computed it meanwhile
  g.cache_order.push_back(state);
  g.cache_bytes += static_cast<std::int64_t>(mask->bytes());
  while (g.cache.size() > g.options.max_cached_masks) {
    const auto old = g.cache.find(g.cache_order.front());
    g.cache_bytes -= static_cast<std::int64_t>(old->second->bytes());
    g.cache.erase(old);
    g.cache_order.pop_front();
  }
  return mask;
}

void Grammar::MaskOverBudget(std::int32_t state, std::int64_t budget,
                             std::span<float> logits) const {
  FGNET_CHECK(state >= 0 && state < impl_->dfa->num_states());
  const Impl& g = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  // Some token fits when the state is at most budget + 1 symbols from acceptance (the first
  // symbol of a shortest completion is a token), or a stop id may end the output here.
  std::int64_t threshold = budget;
  const bool stop_allowed = g.dfa->accepting(state) && !g.options.stop_ids.empty();
  if (g.dfa->distance(state) - 1 > budget && !stop_allowed) {
    // Over budget already: keep the tokens that get closest.
    std::int64_t min_distance = std::numeric_limits<std::int64_t>::max();
    g.WalkAllowed(state, [&](std::int32_t token, std::int32_t, std::int32_t distance) {
      if (!g.is_stop[token]) min_distance = std::min<std::int64_t>(min_distance, distance);
    });
    threshold = std::max(threshold, min_distance);
  }
  // Marks in a bitset first (tokens come in trie order, scattered over the vocabulary), then
  // one sequential pass over the logits.
  std::vector<std::uint64_t> too_far((static_cast<std::size_t>(g.vocab->size()) + 63) / 64, 0);
  g.WalkAllowed(state, [&](std::int32_t token, std::int32_t, std::int32_t distance) {
    if (distance > threshold) too_far[token >> 6] |= std::uint64_t{1} << (token & 63);
  });
  for (const std::int32_t t : g.options.stop_ids) {  // not masked as text
    too_far[t >> 6] &= ~(std::uint64_t{1} << (t & 63));
  }
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const std::size_t n = std::min(logits.size(), static_cast<std::size_t>(g.vocab->size()));
  for (std::size_t w = 0; w * 64 < n; ++w) {
    std::uint64_t bits = too_far[w];
    while (bits != 0) {
      const std::size_t i = w * 64 + static_cast<std::size_t>(__builtin_ctzll(bits));
      if (i < n) logits[i] = kNegInf;
      bits &= bits - 1;
    }
  }
  const auto t1 = std::chrono::steady_clock::now();
  g.budget_walks.fetch_add(1, std::memory_order_relaxed);
  g.budget_walk_us.fetch_add(std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count(),
                             std::memory_order_relaxed);
}

}  // namespace fgnet
