// RunNetwork: dispatch by topology, and the shared machinery of the executors (node calls,
// handoffs, starting and waiting for attempts, traces, combining, final validation).
#include "network/executor.h"

#include <algorithm>
#include <sstream>
#include <thread>
#include <utility>

#include "network/executor_internal.h"

namespace fgnet::network {
namespace internal {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(2);
constexpr auto kProgressInterval = std::chrono::milliseconds(100);
// A runner should end a node at its deadline; one that outlives it this long is cancelled.
constexpr auto kDeadlineGrace = std::chrono::milliseconds(2000);

std::string TrimRight(std::string s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\t' || s.back() == '\r')) {
    s.pop_back();
  }
  return s;
}

Json DecisionJson(const CombinerSpec& spec, const CombineDecision& d) {
  Json j = Json::object();
  j["kind"] = std::string(CombinerName(spec.kind));
  j["method"] = d.method;
  j["winner"] = d.winner;
  j["reason"] = d.reason;
  j["votes"] = d.votes;
  j["llm_merge"] = d.needs_llm_merge;
  return j;
}

}  // namespace

NetworkRun::NetworkRun(const NetworkSpec& spec, const ExpertSet& experts, const std::string& task,
                       NodeRunner& runner, const ExecutorOptions& options)
    : spec_(spec),
      experts_(experts),
      task_(task),
      runner_(runner),
      options_(options),
      start_(Clock::now()) {
  if (spec.timeout_ms > 0) network_deadline_ = start_ + std::chrono::milliseconds(spec.timeout_ms);
  trace_.network = spec.name;
  trace_.topology = std::string(TopologyName(spec.topology));
  trace_.task = task;
}

double NetworkRun::MsSinceStart(Clock::time_point t) const {
  return std::chrono::duration<double, std::milli>(t - start_).count();
}

bool NetworkRun::NetworkDeadlinePassed() const {
  return network_deadline_ && Clock::now() >= *network_deadline_;
}

std::string NetworkRun::NetworkTimeoutMessage() const {
  std::ostringstream os;
  os << "network timeout of " << spec_.timeout_ms << " ms passed";
  return os.str();
}

std::string NetworkRun::RenderUserTurn(const NodeSpec& node, const std::string& input) const {
  return TrimRight(ExpandPromptTemplate(node.prompt_template, task_, input));
}

NodeCall NetworkRun::BuildCall(const NodeSpec& node, const std::string& input) const {
  NodeCall call;
  call.node_id = node.id;
  call.expert_id = node.expert;
  const Expert* expert = experts_.Find(node.expert);
  call.prompt.system = experts_.system_prompt;
  call.prompt.user = RenderUserTurn(node, input);
  SamplingOverrides expert_sampling;
  if (expert != nullptr) {
    call.prompt.domain_id = expert->domain;
    auto it = experts_.domains.find(expert->domain);
    if (it != experts_.domains.end()) call.prompt.domain = it->second;
    call.prompt.role = expert->role;
    for (const ExpertAdapter& a : expert->adapters) call.adapters.push_back({a.path, a.scale});
    expert_sampling = expert->sampling;
  }
  const SamplingOverrides& n = node.sampling;
  const SamplingOverrides& e = expert_sampling;
  call.temperature = n.temperature.value_or(e.temperature.value_or(0.0f));
  call.top_p = n.top_p.value_or(e.top_p.value_or(1.0f));
  call.top_k = n.top_k.value_or(e.top_k.value_or(0));
  call.min_p = n.min_p.value_or(e.min_p.value_or(0.0f));
  call.repetition_penalty = n.repetition_penalty.value_or(e.repetition_penalty.value_or(1.0f));
  call.seed = n.seed.value_or(e.seed.value_or(0));
  call.max_tokens = n.max_tokens.value_or(e.max_tokens.value_or(spec_.max_tokens));
  call.output = node.output.value_or(spec_.output);
  return call;
}

PreparedInput NetworkRun::PrepareInput(const NodeSpec& node, const std::vector<Upstream>& upstream,
                                       std::int32_t round) {
  PreparedInput in;
  if (upstream.empty()) return in;
  bool all_structured = true;
  bool any_summary = false;
  std::vector<std::string> parts;
  for (const Upstream& up : upstream) {
    in.from.push_back(up.node_id);
    StructuredOutput s = ExtractStructured(up.text);
    if (s.kind != StructuredOutput::Kind::kText) {
      parts.push_back(RenderHandoff(s));
      continue;
    }
    all_structured = false;
    const std::int64_t limit = spec_.handoff.max_input_chars;
    if (limit <= 0 || static_cast<std::int64_t>(up.text.size()) <= limit) {
      parts.push_back(up.text);
      continue;
    }
    std::string text = up.text.substr(0, static_cast<std::size_t>(limit));
    const Expert* summarizer =
        spec_.handoff.summarizer.empty() ? nullptr : experts_.Find(spec_.handoff.summarizer);
    if (summarizer != nullptr) {
      NodeSpec sum;
      sum.id = node.id + ".summary";
      sum.expert = summarizer->id;
      sum.prompt_template = "{input}";
      const Expert* downstream = experts_.Find(node.expert);
      std::string role = downstream != nullptr && !downstream->role.empty()
                             ? downstream->role
                             : "node '" + node.id + "'";
      std::string ask = "Summarise the following output of node '" + up.node_id +
                        "' for the next step, whose role is: " + role +
                        "\nKeep every fact, name and interface it needs.\n\n" + up.text;
      NodeCall call = BuildCall(sum, ask);
      call.max_tokens = spec_.handoff.max_summary_tokens;
      call.output = OutputContract{};
      NodeTrace t;
      t.node_id = sum.id;
      t.expert_id = sum.expert;
      t.round = round;
      t.inputs = {up.node_id};
      t.handoff = "text";
      std::size_t job = Start(std::move(call), std::move(t), 0, nullptr);
      Wait({job});
      if (Produced(job) && !TraceOf(job).output.empty()) {
        text = TraceOf(job).output;
        any_summary = true;
      }
    }
    parts.push_back(text);
  }
  if (parts.size() == 1) {
    in.text = parts[0];
  } else {
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (i > 0) in.text += "\n\n";
      in.text += "--- from node '" + upstream[i].node_id + "' ---\n" + parts[i];
    }
  }
  in.handoff = any_summary ? "summary" : all_structured ? "structured" : "text";
  return in;
}

std::size_t NetworkRun::Start(NodeCall call, NodeTrace trace, std::int64_t timeout_ms,
                              const OutputContract* contract) {
  auto job = std::make_unique<Job>();
  job->started = Clock::now();
  job->timeout_ms = timeout_ms > 0 ? timeout_ms : spec_.node_timeout_ms;
  if (job->timeout_ms > 0)
    job->deadline = job->started + std::chrono::milliseconds(job->timeout_ms);
  if (network_deadline_ && (!job->deadline || *network_deadline_ < *job->deadline)) {
    job->deadline = network_deadline_;
    job->network_capped = true;
  }
  call.deadline = job->deadline;
  if (contract != nullptr) job->contract = *contract;
  trace.adapters = call.adapters;
  if (!call.ensemble.empty()) {
    for (const NodeEnsembleMember& m : call.ensemble) {
      for (const NodeAdapter& a : m.adapters) trace.adapters.push_back(a);
    }
  }
  trace.status = "running";
  trace.start_ms = MsSinceStart(job->started);
  job->trace_index = trace_.nodes.size();
  trace_.nodes.push_back(std::move(trace));
  if (options_.observer != nullptr) options_.observer->OnNodeStart(trace_.nodes.back());
  if (NetworkDeadlinePassed()) {
    job->result.status = MakeError(NetworkTimeoutMessage());
    job->result.finish_reason = "cancelled";
    job->cancelled_by_network = true;
    jobs_.push_back(std::move(job));
    Finalize(*jobs_.back());
    return jobs_.size() - 1;
  }
  job->pending = runner_.Start(std::move(call));
  jobs_.push_back(std::move(job));
  if (jobs_.back()->pending == nullptr) {
    jobs_.back()->result.status = MakeError("the runner did not start the node");
    jobs_.back()->result.finish_reason = "error";
    Finalize(*jobs_.back());
  }
  return jobs_.size() - 1;
}

std::size_t NetworkRun::StartNode(const NodeSpec& node, const std::vector<Upstream>& upstream,
                                  std::int32_t round, std::int32_t attempt,
                                  const std::string& parent) {
  PreparedInput in = PrepareInput(node, upstream, round);
  NodeCall call = BuildCall(node, in.text);
  NodeTrace t;
  t.node_id = node.id;
  t.expert_id = node.expert;
  t.round = round;
  t.attempt = attempt;
  t.parent = parent;
  t.inputs = in.from;
  t.handoff = in.handoff;
  OutputContract contract = call.output;
  return Start(std::move(call), std::move(t), node.timeout_ms, &contract);
}

void NetworkRun::Finalize(Job& job) {
  job.finished = true;
  NodeTrace& t = trace_.nodes[job.trace_index];
  const NodeResult& r = job.result;
  const double measured = MsSinceStart(Clock::now()) - t.start_ms;
  t.finish_reason = r.finish_reason;
  t.prompt_tokens = r.prompt_tokens;
  t.completion_tokens = r.completion_tokens;
  t.cached_tokens = r.cached_tokens;
  t.prefix_hits = r.prefix_hits;
  t.latency_ms = r.latency_ms > 0 ? r.latency_ms : measured;
  trace_.prompt_tokens += r.prompt_tokens;
  trace_.completion_tokens += r.completion_tokens;
  trace_.cached_tokens += r.cached_tokens;
  auto timeout_message = [&] {
    if (job.cancelled_by_network || job.network_capped) return NetworkTimeoutMessage();
    std::ostringstream os;
    os << "deadline of " << job.timeout_ms << " ms passed";
    return os.str();
  };
  if (r.finish_reason == "deadline" || (job.cancelled_late && !r.status.ok())) {
    t.status = "failed";
    t.error = timeout_message();
  } else if (r.finish_reason == "cancelled") {
    t.status = "failed";
    t.error = job.cancelled_by_network || job.cancelled_late ? timeout_message() : "cancelled";
  } else if (!r.status.ok()) {
    t.status = "failed";
    t.error = r.status.error().message();
    if (t.error.empty()) t.error = "error";
  } else {
    t.output = r.text;
    if (job.contract) {
      t.validation = Validate(ExtractStructured(r.text), *job.contract, options_.code_checker);
      t.validated = true;
      t.status = t.validation.ok ? "ok" : "invalid";
    } else {
      t.status = "ok";
    }
  }
  if (options_.observer != nullptr) options_.observer->OnNodeFinish(t);
}

void NetworkRun::Wait(const std::vector<std::size_t>& ids) {
  auto last_progress = Clock::now();
  while (true) {
    bool all_done = true;
    const auto now = Clock::now();
    const bool network_passed = NetworkDeadlinePassed();
    for (std::size_t id : ids) {
      Job& job = *jobs_[id];
      if (job.finished) continue;
      if (job.pending->done()) {
        job.result = job.pending->Wait();
        Finalize(job);
        continue;
      }
      all_done = false;
      if (network_passed && !job.cancelled_by_network) {
        job.cancelled_by_network = true;
        job.pending->Cancel();
      } else if (job.deadline && now > *job.deadline + kDeadlineGrace && !job.cancelled_late) {
        job.cancelled_late = true;
        job.pending->Cancel();
      }
    }
    if (all_done) return;
    if (options_.observer != nullptr && now - last_progress >= kProgressInterval) {
      last_progress = now;
      std::vector<std::pair<std::string, std::int64_t>> tokens;
      for (std::size_t id : ids) {
        const Job& job = *jobs_[id];
        if (job.finished) continue;
        tokens.emplace_back(trace_.nodes[job.trace_index].node_id, job.pending->generated_tokens());
      }
      options_.observer->OnProgress(tokens);
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

bool NetworkRun::Produced(std::size_t job) const {
  const std::string& s = TraceOf(job).status;
  return s == "ok" || s == "invalid";
}

std::string NetworkRun::FailureMessage(std::size_t job) const {
  const NodeTrace& t = TraceOf(job);
  std::ostringstream os;
  os << "node '" << t.node_id << "'";
  if (spec_.topology == Topology::kRing || t.round > 0) os << " (round " << t.round + 1 << ")";
  if (t.attempt > 0) os << " (attempt " << t.attempt + 1 << ")";
  os << " failed: " << (t.error.empty() ? t.status : t.error);
  return os.str();
}

void NetworkRun::Skip(const NodeSpec& node, std::int32_t round, const std::string& failed_node) {
  NodeTrace t;
  t.node_id = node.id;
  t.expert_id = node.expert;
  t.round = round;
  t.status = "skipped";
  t.error = "upstream node '" + failed_node + "' failed";
  t.start_ms = MsSinceStart(Clock::now());
  trace_.nodes.push_back(t);
  if (options_.observer != nullptr) options_.observer->OnNodeFinish(trace_.nodes.back());
}

Candidate NetworkRun::MakeCandidate(std::size_t job) const {
  const NodeTrace& t = TraceOf(job);
  Candidate c;
  c.node_id = t.node_id;
  c.output = ExtractStructured(t.output);
  auto w = spec_.combiner.weights.find(t.node_id);
  c.weight = w != spec_.combiner.weights.end() ? w->second : 1.0;
  const NodeSpec* node = spec_.FindNode(t.node_id);
  if (t.validated && (node == nullptr || !node->output)) {
    c.validation = t.validation;
  } else {
    c.validation = Validate(c.output, spec_.output, options_.code_checker);
  }
  return c;
}

Result<std::string> NetworkRun::Combine(const std::vector<std::size_t>& jobs,
                                        CombinerSpec::Kind none_as) {
  std::vector<Candidate> candidates;
  for (std::size_t id : jobs) {
    if (Produced(id)) candidates.push_back(MakeCandidate(id));
  }
  if (candidates.empty()) return MakeError("no node produced an output");
  CombinerSpec combiner = spec_.combiner;
  if (combiner.kind == CombinerSpec::Kind::kNone ||
      combiner.kind == CombinerSpec::Kind::kEnsemble) {
    if (candidates.size() == 1) return candidates[0].output.text;
    combiner.kind = none_as;
  }
  Result<CombineDecision> decided = CombineOutputs(combiner, candidates);
  if (!decided.ok()) return MakeError("combiner: ", decided.error().message());
  CombineDecision d = std::move(decided).value();
  trace_.combiner = DecisionJson(combiner, d);
  if (!d.needs_llm_merge) return d.text;
  // An expert merges the candidates.
  NodeSpec merger;
  merger.id = "combiner";
  merger.expert = combiner.expert;
  merger.prompt_template = "{input}";
  NodeCall call = BuildCall(merger, LlmMergePrompt(task_, candidates));
  call.output = spec_.output;
  NodeTrace t;
  t.node_id = merger.id;
  t.expert_id = merger.expert;
  for (const Candidate& c : candidates) t.inputs.push_back(c.node_id);
  t.handoff = "text";
  std::size_t job = Start(std::move(call), std::move(t), 0, &spec_.output);
  Wait({job});
  if (Produced(job)) return TraceOf(job).output;
  // The merge failed: the best candidate stands in.
  CombinerSpec best = combiner;
  best.kind = CombinerSpec::Kind::kBest;
  Result<CombineDecision> fallback = CombineOutputs(best, candidates);
  if (!fallback.ok()) return MakeError(FailureMessage(job));
  trace_.combiner = DecisionJson(best, *fallback);
  trace_.combiner["reason"] = FailureMessage(job) + "; " + fallback->reason;
  return fallback->text;
}

Result<std::string> NetworkRun::RunEnsemble(const std::vector<const NodeSpec*>& nodes) {
  if (nodes.empty()) return MakeError("ensemble: no nodes");
  NodeSpec first = *nodes[0];
  first.id = "ensemble";
  NodeCall call = BuildCall(first, "");
  call.adapters.clear();
  call.expert_id.clear();
  call.prompt.domain_id.clear();
  call.prompt.domain.clear();
  call.prompt.role.clear();
  call.output = spec_.output;
  call.ensemble_mode = spec_.combiner.ensemble_mode;
  NodeTrace t;
  t.node_id = "ensemble";
  for (const NodeSpec* n : nodes) {
    NodeEnsembleMember m;
    if (const Expert* e = experts_.Find(n->expert)) {
      for (const ExpertAdapter& a : e->adapters) m.adapters.push_back({a.path, a.scale});
    }
    auto w = spec_.combiner.weights.find(n->id);
    m.weight = w != spec_.combiner.weights.end() ? w->second : 1.0;
    call.ensemble.push_back(std::move(m));
    t.inputs.push_back(n->id);
  }
  Json members = Json::array();
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    members.push_back({{"node", nodes[i]->id}, {"weight", call.ensemble[i].weight}});
  }
  trace_.combiner = {{"kind", "ensemble"}, {"mode", call.ensemble_mode}, {"members", members}};
  std::size_t job = Start(std::move(call), std::move(t), 0, &spec_.output);
  Wait({job});
  if (!Produced(job)) return MakeError(FailureMessage(job));
  return TraceOf(job).output;
}

NetworkResult NetworkRun::Finish(Result<std::string> output) {
  NetworkResult result;
  trace_.latency_ms = MsSinceStart(Clock::now());
  if (!output.ok()) {
    trace_.status = "failed";
    trace_.error = output.error().message();
    result.status = output.error();
  } else {
    trace_.output = *output;
    trace_.validation = Validate(ExtractStructured(*output), spec_.output, options_.code_checker);
    trace_.status = trace_.validation.ok ? "ok" : "invalid";
    result.output = *output;
    result.validation = trace_.validation;
  }
  if (options_.observer != nullptr) options_.observer->OnFinish(trace_);
  result.trace = std::move(trace_);
  return result;
}

std::vector<const NodeSpec*> ChainNodes(const NetworkSpec& spec) {
  std::vector<const NodeSpec*> order;
  for (const std::string& id : ChainOrder(spec)) {
    if (const NodeSpec* node = spec.FindNode(id)) order.push_back(node);
  }
  return order;
}

}  // namespace internal

NetworkResult RunNetwork(const NetworkSpec& spec, const ExpertSet& experts, const std::string& task,
                         NodeRunner& runner, const ExecutorOptions& options) {
  internal::NetworkRun run(spec, experts, task, runner, options);
  if (options.observer != nullptr) options.observer->OnStart(run.trace());
  Result<std::string> output = MakeError("network '", spec.name, "' has no nodes");
  if (!spec.nodes.empty()) {
    switch (spec.topology) {
      case Topology::kChain:
        output = internal::RunChain(run);
        break;
      case Topology::kRing:
        output = internal::RunRing(run);
        break;
      case Topology::kTree:
        output = internal::RunTree(run);
        break;
      case Topology::kMesh:
        output = internal::RunMesh(run);
        break;
      case Topology::kDag:
        output = internal::RunDag(run);
        break;
    }
  }
  return run.Finish(std::move(output));
}

}  // namespace fgnet::network
