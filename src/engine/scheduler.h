// The engine's step loop (see engine.h for the policy). Runs on the engine's scheduler thread;
// owns the block pool's use, the prefix tree, the compute thread pool and every running request.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine_internal.h"
#include "util/thread_pool.h"

namespace fgnet {

class Scheduler {
 public:
  Scheduler(const Model& model, const std::string& base_hash, std::shared_ptr<kv::BlockPool> pool,
            std::shared_ptr<Inbox> inbox, const EngineOptions& options, const Tokenizer* tokenizer);
  ~Scheduler();  // finishes every request left as cancelled and frees their blocks

  // Loops until the inbox is stopped.
  void Run();

  EngineMetrics Metrics() const;
  void CountFailed();
  void CountRejected();

 private:
  bool Step();  // false when nothing could run
  bool Admit(Group& group);
  bool ReserveFor(Group& group, std::int64_t tokens, std::size_t order_index);
  void Preempt(Group& group);
  // How a member asks for the logits of the group's next token: kArgmax (greedy) or kTop (top-k
  // sampling below kTopLogits) when the selection can happen in the model, with the grammar's
  // mask and the repetition penalty as `filter`; kLast (the row comes here) for ensembles,
  // returned logits, other sampling, and a grammar whose token budget needs the logits.
  LogitsMode SelectionMode(Group& group, Member& member, LogitsFilter* filter);
  void Sample(Group& group);
  // Ensembles, grammar, the sampler; `filtered`: a kTop step's row, already masked and penalised.
  Result<std::int32_t> SampleFromLogits(Group& group, bool filtered);
  void Commit(Group& group, std::int32_t id);  // emits or finishes on a chosen token
  void Finish(Group& group, const std::string& reason, Status status = Ok());
  void Emit(Group& group, StreamEvent event);
  void ReleaseMembers(Group& group);
  void Reap();  // drops finished groups
  void UpdateGauges();

  const Model& model_;
  std::shared_ptr<kv::BlockPool> pool_;
  std::shared_ptr<Inbox> inbox_;
  EngineOptions options_;
  const Tokenizer* tokenizer_;
  kv::PrefixTree tree_;
  ThreadPool threads_;
  ForwardScratch scratch_;

  std::vector<std::unique_ptr<Group>> waiting_;  // not admitted
  std::vector<std::unique_ptr<Group>> running_;  // admitted
  std::vector<Group*> order_;                    // running_, by priority then arrival
  std::vector<SequenceStep> steps_;
  std::vector<std::pair<Group*, Member*>> step_members_;

  std::uint64_t step_count_ = 0;

  mutable std::mutex metrics_mu_;
  EngineMetrics metrics_;
};

}  // namespace fgnet
