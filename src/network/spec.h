// Experts and network specs (genomes): the two JSON documents a network run is made of.
//
// An experts file names every expert a network may use: its adapters (PEFT directories, GGUF or
// RDRR files, paths relative to the experts file), role prompt, sampling defaults, domain,
// description and routing exemplars, plus the prompt parts experts share (the system prompt and
// one context text per domain). A network spec (schema "fgnet.network/1", documented in
// docs/network-spec.md) gives the topology, the nodes (each an expert with overrides), weighted
// edges, the combiner, ring and tree settings, handoff settings and the output contract.
//
// Parsing checks everything it can and reports every problem at once, one line each, naming the
// JSON path: "net.json: $.edges[2].to: node 'styl' does not exist (did you mean 'style'?)".
// Thread-safety: pure functions; the structs are plain values.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/json.h"
#include "util/status.h"

namespace fgnet::network {

// --- Experts --------------------------------------------------------------------------------

struct ExpertAdapter {
  std::string path;  // as resolved against the experts file's folder
  float scale = 1.0f;
};

// Sampling settings; unset fields fall back (node -> expert -> engine default: greedy).
struct SamplingOverrides {
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<std::int32_t> top_k;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<std::uint64_t> seed;
  std::optional<std::int64_t> max_tokens;
};

struct Expert {
  std::string id;
  std::vector<ExpertAdapter> adapters;  // empty: the base model
  std::string role;                     // role prompt
  std::string domain;                   // a key of ExpertSet::domains, or empty
  std::string description;
  std::vector<std::string> exemplars;  // example tasks, for the embedding router
  SamplingOverrides sampling;
};

struct ExpertSet {
  std::string source;                          // the file it was read from (for messages)
  std::string system_prompt;                   // shared by every expert
  std::map<std::string, std::string> domains;  // domain -> its shared context text
  std::vector<Expert> experts;                 // in file order; ids unique

  const Expert* Find(std::string_view id) const;
};

// Reads an experts file; adapter paths are resolved against its folder (adapters are not loaded
// here: the caller loads them into its registry).
Result<ExpertSet> LoadExperts(const std::string& path);
Result<ExpertSet> ParseExperts(const Json& json, std::string_view source,
                               const std::string& base_dir);

// --- Network spec ---------------------------------------------------------------------------

enum class Topology : std::uint8_t { kChain, kRing, kTree, kMesh, kDag };
std::string_view TopologyName(Topology topology);

// What a node's (and the network's) output must be.
struct OutputContract {
  enum class Kind : std::uint8_t { kText, kJsonSchema, kFunctionCalls };
  Kind kind = Kind::kText;
  Json schema;  // kJsonSchema
  Json tools;   // kFunctionCalls: FunctionGemma tool declarations (a JSON array)
  // Also check generated code (syntax, imports/exports) when the output carries code.
  bool check_code = true;
};

// The user turn of a node without a "prompt".
inline constexpr std::string_view kDefaultPromptTemplate = "{task}\n\n{input}";

// Checks a prompt template: the placeholders are {task} and {input}; {{ and }} stand for
// literal braces. The error names the first problem ("unknown placeholder '{foo}' ...").
Status CheckPromptTemplate(std::string_view prompt_template);
// Expands a checked template; an empty one is kDefaultPromptTemplate.
std::string ExpandPromptTemplate(std::string_view prompt_template, std::string_view task,
                                 std::string_view input);

struct NodeSpec {
  std::string id;
  std::string expert;          // an ExpertSet id
  SamplingOverrides sampling;  // overrides the expert's
  // The user turn. Placeholders: {task} (the task text) and {input} (the handoff from upstream
  // nodes; empty for a node without one). Default "{task}\n\n{input}".
  std::string prompt_template;
  std::optional<OutputContract> output;  // default: the network's contract
  std::int64_t timeout_ms = 0;           // 0: the network's node_timeout_ms
};

struct EdgeSpec {
  std::string from;
  std::string to;
  double weight = 1.0;  // in [0, 1]
};

struct CombinerSpec {
  enum class Kind : std::uint8_t {
    kNone,      // a single output (a chain, a ring, a DAG with one sink)
    kMajority,  // most frequent canonical output
    kWeighted,  // canonical outputs weighted by the node weights
    kBest,      // highest validation score
    kConcat,    // concatenation (merge policy applies)
    kLlmMerge,  // a combiner expert merges (merge policy applies)
    kEnsemble,  // token-level logit ensemble of the nodes' experts (one engine request)
  };
  Kind kind = Kind::kNone;
  std::map<std::string, double> weights;  // node id -> weight (default 1, or edge weights)
  std::string expert;                     // kLlmMerge
  std::string ensemble_mode = "mean";     // kEnsemble: "mean" or "max"
};
std::string_view CombinerName(CombinerSpec::Kind kind);

struct RingSpec {
  std::int32_t rounds = 1;  // refinement rounds (1: once around)
  // Stop early when the ring's output is unchanged from the previous round, when it passes
  // validation, or either.
  enum class Until : std::uint8_t { kRounds, kUnchanged, kValid, kUnchangedOrValid };
  Until until = Until::kUnchangedOrValid;
};

struct TreeSpec {
  enum class Router : std::uint8_t {
    kEmbedding,  // the embedding router over the children's experts
    kExpert,     // the node's expert answers with a FunctionGemma call naming children
    kCallback,   // ExecutorOptions::route_callback
  };
  Router router = Router::kEmbedding;
  std::int32_t top_k = 1;    // children taken at each level
  double threshold = 0.0;    // a child needs at least this probability
  double temperature = 1.0;  // softmax temperature of the embedding router
  bool backtrack = true;     // a failed branch falls back to the next-best child
  std::int32_t max_backtracks = 4;
};

struct MeshSpec {
  bool exchange = false;  // one more round in which each node sees the others' outputs
};

struct HandoffSpec {
  std::string summarizer;  // an expert id; empty: unstructured text passes as is
  std::int64_t max_summary_tokens = 128;
  std::int64_t max_input_chars = 4000;  // longer unstructured inputs are summarised (or cut)
};

struct NetworkSpec {
  std::string source;  // the file it was read from
  std::int32_t version = 1;
  std::string name;
  Topology topology = Topology::kChain;
  std::int32_t depth = 0;             // informational for chain/mesh; checked for tree/dag
  std::int32_t branching_factor = 0;  // tree: at most this many children per node (0: any)
  std::vector<NodeSpec> nodes;
  std::vector<EdgeSpec> edges;
  CombinerSpec combiner;
  RingSpec ring;
  TreeSpec tree;
  MeshSpec mesh;
  HandoffSpec handoff;
  OutputContract output;
  std::int64_t max_tokens = 256;         // per node, unless the node or expert says otherwise
  std::int64_t node_timeout_ms = 60000;  // per node attempt
  std::int64_t timeout_ms = 0;           // the whole network; 0: none

  const NodeSpec* FindNode(std::string_view id) const;
};

// Parses and validates a spec. `experts` may be null (then expert ids are not checked). Every
// problem is reported, one per line, each naming its JSON path.
Result<NetworkSpec> ParseNetworkSpec(const Json& json, std::string_view source,
                                     const ExpertSet* experts);
Result<NetworkSpec> LoadNetworkSpec(const std::string& path, const ExpertSet* experts);

// The node ids of a validated chain or ring in execution order: the path its edges form, or the
// node order when it has no edges (a ring whose edges close the loop starts at its first node).
std::vector<std::string> ChainOrder(const NetworkSpec& spec);

// The spec as JSON (ParseNetworkSpec(ToJson(spec)) gives it back).
Json NetworkSpecToJson(const NetworkSpec& spec);

}  // namespace fgnet::network
