// Chain and ring topologies: nodes in edge order, each handing its output to the next; a ring
// goes around RingSpec::rounds times, stopping early when its output is unchanged or valid.
#include "network/executor_internal.h"

namespace fgnet::network::internal {
namespace {

// Runs `order` once; `carry` is the input of the first node (empty: none). On failure the rest
// are skipped and the error names the failed node.
Result<std::string> RunOnce(NetworkRun& run, const std::vector<const NodeSpec*>& order,
                            std::int32_t round, Upstream carry) {
  for (std::size_t i = 0; i < order.size(); ++i) {
    std::vector<Upstream> upstream;
    if (!carry.node_id.empty()) upstream.push_back(carry);
    std::size_t job = run.WaitOne(run.StartNode(*order[i], upstream, round, 0, ""));
    if (!run.Produced(job)) {
      for (std::size_t j = i + 1; j < order.size(); ++j) run.Skip(*order[j], round, order[i]->id);
      return MakeError(run.FailureMessage(job));
    }
    carry = Upstream{order[i]->id, run.TraceOf(job).output};
  }
  return carry.text;
}

}  // namespace

Result<std::string> RunChain(NetworkRun& run) {
  return RunOnce(run, ChainNodes(run.spec()), 0, Upstream{});
}

Result<std::string> RunRing(NetworkRun& run) {
  const NetworkSpec& spec = run.spec();
  std::vector<const NodeSpec*> order = ChainNodes(spec);
  const RingSpec::Until until = spec.ring.until;
  const bool stop_unchanged =
      until == RingSpec::Until::kUnchanged || until == RingSpec::Until::kUnchangedOrValid;
  const bool stop_valid =
      until == RingSpec::Until::kValid || until == RingSpec::Until::kUnchangedOrValid;
  const std::int32_t rounds = spec.ring.rounds < 1 ? 1 : spec.ring.rounds;
  Upstream carry;
  std::string previous_canonical;
  run.trace().stop_reason = "rounds";
  for (std::int32_t r = 0; r < rounds; ++r) {
    Result<std::string> out = RunOnce(run, order, r, carry);
    run.trace().rounds = r + 1;
    if (!out.ok()) {
      run.trace().stop_reason = "failed";
      return out;
    }
    std::string canonical = Canonicalize(ExtractStructured(*out));
    if (stop_unchanged && r > 0 && canonical == previous_canonical) {
      run.trace().stop_reason = "unchanged";
      return out;
    }
    if (stop_valid &&
        Validate(ExtractStructured(*out), spec.output, run.options().code_checker).ok) {
      run.trace().stop_reason = "valid";
      return out;
    }
    previous_canonical = std::move(canonical);
    carry = Upstream{order.back()->id, *out};
  }
  return carry.text;
}

}  // namespace fgnet::network::internal
