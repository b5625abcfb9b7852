// The prefix tree: a hit adopts exactly the blocks a cold run would compute (continuation logits
// equal), keys separate adapters, scales and activation starts but let an activated adapter
// share the base's blocks before its invocation, sliding blocks are required only within the
// window, and eviction frees least recently used unreferenced leaves, never referenced blocks.

#include "kv/prefix_tree.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "kv_test_model.h"
#include "model/kv_cache.h"

namespace fgnet::kv {
namespace {

using testing::KvTestConfig;
using testing::RandomCheckpoint;
using testing::RandomIds;

LoraAdapter FakeAdapter(const std::string& hash) {
  LoraAdapter a;
  a.name = "a" + hash;
  a.content_hash = hash;
  return a;
}

class PrefixTreeTest : public ::testing::Test {
 protected:
  static constexpr std::int64_t kBlock = 4;

  PrefixTreeTest()
      : ckpt_(KvTestConfig(), DType::kF32, 11),
        blocks_(KVLayout::ForConfig(KvTestConfig(), kBlock), 64),
        tree_(blocks_, "base-hash") {
    auto m = Gemma3Model::Create(ckpt_.config(), ckpt_.weights());
    EXPECT_TRUE(m.ok());
    model_ = std::make_unique<Gemma3Model>(std::move(*m));
  }

  // Computes tokens[seq.length():] into `seq`; returns the last logits.
  std::vector<float> Compute(PagedSequence& seq, const std::vector<std::int32_t>& tokens) {
    const auto n = static_cast<std::int64_t>(tokens.size()) - seq.length();
    EXPECT_TRUE(seq.Reserve(n));
    std::vector<float> logits;
    const SequenceStep step{std::span(tokens).subspan(static_cast<std::size_t>(seq.length())),
                            &seq,
                            LogitsMode::kLast,
                            &logits,
                            {}};
    EXPECT_TRUE(model_->ForwardBatch(std::span(&step, 1), pool_, scratch_).ok());
    return logits;
  }

  RandomCheckpoint ckpt_;
  std::unique_ptr<Gemma3Model> model_;
  ThreadPool pool_{2};
  ForwardScratch scratch_;
  BlockPool blocks_;
  PrefixTree tree_;
};

TEST_F(PrefixTreeTest, AHitContinuesExactlyLikeAColdRun) {
  const auto tokens = RandomIds(23, KvTestConfig().vocab_size, 1);
  std::vector<float> cold;
  {
    PagedSequence seq(blocks_);
    PrefixTree::Cursor cursor;
    EXPECT_EQ(tree_.Match(tokens, {}, 22, seq, cursor), 0);
    cold = Compute(seq, tokens);
    tree_.Insert(tokens, {}, seq, cursor);
    EXPECT_EQ(cursor.blocks(), 5);
    EXPECT_EQ(tree_.num_nodes(), 5);
  }
  // Everything but the last token, in whole blocks: 20 positions.
  PagedSequence seq(blocks_);
  PrefixTree::Cursor cursor;
  EXPECT_EQ(tree_.Match(tokens, {}, 22, seq, cursor), 20);
  EXPECT_EQ(seq.length(), 20);
  const std::vector<float> hot = Compute(seq, tokens);
  ASSERT_EQ(hot.size(), cold.size());
  for (std::size_t i = 0; i < hot.size(); ++i) EXPECT_NEAR(hot[i], cold[i], 1e-5f);
}

TEST_F(PrefixTreeTest, KeysSeparateAdaptersScalesAndStarts) {
  const auto tokens = RandomIds(16, KvTestConfig().vocab_size, 2);
  const LoraAdapter x = FakeAdapter("x"), y = FakeAdapter("y");
  const std::vector<AdapterUse> with_x{{&x, 1.0f, 0}};
  PagedSequence seq(blocks_);
  ASSERT_TRUE(seq.Reserve(16));
  seq.Advance(16);  // contents do not matter here
  PrefixTree::Cursor cursor;
  tree_.Insert(tokens, with_x, seq, cursor);

  const auto match = [&](std::vector<AdapterUse> adapters) {
    PagedSequence s(blocks_);
    PrefixTree::Cursor c;
    return tree_.Match(tokens, adapters, 16, s, c);
  };
  EXPECT_EQ(match(with_x), 16);
  EXPECT_EQ(match({}), 0);
  EXPECT_EQ(match({{&y, 1.0f, 0}}), 0);
  EXPECT_EQ(match({{&x, 0.5f, 0}}), 0);
  EXPECT_EQ(match({{&x, 1.0f, 0}, {&y, 1.0f, 0}}), 0);
}

TEST_F(PrefixTreeTest, AnActivatedAdapterSharesTheBaseBlocksBeforeItsStart) {
  const auto tokens = RandomIds(16, KvTestConfig().vocab_size, 3);
  PagedSequence base(blocks_);
  PrefixTree::Cursor cursor;
  for (int i = 0; i < 4; ++i) {  // inserted block by block, with their sliding blocks
    ASSERT_TRUE(base.Reserve(4));
    base.Advance(4);
    tree_.Insert(tokens, {}, base, cursor);
  }
  const LoraAdapter x = FakeAdapter("x");
  const auto match = [&](std::int64_t start) {
    PagedSequence s(blocks_);
    PrefixTree::Cursor c;
    const std::vector<AdapterUse> adapters{{&x, 1.0f, start}};
    return tree_.Match(tokens, adapters, 16, s, c);
  };
  EXPECT_EQ(match(9), 8);  // blocks [0, 4) and [4, 8) end before position 9
  EXPECT_EQ(match(8), 8);
  EXPECT_EQ(match(7), 4);  // block [4, 8) holds position 7, computed with the adapter
  EXPECT_EQ(match(16), 16);
  EXPECT_EQ(match(0), 0);
}

TEST_F(PrefixTreeTest, HitsNeedOnlyTheSlidingBlocksOfTheWindow) {
  // Computed in one chunk and trimmed before being inserted, the sequence has dropped its early
  // sliding blocks.
  const auto tokens = RandomIds(24, KvTestConfig().vocab_size, 4);
  PagedSequence seq(blocks_);
  PrefixTree::Cursor cursor;
  Compute(seq, tokens);
  seq.Trim();
  tree_.Insert(tokens, {}, seq, cursor);
  // Window 5: a hit at L needs the sliding blocks of positions L - 4 .. L - 1. Only blocks
  // 4 and 5 (positions 16..23) kept theirs, so L = 24 is the only usable length ...
  PagedSequence s(blocks_);
  PrefixTree::Cursor c;
  EXPECT_EQ(tree_.Match(tokens, {}, 24, s, c), 24);
  s.Release();
  // ... and L = 20 would need block 3 (positions 16..19 plus 15 in block 3): not usable.
  PagedSequence t(blocks_);
  PrefixTree::Cursor d;
  EXPECT_EQ(tree_.Match(tokens, {}, 23, t, d), 0);
}

TEST_F(PrefixTreeTest, EvictsLeastRecentlyUsedUnreferencedLeaves) {
  // Two cached sequences of 2 blocks each (3 groups per block: 6 pool blocks per node).
  const auto a = RandomIds(8, KvTestConfig().vocab_size, 5);
  const auto b = RandomIds(8, KvTestConfig().vocab_size, 6);
  for (const auto* tokens : {&a, &b}) {
    PagedSequence seq(blocks_);
    PrefixTree::Cursor cursor;
    ASSERT_TRUE(seq.Reserve(8));
    seq.Advance(8);
    tree_.Insert(*tokens, {}, seq, cursor);
  }
  EXPECT_EQ(tree_.num_nodes(), 4);
  // Touch `a`, holding its blocks in a live sequence.
  PagedSequence live(blocks_);
  PrefixTree::Cursor live_cursor;
  ASSERT_EQ(tree_.Match(a, {}, 8, live, live_cursor), 8);
  live_cursor.Release();
  // Everything of b goes; of a, only the sliding blocks of its first block, which `live` (at
  // position 8, window 5) no longer needs.
  int evictions = 0;
  while (tree_.EvictOne()) ++evictions;
  EXPECT_GE(evictions, 3);  // b whole (its sliding blocks may go first), a in part
  EXPECT_EQ(tree_.blocks_held(), 6 - 2);
  EXPECT_EQ(tree_.num_nodes(), 2);
  PagedSequence s(blocks_);
  PrefixTree::Cursor c;
  EXPECT_EQ(tree_.Match(b, {}, 8, s, c), 0);
  live.Release();
  tree_.EvictAll();
  EXPECT_EQ(tree_.num_nodes(), 0);
  EXPECT_EQ(blocks_.num_free(), blocks_.num_blocks());
}

TEST_F(PrefixTreeTest, APoolRunningDryEvictsCachedBlocks) {
  // Fill the tree with 30 of 64 blocks: 10 nodes of 3 blocks (one per group; the sliding ones
  // are inserted before the sequence drops them).
  const auto tokens = RandomIds(40, KvTestConfig().vocab_size, 7);
  {
    PagedSequence seq(blocks_);
    PrefixTree::Cursor cursor;
    for (std::size_t at = 0; at < 40; at += 4) {
      ASSERT_TRUE(seq.Reserve(4));
      seq.Advance(4);
      tree_.Insert(tokens, {}, seq, cursor);
    }
  }
  EXPECT_EQ(tree_.blocks_held(), 30);
  EXPECT_EQ(tree_.blocks_cached_only(), tree_.blocks_held());
  // A sequence needing most of the pool gets it by eviction.
  PagedSequence big(blocks_);
  EXPECT_TRUE(big.Reserve(4 * 20));  // 20 blocks in each of 3 groups
  EXPECT_LT(tree_.num_nodes(), 10);
  big.Release();
  tree_.EvictAll();
  EXPECT_EQ(blocks_.num_free(), blocks_.num_blocks());
}

// The blocks held and not by any of `live` (with no pinned prefix: held by the tree alone).
std::int64_t HeldByNoSequence(const BlockPool& pool,
                              std::initializer_list<const PagedSequence*> live) {
  std::set<BlockId> theirs;
  for (const PagedSequence* seq : live) {
    for (std::int64_t g = 0; g < pool.layout().num_groups(); ++g) {
      for (std::int64_t b = 0; b < seq->num_blocks(); ++b) theirs.insert(seq->block(g, b));
    }
  }
  std::int64_t only = 0;
  for (BlockId id = 0; id < pool.num_blocks(); ++id) {
    only += pool.refcount(id) > 0 && !theirs.contains(id) ? 1 : 0;
  }
  return only;
}

// The count of blocks only the tree holds follows every reference taken and dropped: the
// sequences' as they insert, release and match, the tree's as it evicts.
TEST_F(PrefixTreeTest, CountsTheBlocksOnlyItHolds) {
  const auto tokens = RandomIds(48, KvTestConfig().vocab_size, 5);
  PagedSequence first(blocks_);
  PrefixTree::Cursor first_cursor;
  for (std::size_t at = 0; at < tokens.size(); at += 4) {
    ASSERT_TRUE(first.Reserve(4));
    first.Advance(4);
    tree_.Insert(tokens, {}, first, first_cursor);
  }
  // The sliding blocks the sequence dropped past its window are the tree's alone.
  EXPECT_GT(tree_.blocks_cached_only(), 0);
  EXPECT_EQ(tree_.blocks_cached_only(), HeldByNoSequence(blocks_, {&first}));
  first.Release();
  first_cursor.Release();
  EXPECT_EQ(tree_.blocks_cached_only(), tree_.blocks_held());

  PagedSequence hit(blocks_);
  PrefixTree::Cursor cursor;
  EXPECT_EQ(tree_.Match(tokens, {}, 40, hit, cursor), 40);
  EXPECT_LT(tree_.blocks_cached_only(), tree_.blocks_held());
  EXPECT_EQ(tree_.blocks_cached_only(), HeldByNoSequence(blocks_, {&hit}));
  hit.Release();
  cursor.Release();
  EXPECT_EQ(tree_.blocks_cached_only(), tree_.blocks_held());
  tree_.EvictAll();
  EXPECT_EQ(tree_.blocks_cached_only(), 0);
  EXPECT_EQ(blocks_.num_free(), blocks_.num_blocks());
}

}  // namespace
}  // namespace fgnet::kv
