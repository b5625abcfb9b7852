// Names of spec enums and lookups by id.
#include "network/spec.h"

namespace fgnet::network {

std::string_view TopologyName(Topology topology) {
  switch (topology) {
    case Topology::kChain:
      return "chain";
    case Topology::kRing:
      return "ring";
    case Topology::kTree:
      return "tree";
    case Topology::kMesh:
      return "mesh";
    case Topology::kDag:
      return "dag";
  }
  return "?";
}

std::string_view CombinerName(CombinerSpec::Kind kind) {
  switch (kind) {
    case CombinerSpec::Kind::kNone:
      return "none";
    case CombinerSpec::Kind::kMajority:
      return "majority";
    case CombinerSpec::Kind::kWeighted:
      return "weighted";
    case CombinerSpec::Kind::kBest:
      return "best";
    case CombinerSpec::Kind::kConcat:
      return "concat";
    case CombinerSpec::Kind::kLlmMerge:
      return "llm-merge";
    case CombinerSpec::Kind::kEnsemble:
      return "ensemble";
  }
  return "?";
}

const Expert* ExpertSet::Find(std::string_view id) const {
  for (const Expert& e : experts) {
    if (e.id == id) return &e;
  }
  return nullptr;
}

const NodeSpec* NetworkSpec::FindNode(std::string_view id) const {
  for (const NodeSpec& n : nodes) {
    if (n.id == id) return &n;
  }
  return nullptr;
}

}  // namespace fgnet::network
