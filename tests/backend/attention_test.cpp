// Attention against the scalar reference: MQA / GQA / MHA, sliding windows, softcapping, keys
// split over several spans (a wrapped ring buffer plus fresh keys), decode and chunk regimes,
// on every SIMD target.

#include "backend/cpu/attention.h"

#include <cmath>
#include <vector>

#include "backend/cpu/reference.h"
#include "test_support.h"

namespace fgnet::cpu {
namespace {

using testing::RandomVector;

class AttentionTest : public testing::PerTarget {};
FGNET_INSTANTIATE_PER_TARGET(AttentionTest);

struct Case {
  std::size_t heads, kv_heads, head_dim;
  std::size_t cached;   // keys before the queries
  std::size_t n;        // queries
  std::int64_t window;  // 0 = global
  float softcap;
  std::size_t splits;  // the cached keys are cut into this many spans (1 or 2)
};

void RunCase(const Case& c, ThreadPool& pool, Workspace& ws, Philox& rng) {
  const std::size_t kv_dim = c.kv_heads * c.head_dim;
  const std::size_t q_dim = c.heads * c.head_dim;
  // Keys of positions [first_kv, cached + n): a sliding layer need not keep older ones.
  const std::int64_t first_needed =
      c.window > 0 ? std::max<std::int64_t>(0, static_cast<std::int64_t>(c.cached) - c.window + 1)
                   : 0;
  const std::size_t held = c.cached - static_cast<std::size_t>(first_needed);
  // Cached keys live in a buffer with padding between rows (stride > kv_dim).
  const std::size_t stride = kv_dim + 3;
  const std::vector<float> ck = RandomVector(rng, held * stride + 1, -1.0f, 1.0f);
  const std::vector<float> cv = RandomVector(rng, held * stride + 1, -1.0f, 1.0f);
  const std::vector<float> fk = RandomVector(rng, c.n * kv_dim, -1.0f, 1.0f);
  const std::vector<float> fv = RandomVector(rng, c.n * kv_dim, -1.0f, 1.0f);
  const std::vector<float> q = RandomVector(rng, c.n * q_dim, -2.0f, 2.0f);
  std::vector<KVSpan> spans;
  if (held > 0) {
    // Ring-buffer style: the older part sits after the newer one in memory.
    const std::size_t cut = c.splits > 1 ? held / 2 : held;
    const std::size_t rest = held - cut;
    const float* k_old = ck.data() + rest * stride;
    const float* v_old = cv.data() + rest * stride;
    spans.push_back({k_old, v_old, stride, first_needed, cut});
    if (rest > 0) {
      spans.push_back(
          {ck.data(), cv.data(), stride, first_needed + static_cast<std::int64_t>(cut), rest});
    }
  }
  spans.push_back({fk.data(), fv.data(), kv_dim, static_cast<std::int64_t>(c.cached), c.n});
  AttentionParams p;
  p.heads = c.heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim) * 1.5f);
  p.softcap = c.softcap;
  p.window = c.window;
  std::vector<float> out(c.n * q_dim, 123.0f), ref(c.n * q_dim);
  Attention(q.data(), c.n, static_cast<std::int64_t>(c.cached), spans, p, out.data(), pool, ws);
  reference::Attention(q.data(), c.n, static_cast<std::int64_t>(c.cached), spans, p, ref.data());
  for (std::size_t i = 0; i < out.size(); ++i) {
    ASSERT_NEAR(out[i], ref[i], 2e-5)
        << "heads " << c.heads << "/" << c.kv_heads << " hd " << c.head_dim << " cached "
        << c.cached << " n " << c.n << " window " << c.window << " softcap " << c.softcap
        << " splits " << c.splits << " at " << i;
  }
}

TEST_P(AttentionTest, MatchesReference) {
  Philox rng(11);
  Workspace ws;
  ThreadPool pool(2);
  const std::size_t head_configs[][3] = {{4, 1, 16}, {4, 2, 20}, {3, 3, 8}, {2, 1, 256}};
  for (const auto& h : head_configs) {
    for (std::size_t cached : {0, 1, 10, 70}) {
      for (std::size_t n : {1, 2, 3, 4, 9, 37, 80}) {
        for (std::int64_t window : {0, 1, 7, 40}) {
          for (float softcap : {0.0f, 5.0f}) {
            const std::size_t splits = (cached + n) % 2 + 1;
            RunCase({h[0], h[1], h[2], cached, n, window, softcap, splits}, pool, ws, rng);
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

TEST_P(AttentionTest, SingleThreadAndManyThreadsAgree) {
  Philox rng(12);
  Workspace ws;
  for (std::size_t threads : {1, 3}) {
    ThreadPool pool(threads);
    RunCase({4, 1, 64, 30, 50, 20, 0.0f, 2}, pool, ws, rng);
    RunCase({4, 1, 64, 30, 1, 0, 0.0f, 2}, pool, ws, rng);
  }
}

TEST_P(AttentionTest, LongContextUsesSmallerBlocks) {
  // Enough keys that the score budget shrinks the query blocks.
  Philox rng(13);
  Workspace ws;
  ThreadPool pool(2);
  RunCase({4, 1, 8, 9000, 40, 0, 0.0f, 2}, pool, ws, rng);
}

TEST_P(AttentionTest, DecodeSplitsLongRangesIntoMergedSlices) {
  // Decode-regime key ranges long enough to be cut into slices (for the threads, and to bound
  // the scores), merged by their maxima and sums.
  Philox rng(14);
  Workspace ws;
  for (std::size_t threads : {1, 2}) {
    ThreadPool pool(threads);
    RunCase({4, 1, 8, 600, 1, 0, 0.0f, 2}, pool, ws, rng);
    RunCase({4, 2, 16, 9000, 2, 0, 5.0f, 2}, pool, ws, rng);
    RunCase({4, 1, 8, 9000, 3, 700, 0.0f, 2}, pool, ws, rng);
    RunCase({2, 2, 6, 300, 1, 0, 0.0f, 1}, pool, ws, rng);
  }
}

}  // namespace
}  // namespace fgnet::cpu
