// Internal state of the serving engine shared by its files (engine.cpp: the API and request
// preparation; scheduler.cpp: the step loop). Not part of the public API.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/stop_strings.h"
#include "grammar/grammar.h"
#include "kv/paged_sequence.h"
#include "kv/prefix_tree.h"

namespace fgnet {

using Clock = std::chrono::steady_clock;

// What the scheduler thread and the API threads exchange, under `mu`.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  bool stopped = false;
  std::vector<std::unique_ptr<struct Group>> submitted;
  std::vector<kv::PagedSequence> graveyard;  // released prefixes, freed by the scheduler
  std::int64_t waiting = 0;                  // submitted or queued, not yet running
  std::uint64_t next_seq_no = 0;
  bool flush = false;  // FlushPrefixCache asked
  std::uint64_t flushes_done = 0;
  // Serialises block releases after the scheduler stopped (engine shutdown against prefix
  // handles dropped on other threads).
  std::recursive_mutex pool_mu;
};

// The shared state behind a RequestHandle.
struct RequestState {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<StreamEvent> events;
  bool finished = false;
  Completion completion;
  bool cancel = false;  // asked by the handle
  std::shared_ptr<Inbox> inbox;
};

struct PrefixState {
  ~PrefixState();
  std::vector<std::int32_t> tokens;
  std::vector<AdapterUse> adapters;
  std::vector<std::shared_ptr<const LoraAdapter>> keep;
  std::shared_ptr<Inbox> inbox;
  std::shared_ptr<kv::BlockPool> pool;  // outlives the engine if the handle does
  std::optional<kv::PagedSequence> kv;  // set by the scheduler when computed
};

// One sequence of a group: the request itself, or one expert of an ensemble.
struct Member {
  std::optional<kv::PagedSequence> kv;
  kv::PrefixTree::Cursor cursor;
  std::vector<AdapterUse> adapters;
  float weight = 1.0f;
  std::vector<float> logits;
  LogitsMode mode = LogitsMode::kNone;  // how its latest step asked for logits
  std::int32_t argmax = -1;   // the step's greedy choice, when only that was asked (kArgmax)
  std::vector<TopLogit> top;  // the step's largest logits (kTop); empty: the row is in `logits`
  std::vector<std::uint64_t> allowed;  // the grammar's mask of a kArgmax or kTop step
  bool cacheable = true;  // its KV is exact for its key (not built on an approximate prefix)
  bool has_logits = false;
};

// A request as the scheduler sees it.
struct Group {
  std::uint64_t seq_no = 0;  // arrival order
  std::int32_t priority = 0;
  std::optional<Clock::time_point> deadline;
  std::shared_ptr<RequestState> state;
  std::vector<std::int32_t> tokens;  // prompt, then generated ids
  std::int64_t prompt_len = 0;
  std::int64_t max_tokens = 0;
  std::vector<Member> members;
  std::vector<std::shared_ptr<const LoraAdapter>> keep;
  std::shared_ptr<PrefixState> prefix;
  bool approximate_prefix = false;
  EnsembleMode mode = EnsembleMode::kWeightedMean;
  std::vector<float> combined;  // ensemble logits
  std::optional<Sampler> sampler;
  std::unique_ptr<GrammarMatcher> matcher;
  std::vector<std::int32_t> stop_ids;
  std::optional<StopStringMatcher> stops;  // with a tokenizer
  std::shared_ptr<PrefixState> pin_into;   // CreatePrefix
  std::string metrics_key;
  bool return_logits = false;
  std::vector<float> logits_out;

  // Run state.
  bool running = false;
  bool in_step = false;
  bool finished = false;
  bool prefix_approximate_used = false;
  std::int32_t preemptions = 0;
  std::int64_t cached_tokens = 0;
  Clock::time_point submitted_at, scheduled_at, first_token_at, last_token_at;
  bool scheduled_once = false;
  std::uint64_t last_decode_step = 0;  // fairness when decodes exceed the token budget

  std::int64_t generated() const { return static_cast<std::int64_t>(tokens.size()) - prompt_len; }
};

}  // namespace fgnet
