// Combining the outputs of several nodes into one, with a deterministic policy:
//   - outputs are compared by their canonical form (structured.h: JSON normalised, calls as
//     parsed calls, files by path and code);
//   - a merge (concat, llm-merge) happens only when every candidate carries the same file list
//     and the same exports per file (same module boundaries) or none carries files; otherwise the
//     combiner picks one winner and says why;
//   - ties break by validation score, then weight, then node order, so the same inputs always
//     give the same decision.
// kLlmMerge and kEnsemble need the engine: CombineOutputs decides whether a merge may happen and
// prepares it (CombineDecision::needs_llm_merge); the executor runs the combiner expert.
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "network/spec.h"
#include "network/structured.h"
#include "network/validate.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::network {

struct Candidate {
  std::string node_id;
  StructuredOutput output;
  double weight = 1.0;
  ValidationReport validation;  // of this candidate under the network's contract
};

struct CombineDecision {
  // "winner" (one candidate's output), "merged" (concatenated or to be merged by an expert).
  std::string method;
  std::string winner;  // the winning node id for "winner"
  std::string text;    // the combined output (empty while needs_llm_merge)
  std::string reason;  // one line: why this decision
  bool needs_llm_merge = false;
  // Per distinct canonical output: its nodes and total weight (majority / weighted votes).
  Json votes = Json::array();
};

// Applies `spec` to the candidates (at least one). Errors: no candidates; kEnsemble (handled by
// the executor before any candidate exists).
Result<CombineDecision> CombineOutputs(const CombinerSpec& spec,
                                       const std::vector<Candidate>& candidates);

// True when the candidates may be merged (same file lists and exports, or no files at all);
// otherwise `why` says where they differ.
bool CanMerge(const std::vector<Candidate>& candidates, std::string* why);

// The user turn of the combiner expert for an LLM merge: the task and each candidate's output.
std::string LlmMergePrompt(const std::string& task, const std::vector<Candidate>& candidates);

}  // namespace fgnet::network
