#include "kv/prefix_tree.h"

#include <bit>
#include <cstring>
#include <limits>

#include "util/status.h"

namespace fgnet::kv {

struct PrefixTree::Node {
  Node* parent = nullptr;
  std::vector<std::int32_t> tokens;  // the block's tokens
  std::string adapters;              // AdapterKey of the block
  std::vector<BlockId> blocks;       // per group
  std::unordered_map<std::uint64_t, std::unique_ptr<Node>> children;
  std::uint64_t key = 0;  // its key in the parent's map
  std::uint64_t last_used = 0;
  std::int32_t cursors = 0;
};

PrefixTree::Cursor::Cursor(Cursor&& other) noexcept
    : node_(std::exchange(other.node_, nullptr)), blocks_(std::exchange(other.blocks_, 0)) {}

PrefixTree::Cursor& PrefixTree::Cursor::operator=(Cursor&& other) noexcept {
  if (this != &other) {
    Release();
    node_ = std::exchange(other.node_, nullptr);
    blocks_ = std::exchange(other.blocks_, 0);
  }
  return *this;
}

void PrefixTree::Cursor::Release() {
  if (node_ != nullptr) --node_->cursors;
  node_ = nullptr;
  blocks_ = 0;
}

void PrefixTree::Cursor::Set(Node* node, std::int64_t blocks) {
  if (node != nullptr) ++node->cursors;
  Release();
  node_ = node;
  blocks_ = blocks;
}

PrefixTree::PrefixTree(BlockPool& pool, std::string base_hash)
    : pool_(&pool), base_hash_(std::move(base_hash)), root_(std::make_unique<Node>()) {
  pool_->set_reclaimer([this] { return EvictOne(); });
}

PrefixTree::~PrefixTree() {
  pool_->set_reclaimer(nullptr);
  // Post-order release of every node's references.
  std::vector<Node*> stack{root_.get()};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (BlockId id : node->blocks) {
      if (id != kNoBlock) pool_->UnrefCached(id);
    }
    for (auto& [key, child] : node->children) stack.push_back(child.get());
  }
}

std::string PrefixTree::AdapterKey(std::span<const AdapterUse> adapters, std::int64_t end) {
  // Sorted entries "hash/scale bits/start;" of the adapters acting before `end`.
  std::vector<std::string> parts;
  for (const AdapterUse& use : adapters) {
    if (use.start >= end) continue;
    parts.push_back(use.adapter->content_hash + "/" +
                    std::to_string(std::bit_cast<std::uint32_t>(use.scale)) + "/" +
                    std::to_string(use.start) + ";");
  }
  std::sort(parts.begin(), parts.end());
  std::string key;
  for (const std::string& p : parts) key += p;
  return key;
}

std::uint64_t PrefixTree::KeyHash(std::span<const std::int32_t> tokens,
                                  const std::string& adapters) const {
  // FNV-1a over the base hash, the adapters and the tokens.
  std::uint64_t h = 1469598103934665603ull;
  const auto mix = [&h](const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  mix(base_hash_.data(), base_hash_.size());
  mix(adapters.data(), adapters.size());
  mix(tokens.data(), tokens.size_bytes());
  return h;
}

PrefixTree::Node* PrefixTree::Child(Node* parent, std::span<const std::int32_t> tokens,
                                    const std::string& adapters) {
  const auto it = parent->children.find(KeyHash(tokens, adapters));
  if (it == parent->children.end()) return nullptr;
  Node* child = it->second.get();
  const bool same =
      child->adapters == adapters &&
      std::equal(tokens.begin(), tokens.end(), child->tokens.begin(), child->tokens.end());
  return same ? child : nullptr;
}

std::int64_t PrefixTree::Match(std::span<const std::int32_t> tokens,
                               std::span<const AdapterUse> adapters, std::int64_t max_tokens,
                               PagedSequence& seq, Cursor& cursor) {
  FGNET_CHECK_EQ(seq.length(), 0);
  const KVLayout& layout = pool_->layout();
  const std::int64_t b = layout.block_size;
  const std::int64_t limit = std::min<std::int64_t>(max_tokens, std::ssize(tokens));
  std::vector<Node*> path;
  std::int64_t best = 0;           // blocks usable
  std::int64_t last_missing = -1;  // the last block on the path without its sliding blocks
  Node* node = root_.get();
  for (std::int64_t i = 0; (i + 1) * b <= limit; ++i) {
    const std::int64_t end = (i + 1) * b;
    Node* child =
        Child(node, tokens.subspan(static_cast<std::size_t>(i * b), static_cast<std::size_t>(b)),
              AdapterKey(adapters, end));
    if (child == nullptr) break;
    for (BlockId id : child->blocks) {
      if (id == kNoBlock) last_missing = i;
    }
    path.push_back(child);
    // A sequence of length `end` needs the sliding blocks from (end - window + 1) / b on.
    const std::int64_t keep_block = std::max<std::int64_t>(0, end - layout.window + 1) / b;
    if (last_missing < keep_block) best = i + 1;
    node = child;
  }
  for (std::int64_t i = 0; i < best; ++i) {
    Node* n = path[static_cast<std::size_t>(i)];
    seq.AdoptBlock(n->blocks);
    n->last_used = ++clock_;
  }
  seq.FinishAdopt();
  cursor.Set(best > 0 ? path[static_cast<std::size_t>(best - 1)] : nullptr, best);
  return best * b;
}

void PrefixTree::Insert(std::span<const std::int32_t> tokens, std::span<const AdapterUse> adapters,
                        const PagedSequence& seq, Cursor& cursor) {
  const KVLayout& layout = pool_->layout();
  const std::int64_t b = layout.block_size;
  const std::int64_t full = std::min<std::int64_t>(seq.length(), std::ssize(tokens)) / b;
  Node* node = cursor.node_ != nullptr ? cursor.node_ : root_.get();
  std::int64_t i = cursor.blocks_;
  for (; i < full; ++i) {
    const auto block_tokens =
        tokens.subspan(static_cast<std::size_t>(i * b), static_cast<std::size_t>(b));
    std::string key = AdapterKey(adapters, (i + 1) * b);
    Node* child = Child(node, block_tokens, key);
    if (child == nullptr) {
      const std::uint64_t hash = KeyHash(block_tokens, key);
      if (node->children.count(hash) != 0) break;  // a hash collision: stop caching here
      auto fresh = std::make_unique<Node>();
      fresh->parent = node;
      fresh->tokens.assign(block_tokens.begin(), block_tokens.end());
      fresh->adapters = std::move(key);
      fresh->key = hash;
      fresh->blocks.assign(static_cast<std::size_t>(layout.num_groups()), kNoBlock);
      child = fresh.get();
      node->children.emplace(hash, std::move(fresh));
      ++num_nodes_;
    }
    // Take the sequence's blocks where the node has none (a new node, or sliding blocks its
    // first sequence had already dropped).
    for (std::int64_t g = 0; g < layout.num_groups(); ++g) {
      BlockId& mine = child->blocks[static_cast<std::size_t>(g)];
      const BlockId theirs = seq.block(g, i);
      if (mine == kNoBlock && theirs != kNoBlock) {
        pool_->RefCached(theirs);
        mine = theirs;
      }
    }
    FGNET_CHECK(!child->blocks.empty());
    child->last_used = ++clock_;
    node = child;
  }
  cursor.Set(node == root_.get() ? nullptr : node, i);
}

bool PrefixTree::Evictable(const Node& node) const {
  if (!node.children.empty() || node.cursors > 0 || node.parent == nullptr) return false;
  for (BlockId id : node.blocks) {
    if (id != kNoBlock && pool_->refcount(id) > 1) return false;
  }
  return true;
}

void PrefixTree::Free(Node* node) {
  for (BlockId id : node->blocks) {
    if (id != kNoBlock) pool_->UnrefCached(id);
  }
  Node* parent = node->parent;
  parent->children.erase(node->key);  // destroys `node`
  --num_nodes_;
}

bool PrefixTree::EvictOne() {
  // Candidates: leaves nobody uses (freed whole), and nodes holding sliding blocks nobody else
  // references (only those are freed: a later hit needs them only within the window).
  const KVLayout& layout = pool_->layout();
  const auto has_lone_sliding = [&](const Node& node) {
    for (std::size_t g = 0; g < node.blocks.size(); ++g) {
      if (layout.group_sliding[g] && node.blocks[g] != kNoBlock &&
          pool_->refcount(node.blocks[g]) == 1) {
        return true;
      }
    }
    return false;
  };
  Node* victim = nullptr;
  bool whole = false;
  std::vector<Node*> stack{root_.get()};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (auto& [key, child] : node->children) stack.push_back(child.get());
    if (node == root_.get()) continue;
    const bool evictable = Evictable(*node);
    if (!evictable && !has_lone_sliding(*node)) continue;
    if (victim == nullptr || node->last_used < victim->last_used) {
      victim = node;
      whole = evictable;
    }
  }
  if (victim == nullptr) return false;
  if (whole) {
    Free(victim);
    return true;
  }
  for (std::size_t g = 0; g < victim->blocks.size(); ++g) {
    BlockId& id = victim->blocks[g];
    if (layout.group_sliding[g] && id != kNoBlock && pool_->refcount(id) == 1) {
      pool_->UnrefCached(id);
      id = kNoBlock;
    }
  }
  return true;
}

void PrefixTree::EvictAll() {
  // Leaves first: a node whose children were all freed may go next.
  const auto visit = [this](auto& self, Node* node) -> void {
    std::vector<Node*> children;
    for (auto& [key, child] : node->children) children.push_back(child.get());
    for (Node* child : children) self(self, child);
    if (Evictable(*node)) Free(node);
  };
  visit(visit, root_.get());
}

std::int64_t PrefixTree::blocks_held() const {
  std::int64_t held = 0;
  std::vector<const Node*> stack{root_.get()};
  while (!stack.empty()) {
    const Node* node = stack.back();
    stack.pop_back();
    for (BlockId id : node->blocks) held += id != kNoBlock ? 1 : 0;
    for (const auto& [key, child] : node->children) stack.push_back(child.get());
  }
  return held;
}

std::int64_t PrefixTree::blocks_cached_only() const { return pool_->num_cached_only(); }

}  // namespace fgnet::kv
