#include "network/combine.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <utility>

namespace fgnet::network {
namespace {

bool HasFiles(const StructuredOutput& o) {
  return (o.kind == StructuredOutput::Kind::kCode || o.kind == StructuredOutput::Kind::kFiles) &&
         !o.files.empty();
}

std::string Num(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.3g", v);
  return buffer;
}

double WeightOf(const CombinerSpec& spec, const Candidate& c) {
  auto it = spec.weights.find(c.node_id);
  return it != spec.weights.end() ? it->second : c.weight;
}

// Candidates sharing one canonical output.
struct Group {
  std::string canonical;
  std::vector<std::size_t> members;  // candidate indices, in node order
  double weight = 0;
  double score = 0;  // summed validation score
};

std::vector<Group> GroupByCanonical(const CombinerSpec& spec,
                                    const std::vector<Candidate>& candidates) {
  std::vector<Group> groups;
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    std::string canonical = Canonicalize(candidates[i].output);
    auto [it, inserted] = index.emplace(canonical, groups.size());
    if (inserted) groups.push_back(Group{std::move(canonical), {}, 0, 0});
    Group& g = groups[it->second];
    g.members.push_back(i);
    g.weight += WeightOf(spec, candidates[i]);
    g.score += candidates[i].validation.score;
  }
  return groups;
}

// Best by validation score, then weight, then node order.
std::size_t BestOf(const CombinerSpec& spec, const std::vector<Candidate>& candidates,
                   const std::vector<std::size_t>& indices) {
  std::size_t best = indices.front();
  for (std::size_t i : indices) {
    const double si = candidates[i].validation.score, sb = candidates[best].validation.score;
    const double wi = WeightOf(spec, candidates[i]), wb = WeightOf(spec, candidates[best]);
    if (si > sb || (si == sb && (wi > wb || (wi == wb && i < best)))) best = i;
  }
  return best;
}

Json Votes(const std::vector<Group>& groups, const std::vector<Candidate>& candidates) {
  Json votes = Json::array();
  for (const Group& g : groups) {
    Json nodes = Json::array();
    for (std::size_t i : g.members) nodes.push_back(candidates[i].node_id);
    votes.push_back(Json{{"nodes", nodes},
                         {"count", g.members.size()},
                         {"weight", g.weight},
                         {"score", g.score},
                         {"canonical", g.canonical}});
  }
  return votes;
}

std::string NodeList(const Group& g, const std::vector<Candidate>& candidates) {
  std::string out;
  for (std::size_t i : g.members) out += (out.empty() ? "" : ", ") + candidates[i].node_id;
  return out;
}

CombineDecision Winner(const std::vector<Candidate>& candidates, std::size_t index,
                       std::string reason) {
  CombineDecision d;
  d.method = "winner";
  d.winner = candidates[index].node_id;
  d.text = candidates[index].output.text;
  d.reason = std::move(reason);
  return d;
}

CombineDecision PickBest(const CombinerSpec& spec, const std::vector<Candidate>& candidates,
                         const std::string& prefix) {
  std::vector<std::size_t> all(candidates.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  std::size_t best = BestOf(spec, candidates, all);
  return Winner(candidates, best,
                prefix + candidates[best].node_id + " has the best validation score " +
                    Num(candidates[best].validation.score) + " (weight " +
                    Num(WeightOf(spec, candidates[best])) + ")");
}

// Votes by `key` (count or weight), ties by summed score, then weight, then node order.
CombineDecision Vote(const CombinerSpec& spec, const std::vector<Candidate>& candidates,
                     bool weighted) {
  std::vector<Group> groups = GroupByCanonical(spec, candidates);
  std::stable_sort(groups.begin(), groups.end(), [&](const Group& a, const Group& b) {
    if (!weighted && a.members.size() != b.members.size()) {
      return a.members.size() > b.members.size();
    }
    if (weighted && a.weight != b.weight) return a.weight > b.weight;
    if (a.score != b.score) return a.score > b.score;
    if (a.weight != b.weight) return a.weight > b.weight;
    return a.members.front() < b.members.front();
  });
  const Group& top = groups.front();
  double total = 0;
  for (const Group& g : groups) total += g.weight;
  std::string reason;
  if (weighted) {
    reason = "weighted vote: weight " + Num(top.weight) + " of " + Num(total) +
             " for the output of " + NodeList(top, candidates);
  } else {
    reason = "majority: " + std::to_string(top.members.size()) + " of " +
             std::to_string(candidates.size()) + " votes for the output of " +
             NodeList(top, candidates);
  }
  if (groups.size() > 1) {
    const Group& second = groups[1];
    bool tied =
        weighted ? second.weight == top.weight : second.members.size() == top.members.size();
    if (tied) reason += " (tie broken by validation score, weight, node order)";
  }
  CombineDecision d = Winner(candidates, BestOf(spec, candidates, top.members), reason);
  d.votes = Votes(groups, candidates);
  return d;
}

std::string TrimCopy(const std::string& s) {
  std::size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  std::size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Concatenation of mergeable candidates: per file path (in the first candidate's order) the
// distinct codes under one header; outputs without files joined by blank lines.
std::string Concatenate(const std::vector<Candidate>& candidates) {
  std::string out;
  auto append = [&](std::vector<std::string>* seen, const std::string& part) {
    if (part.empty() || std::find(seen->begin(), seen->end(), part) != seen->end()) return;
    seen->push_back(part);
  };
  if (!HasFiles(candidates.front().output)) {
    std::vector<std::string> parts;
    for (const Candidate& c : candidates) append(&parts, TrimCopy(RenderHandoff(c.output)));
    for (const std::string& p : parts) out += (out.empty() ? "" : "\n\n") + p;
    return out;
  }
  for (const CodeFile& file : candidates.front().output.files) {
    std::vector<std::string> codes;
    for (const Candidate& c : candidates) {
      for (const CodeFile& f : c.output.files) {
        if (f.path == file.path) append(&codes, TrimCopy(f.code));
      }
    }
    if (!out.empty()) out += "\n\n";
    if (!file.path.empty()) out += "// file: " + file.path + "\n";
    for (std::size_t i = 0; i < codes.size(); ++i) out += (i == 0 ? "" : "\n\n") + codes[i];
  }
  return out;
}

}  // namespace

bool CanMerge(const std::vector<Candidate>& candidates, std::string* why) {
  auto fail = [&](std::string message) {
    if (why != nullptr) *why = std::move(message);
    return false;
  };
  if (candidates.empty()) return true;
  const Candidate& first = candidates.front();
  auto paths_of = [](const Candidate& c) {
    std::set<std::string> paths;
    for (const CodeFile& f : c.output.files) paths.insert(f.path);
    return paths;
  };
  auto exports_of = [](const Candidate& c, const std::string& path) {
    std::set<std::string> names;
    for (const CodeFile& f : c.output.files) {
      if (f.path == path) names.insert(f.exports.begin(), f.exports.end());
    }
    return names;
  };
  const bool first_files = HasFiles(first.output);
  const std::set<std::string> first_paths = paths_of(first);
  for (std::size_t i = 1; i < candidates.size(); ++i) {
    const Candidate& other = candidates[i];
    if (HasFiles(other.output) != first_files) {
      const Candidate& with = first_files ? first : other;
      const Candidate& without = first_files ? other : first;
      return fail("file lists differ: " + with.node_id + " carries files, " + without.node_id +
                  " carries none");
    }
    if (!first_files) continue;
    const std::set<std::string> other_paths = paths_of(other);
    for (const std::string& p : first_paths) {
      if (other_paths.count(p) == 0) {
        return fail("file lists differ: " + first.node_id + " has " + p + ", " + other.node_id +
                    " does not");
      }
    }
    for (const std::string& p : other_paths) {
      if (first_paths.count(p) == 0) {
        return fail("file lists differ: " + other.node_id + " has " + p + ", " + first.node_id +
                    " does not");
      }
    }
    for (const std::string& p : first_paths) {
      std::set<std::string> a = exports_of(first, p), b = exports_of(other, p);
      for (const std::string& name : a) {
        if (b.count(name) == 0) {
          return fail("exports differ in " + p + ": " + first.node_id + " exports " + name + ", " +
                      other.node_id + " does not");
        }
      }
      for (const std::string& name : b) {
        if (a.count(name) == 0) {
          return fail("exports differ in " + p + ": " + other.node_id + " exports " + name + ", " +
                      first.node_id + " does not");
        }
      }
    }
  }
  return true;
}

Result<CombineDecision> CombineOutputs(const CombinerSpec& spec,
                                       const std::vector<Candidate>& candidates) {
  if (candidates.empty()) return MakeError("combiner: no candidate outputs to combine");
  if (spec.kind == CombinerSpec::Kind::kEnsemble) {
    return MakeError("combiner: 'ensemble' combines logits inside one engine request, not outputs");
  }
  Json votes = Votes(GroupByCanonical(spec, candidates), candidates);
  CombineDecision d;
  switch (spec.kind) {
    case CombinerSpec::Kind::kNone:
      d = candidates.size() == 1 ? Winner(candidates, 0, "a single output")
                                 : PickBest(spec, candidates, "several outputs and no combiner: ");
      break;
    case CombinerSpec::Kind::kMajority:
      return Vote(spec, candidates, /*weighted=*/false);
    case CombinerSpec::Kind::kWeighted:
      return Vote(spec, candidates, /*weighted=*/true);
    case CombinerSpec::Kind::kBest:
      d = PickBest(spec, candidates, "best: ");
      break;
    case CombinerSpec::Kind::kConcat:
    case CombinerSpec::Kind::kLlmMerge: {
      std::string why;
      if (!CanMerge(candidates, &why)) {
        d = PickBest(spec, candidates, why + "; single winner: ");
        break;
      }
      d.method = "merged";
      if (spec.kind == CombinerSpec::Kind::kConcat) {
        d.text = Concatenate(candidates);
        d.reason = "concatenated " + std::to_string(candidates.size()) + " outputs" +
                   (HasFiles(candidates.front().output) ? " (same file list and exports)" : "");
      } else {
        d.needs_llm_merge = true;
        d.reason = "merge of " + std::to_string(candidates.size()) +
                   " outputs by the combiner expert" +
                   (HasFiles(candidates.front().output) ? " (same file list and exports)" : "");
      }
      break;
    }
    case CombinerSpec::Kind::kEnsemble:
      break;  // handled above
  }
  d.votes = std::move(votes);
  return d;
}

std::string LlmMergePrompt(const std::string& task, const std::vector<Candidate>& candidates) {
  std::string out =
      "Merge the " + std::to_string(candidates.size()) +
      " candidate answers below into one answer to the task. Keep the file paths, imports and "
      "exports they share; answer in the same form as the candidates.\n\nTask:\n" +
      task + "\n";
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    out += "\nCandidate " + std::to_string(i + 1) + " (" + candidates[i].node_id + "):\n" +
           RenderHandoff(candidates[i].output) + "\n";
  }
  return out;
}

}  // namespace fgnet::network
