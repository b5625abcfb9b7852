// The nondeterministic automaton every grammar compiles to, over an alphabet of 256 bytes plus
// the vocabulary's special-token symbols (symbol k is 256 + k).
//
// NfaBuilder assembles it from Thompson-style fragments (one entry state, one exit state with no
// outgoing edges until the fragment is wired into something bigger) or edge by edge, which is
// how objects with optional members stay linear in size. Whatever a piece of code builds between
// two Marks is a closed sub-automaton (edges only among its own states), so Copy can duplicate
// it, which is how bounded repetition (x{m,n}, maxItems, maxLength) is built.
//
// Nfa is the finished, immutable automaton: edges in compressed rows, states that cannot reach
// acceptance dropped, for every state the fewest symbols to acceptance (a 0-1 breadth-first search
// on the reversed graph: epsilon edges cost 0, symbol edges 1), and the alphabet split into
// classes of symbols that every edge treats alike (the lazy DFA's rows are per class).
//
// Thread-safety: NfaBuilder is single-threaded; Nfa is immutable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace fgnet::grammar_detail {

// A byte (0..255) or a special-token symbol (256 + symbol index).
using Symbol = std::int32_t;
inline constexpr Symbol kFirstSpecialSymbol = 256;
inline constexpr std::int32_t kInfiniteDistance = std::numeric_limits<std::int32_t>::max();

// A piece of automaton: `start` is entered first; reaching `end` completes it.
struct Fragment {
  std::int32_t start = 0;
  std::int32_t end = 0;
};

// A position in the builder's output: everything added between two marks is one closed piece.
struct NfaMark {
  std::int32_t states = 0;
  std::size_t edges = 0;
  std::size_t epsilons = 0;
};

// A fragment and the marks around everything built for it, so that it can be copied.
struct Piece {
  Fragment fragment;
  NfaMark begin;
  NfaMark end;
};

class NfaBuilder {
 public:
  // `alphabet_size` = 256 + the number of special symbols. Once more than `max_states` states are
  // requested the builder stops growing (NewState returns a placeholder) and overflowed() is
  // true; callers check it and report the grammar as too large.
  NfaBuilder(std::int32_t alphabet_size, std::int32_t max_states);

  std::int32_t alphabet_size() const { return alphabet_size_; }
  std::int32_t num_states() const { return num_states_; }
  std::int32_t max_states() const { return max_states_; }
  bool overflowed() const { return overflowed_; }
  NfaMark Mark() const { return {num_states_, edges_.size(), epsilons_.size()}; }

  std::int32_t NewState();
  // An edge on every symbol in [lo, hi].
  void AddEdge(std::int32_t from, Symbol lo, Symbol hi, std::int32_t to);
  void AddEpsilon(std::int32_t from, std::int32_t to);

  Fragment Empty();    // matches the empty string
  Fragment Nothing();  // matches nothing at all
  Fragment Literal(std::string_view bytes);
  Fragment SymbolRange(Symbol lo, Symbol hi);
  Fragment Concat(Fragment a, Fragment b);
  Fragment Concat(std::span<const Fragment> parts);
  Fragment Alternate(std::span<const Fragment> options);
  Fragment Optional(Fragment f);
  Fragment Star(Fragment f);  // f must not be reachable from outside except through its start
  Fragment Plus(Fragment f);

  // A copy of everything built between piece.begin and piece.end (which must be closed: no edge
  // leaves it), returning the copy of piece.fragment.
  Fragment Copy(const Piece& piece);
  // min..max repetitions of the piece (max < 0: unbounded); uses copies of it, and the piece
  // itself as one of them.
  Fragment Repeat(const Piece& piece, std::int64_t min, std::int64_t max);

 private:
  friend class Nfa;
  struct Edge {
    std::int32_t from;
    std::int32_t to;
    Symbol lo;
    Symbol hi;
  };
  struct Epsilon {
    std::int32_t from;
    std::int32_t to;
  };

  std::int32_t alphabet_size_;
  std::int32_t max_states_;
  std::int32_t num_states_ = 0;
  bool overflowed_ = false;
  std::vector<Edge> edges_;
  std::vector<Epsilon> epsilons_;
};

class Nfa {
 public:
  struct Edge {
    Symbol lo;
    Symbol hi;
    std::int32_t to;
  };

  // Finishes `builder` with `root.start` as the start and `root.end` as the only accepting state.
  // Error when the builder overflowed.
  static Result<Nfa> Build(NfaBuilder&& builder, Fragment root);

  std::int32_t num_states() const { return static_cast<std::int32_t>(distance_.size()); }
  std::int32_t start() const { return start_; }
  std::int32_t accept() const { return accept_; }
  std::int32_t alphabet_size() const { return alphabet_size_; }
  std::span<const Edge> edges(std::int32_t state) const {
    return {edges_.data() + edge_begin_[state], edges_.data() + edge_begin_[state + 1]};
  }
  std::span<const std::int32_t> epsilons(std::int32_t state) const {
    return {eps_.data() + eps_begin_[state], eps_.data() + eps_begin_[state + 1]};
  }
  // Fewest symbols from `state` to acceptance; kInfiniteDistance for none (such states have no
  // edges left and are never entered).
  std::int32_t distance(std::int32_t state) const { return distance_[state]; }
  std::int32_t num_classes() const { return static_cast<std::int32_t>(class_first_.size()); }
  std::int32_t class_of(Symbol s) const { return class_of_[s]; }
  Symbol class_first(std::int32_t c) const { return class_first_[c]; }

 private:
  std::int32_t start_ = 0;
  std::int32_t accept_ = 0;
  std::int32_t alphabet_size_ = 0;
  std::vector<std::int32_t> edge_begin_;
  std::vector<Edge> edges_;
  std::vector<std::int32_t> eps_begin_;
  std::vector<std::int32_t> eps_;
  std::vector<std::int32_t> distance_;
  std::vector<std::int32_t> class_of_;  // [alphabet_size]
  std::vector<Symbol> class_first_;     // [num_classes]: a representative of each class
};

}  // namespace fgnet::grammar_detail
