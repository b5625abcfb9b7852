// The forward pass on paged KV equals the forward pass on the contiguous KVCache (the same
// arithmetic in the same order, read through block spans), in any chunking and with blocks
// shared by forks; block accounting: layer groups, reservation failures that change nothing,
// copy on write, sliding groups that keep only the window.

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kv/block_pool.h"
#include "kv/paged_sequence.h"
#include "kv_test_model.h"
#include "model/gemma3_model.h"
#include "model/kv_cache.h"

namespace fgnet::kv {
namespace {

using testing::KvTestConfig;
using testing::RandomCheckpoint;
using testing::RandomIds;

class PagedForwardTest : public ::testing::Test {
 protected:
  PagedForwardTest() : ckpt_(KvTestConfig(), DType::kF32, 7) {
    auto m = Gemma3Model::Create(ckpt_.config(), ckpt_.weights());
    EXPECT_TRUE(m.ok());
    model_ = std::make_unique<Gemma3Model>(std::move(*m));
  }

  // Logits of every position of `tokens`, fed to `kv` in chunks of `chunk`.
  std::vector<float> Run(SequenceKV& kv, const std::vector<std::int32_t>& tokens, std::size_t chunk,
                         PagedSequence* paged = nullptr) {
    std::vector<float> all, logits;
    for (std::size_t at = 0; at < tokens.size(); at += chunk) {
      const std::size_t n = std::min(chunk, tokens.size() - at);
      if (paged != nullptr) {
        EXPECT_TRUE(paged->Reserve(static_cast<std::int64_t>(n)));
      }
      const SequenceStep step{std::span(tokens).subspan(at, n), &kv, LogitsMode::kAll, &logits, {}};
      EXPECT_TRUE(model_->ForwardBatch(std::span(&step, 1), pool_, scratch_).ok());
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  }

  RandomCheckpoint ckpt_;
  std::unique_ptr<Gemma3Model> model_;
  ThreadPool pool_{2};
  ForwardScratch scratch_;
};

TEST(KVLayoutTest, GroupsLayersOfOneKindInEqualGroups) {
  const KVLayout layout = KVLayout::ForConfig(KvTestConfig(), 4);
  // 4 sliding and 2 global layers: groups of 2.
  EXPECT_EQ(layout.group_layers, 2);
  ASSERT_EQ(layout.num_groups(), 3);
  EXPECT_EQ(layout.group_sliding, (std::vector<bool>{true, false, true}));
  EXPECT_EQ(layout.layer_group, (std::vector<std::int32_t>{0, 0, 1, 2, 2, 1}));
  EXPECT_EQ(layout.layer_slot, (std::vector<std::int32_t>{0, 1, 0, 0, 1, 1}));
  EXPECT_EQ(layout.block_elements(), 2u * 2 * 4 * 8);
  EXPECT_EQ(layout.block_bytes(), 4u * layout.block_elements());
  EXPECT_EQ(layout.bytes_per_position(), 4u * 2 * 6 * 8);
  // bf16 blocks: the same layout in half the bytes.
  const KVLayout half = KVLayout::ForConfig(KvTestConfig(), 4, DType::kBF16);
  EXPECT_EQ(half.block_elements(), layout.block_elements());
  EXPECT_EQ(half.block_bytes(), 2u * layout.block_elements());
  EXPECT_EQ(half.bytes_per_position(), layout.bytes_per_position() / 2);
}

TEST(KVLayoutTest, Gemma270MHasSixGroupsOfThree) {
  Gemma3Config c = KvTestConfig();
  c.num_hidden_layers = 18;
  c.layer_types.clear();
  for (int l = 0; l < 18; ++l)
    c.layer_types.push_back((l + 1) % 6 == 0 ? LayerType::kGlobal : LayerType::kSliding);
  const KVLayout layout = KVLayout::ForConfig(c, 16);
  EXPECT_EQ(layout.group_layers, 3);
  EXPECT_EQ(layout.num_groups(), 6);
}

TEST_F(PagedForwardTest, EqualsContiguousCacheInAnyChunking) {
  const auto tokens = RandomIds(37, KvTestConfig().vocab_size, 1);
  KVCache cache = model_->NewKVCache(64);
  const std::vector<float> want = Run(cache, tokens, tokens.size());
  for (std::int64_t block : {1, 3, 4, 16}) {
    for (std::size_t chunk : {std::size_t{1}, std::size_t{5}, std::size_t{37}}) {
      BlockPool blocks(KVLayout::ForConfig(KvTestConfig(), block), 200);
      PagedSequence seq(blocks);
      const std::vector<float> got = Run(seq, tokens, chunk, &seq);
      ASSERT_EQ(got.size(), want.size());
      for (std::size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5f) << "block " << block << " chunk " << chunk;
      seq.Release();
      EXPECT_EQ(blocks.num_free(), blocks.num_blocks());
    }
  }
}

TEST_F(PagedForwardTest, SlidingGroupsKeepOnlyTheWindow) {
  const KVLayout layout = KVLayout::ForConfig(KvTestConfig(), 2);
  BlockPool blocks(layout, 200);
  PagedSequence seq(blocks);
  Run(seq, RandomIds(40, KvTestConfig().vocab_size, 2), 1, &seq);
  seq.Trim();
  // 40 positions: the global group holds 20 blocks; each sliding group the blocks of positions
  // 36..39 (the window of the next query, at 40, is 36..40): 2 blocks.
  EXPECT_EQ(seq.blocks_held(), 20 + 2 * 2);
  EXPECT_EQ(blocks.num_used(), seq.blocks_held());
  for (std::int64_t i = 0; i < 18; ++i) EXPECT_EQ(seq.block(0, i), kNoBlock) << i;
  EXPECT_NE(seq.block(0, 18), kNoBlock);
}

TEST_F(PagedForwardTest, ReserveFailureChangesNothing) {
  BlockPool blocks(KVLayout::ForConfig(KvTestConfig(), 4), 5);
  PagedSequence seq(blocks);
  ASSERT_TRUE(seq.Reserve(4));  // one block per group: 3
  EXPECT_EQ(blocks.num_free(), 2);
  EXPECT_FALSE(seq.Reserve(8));  // would need 3 more
  EXPECT_EQ(blocks.num_free(), 2);
  EXPECT_EQ(seq.capacity(), 4);
  EXPECT_EQ(seq.blocks_held(), 3);
}

TEST_F(PagedForwardTest, ForksShareBlocksAndCopyOnWrite) {
  const auto prefix = RandomIds(10, KvTestConfig().vocab_size, 3);
  const auto tail_a = RandomIds(6, KvTestConfig().vocab_size, 4);
  const auto tail_b = RandomIds(6, KvTestConfig().vocab_size, 5);
  BlockPool blocks(KVLayout::ForConfig(KvTestConfig(), 4), 64);
  PagedSequence base(blocks);
  Run(base, prefix, prefix.size(), &base);
  const std::int64_t used = blocks.num_used();
  PagedSequence a = base.Fork();
  PagedSequence b = base.Fork();
  EXPECT_EQ(blocks.num_used(), used);  // sharing costs nothing
  const std::vector<float> got_a = Run(a, tail_a, 2, &a);
  const std::vector<float> got_b = Run(b, tail_b, 3, &b);

  // The same as computing each whole sequence from scratch.
  for (const auto& [tail, got] : {std::pair{tail_a, got_a}, std::pair{tail_b, got_b}}) {
    std::vector<std::int32_t> whole = prefix;
    whole.insert(whole.end(), tail.begin(), tail.end());
    KVCache cache = model_->NewKVCache(32);
    const std::vector<float> all = Run(cache, whole, whole.size());
    const std::size_t vocab = static_cast<std::size_t>(KvTestConfig().vocab_size);
    ASSERT_EQ(got.size(), tail.size() * vocab);
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], all[prefix.size() * vocab + i], 1e-5f);
  }
  // The base is untouched by its forks' writes: extending it still matches.
  const std::vector<float> again = Run(base, tail_a, tail_a.size(), &base);
  for (std::size_t i = 0; i < again.size(); ++i) ASSERT_NEAR(again[i], got_a[i], 1e-5f);
  a.Release();
  b.Release();
  base.Release();
  EXPECT_EQ(blocks.num_free(), blocks.num_blocks());
}

TEST_F(PagedForwardTest, ForwardRefusesAStepBeyondItsReservation) {
  BlockPool blocks(KVLayout::ForConfig(KvTestConfig(), 4), 16);
  PagedSequence seq(blocks);
  ASSERT_TRUE(seq.Reserve(2));
  const auto tokens = RandomIds(3, KvTestConfig().vocab_size, 6);
  std::vector<float> logits;
  const SequenceStep step{tokens, &seq, LogitsMode::kLast, &logits, {}};
  const Status s = model_->ForwardBatch(std::span(&step, 1), pool_, scratch_);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("KV cache full"), std::string::npos) << s.error().message();
  EXPECT_EQ(seq.length(), 0);
}

}  // namespace
}  // namespace fgnet::kv
